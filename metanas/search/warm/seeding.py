"""Previous tasks as seeds of a warm-started search: their incumbents, by similarity to the target.

Similarity is the rank correlation of the anchor scores both tasks have, so a
search copies the best archs of the tasks that behave like the new one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from metanas.meta.history import EvalRecord
from metanas.space import ArchConfig


@dataclass
class SourceTask:
    """One previous task in the target's space: its anchor scores and its archs, best first."""

    task_id: str
    anchor_fitness: dict[ArchConfig, float]
    ranked: list[tuple[ArchConfig, float]] = field(default_factory=list)


def source_tasks(records: Sequence[EvalRecord], anchors: Sequence[ArchConfig]) -> list[SourceTask]:
    """Group records of previous tasks (one space) by task: mean anchor fitness, and archs by best fitness."""
    anchor_set = set(anchors)
    by_task: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        if math.isfinite(r.fitness):
            by_task[r.task_id].append(r)
    out = []
    for task_id in sorted(by_task):
        anchor_scores: dict[ArchConfig, list[float]] = defaultdict(list)
        best: dict[ArchConfig, float] = {}
        for r in by_task[task_id]:
            if r.origin == "anchor" and r.arch in anchor_set:
                anchor_scores[r.arch].append(r.fitness)
            best[r.arch] = max(best.get(r.arch, -math.inf), r.fitness)
        ranked = sorted(best.items(), key=lambda item: -item[1])
        out.append(SourceTask(task_id, {a: float(np.mean(v)) for a, v in anchor_scores.items()}, ranked))
    return out


def task_similarity(target: Mapping[ArchConfig, float], source: Mapping[ArchConfig, float]) -> float:
    """Spearman correlation of the anchor scores both tasks have (fitness is per task, so only ranks compare).

    The anchor block of the task embedding is a copula transform of these scores;
    with anchors missing on either side (budgets), correlating the common ones is
    what stays comparable. Fewer than 3 common anchors, or constant scores: 0.
    """
    common = [a for a in target if a in source and math.isfinite(target[a]) and math.isfinite(source[a])]
    if len(common) < 3:
        return 0.0
    rho = spearmanr([target[a] for a in common], [source[a] for a in common]).statistic
    return 0.0 if np.isnan(rho) else float(rho)


def transferred_incumbents(
    sources: Sequence[SourceTask],
    target_anchor_fitness: Mapping[ArchConfig, float],
    n: int,
    accept: Callable[[ArchConfig], bool],
    n_tasks: int = 2,
) -> list[tuple[ArchConfig, str, float]]:
    """Up to `n` (arch, task id, similarity): the best accepted archs of the `n_tasks` most similar sources.

    Taken round-robin (best of each task, then second best, ...), so one task does
    not fill every slot; tasks with similarity <= 0 give nothing (an anti-correlated
    task's incumbent is no better than a random arch).
    """
    if n <= 0:
        return []
    scored = sorted(
        ((task_similarity(target_anchor_fitness, s.anchor_fitness), s) for s in sources),
        key=lambda item: (-item[0], item[1].task_id),
    )
    chosen = [(sim, s) for sim, s in scored[:n_tasks] if sim > 0]
    queues = [[a for a, _ in s.ranked if accept(a)] for _, s in chosen]
    out: list[tuple[ArchConfig, str, float]] = []
    taken: set[ArchConfig] = set()
    depth = 0
    while len(out) < n and any(depth < len(q) for q in queues):
        for (sim, s), queue in zip(chosen, queues):
            if depth < len(queue) and queue[depth] not in taken and len(out) < n:
                out.append((queue[depth], s.task_id, sim))
                taken.add(queue[depth])
        depth += 1
    return out


def diverse_top(scores: np.ndarray, features: np.ndarray, n: int, min_distance: float) -> list[int]:
    """Indices of up to `n` candidates by decreasing score, skipping any within `min_distance` of one taken.

    When the distance rule leaves fewer than `n`, the best skipped ones fill up, so
    a tight rule never shrinks a generation.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    chosen: list[int] = []
    skipped: list[int] = []
    for i in order:
        if len(chosen) == n:
            break
        if chosen and np.min(np.linalg.norm(features[chosen] - features[i], axis=1)) < min_distance:
            skipped.append(int(i))
        else:
            chosen.append(int(i))
    return chosen + skipped[: n - len(chosen)]
