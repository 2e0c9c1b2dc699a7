"""The evaluation history: one row per evaluated subnet, across runs and tasks.

Every search writes its evaluations here, so later searches on other tasks can
meta-train a predictor on them and a resumed search can skip archs it already
scored. The default store is one SQLite file (WAL mode, busy timeout and retries,
so several processes on one machine can write at once); any SQLAlchemy URL, e.g.
PostgreSQL, serves several machines. Timestamps are Unix seconds.
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from metanas._io import atomic_write
from metanas.space import ArchConfig

SCHEMA_VERSION = 1
# How an evaluated arch was proposed: the warm start's (anchor, predicted, seed), evolution's mutants and
# offspring (evolved), a controller's policy sample (policy), a relaxation's projection (relaxed), a model-based
# sampler's draw (sampled: TPE, GP), or uniform (random).
ORIGINS = ("anchor", "random", "evolved", "predicted", "seed", "policy", "relaxed", "sampled")
RUN_STATUSES = ("running", "finished", "failed", "interrupted")
DEFAULT_PATH = Path("~/.cache/metanas/history.db")
ENV_VAR = "METANAS_HISTORY"
EXPORT_FORMATS = (".csv", ".parquet")

_SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 30.0
_RETRIES = 8

_T = TypeVar("_T")

metadata = MetaData()
_SCHEMA_LOCK_KEY = 0x6D6E6873  # serializes creating the schema on PostgreSQL
schema_table = Table("schema_version", metadata, Column("version", Integer, nullable=False))
runs_table = Table(
    "runs",
    metadata,
    Column("run_id", String(255), primary_key=True),
    Column("task_id", String(255), nullable=False),
    Column("created", Double, nullable=False),
    Column("strategy", String(255)),
    Column("config", Text, nullable=False),
    Column("status", String(32), nullable=False),
)
evals_table = Table(
    "evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(255), nullable=False, index=True),
    Column("task_id", String(255), nullable=False, index=True),
    Column("task_meta", Text, nullable=False),
    Column("space_signature", String(64), nullable=False, index=True),
    Column("arch", Text, nullable=False),
    Column("fitness", Double, nullable=False),
    Column("metric_name", String(255), nullable=False),
    Column("metric_value", Double, nullable=False),
    Column("params", BigInteger, nullable=False),
    Column("non_embedding_params", BigInteger, nullable=False),
    Column("flops", BigInteger, nullable=False),
    Column("latency_ms", Double),
    Column("origin", String(16), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("timestamp", Double, nullable=False),
)
COLUMNS = tuple(c.name for c in evals_table.columns)


def _dumps(value: Any) -> str:
    # default=str keeps paths and other simple objects in recipes storable.
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class EvalRecord:
    """One evaluation of one arch on one task (a row of the `evaluations` table).

    `fitness` is higher-is-better (e.g. minus a loss); `metric_value` is the raw
    metric it came from. The cost fields match `CostModel.costs`, so
    `EvalRecord(..., **cost_model.costs(arch))` fills them. `id` is set by the store.
    """

    run_id: str
    task_id: str
    space_signature: str
    arch: ArchConfig
    fitness: float
    metric_name: str
    metric_value: float
    params: int
    non_embedding_params: int
    flops: int
    origin: str
    generation: int = 0
    latency_ms: float | None = None
    task_meta: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)
    id: int | None = None

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"EvalRecord.origin must be one of {list(ORIGINS)}, got {self.origin!r}")
        if not isinstance(self.arch, ArchConfig):
            raise TypeError(f"EvalRecord.arch must be an ArchConfig, got {type(self.arch).__name__}")
        if math.isnan(self.fitness):
            raise ValueError("EvalRecord.fitness is NaN; record a failed evaluation as -inf instead")
        if isinstance(self.generation, bool) or not isinstance(self.generation, int) or self.generation < 0:
            raise ValueError(f"EvalRecord.generation must be a non-negative integer, got {self.generation!r}")

    def to_row(self) -> dict[str, Any]:
        """The row as stored: arch and task_meta as JSON text."""
        return {
            "run_id": self.run_id,
            "task_id": self.task_id,
            "task_meta": _dumps(self.task_meta),
            "space_signature": self.space_signature,
            "arch": self.arch.to_json(),
            "fitness": float(self.fitness),
            "metric_name": self.metric_name,
            "metric_value": float(self.metric_value),
            "params": int(self.params),
            "non_embedding_params": int(self.non_embedding_params),
            "flops": int(self.flops),
            "latency_ms": None if self.latency_ms is None else float(self.latency_ms),
            "origin": self.origin,
            "generation": self.generation,
            "timestamp": float(self.timestamp),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EvalRecord:
        data = dict(row)
        data["arch"] = ArchConfig.from_json(data["arch"])
        data["task_meta"] = json.loads(data["task_meta"])
        return cls(**data)


def _check_version(where: str, versions: list[int]) -> None:
    if not versions:
        raise ValueError(f"history store {where} has an empty schema_version table; it is damaged")
    if versions != [SCHEMA_VERSION]:
        found = versions[0] if len(versions) == 1 else versions
        raise ValueError(
            f"history store {where} has schema version {found}, but this metanas reads version {SCHEMA_VERSION}; "
            "it was written by another (probably newer) metanas. Upgrade metanas or use another store."
        )


def _probe_sqlite_file(path: Path) -> None:
    """Fail on a file SQLite cannot read before anything writes to it, so it stays untouched."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        header = f.read(len(_SQLITE_HEADER))
    if header != _SQLITE_HEADER:
        raise ValueError(
            f"history store {path} is not a SQLite database (corrupted, or another kind of file); "
            "it was left untouched. Move it aside or pass another path."
        )
    try:
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "schema_version" in tables:
                _check_version(str(path), [r[0] for r in con.execute("SELECT version FROM schema_version")])
        finally:
            con.close()
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as e:
        raise ValueError(
            f"history store {path} cannot be read as a SQLite database ({e}); it was left untouched"
        ) from None


def _is_lock_error(e: OperationalError) -> bool:
    """A conflict worth running the transaction again for: SQLite's lock, PostgreSQL's deadlock or serialization."""
    text = str(e.orig).lower()
    return any(word in text for word in ("locked", "busy", "deadlock detected", "could not serialize"))


def _connect_error(where: str, e: OperationalError) -> ValueError:
    """One line for a database that cannot be reached or refuses the login."""
    lines = [line.strip() for line in str(e.orig).splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith("FATAL")), lines[0] if lines else type(e.orig).__name__)
    return ValueError(f"history {where}: cannot connect ({reason}); nothing was written")


URL_FORMS = "a SQLite file path, sqlite:///PATH, or postgresql+psycopg://USER:PASSWORD@HOST/DB"


def history_target(url: str | os.PathLike | None) -> str:
    """The history a search uses: `url`, else `$METANAS_HISTORY`, else `~/.cache/metanas/history.db`."""
    return str(url) if url is not None else os.environ.get(ENV_VAR) or str(DEFAULT_PATH)


def check_history_url(url: str | os.PathLike | None) -> None:
    """Fail now, in one line, when a history URL is malformed or its database driver is not installed."""
    target = history_target(url)
    if "://" not in target:
        return
    try:
        make_url(target).get_dialect().import_dbapi()
    except ArgumentError:
        raise ValueError(f"history {target!r} is not a database URL; use {URL_FORMS}") from None
    except NoSuchModuleError:
        raise ValueError(f"history {target!r}: unknown database type; use {URL_FORMS}") from None
    except ImportError as e:
        raise ValueError(
            f"history {target!r} needs the database driver {e.name!r}, which is not installed "
            "(for PostgreSQL: pip install 'psycopg[binary]' and use postgresql+psycopg://...)"
        ) from None


class HistoryStore:
    """Evaluation records and runs in a SQL database (SQLAlchemy Core).

    `url`: None -> `$METANAS_HISTORY` or `~/.cache/metanas/history.db`; a plain path
    -> that SQLite file (parent folders are created); anything with `://` -> a
    SQLAlchemy URL such as `postgresql+psycopg://user@host/db`. `create=False` opens
    an existing history only (for reading: listing, export, meta-training).
    """

    def __init__(self, url: str | os.PathLike | None = None, create: bool = True) -> None:
        target = history_target(url)
        check_history_url(target)
        if "://" in target:
            self.url = target
            parsed = make_url(target)
            is_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
            self.path: Path | None = Path(parsed.database).resolve() if is_file else None
        else:
            self.path = Path(target).expanduser().resolve()
            self.url = f"sqlite:///{self.path}"
        if self.path is not None:
            if not create and not self.path.is_file():
                raise FileNotFoundError(f"no history at {str(self.path)!r} (nothing has been searched with it yet)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _probe_sqlite_file(self.path)
        self._engine = create_engine(self.url)
        if self._engine.dialect.name == "sqlite":
            _configure_sqlite(self._engine)
        try:
            self._retry(self._init_schema)
        except OperationalError as e:
            self._engine.dispose()
            if self._engine.dialect.name == "sqlite" or _is_lock_error(e):
                raise
            raise _connect_error(repr(self), e) from None
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"HistoryStore({self._engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release all connections (the store can be reopened by creating a new one)."""
        self._engine.dispose()

    # ----- plumbing -------------------------------------------------------
    @property
    def engine(self) -> Any:
        """The SQLAlchemy engine (for the tables of shared studies, `metanas.meta.studies`)."""
        return self._engine

    def transaction(self, fn: Callable[[Connection], _T]) -> _T:
        """`fn(conn)` in one write transaction, run again (whole) when another process held the lock."""

        def tx() -> _T:
            with self._write() as conn:
                return fn(conn)

        return self._retry(tx)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction; on SQLite it takes the write lock up front (BEGIN IMMEDIATE)."""
        with self._engine.connect() as conn:
            conn.execution_options(metanas_write=True)
            with conn.begin():
                yield conn

    def _retry(self, fn: Callable[[], _T]) -> _T:
        """Run a whole transaction again when another process held the lock past the busy timeout."""
        attempt = 0
        while True:
            try:
                return fn()
            except OperationalError as e:
                attempt += 1
                if not _is_lock_error(e) or attempt >= _RETRIES:
                    raise
                time.sleep(0.05 * 2**attempt * (1 + random.random()))

    def _init_schema(self) -> None:
        with self._write() as conn:
            if conn.dialect.name == "postgresql":  # processes opening a new store at once race on CREATE TABLE
                conn.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            tables = set(inspect(conn).get_table_names())
            if "schema_version" in tables:
                _check_version(repr(self), list(conn.execute(select(schema_table.c.version)).scalars()))
                return
            if tables & {"runs", "evaluations"}:
                raise ValueError(f"{self!r} has runs/evaluations tables but no schema_version: not a metanas store")
            metadata.create_all(conn)
            conn.execute(insert(schema_table).values(version=SCHEMA_VERSION))

    # ----- runs -----------------------------------------------------------
    def start_run(self, run_id: str, task_id: str, strategy: str | None, config: dict[str, Any] | None = None) -> None:
        """Register a run; starting an existing run again (a resume) marks it running."""

        def tx() -> None:
            with self._write() as conn:
                row = conn.execute(select(runs_table.c.task_id).where(runs_table.c.run_id == run_id)).first()
                if row is None:
                    conn.execute(
                        insert(runs_table).values(
                            run_id=run_id,
                            task_id=task_id,
                            created=time.time(),
                            strategy=strategy,
                            config=_dumps(config or {}),
                            status="running",
                        )
                    )
                elif row.task_id != task_id:
                    raise ValueError(f"run {run_id!r} already exists for task {row.task_id!r}, not {task_id!r}")
                else:
                    conn.execute(update(runs_table).where(runs_table.c.run_id == run_id).values(status="running"))

        self._retry(tx)

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Record how a run ended."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {list(RUN_STATUSES)}, got {status!r}")

        def tx() -> None:
            with self._write() as conn:
                done = conn.execute(update(runs_table).where(runs_table.c.run_id == run_id).values(status=status))
                if done.rowcount == 0:
                    raise ValueError(f"finish_run: unknown run {run_id!r}; call start_run first")

        self._retry(tx)

    def runs(self) -> list[dict[str, Any]]:
        """Every run with `n_records` and `best_fitness`, oldest first.

        Runs that only have records (no `start_run`) are listed too, with status None.
        """
        e = evals_table
        summary_q = select(
            e.c.run_id,
            func.count().label("n"),
            func.max(e.c.fitness).label("best"),
            func.min(e.c.task_id).label("task_id"),
            func.min(e.c.timestamp).label("first"),
        ).group_by(e.c.run_id)
        with self._engine.connect() as conn:
            summary = {r.run_id: r for r in conn.execute(summary_q)}
            registered = conn.execute(select(runs_table)).mappings().all()
        out = []
        for r in registered:
            s = summary.pop(r["run_id"], None)
            out.append(
                {
                    **r,
                    "config": json.loads(r["config"]),
                    "n_records": s.n if s else 0,
                    "best_fitness": s.best if s else None,
                }
            )
        for run_id, s in summary.items():
            out.append(
                {
                    "run_id": run_id,
                    "task_id": s.task_id,
                    "created": s.first,
                    "strategy": None,
                    "config": {},
                    "status": None,
                    "n_records": s.n,
                    "best_fitness": s.best,
                }
            )
        return sorted(out, key=lambda r: (r["created"], r["run_id"]))

    # ----- records --------------------------------------------------------
    def add_records(self, records: Iterable[EvalRecord]) -> None:
        """Append records in one transaction: all of them are stored or none."""
        rows = [r.to_row() for r in records]
        if not rows:
            return

        def tx() -> None:
            with self._write() as conn:
                conn.execute(insert(evals_table), rows)

        self._retry(tx)

    def _select(self, columns: Any, run_id: str | None, task_id: str | None, space_signature: str | None) -> Any:
        q = select(*columns)
        for col, value in (("run_id", run_id), ("task_id", task_id), ("space_signature", space_signature)):
            if value is not None:
                q = q.where(evals_table.c[col] == value)
        return q

    def _rows(self, run_id: str | None, task_id: str | None, space_signature: str | None) -> list[dict[str, Any]]:
        q = self._select(evals_table.columns, run_id, task_id, space_signature).order_by(evals_table.c.id)
        with self._engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def records(
        self, run_id: str | None = None, task_id: str | None = None, space_signature: str | None = None
    ) -> list[EvalRecord]:
        """Stored records matching every given filter, in insertion order."""
        return [EvalRecord.from_row(r) for r in self._rows(run_id, task_id, space_signature)]

    def evaluated_archs(self, run_id: str) -> set[str]:
        """JSON of every arch `run_id` has evaluated, so a resumed search can skip them."""
        q = self._select([evals_table.c.arch], run_id, None, None).distinct()
        with self._engine.connect() as conn:
            return set(conn.execute(q).scalars())

    def export(
        self,
        path: str | os.PathLike,
        run_id: str | None = None,
        task_id: str | None = None,
        space_signature: str | None = None,
    ) -> Path:
        """Write matching rows (arch and task_meta as JSON text) to `.csv` or `.parquet`, chosen by extension."""
        import pandas as pd

        out = Path(path)
        if out.suffix.lower() not in EXPORT_FORMATS:
            raise ValueError(f"export: {out.name!r} must end with one of {', '.join(EXPORT_FORMATS)}")
        rows = self._rows(run_id, task_id, space_signature)
        if not rows:
            given = {"run_id": run_id, "task_id": task_id, "space_signature": space_signature}
            where = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None) or "any run"
            known = sorted({r["run_id"] for r in self.runs()})
            raise ValueError(
                f"export: no evaluations match {where} in {self!r}; nothing written (runs here: "
                f"{', '.join(known[:10]) or 'none'}{' ...' if len(known) > 10 else ''})"
            )
        df = pd.DataFrame(rows, columns=list(COLUMNS))
        if out.suffix.lower() == ".csv":
            return atomic_write(out, lambda f: df.to_csv(f, index=False), binary=False)
        return atomic_write(out, lambda f: df.to_parquet(f, index=False))


def _configure_sqlite(engine: Any) -> None:
    """WAL lets readers run beside a writer; the busy timeout makes writers wait instead of failing.

    pysqlite's own implicit BEGIN is turned off so that writes can start with
    BEGIN IMMEDIATE (taking the lock up front avoids deadlocked lock upgrades).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("metanas_write") else "BEGIN")
