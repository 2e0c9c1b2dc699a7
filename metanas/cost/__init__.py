"""Costs of subnets and the budgets a search must respect.

- `budget`: `Budget`, limits absolute or relative to the teacher (no torch, no numpy);
- `model`: `CostModel`, costs of an arch and budget-constrained sampling;
- `latency_predictor`: `LatencyPredictor`, latency from arch features (numpy, no torch);
- `latency`: timing of standalone models (HAT protocol), `MeasuredLatency` and
  `build_latency_predictor` (torch).

`Budget` loads with the package (a recipe needs it); the rest loads on first use.
"""

from __future__ import annotations

from metanas._lazy import lazy_attributes
from metanas.cost.budget import BUDGET_KEYS, Budget

_NAMES = {
    "CostModel": "model",
    "FEATURE_NAMES": "latency_predictor",
    "LatencyPredictor": "latency_predictor",
    "latency_features": "latency_predictor",
    "CLOCKS": "latency",
    "LatencyStats": "latency",
    "MeasuredLatency": "latency",
    "build_latency_predictor": "latency",
    "device_fingerprint": "latency",
    "measure_arch_latency": "latency",
    "measure_latency": "latency",
    "measure_models_latency": "latency",
    "timing_supernet": "latency",
}

__all__ = ["BUDGET_KEYS", "Budget", *sorted(_NAMES)]
__getattr__ = lazy_attributes(__name__, {name: f"metanas.cost.{module}" for name, module in _NAMES.items()})
