"""Fitness of subnets with inherited supernet weights, for the search.

The fitness of an arch is the objective's validation metric on a FIXED subset of
validation batches, so every arch of a run is scored on the same examples and
scores are comparable. Scores are cached by arch (a search revisits parents and
duplicates), and the evaluator keeps counts and wall time so a run can report
evaluations per minute.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import torch

from metanas.space import ArchConfig

if TYPE_CHECKING:  # kept out of the import path: the search runner needs no model code
    from metanas.objectives.base import Objective
    from metanas.supernet.model import ElasticBert


class Evaluator:
    """Scores archs of one supernet with one objective on fixed validation batches.

    `metric(arch)` is the raw validation metric (e.g. `kd_loss`, `accuracy`);
    `fitness(arch)` is the same number signed so that higher is always better
    (lower-is-better metrics are negated, and a NaN metric becomes -inf so a
    diverged subnet ranks last). Each distinct arch costs one forward pass over the
    batches; repeated requests are answered from the cache.
    """

    def __init__(
        self,
        sn: ElasticBert,
        objective: Objective,
        batches: list[dict[str, torch.Tensor]],
        max_batches: int | None = None,
    ) -> None:
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"Evaluator: max_batches must be >= 1, got {max_batches}")
        self.sn = sn
        self.objective = objective
        self.batches = list(batches)[:max_batches]
        if not self.batches:
            raise ValueError("Evaluator: needs at least one validation batch, got none")
        self._cache: dict[ArchConfig, float] = {}
        self.num_evaluations = 0  # archs actually run (cache misses)
        self.cache_hits = 0
        self.eval_seconds = 0.0  # wall time spent in forward passes

    @property
    def metric_name(self) -> str:
        return self.objective.metric_name

    @property
    def higher_is_better(self) -> bool:
        return bool(self.objective.higher_is_better)

    def metric(self, arch: ArchConfig) -> float:
        """The raw validation metric of `arch` (one forward pass over the batches the first time)."""
        cached = self._cache.get(arch)
        if cached is not None:
            self.cache_hits += 1
            return cached
        started = time.perf_counter()
        with torch.inference_mode():
            value = float(self.objective.evaluate(self.sn, arch, self.batches))
        self.eval_seconds += time.perf_counter() - started
        self.num_evaluations += 1
        self._cache[arch] = value
        return value

    def fitness(self, arch: ArchConfig) -> float:
        """`metric(arch)` signed so that higher is better; NaN becomes -inf."""
        return self.to_fitness(self.metric(arch))

    def to_fitness(self, metric: float) -> float:
        """Map a raw metric value to the signed fitness used by the search."""
        if math.isnan(metric):
            return -math.inf
        return metric if self.higher_is_better else -metric

    @property
    def evals_per_minute(self) -> float:
        """Forward evaluations per minute of evaluation wall time (0 before the first)."""
        if self.eval_seconds <= 0:
            return 0.0
        return 60.0 * self.num_evaluations / self.eval_seconds
