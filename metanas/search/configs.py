"""The options of every search strategy, declared once as small frozen dataclasses.

A strategy's options are its config's fields: the recipe validator, `make_strategy`
and `Strategy.options()` all read them from here, and this module imports nothing
heavy so a recipe can be checked without torch. Configs compose: the variation
probabilities are declared once (`VariationConfig`) and shared by evolution,
NSGA-II and the warm start.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from metanas._options import check_options

DEFAULT_MAX_TRIES = 500
MIN_UNFILTERED_SHARE = 0.1  # the predictor never chooses every evaluation of a warm-started round
WARM_SCORERS = ("meta", "proxy", "target")  # what ranks a warm-started search's proposals
AGING_POPULATION_SHARE = 0.1  # of the evaluations, in the first population of a budget-sized aging evolution
AGING_TOURNAMENT_SHARE = 0.4  # of that population, in each tournament: short searches need selection pressure


def _at_least(owner: str, minimum: int, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def _in_range(owner: str, low: float, high: float, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{owner}: {name} must be in [{low:g}, {high:g}], got {value!r}")


@dataclass(frozen=True)
class StrategyConfig:
    """Options every strategy has: how many draws a proposal may take before the search gives up on it."""

    max_tries: int = DEFAULT_MAX_TRIES
    # How many objectives the strategy optimises: 1 (fitness), 2 (fitness and a cost), or either.
    objective_counts: ClassVar[tuple[int, ...]] = (1, 2)

    def __post_init__(self) -> None:
        _at_least(self.owner, 1, max_tries=self.max_tries)

    @property
    def owner(self) -> str:
        return type(self).__name__.removesuffix("Config")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def planned_evaluations(self) -> int:
        """How many archs the schedule evaluates; each strategy's config says."""
        raise NotImplementedError(f"{type(self).__name__} has no evaluation schedule")


@dataclass(frozen=True)
class RandomConfig(StrategyConfig):
    """Random search: `batch_size` feasible samples per generation, `num_samples` in all."""

    num_samples: int = 1000
    batch_size: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("RandomSearch", 1, num_samples=self.num_samples, batch_size=self.batch_size)

    def planned_evaluations(self) -> int:
        return self.num_samples


@dataclass(frozen=True)
class MutationConfig(StrategyConfig):
    """How mutants are made: per-layer mutation probability, depth/hidden mutation, and repair.

    `repair`: an over-budget child is shrunk one random step at a time until it fits
    (`Strategy.repaired`) instead of being thrown away and redrawn. Under a tight budget
    most raw children are infeasible, so redrawing wastes draws and pulls the offspring
    towards whatever mutation happens to land inside the budget; repair keeps the child
    near its parent. Off by default for evolution, NSGA-II and the warm start (their runs and
    the warm-start guard's tuning stay as they were); on for aging evolution and in
    `EvolutionConfig.for_budget`, the strong cold baselines.
    """

    mutation_prob: float = 0.2
    depth_prob: float = 0.4
    hidden_prob: float = 0.4
    repair: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _in_range(
            self.owner,
            0.0,
            1.0,
            mutation_prob=self.mutation_prob,
            depth_prob=self.depth_prob,
            hidden_prob=self.hidden_prob,
        )
        if not isinstance(self.repair, bool):
            raise ValueError(f"{self.owner}: repair must be true or false, got {self.repair!r}")


@dataclass(frozen=True)
class VariationConfig(MutationConfig):
    """Mutation (`MutationConfig`, repair included) plus uniform crossover mixing `crossover_prob`."""

    crossover_prob: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _in_range(self.owner, 0.0, 1.0, crossover_prob=self.crossover_prob)


@dataclass(frozen=True)
class EvolutionConfig(VariationConfig):
    """AutoFormer's evolution: `generations` of `population_size`, offspring of the top `parents`.

    `mutation_count`/`crossover_count` default to half the population each (AutoFormer: 25/25).
    """

    objective_counts: ClassVar[tuple[int, ...]] = (1,)

    population_size: int = 50
    generations: int = 20
    parents: int = 10
    mutation_count: int | None = None
    crossover_count: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(
            "Evolution", 1, population_size=self.population_size, generations=self.generations, parents=self.parents
        )
        mutation, crossover = self.mutation_count, self.crossover_count
        if mutation is None and crossover is None:
            mutation = self.population_size // 2
        if mutation is None:
            mutation = self.population_size - crossover
        if crossover is None:
            crossover = self.population_size - mutation
        if mutation < 0 or crossover < 0 or mutation + crossover < 1:
            raise ValueError(
                "Evolution: mutation_count and crossover_count must be >= 0 and not both 0, "
                f"got {mutation}, {crossover}"
            )
        object.__setattr__(self, "mutation_count", mutation)
        object.__setattr__(self, "crossover_count", crossover)

    def planned_evaluations(self) -> int:
        return self.population_size * self.generations

    @classmethod
    def for_budget(cls, evaluations: int, **options: Any) -> EvolutionConfig:
        """A config whose schedule fits `evaluations` (leaving fewer than `generations` unused); `options` as given.

        The defaults (50 x 20, top 10) are AutoFormer's for 1000 evaluations; a smaller budget
        keeps their shape instead of running 50 random archs and a handful of generations:
        population ~ sqrt(2.5 x evaluations) (so 1000 gives 50 x 20 and 256 gives 25 x 10),
        generations = evaluations // population rounded, parents = a fifth of the population
        (at least 2, so crossover has two parents). It is meant as a strong cold baseline, so
        `repair` is on unless `options` say otherwise.
        """
        _at_least(f"{cls.__name__}.for_budget", 2, evaluations=evaluations)
        generations = max(1, round(evaluations / math.sqrt(2.5 * evaluations)))
        population = evaluations // generations
        sizes = {"population_size": population, "generations": generations, "parents": max(2, population // 5)}
        return cls(**{**sizes, "repair": True, **options})


@dataclass(frozen=True)
class NSGA2Config(VariationConfig):
    """NSGA-II over (fitness, -cost[`cost_key`])."""

    objective_counts: ClassVar[tuple[int, ...]] = (2,)

    cost_key: str = "params"
    population_size: int = 50
    generations: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("NSGA2", 2, population_size=self.population_size)
        _at_least("NSGA2", 1, generations=self.generations)

    def planned_evaluations(self) -> int:
        return self.population_size * self.generations


@dataclass(frozen=True)
class AgingEvolutionConfig(MutationConfig):
    """Regularized (aging) evolution (Real et al. 2019): `num_samples` evaluations in all.

    A population of `population_size` (first random); each child mutates the best of
    `sample_size` members drawn from it, joins it, and pushes out the oldest member.
    `batch_size` children are proposed per `ask` from the same population.
    """

    objective_counts: ClassVar[tuple[int, ...]] = (1,)

    repair: bool = True  # a new strategy with no runs to keep: repair helps it (see `MutationConfig`)
    population_size: int = 50
    sample_size: int = 10
    num_samples: int = 1000
    batch_size: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(
            "AgingEvolution",
            1,
            population_size=self.population_size,
            sample_size=self.sample_size,
            num_samples=self.num_samples,
            batch_size=self.batch_size,
        )
        if self.sample_size > self.population_size:
            raise ValueError(
                "AgingEvolution: sample_size must be <= population_size (a tournament draws from the population), "
                f"got {self.sample_size} > {self.population_size}"
            )
        if self.population_size > self.num_samples:
            raise ValueError(
                "AgingEvolution: population_size must be <= num_samples (the first population is part of the "
                f"evaluations), got {self.population_size} > {self.num_samples}"
            )

    def planned_evaluations(self) -> int:
        return self.num_samples

    @classmethod
    def for_budget(cls, evaluations: int, **options: Any) -> AgingEvolutionConfig:
        """A config that spends exactly `evaluations`, with the population and tournament scaled to it.

        AGING_POPULATION_SHARE of the budget is the first population (at most 50, the default for
        1000), and a tournament takes AGING_TOURNAMENT_SHARE of the population (at least 2, so selection acts).
        """
        _at_least(f"{cls.__name__}.for_budget", 2, evaluations=evaluations)
        population = max(2, min(50, round(AGING_POPULATION_SHARE * evaluations)))
        sample = max(2, round(AGING_TOURNAMENT_SHARE * population))
        return cls(population_size=population, sample_size=sample, num_samples=evaluations, **options)


@dataclass(frozen=True)
class WarmStartConfig(EvolutionConfig):
    """Evolution warm-started by the meta-predictor (see `metanas.search.warm`).

    `pool_size` random archs are ranked for the first population; each later round
    ranks `candidate_factor` x population offspring by UCB (`beta`); `unfiltered_share`
    of a round is evaluated without the predictor, `random_share` of the first one is
    random; `seed_archs` incumbents of the `seed_tasks` most similar previous tasks
    seed it; `diversity` spaces the picks apart. The predictor is re-adapted with
    `adapt_steps` at `adapt_lr` every round; a target-only model trains
    `target_epochs`. The guard falls back after `guard_patience` losses to the params
    proxy, and to plain evolution below `plain_tau`.
    `warm_start` is which predictor: "auto" (one meta-trained on the user's history when it
    holds enough tasks of this space, else the shipped default when it loads), "off" or a
    file (recipes set it as `search.warm_start`). `scorer` is what ranks the proposals:
    "meta" (the predictor), or one of two baselines on the same rounds that use no
    source task and no predictor file: "proxy" (parameter count, larger is better) and
    "target" (a model fitted on the target's own evaluations only).
    """

    warm_start: str = "auto"
    scorer: str = "meta"
    pool_size: int = 2000
    candidate_factor: int = 10
    unfiltered_share: float = 0.2
    random_share: float = 0.1
    seed_archs: int = 2
    seed_tasks: int = 2
    beta: float = 0.5
    diversity: float = 0.25
    adapt_steps: int = 50
    adapt_lr: float = 2e-3
    target_epochs: int = 200
    guard_patience: int = 2
    plain_tau: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not MIN_UNFILTERED_SHARE <= self.unfiltered_share <= 1.0:
            raise ValueError(
                f"WarmStartEvolution: unfiltered_share must be in [{MIN_UNFILTERED_SHARE}, 1] (the predictor never "
                f"chooses every evaluation), got {self.unfiltered_share}"
            )
        _in_range("WarmStartEvolution", 0.0, 1.0, random_share=self.random_share)
        _at_least("WarmStartEvolution", 1, pool_size=self.pool_size, candidate_factor=self.candidate_factor)
        _at_least("WarmStartEvolution", 1, target_epochs=self.target_epochs, guard_patience=self.guard_patience)
        _at_least(
            "WarmStartEvolution",
            0,
            seed_archs=self.seed_archs,
            seed_tasks=self.seed_tasks,
            adapt_steps=self.adapt_steps,
        )
        if self.beta < 0 or self.diversity < 0:
            raise ValueError("WarmStartEvolution: beta and diversity must be >= 0")
        if self.scorer not in WARM_SCORERS:
            raise ValueError(
                f"WarmStartEvolution: scorer must be one of {', '.join(WARM_SCORERS)}, got {self.scorer!r}"
            )
        if self.scorer != "meta" and self.warm_start != "auto":
            raise ValueError(
                f"WarmStartEvolution: scorer={self.scorer!r} ranks without a predictor file, so warm_start must "
                f"stay 'auto', got {self.warm_start!r}"
            )


RL_REWARD_NORMS = ("rank", "zscore")  # how the REINFORCE controller makes fitness scale-free within a run


@dataclass(frozen=True)
class RLConfig(StrategyConfig):
    """ENAS-style REINFORCE controller (`metanas.search.rl`): `num_samples` evaluations, `batch_size` per update.

    One policy-gradient step (Adam, `lr`) per told batch; `entropy_weight` scales the
    entropy bonus that keeps the policy from collapsing early; the advantage is the
    normalised reward minus a moving-average baseline (`baseline_decay`). `reward_norm`
    makes rewards independent of the loss scale: "rank" (quantile among the run's
    evaluations so far, robust to outliers) or "zscore" (standardised by the run's
    mean and standard deviation, clipped to +-3). `repair`: an over-budget sample is
    shrunk into the budget (the policy then learns from the arch it got) instead of redrawn.
    """

    objective_counts: ClassVar[tuple[int, ...]] = (1,)

    num_samples: int = 1000
    batch_size: int = 5  # more, smaller updates learn faster at equal evaluations (measured: 5 beats 10 and 20)
    lr: float = 0.2
    entropy_weight: float = 0.05
    baseline_decay: float = 0.5
    reward_norm: str = "rank"
    repair: bool = True  # redrawing instead fails under tight budgets: few policy samples fit

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("RLController", 1, num_samples=self.num_samples, batch_size=self.batch_size)
        for name, value in (("lr", self.lr), ("entropy_weight", self.entropy_weight)):
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or value < 0 or (name == "lr" and value == 0):
                bound = "> 0" if name == "lr" else ">= 0"
                raise ValueError(f"RLController: {name} must be a finite number {bound}, got {value!r}")
        decay = self.baseline_decay
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"RLController: baseline_decay must be in [0, 1), got {decay!r}")
        if self.reward_norm not in RL_REWARD_NORMS:
            raise ValueError(
                f"RLController: reward_norm must be one of {', '.join(RL_REWARD_NORMS)}, got {self.reward_norm!r}"
            )
        if not isinstance(self.repair, bool):
            raise ValueError(f"RLController: repair must be true or false, got {self.repair!r}")

    def planned_evaluations(self) -> int:
        return self.num_samples


TPE_SAMPLERS = ("tpe", "nsga2", "gp", "random")  # the Optuna samplers strategy `tpe` can run


@dataclass(frozen=True)
class TPEConfig(StrategyConfig):
    """Optuna's samplers over the space (`metanas.search.tpe`): `num_samples` evaluations, `batch_size` per ask.

    `optuna_sampler` (not `sampler`: that name is the strategies' random-arch sampler): "tpe"
    (TPESampler, `multivariate` optional), "nsga2" (NSGAIISampler, a genetic algorithm on the
    single fitness objective, generations of `population_size`), "gp" (GPSampler, where this
    Optuna has it) or "random". `n_startup_trials` random trials come first for tpe and gp.
    `constant_liar` (tpe, on as in Optuna 5): pending trials count as the worst value while the rest of
    the batch is drawn, so one ask's `batch_size` proposals spread out instead of repeating each other.
    One objective only: the runner does not tell a strategy how many objectives a search
    has, so [fitness, COST] stays with `nsga2` (metanas's own). `warm_start` ("off", "auto" or a
    predictor file): the feasible anchors, then `warm_picks` predictor picks among `warm_pool` archs first.
    """

    objective_counts: ClassVar[tuple[int, ...]] = (1,)

    warm_start: str = "off"
    warm_picks: int = 8
    warm_pool: int = 2000
    optuna_sampler: str = "tpe"
    num_samples: int = 1000
    batch_size: int = 10
    n_startup_trials: int = 10
    multivariate: bool = False
    constant_liar: bool = True
    population_size: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optuna_sampler not in TPE_SAMPLERS:
            raise ValueError(
                f"TPE: optuna_sampler must be one of {', '.join(TPE_SAMPLERS)}, got {self.optuna_sampler!r}"
            )
        _at_least("TPE", 1, num_samples=self.num_samples, batch_size=self.batch_size, warm_pool=self.warm_pool)
        _at_least("TPE", 0, n_startup_trials=self.n_startup_trials, warm_picks=self.warm_picks)
        _at_least("TPE", 2, population_size=self.population_size)
        if not isinstance(self.warm_start, str) or not self.warm_start:
            raise ValueError(f"TPE: warm_start must be 'off', 'auto' or a predictor file, got {self.warm_start!r}")
        for name, value in (("multivariate", self.multivariate), ("constant_liar", self.constant_liar)):
            if not isinstance(value, bool):
                raise ValueError(f"TPE: {name} must be true or false, got {value!r}")

    def planned_evaluations(self) -> int:
        return self.num_samples


BO_SURROGATES = ("meta", "target")  # what models fitness for strategy `bo`


@dataclass(frozen=True)
class BOConfig(MutationConfig):
    """Bayesian optimisation with an ensemble surrogate (`metanas.search.bo`): `num_samples` evaluations.

    `surrogate`: "meta" (the meta-predictor chosen by `warm_start` like the warm start's,
    adapted on the target's evaluations at `adapt_lr`: `adapt_steps` in the first round, then
    `readapt_steps` a round continuing from the previous round's surrogate; `adapt_steps: 0` uses
    the predictor as shipped, never adapted) or "target" (an
    ensemble fitted on the target's evaluations only, `target_epochs`). The first batch is the
    feasible anchors plus `initial_random` random archs; every later batch of `batch_size` takes
    the best expected improvement (margin `xi`, spaced by `diversity`) among the candidates:
    a pool of `pool_size` random draws made once (the feasible new ones), `fresh` new random
    draws a round, and `mutants` mutants of each of the `incumbents` best archs (repaired into
    the budget when `repair` is on).
    """

    objective_counts: ClassVar[tuple[int, ...]] = (1,)

    repair: bool = True
    surrogate: str = "meta"
    warm_start: str = "auto"
    num_samples: int = 1000
    batch_size: int = 10
    initial_random: int = 10
    pool_size: int = 1000
    fresh: int = 100
    incumbents: int = 5
    mutants: int = 20
    xi: float = 0.01
    diversity: float = 0.0
    adapt_steps: int = 50
    readapt_steps: int = 10
    adapt_lr: float = 2e-3
    target_epochs: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.surrogate not in BO_SURROGATES:
            raise ValueError(f"BO: surrogate must be one of {', '.join(BO_SURROGATES)}, got {self.surrogate!r}")
        if self.surrogate != "meta" and self.warm_start != "auto":
            raise ValueError(
                f"BO: surrogate={self.surrogate!r} uses no predictor file, so warm_start must stay 'auto', "
                f"got {self.warm_start!r}"
            )
        _at_least("BO", 1, num_samples=self.num_samples, batch_size=self.batch_size, target_epochs=self.target_epochs)
        _at_least("BO", 1, pool_size=self.pool_size, incumbents=self.incumbents)
        _at_least("BO", 0, initial_random=self.initial_random, fresh=self.fresh, mutants=self.mutants)
        _at_least("BO", 0, adapt_steps=self.adapt_steps, readapt_steps=self.readapt_steps)
        for name, value in (("xi", self.xi), ("diversity", self.diversity), ("adapt_lr", self.adapt_lr)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"BO: {name} must be a finite number >= 0, got {value!r}")

    def planned_evaluations(self) -> int:
        return self.num_samples


DIFFERENTIABLE_COSTS = ("auto", "params", "non_embedding_params", "flops", "latency")  # what `differentiable` penalises
DIFFERENTIABLE_INITS = ("auto", "trained", "uniform")  # the logits `differentiable` starts from


@dataclass(frozen=True)
class DifferentiableConfig(StrategyConfig):
    """Gradient-based search on the supernet (`metanas.search.differentiable`): each of `rounds` runs
    `steps_per_round` straight-through Gumbel-softmax steps on architecture logits (Adam at `arch_lr`, the
    temperature annealed from `tau_start` to `tau_end`), then proposes the `top_k` most probable distinct archs,
    repaired into the budget. A penalty relu(E[cost] / (`cost_target` x limit) - 1) pushes the relaxed arch into
    the budget, with `cost_weight` times the loss's (Adam-normalised) step size; it is on `cost`: "auto" (every
    limit of the budget) or one limit the budget has ("latency": a linear latency predictor's). `init`: the logits
    to start from: "trained" (those trained with the supernet by `training.sampling: relaxed`), "uniform", or
    "auto" (trained when the supernet carries them)."""

    objective_counts: ClassVar[tuple[int, ...]] = (1,)

    rounds: int = 10
    steps_per_round: int = 50
    top_k: int = 5
    arch_lr: float = 0.05
    tau_start: float = 2.0
    tau_end: float = 0.2
    cost: str = "auto"
    cost_weight: float = 1.0
    cost_target: float = 0.95
    init: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("Differentiable", 1, rounds=self.rounds, steps_per_round=self.steps_per_round, top_k=self.top_k)
        for name in ("arch_lr", "tau_start", "tau_end", "cost_target", "cost_weight"):
            v, sign = getattr(self, name), ">=" if name == "cost_weight" else ">"
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not number or v < 0 or (v == 0 and sign == ">"):
                raise ValueError(f"Differentiable: {name} must be a finite number {sign} 0, got {v!r}")
        _in_range("Differentiable", 0.0, 1.0, cost_target=self.cost_target)
        if self.tau_end > self.tau_start:
            raise ValueError(f"Differentiable: tau_end must be <= tau_start, got {self.tau_end} > {self.tau_start}")
        for name, allowed in (("cost", DIFFERENTIABLE_COSTS), ("init", DIFFERENTIABLE_INITS)):
            if (value := getattr(self, name)) not in allowed:
                raise ValueError(f"Differentiable: {name} must be one of {', '.join(allowed)}, got {value!r}")

    def planned_evaluations(self) -> int:
        return self.rounds * self.top_k


# Strategy name -> the config that holds its options. `warm_evolution` is what `evolution`
# runs as when a meta-predictor is in use.
STRATEGY_CONFIGS: dict[str, type[StrategyConfig]] = {
    "random": RandomConfig,
    "evolution": EvolutionConfig,
    "nsga2": NSGA2Config,
    "aging": AgingEvolutionConfig,
    "warm_evolution": WarmStartConfig,
    "tpe": TPEConfig,
    "bo": BOConfig,
    "differentiable": DifferentiableConfig,
    "rl": RLConfig,
}
WARM_STRATEGY = "warm_evolution"


def runs_as(strategy: str, warm_start: str) -> str:
    """The strategy a recipe's `search.strategy` runs as: evolution with a warm start is `warm_evolution`.

    The warm start may still fall back to plain evolution at run time (no usable
    predictor); its options are then unused, and said so.
    """
    return WARM_STRATEGY if strategy == "evolution" and warm_start != "off" else strategy


def strategy_options(name: str) -> tuple[str, ...]:
    """The options strategy `name` accepts."""
    if name not in STRATEGY_CONFIGS:
        raise ValueError(f"unknown search strategy {name!r}; valid strategies: {', '.join(STRATEGY_CONFIGS)}")
    return STRATEGY_CONFIGS[name].option_names()


def check_objectives(objectives: Sequence[str], strategy: str, cost_keys: Sequence[str]) -> None:
    """`objectives` is [fitness] or [fitness, COST] (COST one of `cost_keys`), as many as `strategy` optimises."""
    if not objectives or objectives[0] != "fitness" or len(objectives) > 2:
        raise ValueError(f"objectives must be [fitness] or [fitness, COST]; got {list(objectives)}")
    if len(objectives) == 2 and objectives[1] not in cost_keys:
        raise ValueError(f"objectives: the cost must be one of {', '.join(cost_keys)}; got {objectives[1]!r}")
    counts = STRATEGY_CONFIGS[strategy].objective_counts if strategy in STRATEGY_CONFIGS else (1, 2)
    if len(objectives) not in counts:
        if counts == (2,):
            raise ValueError(f"strategy {strategy!r} needs two objectives, e.g. [fitness, latency_ms]")
        raise ValueError(f"a multi-objective search needs strategy 'nsga2' (or 'random'), not {strategy!r}")


STUDY_STRATEGIES = ("random", "evolution", "nsga2")  # synchronous by generation: what a shared study runs
DEFAULT_HEARTBEAT_SECONDS = 5.0
DEFAULT_STALE_SECONDS = 60.0


def check_study_strategy(name: str) -> None:
    """A shared study runs only strategies that are synchronous by generation."""
    if name not in STUDY_STRATEGIES:
        shown = "evolution with a warm start" if name == "warm_evolution" else repr(name)
        raise ValueError(
            f"a shared study (search.study) cannot run {shown}: it is asynchronous (its proposals would depend on "
            f"which worker finished first); use one of {', '.join(STUDY_STRATEGIES)} "
            "(evolution with search.warm_start: off), or run the search in one process (search.study: null)"
        )


def check_study_timing(heartbeat_seconds: float, stale_seconds: float) -> None:
    """The heartbeat must be positive and a claim must miss at least two beats before it is stale."""
    for name, value in (("heartbeat_seconds", heartbeat_seconds), ("stale_seconds", stale_seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"search.{name} must be a positive number of seconds, got {value!r}")
    if stale_seconds < 2 * heartbeat_seconds:
        raise ValueError(
            f"search.stale_seconds ({stale_seconds:g}) must be at least twice search.heartbeat_seconds "
            f"({heartbeat_seconds:g}): a live worker would lose its claims"
        )


def make_config(name: str, options: dict[str, Any]) -> StrategyConfig:
    """The config of strategy `name` from `options`; an unknown option names the allowed ones."""
    check_options(f"search strategy {name!r}", options, strategy_options(name))
    return STRATEGY_CONFIGS[name](**options)
