"""The published benchmark file: every task's arch -> fitness table in one gzipped JSONL file.

Line 1 is a header: the schema version, and per task its metadata (family, teacher,
corpus, metric, task metadata, search space), its row count and the SHA-256 of its
rows. Every other line is one row: `{"task", "arch", "fitness", "metric"}`. A file of
another schema, a task whose rows do not match the count or checksum (a truncated or
edited file), or a row of an unknown task is refused with a message saying which.
Files are written to a temporary name and renamed, so a reader never sees half of one.
Fitness is higher-is-better (a lower-is-better metric negated); `metric` is the raw value.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from metanas._io import atomic_write
from metanas.space import ArchConfig, SearchSpace

FORMAT = "metanas.bench-table"
SCHEMA_VERSION = 1


class OutOfTableError(ValueError):
    """An arch the table does not hold (and no supernet is at hand to evaluate it)."""


@dataclass
class BenchTask:
    """One task's table: its metadata (as `table.meta.json` holds it) and arch -> (fitness, metric)."""

    name: str
    info: dict[str, Any]
    rows: dict[ArchConfig, tuple[float, float]] = field(default_factory=dict)

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.info["space"])

    @property
    def seq_len(self) -> int:
        return int(self.info["task_meta"]["seq_len"])

    def fitness(self, arch: ArchConfig) -> float:
        row = self.rows.get(arch)
        if row is None:
            raise OutOfTableError(
                f"arch {arch.to_json()} is not in the table of task {self.name!r} ({len(self.rows)} archs); "
                "evaluate it live on the task's supernet (metanas bench replay --live SUITE_CACHE) "
                "or replay a strategy and seed the table was generated with"
            )
        return row[0]


def _row_line(task: str, arch: ArchConfig, fitness: float, metric: float) -> str:
    return json.dumps({"task": task, "arch": arch.to_dict(), "fitness": fitness, "metric": metric}, sort_keys=True)


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def write_bench_table(
    path: str | os.PathLike, tasks: Iterable[BenchTask], generated_by: str = "", compress: bool = True
) -> Path:
    """Write `tasks` to `path` (gzipped unless `compress` is False); rows sorted, so equal tables give equal files."""
    tasks = sorted(tasks, key=lambda t: t.name)
    lines: dict[str, list[str]] = {}
    for t in tasks:
        ordered = sorted(t.rows.items(), key=lambda item: item[0].to_json())
        lines[t.name] = [_row_line(t.name, a, f, m) for a, (f, m) in ordered]
    header = {
        "format": FORMAT,
        "schema": SCHEMA_VERSION,
        "generated_by": generated_by,
        "tasks": {t.name: {**t.info, "rows": len(lines[t.name]), "sha256": _digest(lines[t.name])} for t in tasks},
    }

    def write(f: IO[Any]) -> None:
        out = gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) if compress else f
        out.write((json.dumps(header, sort_keys=True) + "\n").encode("utf-8"))
        for t in tasks:
            for line in lines[t.name]:
                out.write((line + "\n").encode("utf-8"))
        if compress:
            out.close()

    return atomic_write(path, write)


def _open_lines(path: Path) -> list[str]:
    with open(path, "rb") as f:
        magic = f.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def _check_header(header: Any, path: Path) -> Mapping[str, Any]:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a metanas benchmark table (its first line has no format {FORMAT!r})")
    if header.get("schema") != SCHEMA_VERSION:
        raise ValueError(
            f"{str(path)!r} has schema {header.get('schema')!r}; this metanas reads schema {SCHEMA_VERSION}: "
            "regenerate it with scripts/build_bench_table.py"
        )
    return header["tasks"]


def load_bench_table(path: str | os.PathLike) -> dict[str, BenchTask]:
    """The tasks of a benchmark file, each checked against the header's row count and checksum."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"benchmark table {str(path)!r} does not exist (build it with scripts/build_bench_table.py)")
    lines = _open_lines(path)
    if not lines:
        raise ValueError(f"{str(path)!r} is empty")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not a metanas benchmark table: {e}") from e
    declared = _check_header(header, path)
    tasks = {
        name: BenchTask(name, {k: v for k, v in info.items() if k not in ("rows", "sha256")})
        for name, info in declared.items()
    }
    raw: dict[str, list[str]] = {name: [] for name in declared}
    for n, line in enumerate(lines[1:], start=2):
        row = json.loads(line)
        name = row.get("task")
        if name not in tasks:
            raise ValueError(f"{str(path)!r} line {n}: task {name!r} is not in the header")
        arch = ArchConfig.from_dict(row["arch"])
        raw[name].append(_row_line(name, arch, row["fitness"], row["metric"]))
        tasks[name].rows[arch] = (float(row["fitness"]), float(row["metric"]))
    for name, info in declared.items():
        if len(raw[name]) != info["rows"] or _digest(raw[name]) != info["sha256"]:
            raise ValueError(
                f"{str(path)!r}: the rows of task {name!r} do not match the header ({len(raw[name])} rows, header "
                f"says {info['rows']}; or the checksum differs): the file is truncated or was edited; regenerate it"
            )
    return tasks
