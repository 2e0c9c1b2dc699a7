"""Replay search strategies on a task's fitness table: strategy research without training or a supernet.

A replay drives a strategy through the `Strategy` ask/tell interface exactly as the
search runner does (feasible proposals, costs with every `tell`), but looks fitness up
in the task's table. An arch the table lacks stops the run with `OutOfTableError`,
unless a live lookup is given (the task's trained supernet evaluates it and the table
grows). Each strategy's schedule is sized to the evaluation budget the same way
(`sized_options`), and every run is measured against the task's fixed targets
(`metanas.bench.protocol`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from metanas.bench.protocol import PRIMARY_TARGET, BenchTarget, best_so_far, evals_to, normalized
from metanas.bench.tablefile import BenchTask
from metanas.search.configs import STRATEGY_CONFIGS, WARM_STRATEGY
from metanas.search.registry import make_strategy
from metanas.space import ArchConfig

Lookup = Callable[[ArchConfig], float]
FRACTIONS = (0.95, PRIMARY_TARGET, 0.99, 1.0)
SIZED_FIELDS = ("population_size", "generations", "parents", "sample_size", "num_samples", "repair")
ANCHOR_ROUNDS = 2  # a warm start spends a round on its anchors: its schedule gets spare generations


def check_strategies(names: Sequence[str]) -> None:
    """Every name is a strategy; the error lists the valid ones."""
    unknown = [n for n in names if n not in STRATEGY_CONFIGS]
    if unknown:
        raise ValueError(
            f"unknown search strategy {', '.join(map(repr, unknown))}; valid strategies: {', '.join(STRATEGY_CONFIGS)}"
        )


def sized_options(name: str, evals: int) -> dict[str, Any]:
    """The schedule of strategy `name` for `evals` evaluations (the run is cut at `evals`).

    A config with `for_budget` sizes itself (population, generations, parents); one with
    `num_samples` gets `evals`; NSGA-II gets AutoFormer's shape scaled like evolution's;
    a round-based one (`rounds`, `top_k`) gets enough rounds.
    """
    config = STRATEGY_CONFIGS[name]
    fields = config.option_names()
    if hasattr(config, "for_budget"):
        sized = config.for_budget(evals).to_dict()
        out = {k: sized[k] for k in SIZED_FIELDS if k in sized}
        if name == WARM_STRATEGY:
            out["generations"] += ANCHOR_ROUNDS
        return out
    if "num_samples" in fields:
        return {"num_samples": evals}
    if "population_size" in fields and "generations" in fields:
        population = max(2, round(math.sqrt(2.5 * evals)))
        return {"population_size": population, "generations": math.ceil(evals / population)}
    if "rounds" in fields and "top_k" in fields:
        top_k = config().top_k  # type: ignore[attr-defined]
        return {"rounds": math.ceil(evals / top_k)}
    return {}


def replay_run(
    target: BenchTarget,
    lookup: Lookup,
    name: str,
    seed: int,
    evals: int,
    options: Mapping[str, Any] | None = None,
    task_meta: Mapping[str, Any] | None = None,
    sources: Sequence[Any] = (),
    evaluator: Any = None,
) -> dict[str, Any]:
    """One seed of strategy `name` for up to `evals` evaluations: the fitness trace, origins and wall time."""
    opts = {**sized_options(name, evals), **dict(options or {})}
    if name == "nsga2":
        opts.setdefault("cost_key", "non_embedding_params")
    strategy = make_strategy(name, target.space, target.feasible, seed, sampler=target.sampler, **opts)
    meta = dict(task_meta or {})
    strategy.attach(meta, list(sources) if strategy.wants_sources else [])
    if strategy.wants_evaluator:
        if evaluator is None:
            raise ValueError(
                f"strategy {name!r} optimises on the supernet itself, so it cannot replay on a table alone; "
                "replay with --live SUITE_CACHE (the task's trained supernet)"
            )
        strategy.attach_evaluator(evaluator, target.cost_model, target.budget)
    trace: list[float] = []
    origins: list[str] = []
    proposed: list[ArchConfig] = []
    lookup_seconds = 0.0
    started = time.perf_counter()
    while len(trace) < evals and not strategy.done:
        archs = strategy.ask()[: evals - len(trace)]
        if not archs:
            break
        origins += [strategy.origin(a) for a in archs]
        before = time.perf_counter()
        values = [lookup(a) for a in archs]
        lookup_seconds += time.perf_counter() - before
        trace += values
        proposed += archs
        strategy.tell(archs, values, [target.costs(a) for a in archs])
    seconds = time.perf_counter() - started
    return {
        "strategy": name,
        "seed": seed,
        "trace": trace,
        "origins": origins,
        "seconds": seconds,
        "strategy_seconds": seconds - lookup_seconds,  # the strategy's own work: what a table replay costs
        "extra": strategy.extra_state(),
        "best_arch": proposed[int(np.argmax(trace))].to_dict() if trace else None,  # the first of equal bests
    }


def source_records(tasks: Mapping[str, BenchTask], target: str) -> list[Any]:
    """The other tasks' rows in the target's space, as history records (what a warm start learns from)."""
    from metanas.tasks.table import rows_to_records

    signature = tasks[target].space.signature()
    out = []
    for name, task in sorted(tasks.items()):
        if name != target and task.space.signature() == signature:
            out += rows_to_records(name, task.info, task.rows, list(task.rows), "random")
    return out


def summarize(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, float], evals: int) -> dict[str, Any]:
    """One strategy's runs on one task: evaluations to each target, final best (normalized), wall time."""
    f_min, f_ref = reference["f_min"], reference["f_ref"]
    out: dict[str, Any] = {"runs": len(runs)}
    for fraction in FRACTIONS:
        goal = f_min + fraction * (f_ref - f_min)
        hits = [evals_to(r["trace"], goal, evals) for r in runs]
        out[f"evals_to_{fraction:g}"] = {
            "median": float(statistics.median(hits)),
            "success": sum(h <= evals for h in hits) / len(hits),
            "per_seed": hits,
        }
    finals = [float(normalized(best_so_far(r["trace"], evals)[-1], f_min, f_ref)) for r in runs]
    out["final_best"] = {"median": float(statistics.median(finals)), "per_seed": finals}
    out["seconds"] = {
        "median": float(statistics.median(r["seconds"] for r in runs)),
        "total": sum(r["seconds"] for r in runs),
        "strategy_median": float(statistics.median(r["strategy_seconds"] for r in runs)),
    }
    return out


def curve(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, float], evals: int) -> np.ndarray:
    """Median normalized best-so-far over the runs, after 1..evals evaluations."""
    rows = [normalized(best_so_far(r["trace"], evals), reference["f_min"], reference["f_ref"]) for r in runs]
    return np.median(np.vstack(rows), axis=0)
