"""How many final-distillation steps fit in a time budget, the teacher's share counted where it is paid.

A distillation costs the model's own steps, plus one teacher forward for each example
its batches draw that the teacher cache does not hold yet (`distill` computes those
first, in large batches). A pace that timed the first steps with the teacher inside
them charged every later step for a teacher pass it does not make: the quickstart
student used 222 s of its 240 s that way.

Batches are grouped by length (`metanas.training.distill.batch_schedule`), so a step's
cost follows its padded tokens: a batch of short texts costs a fraction of a batch at
the length limit. The pace is therefore a fixed cost per step plus a cost per padded
token, fitted on a probe's timed steps, and a schedule's seconds are summed batch by
batch.

The line's slope is Theil-Sen's (a median of pairwise slopes, robust to a slow step)
and its intercept the mean residual, so that it sums a run's steps without bias: a
median step is 1-11% faster than a mean one. A model's first step also builds its
kernels, once, so it is left out.

A 20-step probe misjudged a long run by +11% and -22% on a noisy 2-core machine, and
the machine's speed drifts by 10-15% while a model distils. So a distillation given a
`TimeBudget` plans again from its own latest steps and the seconds it has left: at the
end of its warmup (where the decay has not begun), then every tenth of its steps,
the learning rate carrying on from where it is to zero at the new total.
"""

from __future__ import annotations

import statistics
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any

Schedule = Sequence[Sequence[int]]  # each step's example indices
PACE_WINDOW = 200  # a re-plan's pace: the latest steps, as fast as the machine is now


def padded_tokens(batch: Sequence[int], lengths: Sequence[int]) -> int:
    """Tokens of `batch` once padded to its longest example, as the collator pads it."""
    return len(batch) * max(lengths[i] for i in batch)


def _robust_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) of y ~ x: Theil-Sen's slope, so a few slow steps do not tilt it, and the mean
    residual as the intercept, so the line's sum over these steps is theirs."""
    pairs = [(i, j) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]]
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i, j in pairs]
    slope = max(0.0, statistics.median(slopes)) if slopes else 0.0
    intercept = statistics.fmean(y - slope * x for x, y in zip(xs, ys, strict=True))
    return max(0.0, intercept), slope


def _after_first(history: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """A distillation's steps but its first, which also builds the model's kernels (all of them if only one)."""
    return history[1:] if len(history) > 1 else history


@dataclass(frozen=True)
class DistillPace:
    """A model's seconds per step (fixed, and per padded token) without the teacher, and the teacher's seconds
    per uncached example."""

    step_s: float
    token_s: float
    teacher_s_per_example: float

    @classmethod
    def from_steps(cls, history: Sequence[dict[str, Any]], teacher_s_per_example: float) -> DistillPace:
        """From timed steps (`distill`'s history: seconds and padded tokens of each)."""
        if not history:
            raise ValueError("a distillation pace needs at least one timed step")
        step_s, token_s = _robust_line([h["tokens"] for h in history], [h["seconds"] for h in history])
        return cls(step_s, token_s, teacher_s_per_example)

    @classmethod
    def from_probe(cls, info: dict[str, Any]) -> DistillPace:
        """From a probe's `distill` result: its steps' seconds against their padded tokens, and its teacher
        prefill per example."""
        prefilled = info["teacher_prefilled"]
        per_example = info["teacher_prefill_seconds"] / prefilled if prefilled > 0 else 0.0
        return cls.from_steps(_after_first(info["history"]), per_example)

    def step_seconds(self, batch: Sequence[int], lengths: Sequence[int]) -> float:
        """Expected seconds of one step on `batch`, its teacher outputs cached."""
        return self.step_s + self.token_s * padded_tokens(batch, lengths)

    def steps_in(self, seconds: float, schedule: Schedule, lengths: Sequence[int], cached: Container[int]) -> int:
        """The most leading steps of `schedule` (at least 1) expected to fit in `seconds`, the teacher's pass over
        the examples they draw that are not `cached` included."""
        seen: set[int] = set()
        total = 0.0
        for step, batch in enumerate(schedule):
            fresh = sum(1 for i in set(batch) - seen if i not in cached)
            seen.update(batch)
            total += self.step_seconds(batch, lengths) + fresh * self.teacher_s_per_example
            if total > seconds:
                return max(1, step)
        return len(schedule)


@dataclass(frozen=True)
class TimeBudget:
    """Seconds a distillation may take from its start (its own teacher prefill included), at most `most_steps`
    steps; `teacher_s_per_example` prices a draw the teacher cache lacks."""

    seconds: float
    most_steps: int
    teacher_s_per_example: float = 0.0

    def replanned_steps(
        self,
        elapsed: float,
        history: Sequence[dict[str, Any]],
        schedule: Schedule,
        lengths: Sequence[int],
        cached: Container[int],
    ) -> int:
        """The total steps once `history`'s steps are done in `elapsed` seconds: those, plus the next steps of
        `schedule` (at least one) that fit in what is left at the pace of the latest `PACE_WINDOW` steps."""
        done = len(history)
        pace = DistillPace.from_steps(_after_first(history)[-PACE_WINDOW:], self.teacher_s_per_example)
        rest = schedule[done : self.most_steps]
        return done + (pace.steps_in(self.seconds - elapsed, rest, lengths, cached) if rest else 0)
