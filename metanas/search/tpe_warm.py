"""The transfer start of strategy `tpe` (warm-started TPE): anchors, then the predictor's picks, then TPE.

The product version of the transfer benchmark's `warm-tpe`. With a meta-predictor
(`warm_start` resolved like the warm start's: `resolve_warm_start`, and `resolve_auto`
on the user's history once the runner has frozen it):

1. the anchors within the budget are proposed first (origin `anchor`): their scores
   are the task's fingerprint for the predictor;
2. once they are asked (normally told), the predictor, conditioned on the anchors'
   scores and adapted on every evaluation so far, ranks `warm_pool` random feasible
   archs (the strategy's sampler, seeded by the search seed) plus the incumbents of the
   most similar source tasks; the `warm_picks` best predicted means, spaced apart
   (`diverse_top`), are proposed next (origin `predicted`, `seed` for an incumbent);
3. the Optuna sampler carries on: every evaluated arch is already a completed trial.

Without a predictor there is no transfer start and `tpe` is the cold search. The picks
are computed once and kept in the state, so a resume at any point proposes them again
without refitting; the state records the predictor file's sha256 and refuses another.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metanas._threads import torch_threads
from metanas.meta.anchors import anchor_archs
from metanas.meta.autotrain import resolve_auto
from metanas.meta.choice import WarmStartChoice, resolve_warm_start
from metanas.meta.encoding import target_embedding
from metanas.meta.history import EvalRecord
from metanas.search.base import Strategy
from metanas.search.configs import WarmStartConfig
from metanas.search.warm.seeding import SourceTask, diverse_top, source_tasks, transferred_incumbents
from metanas.search.warm.strategy import ORIGIN_ANCHOR, ORIGIN_PREDICTED, ORIGIN_SEED
from metanas.space import ArchConfig, SearchSpace

# The warm start's defaults: how many similar tasks give incumbents, the spacing of the picks, the adaptation.
SEED_TASKS = WarmStartConfig.seed_tasks
DIVERSITY = WarmStartConfig.diversity
ADAPT_STEPS = WarmStartConfig.adapt_steps
ADAPT_LR = WarmStartConfig.adapt_lr
# Stages: nothing proposed yet, anchors queued, picks queued, the sampler alone.
STAGES = ("start", "anchors", "picks", "sampler")


def resolve_tpe_warm_start(warm_start: str) -> WarmStartChoice:
    """`resolve_warm_start`, its errors naming the option and what it accepts."""
    try:
        return resolve_warm_start(warm_start)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(
            f"tpe: warm_start must be 'off', 'auto' or a usable predictor file, got {warm_start!r}: {e}"
        ) from None


def cold_reason(choice: WarmStartChoice) -> str:
    """Why there is no transfer start, in the words of the choice (which speak of evolution)."""
    return choice.message.replace("plain evolution", "plain TPE")


class TPEWarmStart:
    """The queue of transferred proposals a `tpe` search makes before its sampler; inactive without a predictor."""

    def __init__(self, space: SearchSpace, warm_start: str, picks: int, pool: int) -> None:
        self.space = space
        self.requested = str(warm_start)
        self.n_picks = picks
        self.pool_size = pool
        self.sources: list[SourceTask] = []
        self.stage = STAGES[0]
        self.queue: list[tuple[ArchConfig, str]] = []
        self.picks: list[tuple[ArchConfig, str, float]] = []  # what the predictor chose, with its predicted mean
        self.use(resolve_tpe_warm_start(self.requested))

    def use(self, choice: WarmStartChoice) -> None:
        """Transfer with `choice`'s predictor and its anchors (none without a predictor)."""
        self.choice = choice
        self.anchors: list[ArchConfig] = []
        if choice.predictor is not None:
            enc = choice.predictor.encoding
            self.anchors = anchor_archs(
                self.space,
                int(enc["anchor_k"]),
                int(enc["anchor_seed"]),
                seq_len=int(enc["seq_len"]),
                max_layers=int(enc["max_layers"]),
            )

    @property
    def active(self) -> bool:
        return self.choice.active

    @property
    def message(self) -> str:
        if not self.active:
            return f"cold, no transfer start ({cold_reason(self.choice)})"
        seeds = " and similar source tasks' incumbents" if self.sources else ""
        return (
            f"warm-started: {self.choice.message}; the feasible anchors first, then {self.n_picks} predictor picks "
            f"from {self.pool_size} random feasible archs{seeds}"
        )

    def attach(self, sources: Sequence[EvalRecord], run_dir: Path | None) -> None:
        """With `auto`, pick the predictor on the sources (as bo and the warm start do); keep this space's sources."""
        if self.requested == "auto":
            self.use(resolve_auto(self.space, sources, self.choice, run_dir))
        if self.active:
            signature = self.space.signature()
            self.sources = source_tasks([r for r in sources if r.space_signature == signature], self.anchors)

    # ----- proposals -----------------------------------------------------------
    def round(self, strategy: Strategy, task_meta: Mapping[str, Any]) -> list[tuple[ArchConfig, str]]:
        """The queued proposals of the current stage, still new and feasible, moving on when a stage is spent."""
        self.queue = [(a, o) for a, o in self.queue if strategy.is_new(a) and strategy.feasible(a)]
        if self.queue or not self.active:
            return self.queue
        if self.stage == "start":
            self.stage = "anchors"
            self.queue = [(a, ORIGIN_ANCHOR) for a in self.anchors if strategy.is_new(a) and strategy.feasible(a)]
            if self.queue:
                return self.queue
        if self.stage == "anchors":
            self.stage = "picks"
            self.picks = self._choose(strategy, task_meta)
            self.queue = [(a, origin) for a, origin, _ in self.picks]
            if self.queue:
                return self.queue
        self.stage = "sampler"
        return self.queue

    def taken(self, k: int) -> None:
        """The first `k` queued proposals were asked."""
        del self.queue[:k]

    def _choose(self, strategy: Strategy, task_meta: Mapping[str, Any]) -> list[tuple[ArchConfig, str, float]]:
        """The `n_picks` best predicted means, spaced apart, among the pool and the similar tasks' incumbents.

        The predictor is conditioned on the anchors' scores and adapted on every finite evaluation so far.
        """
        if self.n_picks <= 0:
            return []
        base = self.choice.predictor
        assert base is not None

        def accept(arch: ArchConfig) -> bool:
            return strategy.is_new(arch) and strategy.feasible(arch)

        anchor_fitness = {a: strategy.evaluated[a].fitness for a in self.anchors if a in strategy.evaluated}
        seeds = [
            a for a, _, _ in transferred_incumbents(self.sources, anchor_fitness, self.n_picks, accept, SEED_TASKS)
        ]
        rng = random.Random(f"tpe-warm:{strategy.seed}")
        draw = strategy.sampler or (lambda r: self.space.sample(r))
        pool = list(dict.fromkeys([*seeds, *(a for a in (draw(rng) for _ in range(self.pool_size)) if accept(a))]))
        if not pool:
            return []
        rows = [e for e in strategy.evaluated.values() if math.isfinite(e.fitness)]
        x_task = target_embedding(self.anchors, anchor_fitness, task_meta)
        feats = base.encode_archs(self.space, pool)
        with torch_threads(1):  # the ensemble's small matmuls: bit-identical across runs
            model = base
            if len(rows) >= 2:
                x = base.encode_archs(self.space, [e.arch for e in rows])
                y = np.array([e.fitness for e in rows])
                model = base.adapt(x, np.tile(x_task, (len(rows), 1)), y, ADAPT_STEPS, ADAPT_LR, strategy.seed)
            mean, _ = model.predict(feats, np.tile(x_task, (len(pool), 1)))
        spread = float(np.median(np.linalg.norm(feats - feats[int(np.argmax(mean))], axis=1)))
        seeded = set(seeds)
        return [
            (pool[i], ORIGIN_SEED if pool[i] in seeded else ORIGIN_PREDICTED, float(mean[i]))
            for i in diverse_top(mean, feats, self.n_picks, DIVERSITY * spread)
        ]

    # ----- state -----------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """What the search's outputs say about the transfer start."""
        path = None if self.choice.path is None else str(self.choice.path)
        picks = [{"arch": a.to_dict(), "origin": o, "predicted": m} for a, o, m in self.picks]
        return {"active": self.active, "predictor": path, "message": self.message, "stage": self.stage, "picks": picks}

    def state_dict(self) -> dict[str, Any]:
        return {
            "predictor_sha256": self.choice.sha256,
            "stage": self.stage,
            "queue": [[a.to_dict(), o] for a, o in self.queue],
            "picks": [[a.to_dict(), o, m] for a, o, m in self.picks],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot; refuses one taken with another predictor file (the picks would differ)."""
        if state["predictor_sha256"] != self.choice.sha256:
            raise ValueError(
                f"tpe: the search state was made with predictor sha256 {state['predictor_sha256']}, but "
                f"warm_start={self.requested!r} now resolves to {self.choice.sha256} ({self.choice.message})"
            )
        self.stage = str(state["stage"])
        self.queue = [(ArchConfig.from_dict(a), str(o)) for a, o in state["queue"]]
        self.picks = [(ArchConfig.from_dict(a), str(o), float(m)) for a, o, m in state["picks"]]
