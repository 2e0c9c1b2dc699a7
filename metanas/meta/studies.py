"""Shared studies: the tables through which many worker processes run one search.

A study is one search that any number of workers (on one machine or many) run
together through the history database. Its tables live beside `runs` and
`evaluations` and are created on first use (older stores gain them, nothing else
changes):

- `studies`: one row per study: the config that defines it (a worker started with
  another is refused), the open generation and the strategy's state after it asked
  for that generation's archs (JSON), and the status;
- `study_trials`: one row per proposed arch (unique per study): `waiting`, then
  `running` once a worker claims it (worker id, heartbeat, number of claims), then
  `done` (its result, written in the same transaction as its `evaluations` row) or
  `failed` (its second claim went stale too);
- `study_workers`: one row per worker: host, pid, heartbeat, evaluations, status.

A `running` claim whose heartbeat is older than the study's stale timeout is
released: the next worker that looks for work claims it again, once. Heartbeats and
timeouts are the workers' clocks (Unix seconds), so machines sharing a study need
synchronized clocks (NTP). All transactions go through `HistoryStore.transaction`
(retried on lock conflicts); on PostgreSQL, creating a study or its tables takes an
advisory lock and claims use `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    inspect,
    select,
    text,
    update,
)

from metanas.meta.history import EvalRecord, HistoryStore, evals_table

STUDY_STATUSES = ("running", "finished")
TRIAL_STATUSES = ("waiting", "running", "done", "failed")
WORKER_STATUSES = ("running", "finished", "failed", "interrupted")  # `stale` is a running one whose heartbeat stopped
MAX_CLAIMS = 2  # a stale claim is released and evaluated again, once
_ADVISORY_KEY = 0x6D657461  # "meta": serializes creating studies (and their tables) on PostgreSQL

study_metadata = MetaData()
studies_table = Table(
    "studies",
    study_metadata,
    Column("study", String(255), primary_key=True),
    Column("task_id", String(255), nullable=False),
    Column("strategy", String(255), nullable=False),
    Column("config", Text, nullable=False),
    Column("created", Double, nullable=False),
    Column("status", String(16), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("stale_seconds", Double, nullable=False),
)
trials_table = Table(
    "study_trials",
    study_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study", String(255), nullable=False, index=True),
    Column("generation", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("arch", Text, nullable=False),
    Column("origin", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("worker", String(255)),
    Column("heartbeat", Double),
    Column("claims", Integer, nullable=False),
    Column("fitness", Double),
    Column("metric", Double),
    Column("costs", Text),
    Column("seconds", Double),
    Column("record_id", Integer),
    UniqueConstraint("study", "arch", name="uq_study_trials_arch"),
    UniqueConstraint("study", "generation", "position", name="uq_study_trials_position"),
)
workers_table = Table(
    "study_workers",
    study_metadata,
    Column("study", String(255), primary_key=True),
    Column("worker", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", Double, nullable=False),
    Column("heartbeat", Double, nullable=False),
    Column("status", String(16), nullable=False),
    Column("evaluations", Integer, nullable=False),
)

Proposal = tuple[str, str]  # (arch JSON, origin)


@dataclass(frozen=True)
class Trial:
    """One proposed arch of a study, as a worker sees it."""

    id: int
    generation: int
    position: int
    arch: str
    origin: str
    status: str
    worker: str | None
    claims: int
    fitness: float | None = None
    metric: float | None = None
    costs: dict[str, Any] | None = None
    seconds: float | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Trial:
        costs = row["costs"]
        return cls(
            id=row["id"],
            generation=row["generation"],
            position=row["position"],
            arch=row["arch"],
            origin=row["origin"],
            status=row["status"],
            worker=row["worker"],
            claims=row["claims"],
            fitness=row["fitness"],
            metric=row["metric"],
            costs=json.loads(costs) if costs else None,
            seconds=row["seconds"],
        )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _lock_for_creation(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})


def ensure_tables(history: HistoryStore) -> None:
    """Create the study tables in `history` if they are missing (idempotent, safe under concurrency)."""

    def tx(conn: Connection) -> None:
        _lock_for_creation(conn)
        study_metadata.create_all(conn, checkfirst=True)

    history.transaction(tx)


def _trial_rows(study: str, generation: int, proposals: list[Proposal]) -> list[dict[str, Any]]:
    return [
        {
            "study": study,
            "generation": generation,
            "position": i,
            "arch": arch,
            "origin": origin,
            "status": "waiting",
            "claims": 0,
        }
        for i, (arch, origin) in enumerate(proposals)
    ]


def _config_changes(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))


class StudyStore:
    """One study in a history store: open it, claim and complete trials, advance generations, list workers."""

    def __init__(self, history: HistoryStore, study: str) -> None:
        if not study or not study.strip():
            raise ValueError("a study needs a non-empty name")
        self.history, self.study = history, study
        ensure_tables(history)

    # ----- the study ---------------------------------------------------------
    def open(
        self,
        task_id: str,
        strategy: str,
        config: Mapping[str, Any],
        stale_seconds: float,
        first: Callable[[], tuple[dict[str, Any], list[Proposal]]],
    ) -> bool:
        """Create the study with `first()` (its state and generation 0's proposals), or join it.

        Returns True when this call created it. A study of another config is refused before
        anything is written, naming the keys that differ.
        """
        config = json.loads(_dumps(config))

        def tx(conn: Connection) -> bool:
            _lock_for_creation(conn)
            row = conn.execute(select(studies_table).where(studies_table.c.study == self.study)).mappings().first()
            if row is not None:
                changed = _config_changes(json.loads(row["config"]), config)
                if changed:
                    raise ValueError(
                        f"study {self.study!r} in {self.history!r} was started with another recipe or space "
                        f"(differs in: {', '.join(changed)}); nothing was written. Use another search.study name"
                    )
                return False
            state, proposals = first()
            conn.execute(
                insert(studies_table).values(
                    study=self.study,
                    task_id=task_id,
                    strategy=strategy,
                    config=_dumps(config),
                    created=time.time(),
                    status="finished" if not proposals else "running",
                    generation=0,
                    state=_dumps(state),
                    stale_seconds=float(stale_seconds),
                )
            )
            if proposals:
                conn.execute(insert(trials_table), _trial_rows(self.study, 0, proposals))
            return True

        return self.history.transaction(tx)

    def row(self) -> dict[str, Any]:
        """The study's row, its state parsed."""
        with self.history.engine.connect() as conn:
            row = conn.execute(select(studies_table).where(studies_table.c.study == self.study)).mappings().first()
        if row is None:
            raise ValueError(f"no study {self.study!r} in {self.history!r}")
        return {**row, "config": json.loads(row["config"]), "state": json.loads(row["state"])}

    def trials(self, generation: int | None = None) -> list[Trial]:
        """The study's trials in (generation, position) order."""
        q = select(trials_table).where(trials_table.c.study == self.study)
        if generation is not None:
            q = q.where(trials_table.c.generation == generation)
        q = q.order_by(trials_table.c.generation, trials_table.c.position)
        with self.history.engine.connect() as conn:
            return [Trial.from_row(r) for r in conn.execute(q).mappings()]

    # ----- workers -----------------------------------------------------------
    def register_worker(self, worker: str, host: str, pid: int) -> None:
        now = time.time()

        def tx(conn: Connection) -> None:
            conn.execute(
                insert(workers_table).values(
                    study=self.study,
                    worker=worker,
                    host=host,
                    pid=pid,
                    started=now,
                    heartbeat=now,
                    status="running",
                    evaluations=0,
                )
            )

        self.history.transaction(tx)

    def finish_worker(self, worker: str, status: str) -> None:
        if status not in WORKER_STATUSES:
            raise ValueError(f"worker status must be one of {list(WORKER_STATUSES)}, got {status!r}")

        def tx(conn: Connection) -> None:
            w = workers_table.c
            conn.execute(
                update(workers_table)
                .where(w.study == self.study, w.worker == worker)
                .values(status=status, heartbeat=time.time())
            )

        self.history.transaction(tx)

    def heartbeat(self, worker: str, trial_id: int | None) -> None:
        """Say this worker (and its claim on `trial_id`) is alive."""
        now = time.time()

        def tx(conn: Connection) -> None:
            if trial_id is not None:
                t = trials_table.c
                conn.execute(
                    update(trials_table)
                    .where(t.id == trial_id, t.worker == worker, t.status == "running")
                    .values(heartbeat=now)
                )
            w = workers_table.c
            conn.execute(update(workers_table).where(w.study == self.study, w.worker == worker).values(heartbeat=now))

        self.history.transaction(tx)

    # ----- trials ------------------------------------------------------------
    def claim(self, worker: str, generation: int, stale_seconds: float) -> Trial | None:
        """Claim the first waiting trial of `generation`, else a stale one (released once; failed the second time)."""
        t = trials_table.c

        def tx(conn: Connection) -> Trial | None:
            now = time.time()
            base = select(trials_table).where(t.study == self.study, t.generation == generation)
            waiting = base.where(t.status == "waiting")
            stale = base.where(t.status == "running", t.heartbeat < now - stale_seconds)
            for q in (waiting, stale):
                row = conn.execute(q.order_by(t.position).limit(1).with_for_update(skip_locked=True)).mappings().first()
                if row is None:
                    continue
                if row["status"] == "running" and row["claims"] >= MAX_CLAIMS:
                    conn.execute(
                        update(trials_table)
                        .where(t.id == row["id"])
                        .values(status="failed", fitness=-math.inf, heartbeat=now, seconds=0.0)
                    )
                    return self._after_failure(conn, dict(row))
                conn.execute(
                    update(trials_table)
                    .where(t.id == row["id"])
                    .values(status="running", worker=worker, heartbeat=now, claims=row["claims"] + 1)
                )
                return Trial.from_row({**row, "status": "running", "worker": worker, "claims": row["claims"] + 1})
            return None

        return self.history.transaction(tx)

    @staticmethod
    def _after_failure(conn: Connection, row: dict[str, Any]) -> Trial:
        """The trial marked failed (its claims ran out): returned so the caller looks for work again."""
        return Trial.from_row({**row, "status": "failed", "fitness": -math.inf})

    def complete(self, trial: Trial, worker: str, result: Mapping[str, Any], record: EvalRecord | None) -> bool:
        """Store `trial`'s result and its history record in one transaction, if the claim is still this worker's.

        False (and nothing written) when the claim was released meanwhile and taken by another worker.
        """
        t, w = trials_table.c, workers_table.c

        def tx(conn: Connection) -> bool:
            record_id = None
            owned = conn.execute(
                select(t.id)
                .where(t.id == trial.id, t.worker == worker, t.status == "running", t.claims == trial.claims)
                .with_for_update()
            ).first()
            if owned is None:
                return False
            if record is not None:
                record_id = conn.execute(insert(evals_table).values(**record.to_row())).inserted_primary_key[0]
            conn.execute(
                update(trials_table)
                .where(t.id == trial.id)
                .values(
                    status="done",
                    fitness=float(result["fitness"]),
                    metric=float(result["metric"]),
                    costs=_dumps(result["costs"]),
                    seconds=float(result["seconds"]),
                    heartbeat=time.time(),
                    record_id=record_id,
                )
            )
            conn.execute(
                update(workers_table)
                .where(w.study == self.study, w.worker == worker)
                .values(evaluations=w.evaluations + 1, heartbeat=time.time())
            )
            return True

        return self.history.transaction(tx)

    def advance(
        self,
        generation: int,
        step: Callable[[dict[str, Any], list[Trial]], tuple[dict[str, Any], list[Proposal]]],
    ) -> bool:
        """Close `generation` once all its trials are done: `step(state, trials so far)` gives the new state and
        the next generation's proposals (none: the study is finished). Only one worker does it: the
        study's row is locked, and a generation already advanced is left alone. True when it was advanced here.
        """
        s = studies_table.c

        def tx(conn: Connection) -> bool:
            row = conn.execute(select(studies_table).where(s.study == self.study).with_for_update()).mappings().first()
            if row is None or row["generation"] != generation or row["status"] != "running":
                return False
            q = select(trials_table).where(trials_table.c.study == self.study)
            rows = conn.execute(q.order_by(trials_table.c.generation, trials_table.c.position)).mappings().all()
            trials = [Trial.from_row(r) for r in rows]
            if any(tr.status not in ("done", "failed") for tr in trials if tr.generation == generation):
                return False
            state, proposals = step(json.loads(row["state"]), trials)
            status = "running" if proposals else "finished"
            nxt = generation + 1 if proposals else generation
            conn.execute(
                update(studies_table)
                .where(s.study == self.study)
                .values(state=_dumps(state), generation=nxt, status=status)
            )
            if proposals:
                conn.execute(insert(trials_table), _trial_rows(self.study, nxt, proposals))
            return True

        return self.history.transaction(tx)


def list_studies(history: HistoryStore, now: float | None = None) -> list[dict[str, Any]]:
    """Every study with its progress and its workers (status `stale` for a running worker that stopped beating)."""
    now = time.time() if now is None else now
    with history.engine.connect() as conn:
        if not inspect(conn).has_table("studies"):  # no study was ever run here; reading creates nothing
            return []
        studies = conn.execute(select(studies_table).order_by(studies_table.c.created)).mappings().all()
        workers = conn.execute(select(workers_table).order_by(workers_table.c.started)).mappings().all()
        trials = conn.execute(select(trials_table.c.study, trials_table.c.status)).all()
    out = []
    for st in studies:
        counts = {k: 0 for k in TRIAL_STATUSES}
        for study, status in trials:
            if study == st["study"]:
                counts[status] += 1
        mine = []
        for w in workers:
            if w["study"] != st["study"]:
                continue
            stale = w["status"] == "running" and now - w["heartbeat"] > st["stale_seconds"]
            mine.append({**w, "status": "stale" if stale else w["status"]})
        out.append(
            {
                "study": st["study"],
                "task_id": st["task_id"],
                "strategy": st["strategy"],
                "status": st["status"],
                "generation": st["generation"],
                "created": st["created"],
                "trials": counts,
                "workers": mine,
            }
        )
    return out
