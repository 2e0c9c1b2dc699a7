"""Single-objective evolution as in AutoFormer (Chen et al. 2021).

Generation 0 is `population_size` random feasible archs. Every later generation
takes the `parents` best archs evaluated so far (the top-k over all generations,
which is what AutoFormer's keep-top-k list amounts to) and makes `mutation_count`
mutants and `crossover_count` crossover children. With `repair`, an over-budget child
is first shrunk until it fits (`Strategy.repaired`); a child is kept only if it meets
the constraint and was never evaluated or proposed before; otherwise it is redrawn
(bounded), and a generation that cannot be filled by variation is topped up with
random feasible archs so every generation costs the same number of evaluations.
"""

from __future__ import annotations

from collections.abc import Callable

from metanas.search.base import ORIGIN_EVOLVED, Strategy
from metanas.search.configs import EvolutionConfig
from metanas.space import ArchConfig


class Evolution(Strategy):
    """AutoFormer-style evolution: top-k parents, mutation and crossover, de-duplicated offspring."""

    name = "evolution"
    Config = EvolutionConfig
    config: EvolutionConfig

    def _schedule_over(self) -> bool:
        return self.generation >= self.config.generations

    def mutate(self, arch: ArchConfig) -> ArchConfig:
        c = self.config
        return self.space.mutate(arch, self.rng, c.mutation_prob, c.depth_prob, c.hidden_prob)

    def child_maker(self, count: int) -> Callable[[int], ArchConfig]:
        """`make(i)`: the i-th of `count` children of the top parents; the first share are mutants, the rest crosses.

        With `repair`, an infeasible child comes back shrunk into the budget where possible (a
        mutant first back towards its parent; a cross, whose genes come from two parents, freely).
        """
        c = self.config
        parents = [e.arch for e in self.top(c.parents)]
        n_mut = round(count * c.mutation_count / (c.mutation_count + c.crossover_count))

        def make(i: int) -> ArchConfig:
            if i < n_mut or len(parents) < 2:
                parent: ArchConfig | None = self.rng.choice(parents)
                child = self.mutate(parent)
            else:
                a, b = self.rng.sample(parents, 2)
                parent, child = None, self.space.crossover(a, b, self.rng, c.crossover_prob)
            return self.repaired(child, parent) if c.repair else child

        return make

    def ask(self, n: int | None = None) -> list[ArchConfig]:
        n = n or self.config.population_size
        if not self.evaluated:
            return self._finish_ask(self._random_batch(n))
        make = self.child_maker(n)
        out = []
        for i in range(n):
            child = self._propose(lambda i=i: make(i), ORIGIN_EVOLVED)
            if child is not None:
                out.append(child)
        out.extend(self._random_batch(n - len(out)))
        return self._finish_ask(out)
