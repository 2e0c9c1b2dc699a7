"""Statistics of the transfer benchmark, with the task as the unit (used by bench_transfer.py).

Per task: the evaluations each run (seed) needed to reach a target, on the task's
normalized scale norm(f) = (f - f_min) / (f_ref - f_min), where f_min and f_ref are
the worst and best fitness of the task's reference sample (uniformly random feasible
archs, scored before any run: the targets are fixed in advance). A run that never
reaches the target counts as evals + 1 (censored). Across tasks: medians of the
per-task medians with bootstrap intervals over tasks, per-task speedups aggregated
by geometric mean, and a one-sided Wilcoxon signed-rank test over tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from metanas.bench.protocol import best_so_far, evals_to, normalized

BOOTSTRAP = 2000


def bootstrap_median(values: Sequence[float], seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of the median, resampling the units (tasks)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    meds = np.median(v[rng.integers(0, v.size, (BOOTSTRAP, v.size))], axis=1)
    return [float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))]


def bootstrap_geomean(ratios: Sequence[float], seed: int = 0) -> tuple[float, list[float]]:
    """Geometric mean of per-task ratios and its 95% bootstrap interval over tasks."""
    logs = np.log(np.asarray(ratios, dtype=float))
    if logs.size == 0:
        return math.nan, [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, logs.size, (BOOTSTRAP, logs.size))].mean(axis=1)
    return float(np.exp(logs.mean())), [
        float(np.exp(np.percentile(means, 2.5))),
        float(np.exp(np.percentile(means, 97.5))),
    ]


def wilcoxon_fewer(ours: Sequence[float], theirs: Sequence[float]) -> float | None:
    """One-sided task-level p that `ours` needs fewer evaluations than `theirs` (paired by task)."""
    from scipy.stats import wilcoxon

    d = np.log(np.asarray(theirs, dtype=float)) - np.log(np.asarray(ours, dtype=float))
    if d.size < 2 or np.all(d == 0):
        return None
    return float(wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue)


def per_task_test(ours: Sequence[int], theirs: Sequence[int]) -> float | None:
    """One-sided Mann-Whitney p within a task (seeds are independent runs, not pairs)."""
    from scipy.stats import mannwhitneyu

    if len(ours) < 2 or len(theirs) < 2 or len(set(ours) | set(theirs)) < 2:
        return None
    return float(mannwhitneyu(ours, theirs, alternative="less").pvalue)


def task_evals(runs: Sequence[Mapping[str, Any]], ref: Mapping[str, float], fraction: float, evals: int) -> list[int]:
    """Evaluations to `fraction` of the reference range, one per run."""
    target = ref["f_min"] + fraction * (ref["f_ref"] - ref["f_min"])
    return [evals_to(r["trace"], target, evals) for r in runs]


def summarize_fold(
    by_task: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    refs: Mapping[str, Mapping[str, float]],
    evals: int,
    fractions: Sequence[float],
    ours: str,
    baselines: Sequence[str],
) -> dict[str, Any]:
    """One fold's figures: per-task medians first, then across tasks, at every target fraction."""
    tasks = sorted(by_task)
    methods = sorted({m for t in tasks for m in by_task[t]})
    out: dict[str, Any] = {"tasks": tasks, "targets": {}}
    for fraction in fractions:
        per_task = {
            t: {m: task_evals(by_task[t][m], refs[t], fraction, evals) for m in methods if m in by_task[t]}
            for t in tasks
        }
        medians = {t: {m: float(np.median(v)) for m, v in per_task[t].items()} for t in tasks}
        entry: dict[str, Any] = {
            "per_task_median": medians,
            "evals_to_target": {},
            "speedup_vs": {},
            "p_task_level": {},
        }
        for m in methods:
            values = [medians[t][m] for t in tasks if m in medians[t]]
            entry["evals_to_target"][m] = {
                "median": float(np.median(values)) if values else None,
                "interval": bootstrap_median(values),
                "censored_share": float(np.mean([v > evals for t in tasks for v in per_task[t].get(m, [])] or [0])),
            }
        for b in baselines:
            common = [t for t in tasks if ours in medians[t] and b in medians[t]]
            if not common:
                continue
            ratios = [medians[t][b] / medians[t][ours] for t in common]
            geo, interval = bootstrap_geomean(ratios)
            entry["speedup_vs"][b] = {"geomean": geo, "interval": interval, "per_task": dict(zip(common, ratios))}
            entry["p_task_level"][b] = wilcoxon_fewer(
                [medians[t][ours] for t in common], [medians[t][b] for t in common]
            )
            entry.setdefault("p_per_task", {})[b] = {
                t: per_task_test(per_task[t][ours], per_task[t][b]) for t in common
            }
        present = [b for b in baselines if entry["evals_to_target"].get(b, {}).get("median") is not None]
        if present:
            entry["best_baseline"] = min(present, key=lambda b: entry["evals_to_target"][b]["median"])
        out["targets"][f"{fraction:g}"] = entry
    return out


def curve(runs: Sequence[Mapping[str, Any]], ref: Mapping[str, float], evals: int) -> np.ndarray:
    """Median normalized best-so-far over runs (one task, one method)."""
    rows = [normalized(best_so_far(r["trace"], evals), ref["f_min"], ref["f_ref"]) for r in runs]
    return np.median(np.vstack(rows), axis=0)
