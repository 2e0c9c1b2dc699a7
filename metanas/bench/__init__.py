"""The task suite's fitness tables as a NAS-Bench-style benchmark: query and replay strategies without training.

- `tablefile`: the published file (gzipped JSONL, schema version, per-task checksums);
- `protocol`: a task's params budget, reference sample and targets;
- `replay`: one strategy and seed on a table, schedules sized to the evaluation budget;
- `run`: every strategy x seed x task, summaries with the task as the unit (`metanas bench`).
"""

from __future__ import annotations

from metanas._lazy import lazy_attributes

_NAMES = {
    "BenchTask": "tablefile",
    "OutOfTableError": "tablefile",
    "load_bench_table": "tablefile",
    "write_bench_table": "tablefile",
    "BenchTarget": "protocol",
    "replay_run": "replay",
    "run_bench": "run",
    "LiveTables": "run",
}

__all__ = sorted(_NAMES)
__getattr__ = lazy_attributes(__name__, {name: f"metanas.bench.{module}" for name, module in _NAMES.items()})
