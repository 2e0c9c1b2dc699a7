"""`metanas bench`: replay strategies on the published tables and summarize them per task and over tasks.

The statistical unit is the task: each strategy's per-task median (over seeds) is the
task's figure, and the overall figure is the median of those over tasks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from metanas.bench.pool import replay_parallel
from metanas.bench.protocol import DEFAULT_BUDGET_QUANTILE, DEFAULT_REFERENCE, PRIMARY_TARGET, BenchTarget
from metanas.bench.replay import Lookup, check_strategies, replay_run, source_records, summarize
from metanas.bench.tablefile import BenchTask, load_bench_table

RESULT_FORMAT = "metanas.bench-replay/1"


class LiveTables:
    """Fitness from the task suite's trained supernets: a miss evaluates the arch, and the table grows."""

    def __init__(self, cache: str | Path, suite: str | Path | None = None) -> None:
        from metanas.tasks import load_suite
        from metanas.tasks.table import TaskTable

        self._suite = load_suite(suite)
        self._cache = Path(cache)
        self._table = TaskTable
        self._open: dict[str, Any] = {}

    def table(self, task: str) -> Any:
        if task not in self._open:
            self._open[task] = self._table(self._suite, self._suite.task(task), self._cache)
        return self._open[task]

    def lookup(self, task: str) -> Lookup:
        return self.table(task).fitness

    def evaluator(self, task: str) -> Any:
        return self.table(task).evaluator


def _check_tasks(tasks: Mapping[str, BenchTask], names: Sequence[str] | None) -> list[str]:
    if not names:
        return sorted(tasks)
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise ValueError(
            f"unknown task {', '.join(map(repr, unknown))}; tasks in the table: {', '.join(sorted(tasks))}"
        )
    return list(names)


def _check_jobs(jobs: int, live: LiveTables | None) -> None:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if jobs > 1 and live is not None:
        raise ValueError(
            f"jobs={jobs} replays on the table alone, but live evaluation runs the task's supernet in this process "
            "and grows its table: replay with --live and jobs 1"
        )


def bench_task(
    tasks: Mapping[str, BenchTask],
    name: str,
    strategies: Sequence[str],
    seeds: int,
    evals: int,
    budget_quantile: float = DEFAULT_BUDGET_QUANTILE,
    reference: int = DEFAULT_REFERENCE,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    live: LiveTables | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Every strategy and seed on task `name`, `jobs` runs at a time: per-strategy summaries, the reference range,
    the raw traces."""
    _check_jobs(jobs, live)
    task = tasks[name]
    target = BenchTarget.from_quantile(name, task.space, budget_quantile, task.seq_len)
    lookup = live.lookup(name) if live is not None else task.fitness
    ref_archs = target.reference(reference)
    values = [lookup(a) for a in ref_archs]
    ref = {"f_min": float(min(values)), "f_ref": float(max(values)), "n": len(values)}
    sources = source_records(tasks, name) if any(s == "warm_evolution" for s in strategies) else []
    options = options or {}
    out: dict[str, Any] = {"reference": ref, "budget_non_embedding_params": target.limit, "strategies": {}, "runs": {}}
    if jobs > 1:
        pairs = [(strategy, seed) for strategy in strategies for seed in range(seeds)]
        with tqdm(total=len(pairs), desc=name, unit="run", leave=False, dynamic_ncols=True) as bar:
            done = replay_parallel(task, target, pairs, evals, options, sources, jobs, lambda _: bar.update())
        by_strategy = {strategy: [r for r in done if r["strategy"] == strategy] for strategy in strategies}
    else:
        by_strategy = {}
        for strategy in strategies:
            runs = []
            for seed in tqdm(range(seeds), desc=f"{name} {strategy}", unit="seed", leave=False, dynamic_ncols=True):
                runs.append(
                    replay_run(
                        target,
                        lookup,
                        strategy,
                        seed,
                        evals,
                        options.get(strategy),
                        task.info["task_meta"],
                        sources,
                        live.evaluator(name) if live is not None else None,
                    )
                )
            by_strategy[strategy] = runs
    for strategy, runs in by_strategy.items():
        out["strategies"][strategy] = summarize(runs, ref, evals)
        out["runs"][strategy] = [
            {k: r[k] for k in ("seed", "trace", "seconds", "strategy_seconds", "extra")} for r in runs
        ]
    return out


def overall(per_task: Mapping[str, Mapping[str, Any]], strategies: Sequence[str]) -> dict[str, Any]:
    """Over tasks (the unit): median of per-task medians of evaluations to the primary target and final best."""
    key = f"evals_to_{PRIMARY_TARGET:g}"
    out = {}
    for s in strategies:
        figures = [t["strategies"][s] for t in per_task.values()]
        out[s] = {
            f"median_{key}": statistics.median(f[key]["median"] for f in figures),
            "success": statistics.fmean(f[key]["success"] for f in figures),
            "median_final_best": statistics.median(f["final_best"]["median"] for f in figures),
            "seconds": sum(f["seconds"]["total"] for f in figures),
        }
    return out


def run_bench(
    path: str | Path,
    task_names: Sequence[str] | None,
    strategies: Sequence[str],
    seeds: int = 10,
    evals: int = 256,
    budget_quantile: float = DEFAULT_BUDGET_QUANTILE,
    reference: int = DEFAULT_REFERENCE,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    live: LiveTables | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Replay `strategies` x `seeds` on the named tasks of the table file at `path` (all tasks by default), `jobs`
    runs at a time in as many processes (1: in this one)."""
    check_strategies(strategies)
    strategies = list(dict.fromkeys(strategies))  # a name given twice is one strategy
    if seeds < 1 or evals < 2:
        raise ValueError(f"seeds must be >= 1 and evals >= 2, got {seeds} and {evals}")
    _check_jobs(jobs, live)
    tasks = load_bench_table(path)
    names = _check_tasks(tasks, task_names)
    started = time.perf_counter()
    per_task = {
        n: bench_task(tasks, n, strategies, seeds, evals, budget_quantile, reference, options, live, jobs)
        for n in names
    }
    return {
        "format": RESULT_FORMAT,
        "table": Path(path).name,
        "settings": {
            "seeds": seeds,
            "evals": evals,
            "budget_quantile": budget_quantile,
            "reference": reference,
            "options": dict(options or {}),
            "live": live is not None,
            "jobs": jobs,
        },
        "tasks": per_task,
        "overall": overall(per_task, strategies),
        "seconds": time.perf_counter() - started,
    }


def format_overall(result: Mapping[str, Any]) -> str:
    """The over-tasks summary as a Markdown table."""
    key = f"median_evals_to_{PRIMARY_TARGET:g}"
    lines = [
        f"| strategy | median evals to {PRIMARY_TARGET:g} | success | final best (normalized) | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["overall"].items():
        figures = f"{row[key]:.1f} | {row['success']:.2f} | {row['median_final_best']:.3f} | {row['seconds']:.1f}"
        lines.append(f"| {name} | {figures} |")
    return "\n".join(lines)
