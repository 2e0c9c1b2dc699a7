"""The warm start: evolution guided by the meta-predictor, seeded by similar tasks, watched by a guard.

- `strategy`: `WarmStartEvolution`, the `warm_evolution` strategy;
- `guard`: `TransferGuard`, the fallback to a target-only model, then to plain evolution;
- `seeding`: previous tasks' incumbents, by anchor-score similarity.

Which predictor file a search uses is decided by `metanas.meta.choice`.
"""

from metanas.search.warm.guard import MODES, TransferGuard, kendall
from metanas.search.warm.seeding import SourceTask, diverse_top, source_tasks, task_similarity, transferred_incumbents
from metanas.search.warm.strategy import ORIGIN_ANCHOR, ORIGIN_PREDICTED, ORIGIN_SEED, WarmStartEvolution

__all__ = [
    "MODES",
    "ORIGIN_ANCHOR",
    "ORIGIN_PREDICTED",
    "ORIGIN_SEED",
    "SourceTask",
    "TransferGuard",
    "WarmStartEvolution",
    "diverse_top",
    "kendall",
    "source_tasks",
    "task_similarity",
    "transferred_incumbents",
]
