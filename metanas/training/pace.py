"""How many final-distillation steps fit in a time budget, the teacher's share counted where it is paid.

A distillation costs the model's own steps, plus one teacher forward for each example
its batches draw that the teacher cache does not hold yet (`distill` computes those
first, in large batches). A pace that timed the first steps with the teacher inside
them charged every later step for a teacher pass it does not make: the quickstart
student used 222 s of its 240 s that way.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any


def expected_examples_drawn(steps: int, examples: int, batch_size: int) -> float:
    """Expected number of distinct examples in `steps` batches of `batch_size` distinct ones drawn uniformly."""
    if examples <= 0:
        return 0.0
    return examples * (1.0 - (1.0 - min(batch_size, examples) / examples) ** steps)


@dataclass(frozen=True)
class DistillPace:
    """A model's seconds per step without the teacher, and the teacher's seconds per uncached example."""

    step_s: float
    teacher_s_per_example: float

    @classmethod
    def from_probe(cls, info: dict[str, Any]) -> DistillPace:
        """From a probe's `distill` result: its steps' median, and its teacher prefill per example.

        The median, not the mean: the first steps also build the kernels for the
        model's shapes, which a mean would charge to every step.
        """
        history = info["history"]
        if not history:
            raise ValueError("a distillation pace needs at least one timed step")
        prefilled = info["teacher_prefilled"]
        per_example = info["teacher_prefill_seconds"] / prefilled if prefilled > 0 else 0.0
        return cls(statistics.median(h["seconds"] for h in history), per_example)

    def seconds(self, steps: int, examples: int, batch_size: int, cached: int) -> float:
        """Expected seconds of `steps` steps on `examples` examples, `cached` of them already in the cache."""
        fresh = max(0.0, expected_examples_drawn(steps, examples, batch_size) - cached)
        return steps * self.step_s + fresh * self.teacher_s_per_example

    def steps_in(self, seconds: float, most: int, examples: int, batch_size: int, cached: int) -> int:
        """The most steps (at least 1, at most `most`) expected to fit in `seconds`."""
        if self.seconds(most, examples, batch_size, cached) <= seconds:
            return most
        low, high = 1, most  # seconds(low) may exceed the budget: one step is the least a model gets
        while low < high:
            mid = (low + high + 1) // 2
            if self.seconds(mid, examples, batch_size, cached) <= seconds:
                low = mid
            else:
                high = mid - 1
        return low
