"""Search strategies over one ask/tell `Strategy` interface, and the runner that drives them.

- `configs`: every strategy's options as frozen dataclasses (no torch: recipes read them);
- `base`: `Strategy`, `Evaluation`, `StrategyEvent`;
- `random_search`, `evolution`, `nsga2`, `aging`: the strategies; `warm/` the warm start;
- `registry`: strategies by name, `make_strategy`, `resolve_strategy`;
- `runner`: `run_search` (evaluate, record, checkpoint, resume, report); `plots`.

Names below load on first use, so `import metanas.search.configs` stays light.
"""

from __future__ import annotations

from metanas._lazy import lazy_attributes

_NAMES = {
    "Strategy": "base",
    "Evaluation": "base",
    "AgingEvolution": "aging",
    "StrategyEvent": "base",
    "Evolution": "evolution",
    "NSGA2": "nsga2",
    "crowding_distance": "nsga2",
    "dominates": "nsga2",
    "non_dominated_sort": "nsga2",
    "pareto_front_indices": "nsga2",
    "RandomSearch": "random_search",
    "OptunaSearch": "tpe",
    "BayesOpt": "bo",
    "DifferentiableSearch": "differentiable",
    "RLController": "rl",
    "WarmStartEvolution": "warm",
    "STRATEGIES": "registry",
    "make_strategy": "registry",
    "resolve_strategy": "registry",
    "strategy_options": "configs",
    "run_search": "runner",
    "SearchResult": "runner",
}

__all__ = sorted(_NAMES)
__getattr__ = lazy_attributes(__name__, {name: f"metanas.search.{module}" for name, module in _NAMES.items()})
