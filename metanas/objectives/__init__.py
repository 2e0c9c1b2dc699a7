"""Training objectives: each is an nn.Module owning its head, a loss and a validation metric.

`build_objective(name, sn, ...)` makes one by name, checking options up front so a
misspelt config key fails with a message instead of being silently ignored. The
names and options below need no torch (recipes are checked against them); the
classes load on first use.
"""

from __future__ import annotations

from metanas._lazy import lazy_attributes

OBJECTIVES = ("kd", "mlm", "contrastive", "task")

# Options each objective accepts through `**options` (its constructor's tunables).
OPTIONS: dict[str, tuple[str, ...]] = {
    "kd": ("relation_heads", "hidden_weight", "temperature"),
    "mlm": ("mask_prob", "tokenizer"),
    "contrastive": ("temperature", "pooling", "deletion_prob"),
    "task": ("dropout", "metric"),
}

_NAMES = {
    "Objective": "base",
    "build_objective": "build",
    "ContrastiveObjective": "contrastive",
    "KDObjective": "kd",
    "make_teacher": "kd",
    "MLMObjective": "mlm",
    "perplexity": "mlm",
    "TaskObjective": "task",
    "mean_pool": "losses",
    "masked_mse": "losses",
    "relation_loss": "losses",
    "resolve_relation_heads": "losses",
}

__all__ = ["OBJECTIVES", "OPTIONS", *sorted(_NAMES)]
__getattr__ = lazy_attributes(__name__, {name: f"metanas.objectives.{module}" for name, module in _NAMES.items()})
