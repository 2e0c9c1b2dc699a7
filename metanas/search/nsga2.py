"""Multi-objective evolution: NSGA-II (Deb et al. 2002) over (fitness, -cost).

Instead of one best arch under a hard budget, NSGA-II returns the trade-off curve:
every arch on the front is the most accurate one found for its cost. Survivors of
each generation are chosen by non-dominated sorting, and within the last front
that fits by crowding distance, which keeps the front spread out. Parents are
picked by binary tournament on (rank, crowding); a child is the mutant of a
crossover of two parents, repaired into the budget when over it (`repair`), and kept
only when feasible and never seen before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from metanas.search.base import ORIGIN_EVOLVED, Costs, Evaluation, Strategy
from metanas.search.configs import NSGA2Config
from metanas.space import ArchConfig

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """True when `a` is at least as good as `b` in every objective and better in one (all maximized)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Indices of `points` grouped into fronts: front 0 is non-dominated, front 1 is dominated only by front 0, ...

    Deb's fast sort, O(M N^2); objectives are maximized. Indices keep their input order within a front.
    """
    n = len(points)
    dominated_by_me: list[list[int]] = [[] for _ in range(n)]
    count = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by_me[i].append(j)
                count[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by_me[j].append(i)
                count[i] += 1
    fronts = []
    current = [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(current)
        nxt = []
        for i in current:
            for j in dominated_by_me[i]:
                count[j] -= 1
                if count[j] == 0:
                    nxt.append(j)
        current = sorted(nxt)
    return fronts


def pareto_front_indices(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points (objectives maximized)."""
    return non_dominated_sort(points)[0] if points else []


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> list[float]:
    """Crowding distance of each index of `front` (aligned with it); extremes get +inf.

    Per objective, the sum over objectives of the normalized gap between a point's two
    neighbours along that objective: large means isolated, so worth keeping.
    """
    distance = [0.0] * len(front)
    if len(front) <= 2:
        return [math.inf] * len(front)
    for m in range(len(points[front[0]])):
        order = sorted(range(len(front)), key=lambda k: points[front[k]][m])
        lo, hi = points[front[order[0]]][m], points[front[order[-1]]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if hi == lo or not math.isfinite(hi - lo):
            continue
        for r in range(1, len(order) - 1):
            gap = points[front[order[r + 1]]][m] - points[front[order[r - 1]]][m]
            distance[order[r]] += gap / (hi - lo)
    return distance


def select_survivors(points: Sequence[Point], k: int) -> list[int]:
    """The `k` indices NSGA-II keeps: whole fronts in order, the last one cut by crowding distance."""
    chosen: list[int] = []
    for front in non_dominated_sort(points):
        if len(chosen) + len(front) <= k:
            chosen.extend(front)
            continue
        distance = crowding_distance(points, front)
        order = sorted(range(len(front)), key=lambda i: -distance[i])
        chosen.extend(front[i] for i in order[: k - len(chosen)])
        break
    return chosen


class NSGA2(Strategy):
    """NSGA-II over (fitness, -costs[cost_key]); `pareto_front()` gives the trade-off found so far."""

    name = "nsga2"
    Config = NSGA2Config
    config: NSGA2Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.population: list[ArchConfig] = []

    @property
    def cost_key(self) -> str:
        return self.config.cost_key

    def _schedule_over(self) -> bool:
        return self.generation >= self.config.generations

    def point(self, e: Evaluation) -> tuple[float, float]:
        """The maximized objective vector of an evaluation: (fitness, -cost)."""
        return (e.fitness, -e.costs[self.cost_key])

    def tell(
        self,
        archs: Sequence[ArchConfig],
        fitnesses: Sequence[float],
        costs: Sequence[Costs] | None = None,
    ) -> None:
        if costs is None or any(c.get(self.cost_key) is None for c in costs):
            raise ValueError(f"NSGA2.tell: every arch needs costs with {self.cost_key!r}")
        super().tell(archs, fitnesses, costs)
        pool = list(dict.fromkeys([*self.population, *archs]))
        points = [self.point(self.evaluated[a]) for a in pool]
        self.population = [pool[i] for i in select_survivors(points, self.config.population_size)]

    def _ranks(self) -> tuple[list[int], list[float]]:
        """Front rank and crowding distance of each population member."""
        points = [self.point(self.evaluated[a]) for a in self.population]
        rank, crowd = [0] * len(points), [0.0] * len(points)
        for r, front in enumerate(non_dominated_sort(points)):
            for i, d in zip(front, crowding_distance(points, front)):
                rank[i], crowd[i] = r, d
        return rank, crowd

    def ask(self, n: int | None = None) -> list[ArchConfig]:
        n = n or self.config.population_size
        if len(self.population) < 2:
            return self._finish_ask(self._random_batch(n))
        rank, crowd = self._ranks()

        def tournament() -> ArchConfig:
            i, j = self.rng.sample(range(len(self.population)), 2)
            better = i if (rank[i], -crowd[i]) <= (rank[j], -crowd[j]) else j
            return self.population[better]

        c = self.config

        def child() -> ArchConfig:
            a, b = tournament(), tournament()
            mixed = self.space.crossover(a, b, self.rng, c.crossover_prob)
            mutant = self.space.mutate(mixed, self.rng, c.mutation_prob, c.depth_prob, c.hidden_prob)
            return self.repaired(mutant, mixed) if c.repair else mutant

        out = []
        for _ in range(n):
            arch = self._propose(child, ORIGIN_EVOLVED)
            if arch is not None:
                out.append(arch)
        out.extend(self._random_batch(n - len(out)))
        return self._finish_ask(out)

    def pareto_front(self) -> list[Evaluation]:
        """Non-dominated evaluations over everything told so far, cheapest first."""
        evals = list(self.evaluated.values())
        front = [evals[i] for i in pareto_front_indices([self.point(e) for e in evals])]
        return sorted(front, key=lambda e: e.costs[self.cost_key])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "population": [a.to_dict() for a in self.population]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = [ArchConfig.from_dict(a) for a in state["population"]]
