"""Strategies by name, built from their options, and the one rule that turns evolution into a warm start."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metanas.meta.choice import WarmStartChoice, resolve_warm_start
from metanas.search.aging import AgingEvolution
from metanas.search.base import Feasible, Sampler, Strategy
from metanas.search.bo import BayesOpt
from metanas.search.configs import STRATEGY_CONFIGS, WARM_STRATEGY, make_config
from metanas.search.differentiable import DifferentiableSearch
from metanas.search.evolution import Evolution
from metanas.search.nsga2 import NSGA2
from metanas.search.random_search import RandomSearch
from metanas.search.rl import RLController
from metanas.search.tpe import OptunaSearch
from metanas.search.warm import WarmStartEvolution
from metanas.space import SearchSpace

logger = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {
    "random": RandomSearch,
    "evolution": Evolution,
    "nsga2": NSGA2,
    "aging": AgingEvolution,
    "warm_evolution": WarmStartEvolution,
    "tpe": OptunaSearch,
    "bo": BayesOpt,
    "differentiable": DifferentiableSearch,
    "rl": RLController,
}
assert set(STRATEGIES) == set(STRATEGY_CONFIGS)


def make_strategy(
    name: str,
    space: SearchSpace,
    feasible: Feasible | None = None,
    seed: int = 0,
    *,
    sampler: Sampler | None = None,
    **options: Any,
) -> Strategy:
    """Strategy `name` over `space`; `options` are checked against its config's fields."""
    config = make_config(name, options)
    return STRATEGIES[name](space, feasible, seed, sampler=sampler, config=config)


@dataclass(frozen=True)
class ResolvedStrategy:
    """What a recipe's search section runs: the strategy, its options, the warm-start decision, and a line saying so."""

    name: str
    options: dict[str, Any]
    warm_start: WarmStartChoice | None
    message: str


def resolve_strategy(strategy: str, options: Mapping[str, Any], warm_start: str) -> ResolvedStrategy:
    """`evolution` runs as `warm_evolution` when `warm_start` resolves to a predictor or a baseline `scorer` is
    set, else as plain evolution.

    A plain evolution that falls back from a warm start drops the warm-start-only
    options (and lists them as unused). A strategy with its own `warm_start` option (`bo`)
    gets the recipe's; the others have no warm start.
    """
    options = dict(options)
    if strategy != "evolution":
        if "warm_start" in STRATEGY_CONFIGS[strategy].option_names():  # e.g. bo's meta surrogate
            choice = resolve_warm_start(warm_start)
            return ResolvedStrategy(strategy, {**options, "warm_start": warm_start}, choice, choice.message)
        return ResolvedStrategy(strategy, options, None, f"{strategy} (no warm start for this strategy)")
    scorer = options.get("scorer", "meta")
    if scorer != "meta":  # a baseline of the warm start: no predictor to resolve
        message = f"warm start scorer={scorer}: a baseline, no source tasks, no predictor file"
        choice = WarmStartChoice(None, None, None, message)
        return ResolvedStrategy(WARM_STRATEGY, {**options, "warm_start": warm_start}, choice, message)
    choice = resolve_warm_start(warm_start)
    if choice.active:  # `auto` stays `auto`: the search picks its predictor once it has seen the history
        resolved = "auto" if warm_start == "auto" else str(choice.path)
        return ResolvedStrategy(WARM_STRATEGY, {**options, "warm_start": resolved}, choice, choice.message)
    plain = set(STRATEGY_CONFIGS["evolution"].option_names())
    unused = tuple(sorted(k for k in options if k not in plain))
    if unused:
        logger.warning("no meta-predictor, so the warm-start options %s are not used", ", ".join(unused))
    kept = {k: v for k, v in options.items() if k in plain}
    return ResolvedStrategy("evolution", kept, choice, choice.message)
