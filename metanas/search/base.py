"""The `Strategy` interface shared by every search algorithm.

A strategy proposes archs with `ask(n)` and learns their scores with
`tell(archs, fitnesses, costs)`; the runner owns evaluation, logging and
checkpoints. Every proposal is feasible (a predicate supplied by the caller, e.g.
a parameter budget) and new (never an arch already asked or told), and every
sampling loop is bounded so a tight budget cannot hang a search. All randomness
comes from one seeded `random.Random`, whose state is part of `state_dict()`, so a
resumed search proposes exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from metanas.space import ArchConfig, SearchSpace

Feasible = Callable[[ArchConfig], bool]
Sampler = Callable[[random.Random], ArchConfig]
Costs = Mapping[str, float]

ORIGIN_RANDOM = "random"
ORIGIN_EVOLVED = "evolved"
DEFAULT_MAX_TRIES = 500


def _always_feasible(arch: ArchConfig) -> bool:
    return True


def rng_to_json(rng: random.Random) -> list[Any]:
    """`random.Random` state as nested lists (JSON has no tuples)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(state: Sequence[Any]) -> tuple[Any, ...]:
    """The inverse of `rng_to_json`, ready for `Random.setstate`."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


@dataclass(frozen=True)
class Evaluation:
    """One scored arch as a strategy remembers it (`costs` may be None for cost-blind searches)."""

    arch: ArchConfig
    fitness: float
    costs: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "fitness": self.fitness, "costs": self.costs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        costs = data.get("costs")
        return cls(ArchConfig.from_dict(dict(data["arch"])), float(data["fitness"]), dict(costs) if costs else None)


class Strategy(ABC):
    """Ask/tell search over a `SearchSpace` under a feasibility predicate.

    `generation` counts completed `tell` calls; `done` says the strategy wants no more
    evaluations (its schedule is over, or no new feasible arch could be found).
    `sampler(rng)` draws random candidates (default: `space.sample`); pass a
    constraint-aware sampler when plain rejection sampling rarely meets the budget.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        space: SearchSpace,
        feasible: Feasible | None = None,
        seed: int = 0,
        *,
        sampler: Sampler | None = None,
        max_tries: int = DEFAULT_MAX_TRIES,
    ) -> None:
        if max_tries < 1:
            raise ValueError(f"{type(self).__name__}: max_tries must be >= 1, got {max_tries}")
        self.space = space
        self.feasible = feasible or _always_feasible
        self.sampler = sampler
        self.seed = seed
        self.max_tries = max_tries
        self.rng = random.Random(seed)
        self.generation = 0
        self.evaluated: dict[ArchConfig, Evaluation] = {}
        self._pending: dict[ArchConfig, str] = {}
        self._exhausted = False

    # ----- the interface ---------------------------------------------------
    @abstractmethod
    def ask(self, n: int | None = None) -> list[ArchConfig]:
        """Up to `n` new feasible archs to evaluate (default: the strategy's generation size).

        Fewer (possibly none) come back only when the bounded sampling found no more.
        """

    def tell(
        self,
        archs: Sequence[ArchConfig],
        fitnesses: Sequence[float],
        costs: Sequence[Costs] | None = None,
    ) -> None:
        """Record the scores of `archs` (higher fitness is better) and finish one generation."""
        if len(archs) != len(fitnesses):
            raise ValueError(f"tell: {len(archs)} archs but {len(fitnesses)} fitnesses")
        if costs is not None and len(costs) != len(archs):
            raise ValueError(f"tell: {len(archs)} archs but {len(costs)} costs")
        for i, (arch, fitness) in enumerate(zip(archs, fitnesses)):
            f = float(fitness)
            c = None if costs is None else {k: float(v) for k, v in costs[i].items() if v is not None}
            self.evaluated[arch] = Evaluation(arch, -math.inf if math.isnan(f) else f, c)
            self._pending.pop(arch, None)
        self.generation += 1

    @property
    def done(self) -> bool:
        """True once the strategy wants no more evaluations."""
        return self._exhausted or self._schedule_over()

    @abstractmethod
    def _schedule_over(self) -> bool:
        """True when the configured number of generations or samples is reached."""

    def options(self) -> dict[str, Any]:
        """The constructor options (besides space, predicate and sampler) that define this search."""
        return {"seed": self.seed, "max_tries": self.max_tries}

    # ----- state -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot: options, RNG, evaluations and outstanding proposals."""
        return {
            "strategy": self.name,
            "options": self.options(),
            "generation": self.generation,
            "rng": rng_to_json(self.rng),
            "evaluated": [e.to_dict() for e in self.evaluated.values()],
            "pending": [[arch.to_dict(), origin] for arch, origin in self._pending.items()],
            "exhausted": self._exhausted,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot taken by `state_dict` of a strategy built with the same options."""
        if state.get("strategy") != self.name:
            raise ValueError(f"state of strategy {state.get('strategy')!r} cannot be loaded into {self.name!r}")
        if state["options"] != self.options():
            raise ValueError(f"{self.name}: saved options {state['options']} differ from {self.options()}")
        self.generation = int(state["generation"])
        self.rng.setstate(rng_from_json(state["rng"]))
        self.evaluated = {}
        for item in state["evaluated"]:
            e = Evaluation.from_dict(item)
            self.evaluated[e.arch] = e
        self._pending = {ArchConfig.from_dict(a): origin for a, origin in state["pending"]}
        self._exhausted = bool(state["exhausted"])

    # ----- helpers for subclasses -------------------------------------------
    def origin(self, arch: ArchConfig) -> str:
        """How an outstanding proposal was made: `random` or `evolved`."""
        return self._pending.get(arch, ORIGIN_RANDOM)

    def is_new(self, arch: ArchConfig) -> bool:
        return arch not in self.evaluated and arch not in self._pending

    def top(self, k: int) -> list[Evaluation]:
        """The `k` best evaluations by fitness (ties: the earlier evaluation first)."""
        return sorted(self.evaluated.values(), key=lambda e: -e.fitness)[:k]

    def _propose(self, make: Callable[[], ArchConfig], origin: str) -> ArchConfig | None:
        """Call `make` up to `max_tries` times until it yields a new feasible arch, and register it."""
        for _ in range(self.max_tries):
            arch = make()
            if self.is_new(arch) and self.feasible(arch):
                self._pending[arch] = origin
                return arch
        return None

    def _sample(self) -> ArchConfig:
        return self.sampler(self.rng) if self.sampler is not None else self.space.sample(self.rng)

    def _random_batch(self, n: int) -> list[ArchConfig]:
        """`n` new feasible random archs (fewer if the bounded search runs dry)."""
        out = []
        for _ in range(n):
            arch = self._propose(self._sample, ORIGIN_RANDOM)
            if arch is None:
                break
            out.append(arch)
        return out

    def _finish_ask(self, archs: list[ArchConfig]) -> list[ArchConfig]:
        """Mark the strategy exhausted when a request produced nothing new."""
        if not archs:
            self._exhausted = True
        return archs
