"""Costs of subnets and the budgets a search must respect.

- `budget`: `Budget`, limits absolute or relative to the teacher (no torch);
- `model`: `CostModel`, costs of an arch and budget-constrained sampling (no torch);
- `latency_predictor`: `LatencyPredictor`, latency from arch features (no torch);
- `latency`: timing of standalone models (HAT protocol), `MeasuredLatency` and
  `build_latency_predictor` (torch; loaded when first used).
"""

from __future__ import annotations

import importlib
from typing import Any

from metanas.cost.budget import BUDGET_KEYS, Budget
from metanas.cost.latency_predictor import FEATURE_NAMES, LatencyPredictor, latency_features
from metanas.cost.model import CostModel

_LATENCY_NAMES = (
    "CLOCKS",
    "LatencyStats",
    "MeasuredLatency",
    "build_latency_predictor",
    "device_fingerprint",
    "measure_arch_latency",
    "measure_latency",
    "measure_models_latency",
    "timing_supernet",
)

__all__ = [
    "BUDGET_KEYS",
    "FEATURE_NAMES",
    "Budget",
    "CostModel",
    "LatencyPredictor",
    "latency_features",
    *_LATENCY_NAMES,
]


def __getattr__(name: str) -> Any:
    # Measurement needs torch; budgets and cost formulas (what a recipe needs) do not.
    if name in _LATENCY_NAMES:
        return getattr(importlib.import_module("metanas.cost.latency"), name)
    raise AttributeError(f"module 'metanas.cost' has no attribute {name!r}")
