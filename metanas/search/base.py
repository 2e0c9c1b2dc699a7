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
from typing import TYPE_CHECKING, Any, ClassVar

from metanas.search.configs import StrategyConfig
from metanas.space import ArchConfig, SearchSpace

if TYPE_CHECKING:
    from pathlib import Path

    from metanas.cost.budget import Budget
    from metanas.cost.model import CostModel
    from metanas.evaluate import Evaluator
    from metanas.meta.history import EvalRecord

Feasible = Callable[[ArchConfig], bool]
Sampler = Callable[[random.Random], ArchConfig]
Costs = Mapping[str, float]

ORIGIN_RANDOM = "random"
ORIGIN_EVOLVED = "evolved"
ORIGIN_POLICY = "policy"  # a learned policy's sample (rl)
ORIGIN_RELAXED = "relaxed"  # projected from a continuous relaxation (differentiable)
ORIGIN_SAMPLED = "sampled"  # a model-based sampler's draw (tpe, gp)


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
class StrategyEvent:
    """Something a strategy decided that the runner logs and tracks (e.g. a warm-start fallback)."""

    message: str
    metrics: dict[str, Any]
    warning: bool = False


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
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(
        self,
        space: SearchSpace,
        feasible: Feasible | None = None,
        seed: int = 0,
        *,
        sampler: Sampler | None = None,
        config: StrategyConfig | None = None,
        **options: Any,
    ) -> None:
        """Options come as a `config` (of type `Config`) or as its fields by keyword."""
        if config is not None and options:
            raise ValueError(f"{type(self).__name__}: pass options either as config or as keywords, not both")
        if config is None:
            config = self.Config(**options)
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.space = space
        self.feasible = feasible or _always_feasible
        self.sampler = sampler
        self.seed = seed
        self.rng = random.Random(seed)
        self.generation = 0
        self.evaluated: dict[ArchConfig, Evaluation] = {}
        self._pending: dict[ArchConfig, str] = {}
        self._exhausted = False
        self.rejections = 0  # candidates `_propose` threw away (infeasible or seen): what repair saves

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
        """What defines this search besides space, predicate and sampler: the seed and the config."""
        return {"seed": self.seed, **self.config.to_dict()}

    def planned_evaluations(self) -> int:
        """How many archs the schedule evaluates (before de-duplication runs it dry)."""
        return self.config.planned_evaluations()

    # ----- hooks for the runner (no-ops unless a strategy needs them) ----------
    @property
    def wants_sources(self) -> bool:
        """Whether the search learns from previous tasks' evaluations (`attach` then receives them)."""
        return False

    def attach(  # noqa: B027 - an optional hook, a no-op unless a strategy needs it
        self, task_meta: Mapping[str, Any], sources: Sequence[EvalRecord], run_dir: Path | None = None
    ) -> None:
        """Called once before the search starts or resumes: what is known of the task, (when
        `wants_sources`) the previous tasks' evaluations in this space, frozen for the whole search,
        and the run directory, where a strategy may keep files its resume needs."""

    @property
    def wants_evaluator(self) -> bool:
        """Whether the search needs the supernet itself, not only scores (`attach_evaluator` then receives it)."""
        return False

    def attach_evaluator(  # noqa: B027 - an optional hook, a no-op unless a strategy needs it
        self, evaluator: Evaluator, cost_model: CostModel, budget: Budget
    ) -> None:
        """Called once before the search starts or resumes when `wants_evaluator`: the evaluator (its
        supernet, objective and fitness batches), the cost model and the absolute budget, for a
        strategy that optimises on the supernet directly (e.g. a differentiable search)."""

    def describe(self) -> StrategyEvent | None:
        """How this search starts (e.g. which predictor it uses), logged once by the runner."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Extra JSON the runner writes into its state file and `search.json` after every generation."""
        return {}

    def events(self, generation: int) -> list[StrategyEvent]:
        """Decisions made while telling `generation`'s results, for the runner to log and track."""
        return []

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
            "rejections": self.rejections,
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
        self.rejections = int(state.get("rejections", 0))  # absent from states saved before it was counted

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
        for _ in range(self.config.max_tries):
            arch = make()
            if self.is_new(arch) and self.feasible(arch):
                self._pending[arch] = origin
                return arch
            self.rejections += 1
        return None

    def repaired(self, arch: ArchConfig, parent: ArchConfig | None = None) -> ArchConfig:
        """`arch` if feasible, else the first feasible arch on a chain of random `space.shrink` moves from it.

        Costs grow with every size (params, FLOPs and latency all do here), so shrinking walks
        an over-budget child back into the budget. With the mutant's `parent`, the chain first
        only undoes the genes the mutation grew (an arch no larger than a feasible parent is
        feasible), keeping the genes it shrank or left alone; then, or without a parent, any
        gene may shrink. Every move lowers one choice, so the chain is bounded; when it ends at
        the smallest arch still infeasible, `arch` comes back unchanged and the caller rejects
        and redraws it. A feasible `arch` costs no randomness: nothing changes under a loose budget.
        """
        if self.feasible(arch):
            return arch
        current = arch
        for floor in (parent, None) if parent is not None else (None,):
            smaller = self.space.shrink(current, self.rng, floor)
            while smaller is not None:
                if self.feasible(smaller):
                    return smaller
                current = smaller
                smaller = self.space.shrink(current, self.rng, floor)
        return arch

    def _sample(self, rng: random.Random | None = None) -> ArchConfig:
        """A random arch from the runner's sampler (or the space), drawn from `rng` (default: the strategy's)."""
        rng = self.rng if rng is None else rng
        return self.sampler(rng) if self.sampler is not None else self.space.sample(rng)

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
