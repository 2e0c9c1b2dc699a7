"""The benchmark protocol of one task: its budget, its feasible region and the targets a search must reach.

The budget is a quantile of the non-embedding params of uniformly random archs of the
task's space, so every space admits the same share of itself (a fixed fraction of the
largest arch would be loose in one space and infeasible in another). A target is a
fraction of the range of a fixed reference sample of random feasible archs: 0.98 means
98% of the way from the worst to the best of that sample. Both are seeded by the space's
signature, so every method, seed and machine is measured against the same numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from metanas.cost import Budget, CostModel
from metanas.space import ArchConfig, SearchSpace

DEFAULT_BUDGET_QUANTILE = 0.25
DEFAULT_REFERENCE = 1000
PRIMARY_TARGET = 0.98
BUDGET_DRAWS = 4000
SAMPLER_TRIES = 200


class BenchTarget:
    """One task's space under a budget: feasibility, constrained sampling, costs and the reference sample.

    `label` names the budget in the reference sample's seed, so two budgets get two samples.
    """

    def __init__(self, name: str, cost_model: CostModel, budget: Budget, label: str) -> None:
        self.name = name
        self.space = cost_model.space
        self.cost_model = cost_model
        self.budget = cost_model.check_feasible(budget)
        self.label = label

    @classmethod
    def from_quantile(cls, name: str, space: SearchSpace, budget_quantile: float, seq_len: int) -> BenchTarget:
        """The benchmark's budget: non-embedding params at `budget_quantile` of uniformly random archs."""
        if not 0.0 < budget_quantile <= 1.0:
            raise ValueError(f"budget quantile must be in (0, 1], got {budget_quantile!r}")
        rng = random.Random(f"budget:{space.signature()}")
        sizes = [space.params(space.sample(rng), embeddings=False) for _ in range(BUDGET_DRAWS)]
        limit = float(np.quantile(sizes, budget_quantile))
        cost_model = CostModel(space, seq_len=seq_len)
        return cls(name, cost_model, Budget(non_embedding_params=limit, seq_len=seq_len), str(budget_quantile))

    @property
    def limit(self) -> float:
        """The non-embedding params limit (the benchmark's budget), or inf when the budget has none."""
        value = self.budget.limits().get("non_embedding_params")
        return float(value) if value is not None else float("inf")

    def feasible(self, arch: ArchConfig) -> bool:
        return self.cost_model.feasible(arch, self.budget)

    def sampler(self, rng: random.Random) -> ArchConfig:
        return self.cost_model.sample_feasible(rng, self.budget, SAMPLER_TRIES)

    def costs(self, arch: ArchConfig) -> dict[str, float]:
        return self.cost_model.costs(arch)

    def reference(self, n: int) -> list[ArchConfig]:
        """`n` distinct uniformly random feasible archs, the same for every run: what fixes the targets."""
        rng = random.Random(f"reference:{self.space.signature()}:{self.label}")
        out: dict[ArchConfig, None] = {}
        for _ in range(50 * n):
            if len(out) == n:
                break
            out[self.sampler(rng)] = None
        return list(out)


def reference_range(target: BenchTarget, fitness: Callable[[ArchConfig], float], n: int) -> dict[str, float]:
    """The worst and best fitness of the reference sample: the 0 and 1 of normalized fitness."""
    values = [fitness(a) for a in target.reference(n)]
    return {"f_min": float(min(values)), "f_ref": float(max(values)), "n": len(values)}


def best_so_far(trace: Sequence[float], evals: int) -> np.ndarray:
    """Best fitness after 1..evals evaluations (a run that stopped early keeps its last best)."""
    if not trace:
        return np.full(evals, -np.inf)
    best = np.maximum.accumulate(np.asarray(trace, dtype=float))[:evals]
    return np.concatenate([best, np.full(evals - len(best), best[-1])])


def normalized(values: np.ndarray | float, f_min: float, f_ref: float) -> np.ndarray:
    """Fitness on the reference scale: 0 the worst reference arch, 1 the best."""
    span = f_ref - f_min
    v = np.asarray(values, dtype=float)
    return (v - f_min) / span if span > 0 else np.zeros_like(v)


def evals_to(trace: Sequence[float], target: float, evals: int) -> int:
    """Evaluations until best-so-far >= `target` (a raw fitness); evals + 1 when never."""
    hit = np.nonzero(best_so_far(trace, evals) >= target)[0]
    return int(hit[0]) + 1 if hit.size else evals + 1
