"""Search strategies over one ask/tell `Strategy` interface, and the runner that drives them.

`make_strategy(name, space, ...)` builds one by name, checking its options up front
so a misspelt recipe key fails with a message instead of being silently ignored.
"""

from __future__ import annotations

import inspect
from typing import Any

from metanas.search.base import Evaluation, Feasible, Sampler, Strategy
from metanas.search.evolution import Evolution
from metanas.search.nsga2 import NSGA2, crowding_distance, dominates, non_dominated_sort, pareto_front_indices
from metanas.search.random_search import RandomSearch
from metanas.search.warm import WarmStartEvolution
from metanas.space import SearchSpace

STRATEGIES: dict[str, type[Strategy]] = {
    "random": RandomSearch,
    "evolution": Evolution,
    "nsga2": NSGA2,
    "warm_evolution": WarmStartEvolution,
}

__all__ = [
    "NSGA2",
    "STRATEGIES",
    "Evaluation",
    "Evolution",
    "RandomSearch",
    "SearchResult",
    "Strategy",
    "WarmStartEvolution",
    "crowding_distance",
    "dominates",
    "make_strategy",
    "non_dominated_sort",
    "pareto_front_indices",
    "run_search",
    "strategy_options",
]


def __getattr__(name: str) -> Any:
    # The runner pulls in matplotlib and SQLAlchemy; strategies alone stay light.
    if name in ("run_search", "SearchResult"):
        from metanas.search import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'metanas.search' has no attribute {name!r}")


def strategy_options(name: str) -> tuple[str, ...]:
    """The keyword options strategy `name` accepts (its constructor's tunables)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}")
    params = inspect.signature(STRATEGIES[name]).parameters
    return tuple(p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "sampler")


def make_strategy(
    name: str,
    space: SearchSpace,
    feasible: Feasible | None = None,
    seed: int = 0,
    *,
    sampler: Sampler | None = None,
    **options: Any,
) -> Strategy:
    """Strategy `name` over `space`; `options` are checked against `strategy_options(name)`."""
    allowed = strategy_options(name)
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for search strategy {name!r}; "
            f"allowed options: {', '.join(allowed)}"
        )
    return STRATEGIES[name](space, feasible, seed, sampler=sampler, **options)
