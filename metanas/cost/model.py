"""Costs of subnets at one (seq_len, batch) setting, and budget-constrained sampling.

Parameters and FLOPs come from exact formulas in `SearchSpace`; latency comes from
a callable (a `MeasuredLatency` or a `LatencyPredictor`), because measuring every
candidate during a search costs seconds each while a prediction costs microseconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from metanas.cost.budget import BUDGET_KEYS, Budget
from metanas.cost.latency_predictor import LatencyPredictor
from metanas.space import ArchConfig, RngLike, SearchSpace


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


class CostModel:
    """Costs of archs in `space` at one (seq_len, batch_size) setting.

    `latency` is a callable arch -> ms (e.g. a measurement) or a `LatencyPredictor`;
    without it, latency budgets are refused rather than silently ignored.
    """

    def __init__(
        self,
        space: SearchSpace,
        seq_len: int = 128,
        batch_size: int = 1,
        latency: Callable[[ArchConfig], float] | LatencyPredictor | None = None,
    ) -> None:
        if isinstance(latency, LatencyPredictor):
            if latency.space_signature != space.signature():
                raise ValueError("CostModel: the latency predictor was trained for another search space")
            if (latency.seq_len, latency.batch_size) != (seq_len, batch_size):
                raise ValueError(
                    f"CostModel: the latency predictor is for batch {latency.batch_size} x seq {latency.seq_len}, "
                    f"not batch {batch_size} x seq {seq_len}"
                )
            latency = latency.predict
        self.space = space
        self.seq_len = seq_len
        self.batch_size = batch_size
        self._latency = latency
        self._edge_costs: dict[ArchConfig, dict[str, float]] = {}  # largest and smallest arch, computed once

    @property
    def has_latency(self) -> bool:
        return self._latency is not None

    def _cost(self, arch: ArchConfig, key: str) -> float:
        if key == "params":
            return self.space.params(arch)
        if key == "non_embedding_params":
            return self.space.params(arch, embeddings=False)
        if key == "flops":
            return self.space.flops(arch, self.seq_len)
        if self._latency is None:
            raise ValueError("CostModel: a latency_ms budget needs a latency source (a predictor or a measurement)")
        return float(self._latency(arch))

    def costs(self, arch: ArchConfig) -> dict[str, float]:
        """params, non_embedding_params, flops (per token at seq_len) and, with a latency source, latency_ms.

        The keys match `EvalRecord`'s cost fields, so `EvalRecord(..., **cm.costs(arch))` works.
        """
        keys = BUDGET_KEYS if self.has_latency else BUDGET_KEYS[:3]
        return {k: self._cost(arch, k) for k in keys}

    def teacher_costs(self, need_latency: bool = False) -> dict[str, float]:
        """Costs of the largest arch (the teacher), computed once."""
        if need_latency and not self.has_latency:
            raise ValueError("CostModel: a relative latency_ms budget needs a latency source")
        return self._edge(self.space.largest())

    def _edge(self, arch: ArchConfig) -> dict[str, float]:
        if arch not in self._edge_costs:
            self._edge_costs[arch] = self.costs(arch)
        return self._edge_costs[arch]

    def _absolute(self, budget: Budget) -> Budget:
        if (budget.seq_len, budget.batch_size) != (self.seq_len, self.batch_size):
            raise ValueError(
                f"budget is for batch {budget.batch_size} x seq {budget.seq_len} but the CostModel counts "
                f"batch {self.batch_size} x seq {self.seq_len}; build the CostModel with the budget's setting"
            )
        if budget.latency_ms is not None and not self.has_latency:
            raise ValueError("CostModel: a latency_ms budget needs a latency source (a predictor or a measurement)")
        return budget.resolve(self)

    def feasible(self, arch: ArchConfig, budget: Budget) -> bool:
        """True when `arch` meets every limit; latency, the costly one, is evaluated last."""
        for key, limit in self._absolute(budget).limits().items():
            if self._cost(arch, key) > limit:
                return False
        return True

    def check_feasible(self, budget: Budget) -> Budget:
        """Raise when even the smallest arch breaks a limit; return the absolute budget.

        Every cost grows with every dimension, so the smallest arch has the smallest
        achievable cost and a budget it breaks cannot be met by any arch.
        """
        absolute = self._absolute(budget)
        smallest = self.space.smallest()
        for key, limit in absolute.limits().items():
            need = self._edge(smallest)[key]
            if need > limit:
                raise ValueError(
                    f"infeasible budget: {key} <= {_fmt(limit)} but the smallest arch in the space needs "
                    f"{_fmt(need)} ({smallest.to_json()})"
                )
        return absolute

    def sample_feasible(self, rng: RngLike, budget: Budget, max_tries: int = 1000) -> ArchConfig:
        """A random arch within `budget`.

        Rejection sampling for up to `max_tries` draws keeps the space's distribution;
        when the budget is so tight that none is accepted, a random draw is shrunk one
        choice at a time (a random dimension each step) until it fits. Shrinking ends
        at the smallest arch, which `check_feasible` guarantees fits, so this always
        terminates after a bounded number of cost evaluations.
        """
        if max_tries < 0:
            raise ValueError(f"sample_feasible: max_tries must be >= 0, got {max_tries}")
        r = rng if isinstance(rng, random.Random) else random.Random(rng)
        absolute = self.check_feasible(budget)
        for _ in range(max_tries):
            arch = self.space.sample(r)
            if self.feasible(arch, absolute):
                return arch
        arch = self.space.sample(r)
        while not self.feasible(arch, absolute):
            smaller = self.space.shrink(arch, r)
            if smaller is None:
                raise ValueError(
                    "sample_feasible: the smallest arch no longer fits the budget (a noisy latency source?)"
                )
            arch = smaller
        return arch
