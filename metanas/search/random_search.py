"""Random search: the baseline every other strategy must beat at equal evaluations."""

from __future__ import annotations

from metanas.search.base import Strategy
from metanas.search.configs import RandomConfig
from metanas.space import ArchConfig


class RandomSearch(Strategy):
    """Uniform feasible samples, `batch_size` per generation, `num_samples` in all, never repeating."""

    name = "random"
    Config = RandomConfig
    config: RandomConfig

    def _schedule_over(self) -> bool:
        return len(self.evaluated) >= self.config.num_samples

    def ask(self, n: int | None = None) -> list[ArchConfig]:
        remaining = self.config.num_samples - len(self.evaluated) - len(self._pending)
        k = min(n or self.config.batch_size, remaining)
        return self._finish_ask(self._random_batch(k)) if k > 0 else []
