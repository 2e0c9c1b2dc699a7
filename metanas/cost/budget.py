"""Budgets: upper limits on a subnet's costs, absolute or relative to the teacher."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metanas.cost.model import CostModel

BUDGET_KEYS = ("params", "non_embedding_params", "flops", "latency_ms")

Limit = float | str | None


def _parse_limit(key: str, value: Any) -> Limit:
    """A positive number, a relative string like '50%', or None; anything else is a ValueError."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"budget {key}: {value!r} is not a number; use a number or a percentage like '50%'")
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"budget {key}: {value!r} is not a valid percentage like '50%'") from None
        if not math.isfinite(pct) or pct <= 0:
            raise ValueError(f"budget {key}: must be a positive percentage, got {value!r}")
        return f"{pct:g}%"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"budget {key}: expected a number or a percentage like '50%', got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget {key}: must be a positive limit, got {value!r}")
    return value


def _percent(limit: str) -> float:
    return float(limit[:-1])


@dataclass
class Budget:
    """Upper limits on costs (None = unconstrained) and the setting they are measured in.

    `flops` is per token at `seq_len` (as `SearchSpace.flops`); `latency_ms` is one
    forward pass of a `batch_size` x `seq_len` batch. Any limit may be relative to
    the teacher (the largest arch of the space), written as a string: the user's
    "half the teacher's latency" is `latency_ms="50%"`. `absolute(key, teacher_cost)`
    is the one place a relative limit becomes a number.
    """

    params: Limit = None
    non_embedding_params: Limit = None
    flops: Limit = None
    latency_ms: Limit = None
    seq_len: int = 128
    batch_size: int = 1

    def __post_init__(self) -> None:
        for key in BUDGET_KEYS:
            setattr(self, key, _parse_limit(key, getattr(self, key)))
        for key in ("seq_len", "batch_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"budget {key}: must be a positive integer, got {v!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        """Parse a recipe's `budget:` mapping; unknown keys fail with the nearest allowed one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"budget: expected a mapping of limits, got {type(data).__name__}")
        allowed = [f.name for f in fields(cls)]
        for key in data:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ValueError(f"budget: unknown key {key!r}{hint} (allowed: {', '.join(allowed)})")
        return cls(**dict(data))

    def limits(self) -> dict[str, float | str]:
        """The constrained keys and their limits."""
        return {k: getattr(self, k) for k in BUDGET_KEYS if getattr(self, k) is not None}

    @property
    def is_relative(self) -> bool:
        return any(isinstance(v, str) for v in self.limits().values())

    def absolute(self, key: str, teacher_cost: float) -> float:
        """The limit on `key` as a number: 'P%' is P% of `teacher_cost`, a number stays itself."""
        limit = getattr(self, key)
        if limit is None:
            raise ValueError(f"budget: {key} is not limited")
        return _percent(limit) / 100 * teacher_cost if isinstance(limit, str) else float(limit)

    def resolve(self, cost_model: CostModel) -> Budget:
        """An absolute budget: each 'P%' limit becomes P% of the teacher's (largest arch's) cost."""
        if not self.is_relative:
            return self
        teacher = cost_model.teacher_costs(need_latency=isinstance(self.latency_ms, str))
        relative = [k for k, v in self.limits().items() if isinstance(v, str)]
        return replace(self, **{k: self.absolute(k, teacher[k]) for k in relative})

    def tightened(self, key: str, margin: float) -> Budget:
        """The same budget with the `key` limit `margin` (a fraction) lower; relative stays relative."""
        limit = getattr(self, key)
        if limit is None or margin == 0:
            return self
        tighter = f"{_percent(limit) * (1 - margin):g}%" if isinstance(limit, str) else limit * (1 - margin)
        return replace(self, **{key: tighter})

    def describe(self) -> str:
        """'latency_ms <= 50% of the teacher, params <= 10,000,000 (batch 1 x seq 128)'."""
        parts = []
        for key, limit in self.limits().items():
            value = f"{limit} of the teacher" if isinstance(limit, str) else f"{limit:,.6g}"
            parts.append(f"{key} <= {value}")
        text = ", ".join(parts) or "none (unconstrained)"
        return f"{text} (batch {self.batch_size} x seq {self.seq_len})"
