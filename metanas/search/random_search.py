"""Random search: the baseline every other strategy must beat at equal evaluations."""

from __future__ import annotations

from typing import Any

from metanas.search.base import DEFAULT_MAX_TRIES, Feasible, Sampler, Strategy
from metanas.space import ArchConfig, SearchSpace


class RandomSearch(Strategy):
    """Uniform feasible samples, `batch_size` per generation, `num_samples` in all, never repeating."""

    name = "random"

    def __init__(
        self,
        space: SearchSpace,
        feasible: Feasible | None = None,
        seed: int = 0,
        *,
        num_samples: int = 1000,
        batch_size: int = 50,
        sampler: Sampler | None = None,
        max_tries: int = DEFAULT_MAX_TRIES,
    ) -> None:
        super().__init__(space, feasible, seed, sampler=sampler, max_tries=max_tries)
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"RandomSearch: num_samples and batch_size must be >= 1, got {num_samples}, {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size

    def options(self) -> dict[str, Any]:
        return {**super().options(), "num_samples": self.num_samples, "batch_size": self.batch_size}

    def _schedule_over(self) -> bool:
        return len(self.evaluated) >= self.num_samples

    def ask(self, n: int | None = None) -> list[ArchConfig]:
        remaining = self.num_samples - len(self.evaluated) - len(self._pending)
        k = min(n or self.batch_size, remaining)
        return self._finish_ask(self._random_batch(k)) if k > 0 else []
