"""Single-objective evolution as in AutoFormer (Chen et al. 2021).

Generation 0 is `population_size` random feasible archs. Every later generation
takes the `parents` best archs evaluated so far (the top-k over all generations,
which is what AutoFormer's keep-top-k list amounts to) and makes `mutation_count`
mutants and `crossover_count` crossover children. A child is kept only if it meets
the constraint and was never evaluated or proposed before; otherwise it is redrawn
(bounded), and a generation that cannot be filled by variation is topped up with
random feasible archs so every generation costs the same number of evaluations.
"""

from __future__ import annotations

from typing import Any

from metanas.search.base import (
    DEFAULT_MAX_TRIES,
    ORIGIN_EVOLVED,
    Feasible,
    Sampler,
    Strategy,
)
from metanas.space import ArchConfig, SearchSpace


class Evolution(Strategy):
    """AutoFormer-style evolution: top-k parents, mutation and crossover, de-duplicated offspring."""

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        feasible: Feasible | None = None,
        seed: int = 0,
        *,
        population_size: int = 50,
        generations: int = 20,
        parents: int = 10,
        mutation_count: int | None = None,
        crossover_count: int | None = None,
        mutation_prob: float = 0.2,
        depth_prob: float = 0.4,
        hidden_prob: float = 0.4,
        crossover_prob: float = 0.5,
        sampler: Sampler | None = None,
        max_tries: int = DEFAULT_MAX_TRIES,
    ) -> None:
        """`mutation_count`/`crossover_count` default to half the population each (AutoFormer: 25/25)."""
        super().__init__(space, feasible, seed, sampler=sampler, max_tries=max_tries)
        if population_size < 1 or generations < 1 or parents < 1:
            raise ValueError(
                f"Evolution: population_size, generations and parents must be >= 1, "
                f"got {population_size}, {generations}, {parents}"
            )
        if mutation_count is None and crossover_count is None:
            mutation_count = population_size // 2
        if mutation_count is None:
            mutation_count = population_size - crossover_count
        if crossover_count is None:
            crossover_count = population_size - mutation_count
        if mutation_count < 0 or crossover_count < 0 or mutation_count + crossover_count < 1:
            raise ValueError(
                f"Evolution: mutation_count and crossover_count must be >= 0 and not both 0, "
                f"got {mutation_count}, {crossover_count}"
            )
        for name, p in (
            ("mutation_prob", mutation_prob),
            ("depth_prob", depth_prob),
            ("hidden_prob", hidden_prob),
            ("crossover_prob", crossover_prob),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Evolution: {name} must be in [0, 1], got {p}")
        self.population_size = population_size
        self.generations = generations
        self.parents = parents
        self.mutation_count = mutation_count
        self.crossover_count = crossover_count
        self.mutation_prob = mutation_prob
        self.depth_prob = depth_prob
        self.hidden_prob = hidden_prob
        self.crossover_prob = crossover_prob

    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "population_size": self.population_size,
            "generations": self.generations,
            "parents": self.parents,
            "mutation_count": self.mutation_count,
            "crossover_count": self.crossover_count,
            "mutation_prob": self.mutation_prob,
            "depth_prob": self.depth_prob,
            "hidden_prob": self.hidden_prob,
            "crossover_prob": self.crossover_prob,
        }

    def _schedule_over(self) -> bool:
        return self.generation >= self.generations

    def mutate(self, arch: ArchConfig) -> ArchConfig:
        return self.space.mutate(arch, self.rng, self.mutation_prob, self.depth_prob, self.hidden_prob)

    def ask(self, n: int | None = None) -> list[ArchConfig]:
        n = n or self.population_size
        if not self.evaluated:
            return self._finish_ask(self._random_batch(n))
        parents = [e.arch for e in self.top(self.parents)]
        n_mut = round(n * self.mutation_count / (self.mutation_count + self.crossover_count))

        def mutant() -> ArchConfig:
            return self.mutate(self.rng.choice(parents))

        def cross() -> ArchConfig:
            if len(parents) < 2:
                return mutant()
            a, b = self.rng.sample(parents, 2)
            return self.space.crossover(a, b, self.rng, self.crossover_prob)

        out = []
        for i in range(n):
            child = self._propose(mutant if i < n_mut else cross, ORIGIN_EVOLVED)
            if child is not None:
                out.append(child)
        out.extend(self._random_batch(n - len(out)))
        return self._finish_ask(out)
