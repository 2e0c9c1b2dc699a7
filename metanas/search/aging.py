"""Regularized (aging) evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
Architecture Search").

The first `population_size` proposals are random feasible archs. After that, each child
is a mutant (repaired into the budget when `repair` is on) of the fittest of
`sample_size` population members drawn uniformly without replacement (a tournament).
Every told arch joins the population at the young end and, once the population holds
more than `population_size`, the oldest member leaves, however fit it is: an arch
survives only as long as its descendants keep being selected, which favours archs that
are good and easy to improve, and stops one lucky early score from steering the search.

Batched (asynchronous) variant: `ask(n)` proposes `n` children (default `batch_size`),
each from its own tournament on the same current population, and the population ages
when they are told, as with parallel workers in the paper. `batch_size=1` is the
sequential algorithm. Until some arch has been told there is no population to select
from, so proposals are random. `num_samples` bounds the evaluations, the first
population included.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from metanas.search.base import ORIGIN_EVOLVED, Costs, Strategy
from metanas.search.configs import AgingEvolutionConfig
from metanas.space import ArchConfig


class AgingEvolution(Strategy):
    """Tournament selection, mutation with repair, and removal of the oldest member; de-duplicated proposals."""

    name = "aging"
    Config = AgingEvolutionConfig
    config: AgingEvolutionConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.population: deque[ArchConfig] = deque()  # oldest first

    def _schedule_over(self) -> bool:
        return len(self.evaluated) >= self.config.num_samples

    def tell(
        self,
        archs: Sequence[ArchConfig],
        fitnesses: Sequence[float],
        costs: Sequence[Costs] | None = None,
    ) -> None:
        """Record the scores, add `archs` to the population in order, and remove the oldest beyond its size."""
        super().tell(archs, fitnesses, costs)
        self.population.extend(archs)
        while len(self.population) > self.config.population_size:
            self.population.popleft()

    def tournament(self, members: Sequence[ArchConfig]) -> ArchConfig:
        """The fittest of `sample_size` of `members` drawn without replacement (ties: the first drawn)."""
        contestants = self.rng.sample(members, min(self.config.sample_size, len(members)))
        return max(contestants, key=lambda a: self.evaluated[a].fitness)

    def child(self, members: Sequence[ArchConfig]) -> ArchConfig:
        """A mutant of a tournament winner, repaired into the budget when `repair` is on."""
        c = self.config
        parent = self.tournament(members)
        mutant = self.space.mutate(parent, self.rng, c.mutation_prob, c.depth_prob, c.hidden_prob)
        return self.repaired(mutant, parent) if c.repair else mutant

    def ask(self, n: int | None = None) -> list[ArchConfig]:
        """The rest of the first population (random), else up to `n` children (default `batch_size`).

        Never more than `num_samples` evaluated and outstanding together; a child that cannot
        be found within `max_tries` draws is replaced by a random feasible arch, as in evolution.
        """
        c = self.config
        proposed = len(self.evaluated) + len(self._pending)
        initial = c.population_size - proposed
        k = min(n or initial, initial) if initial > 0 else min(n or c.batch_size, c.num_samples - proposed)
        if k <= 0:
            return []
        if initial > 0 or not self.population:
            return self._finish_ask(self._random_batch(k))
        members = list(self.population)
        out = []
        for _ in range(k):
            arch = self._propose(lambda: self.child(members), ORIGIN_EVOLVED)
            if arch is not None:
                out.append(arch)
        out.extend(self._random_batch(k - len(out)))
        return self._finish_ask(out)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "population": [a.to_dict() for a in self.population]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = deque(ArchConfig.from_dict(a) for a in state["population"])
