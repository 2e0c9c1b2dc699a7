"""Single-stage against two-stage differentiable search on task-suite tasks.

Two-stage: the task's supernet as the suite built it (sandwich sampling), then the `differentiable`
search from uniform logits. Single-stage: the same task recipe with `training.sampling: relaxed`
under the benchmark's budget (non-embedding params at the 0.25 quantile), so the architecture
logits train with the weights, then the same search from the trained logits (`init: auto`).

Each search picks its best arch by its own supernet's fitness. Both picks are then scored on the
task's table (the two-stage supernet: the common yardstick the other strategies are measured on)
and normalized by the benchmark's reference sample (0 = the worst, 1 = the best of 1,000 random
feasible archs). That measures the arch each search hands over, not the supernets. Training
seconds of both supernets are measured here, one after the other.

    .venv/bin/python scripts/bench_single_stage.py --tasks kd-docstrings --seeds 3 \\
        --options '{"steps_per_round": 10}' --json docs/benchmarks/single_stage.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from metanas.bench.protocol import DEFAULT_BUDGET_QUANTILE, DEFAULT_REFERENCE, BenchTarget
from metanas.bench.replay import replay_run
from metanas.space import ArchConfig
from metanas.tasks import load_suite
from metanas.tasks.build import task_dir, task_recipe
from metanas.tasks.table import TaskTable
from metanas.training import SUPERNET_FILE, train_supernet

DEFAULT_CACHE = Path(os.environ.get("METANAS_BENCH_CACHE", "~/.cache/metanas/suite")).expanduser()


def relaxed_table(suite: Any, spec: Any, cache: Path, limit: float) -> tuple[TaskTable, float]:
    """The task trained single-stage (cached under <cache>/single-stage/) as a table over its own supernet,
    and the training seconds (0 when it was cached)."""
    table = TaskTable(suite, spec, cache, cache / "single-stage" / task_dir(suite, spec, cache).name)
    seconds = 0.0
    if not (table.run_dir / SUPERNET_FILE).is_file():
        base = task_recipe(suite, spec, cache)
        training = dataclasses.replace(base.training, sampling="relaxed", checkpoint_every=0)
        budget = dataclasses.replace(base.budget, non_embedding_params=limit, seq_len=suite.seq_len)
        started = time.perf_counter()
        train_supernet(dataclasses.replace(base, training=training, budget=budget), table.run_dir)
        seconds = time.perf_counter() - started
    return table, seconds


def two_stage_training_seconds(suite: Any, spec: Any, cache: Path) -> float:
    """The suite recipe's sandwich training, timed again in a scratch directory (the suite's run is not timed)."""
    scratch = cache / "single-stage" / "timing" / spec.name
    if (scratch / SUPERNET_FILE).is_file():
        return float(json.loads((scratch / "seconds.json").read_text())["seconds"])
    base = task_recipe(suite, spec, cache)
    started = time.perf_counter()
    train_supernet(dataclasses.replace(base, training=dataclasses.replace(base.training, checkpoint_every=0)), scratch)
    seconds = time.perf_counter() - started
    (scratch / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    return seconds


def bench_task(args: argparse.Namespace, suite: Any, name: str) -> dict[str, Any]:
    spec = suite.task(name)
    table = TaskTable(suite, spec, args.cache)
    target = BenchTarget.from_quantile(name, table.space, DEFAULT_BUDGET_QUANTILE, suite.seq_len)
    values = [table.fitness(a) for a in target.reference(DEFAULT_REFERENCE)]
    f_min, f_ref = min(values), max(values)
    single, single_seconds = relaxed_table(suite, spec, args.cache, target.limit)
    seconds = {"single_stage": single_seconds, "two_stage": two_stage_training_seconds(suite, spec, args.cache)}
    out: dict[str, Any] = {"budget_non_embedding_params": target.limit, "training_seconds": seconds, "runs": {}}
    for method, own in (("two-stage", table), ("single-stage", single)):
        runs = []
        for seed in range(args.seeds):
            run = replay_run(
                target, own.fitness, "differentiable", seed, args.evals, args.options, own.task_meta, (), own.evaluator
            )
            pick = run["best_arch"]
            score = table.fitness(ArchConfig.from_dict(pick))
            extra = run["extra"]["differentiable"]
            runs.append(
                {
                    "seed": seed,
                    "best_arch": pick,
                    "normalized_on_table": (score - f_min) / (f_ref - f_min),
                    "started_from": extra["started_from"],
                    "seconds": run["seconds"],
                }
            )
            print(f"{name} {method} seed {seed}: {runs[-1]['normalized_on_table']:.3f} ({run['seconds']:.0f} s)")
        out["runs"][method] = runs
        out[method] = {
            "median_normalized_on_table": statistics.median(r["normalized_on_table"] for r in runs),
            "median_seconds": statistics.median(r["seconds"] for r in runs),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="build_suite.py's work directory")
    p.add_argument("--tasks", type=lambda s: s.split(","), default=["kd-docstrings"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--evals", type=int, default=256)
    p.add_argument("--options", type=json.loads, default={}, help="JSON: differentiable options")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    suite = load_suite()
    result = {"settings": {k: v for k, v in vars(args).items() if k not in ("cache", "json")}, "tasks": {}}
    for name in args.tasks:
        result["tasks"][name] = bench_task(args, suite, name)
        print(json.dumps({k: v for k, v in result["tasks"][name].items() if k != "runs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
