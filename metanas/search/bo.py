"""Bayesian optimisation with an ensemble surrogate (strategy `bo`): the predictor-only counterpart of the warm start.

Rounds, each one `ask`/`tell`:

1. The initial design: the anchors within the budget (origin `anchor`; their scores
   are the task's fingerprint for the meta-predictor) and `initial_random` random
   feasible archs (origin `random`).
2. Every later round: the surrogate is fitted on every finite evaluation so far and
   gives a mean and an uncertainty (the spread of its ensemble members) for every
   candidate: the pool (`pool_size` random draws made once, from a stream of their own,
   less the archs already proposed), `fresh` new random archs, and `mutants` mutants of
   each of the `incumbents` best archs (repaired into the budget when `repair` is on).
   The `batch_size` candidates of highest expected improvement over the surrogate's
   best mean among the evaluated archs are evaluated (origin `predicted`). Every
   candidate's features are computed once per search.

Surrogates: `meta` is the meta-predictor that `warm_start` picks, exactly as the warm
start picks it (`resolve_warm_start`, and `resolve_auto` on the user's history once the
runner has frozen it), conditioned on the anchors' scores (`target_embedding`) and
adapted on the target's evaluations (`MetaPredictor.adapt`): `adapt_steps` in the first
round, then `readapt_steps` a round continuing from the last round's surrogate, so the
adaptation keeps up with the data at a fraction of refitting it every round; without a
predictor (`warm_start: off`, or `auto` with none) the search says so and uses
`target`: the same ensemble trained on the target's evaluations only
(`MetaPredictor.target_only`), which needs `MIN_TARGET_ROWS` of them (random picks
until then).

Resume: the surrogate is not stored. Each adaptation is a deterministic function of
the predictor file, the evaluations made before it (the state records how many) and a
seed derived from the search seed and the round, run on one torch thread; a resumed
search replays the recorded adaptations on the stored evaluations, recomputes the same
weights and proposes exactly what the uninterrupted one would. The pool is redrawn from
its own seeded stream. The state records the predictor file's sha256 and refuses to
resume with another file.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr

from metanas._threads import torch_threads
from metanas.meta.anchors import anchor_archs
from metanas.meta.autotrain import DEFAULT_ENCODING, resolve_auto
from metanas.meta.choice import WarmStartChoice, resolve_warm_start
from metanas.meta.encoding import arch_feature_matrix, target_embedding
from metanas.meta.history import EvalRecord
from metanas.meta.predictor import MetaPredictor
from metanas.search.base import Strategy, StrategyEvent
from metanas.search.configs import BOConfig
from metanas.search.warm.seeding import diverse_top
from metanas.search.warm.strategy import MIN_TARGET_ROWS, ORIGIN_ANCHOR, ORIGIN_PREDICTED
from metanas.space import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

Surrogate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # arch features -> (mean, std)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """E[max(f - best - xi, 0)] under f ~ N(mean, std^2): high where the mean is high or the surrogate unsure.

    A zero std gives the plain improvement `max(mean - best - xi, 0)`.
    """
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    gain = mean - best - xi
    safe = np.where(std > 0, std, 1.0)
    z = gain / safe
    ei = gain * ndtr(z) + safe * np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return np.where(std > 0, np.maximum(ei, 0.0), np.maximum(gain, 0.0))


@functools.lru_cache(maxsize=16)
def _anchors(space: SearchSpace, k: int, seed: int, seq_len: int, max_layers: int) -> tuple[ArchConfig, ...]:
    """`anchor_archs`, once per space and encoding: drawing them costs a pool of 2000 archs' features."""
    return tuple(anchor_archs(space, k, seed, seq_len=seq_len, max_layers=max_layers))


class BayesOpt(Strategy):
    """Expected improvement over random feasible archs and mutants of the incumbents, scored by an ensemble."""

    name = "bo"
    Config = BOConfig
    config: BOConfig

    def __init__(self, *args: Any, task_meta: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """`task_meta`: the target's objective, higher_is_better, seq_len (the runner's `attach` fills it)."""
        super().__init__(*args, **kwargs)
        self.task_meta = dict(task_meta or {})
        self._initial_asked = False
        self._adaptations: list[tuple[int, int]] = []  # (evaluations before it, seed) of each meta adaptation
        self._adapted: MetaPredictor | None = None  # the last adaptation's surrogate (None: replay them first)
        self._pool: list[ArchConfig] | None = None
        self._use(self._first_choice())

    def _first_choice(self) -> WarmStartChoice:
        if self.config.surrogate == "meta":
            return resolve_warm_start(self.config.warm_start)
        return WarmStartChoice(None, None, None, "bo surrogate=target: no source task, no predictor file")

    def _use(self, choice: WarmStartChoice) -> None:
        """Score with `choice`'s predictor and encoding; without one, with a target-only model (default encoding)."""
        self.choice = choice
        self.base: MetaPredictor | None = choice.predictor
        self.surrogate = "meta" if self.base is not None else "target"
        self.encoding = dict(self.base.encoding) if self.base is not None else dict(DEFAULT_ENCODING)
        enc = self.encoding
        key = (int(enc["anchor_k"]), int(enc["anchor_seed"]), int(enc["seq_len"]), int(enc["max_layers"]))
        self.anchors = list(_anchors(self.space, *key))
        self._feature_rows: dict[ArchConfig, np.ndarray] = {}  # features of every arch scored, in this encoding
        self._adapted = None
        self.message = choice.message
        if self.config.surrogate == "meta" and self.base is None:
            self.message = f"bo surrogate=target, since there is no meta-predictor ({choice.message})"
            logger.info(self.message)

    # ----- configuration and the runner's hooks ---------------------------------
    def options(self) -> dict[str, Any]:
        return {**super().options(), "task_meta": self.task_meta}

    def _schedule_over(self) -> bool:
        return len(self.evaluated) >= self.config.num_samples

    @property
    def wants_sources(self) -> bool:
        """`auto` may train the meta surrogate on previous tasks; the target surrogate never reads them."""
        return self.config.surrogate == "meta" and self.config.warm_start == "auto"

    def attach(self, task_meta: Mapping[str, Any], sources: Sequence[EvalRecord], run_dir: Path | None = None) -> None:
        """Take the task's metadata (unless given); with `warm_start: auto`, pick the predictor on the sources (one
        meta-trained on them when they hold enough tasks, kept in `run_dir` for an exact resume)."""
        if not self.task_meta:
            self.task_meta = dict(task_meta)
        if self.wants_sources:
            self._use(resolve_auto(self.space, sources, self.choice, run_dir))

    def describe(self) -> StrategyEvent:
        return StrategyEvent(self.message, {"search/bo_surrogate": self.surrogate})

    def extra_state(self) -> dict[str, Any]:
        path = None if self.choice.path is None else str(self.choice.path)
        return {"bo": {"surrogate": self.surrogate, "predictor": path, "message": self.message}}

    # ----- proposals -----------------------------------------------------------
    def ask(self, n: int | None = None) -> list[ArchConfig]:
        """The initial design on the first call (default size: feasible anchors + `initial_random`), then batches of
        `n` (default `batch_size`) by expected improvement."""
        c = self.config
        remaining = c.num_samples - len(self.evaluated) - len(self._pending)
        if remaining <= 0:
            return []
        if not self._initial_asked:
            self._initial_asked = True
            anchors = [a for a in self.anchors if self.is_new(a) and self.feasible(a)]
            k = min(n or len(anchors) + c.initial_random, remaining)
            out = anchors[:k]
            for a in out:
                self._pending[a] = ORIGIN_ANCHOR
            return self._finish_ask(out + self._random_batch(k - len(out)))
        k = min(n or c.batch_size, remaining)
        with torch_threads(1):  # the ensemble's small matmuls: bit-identical across runs
            surrogate = self._fit()
            out = self._by_expected_improvement(k, surrogate) if surrogate is not None else []
        return self._finish_ask(out + self._random_batch(k - len(out)))

    def _features(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Arch features in the surrogate's encoding, each arch's computed once per search (rounds share candidates)."""
        seq_len, max_layers = int(self.encoding["seq_len"]), int(self.encoding["max_layers"])
        missing = [a for a in dict.fromkeys(archs) if a not in self._feature_rows]
        if missing or not archs:  # no arch: the empty matrix, with the encoding's width
            rows = arch_feature_matrix(self.space, missing, seq_len, max_layers)
            if not archs:
                return rows
            self._feature_rows.update(zip(missing, rows))
        return np.stack([self._feature_rows[a] for a in archs])

    def _fit(self) -> Surrogate | None:
        """The surrogate on every finite evaluation so far: features -> (mean, std); None while the target-only model
        has too few distinct rows. A deterministic function of the evaluations and the recorded adaptations."""
        c = self.config
        seed = self.seed * 1000 + self.generation
        if self.base is not None:
            model, x_task = self._meta_surrogate(seed)
            return lambda feats: model.predict(feats, np.tile(x_task, (len(feats), 1)))
        x, y = self._training_rows(len(self.evaluated))
        if len(y) < MIN_TARGET_ROWS or len(np.unique(y)) < 2:
            return None
        target = MetaPredictor(encoding=self.encoding).target_only().fit(x, y, c.target_epochs, seed)
        return target.predict

    def _training_rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and fitness of the finite ones among the first `n` evaluations."""
        rows = [e for e in list(self.evaluated.values())[:n] if math.isfinite(e.fitness)]
        return self._features([e.arch for e in rows]), np.array([e.fitness for e in rows])

    def _task_embedding(self, n: int) -> np.ndarray:
        """The target's fingerprint from the anchors among the first `n` evaluations."""
        first = dict(list(self.evaluated.items())[:n])
        fitness = {a: first[a].fitness for a in self.anchors if a in first}
        return target_embedding(self.anchors, fitness, self.task_meta)

    def _meta_surrogate(self, seed: int) -> tuple[MetaPredictor, np.ndarray]:
        """The meta-predictor adapted once more on every evaluation so far (the first time `adapt_steps` from the
        file, then `readapt_steps` from the last adaptation; none while fewer than two distinct finite fitness values
        are known), and the task embedding it scores with.

        After a resume the recorded adaptations are replayed first, on the evaluations each one saw."""
        assert self.base is not None
        c = self.config
        n = len(self.evaluated)
        x_task = self._task_embedding(n)
        if c.adapt_steps == 0:
            return self.base, x_task
        if self._adapted is None:
            self._adapted = self.base
            for i, (seen, past_seed) in enumerate(self._adaptations):
                self._adapted = self._adapt(self._adapted, i, seen, past_seed) or self._adapted
        adapted = self._adapt(self._adapted, len(self._adaptations), n, seed)
        if adapted is not None:
            self._adapted = adapted
            self._adaptations.append((n, seed))
        return self._adapted, x_task

    def _adapt(self, model: MetaPredictor, index: int, n: int, seed: int) -> MetaPredictor | None:
        """Adaptation number `index` (0: from the file) on the first `n` evaluations; None when they hold fewer than
        two distinct finite fitness values (no order to learn)."""
        c = self.config
        x, y = self._training_rows(n)
        if len(np.unique(y)) < 2:
            return None
        x_task = np.tile(self._task_embedding(n), (len(y), 1))
        steps = c.adapt_steps if index == 0 else c.readapt_steps
        return model.adapt(x, x_task, y, steps, c.adapt_lr, seed) if steps > 0 else model

    def _pool_archs(self) -> list[ArchConfig]:
        """`pool_size` random draws, made once from their own seeded stream; the feasible ones, in draw order."""
        if self._pool is None:
            rng = random.Random(f"bo-pool/{self.seed}")
            draws = dict.fromkeys(self._sample(rng) for _ in range(self.config.pool_size))
            self._pool = [a for a in draws if self.feasible(a)]
        return self._pool

    def _candidates(self) -> list[ArchConfig]:
        """Distinct new feasible archs: the pool's, `fresh` random draws, then `mutants` mutants of each incumbent."""
        c = self.config
        out: dict[ArchConfig, None] = dict.fromkeys(a for a in self._pool_archs() if self.is_new(a))
        for _ in range(c.fresh):
            arch = self._sample()
            if self.is_new(arch) and self.feasible(arch):
                out[arch] = None
        for parent in [e.arch for e in self.top(c.incumbents)]:
            for _ in range(c.mutants):
                child = self.space.mutate(parent, self.rng, c.mutation_prob, c.depth_prob, c.hidden_prob)
                child = self.repaired(child, parent) if c.repair else child
                if self.is_new(child) and self.feasible(child):
                    out[child] = None
        return list(out)

    def _by_expected_improvement(self, k: int, surrogate: Surrogate) -> list[ArchConfig]:
        """The `k` candidates of highest EI (ties: higher mean), at least `diversity` x the median distance apart."""
        candidates = self._candidates()
        if not candidates:
            return []
        feats = self._features(candidates)
        mean, std = surrogate(feats)
        seen = [e.arch for e in self.evaluated.values() if math.isfinite(e.fitness)]
        best = float(np.max(surrogate(self._features(seen))[0])) if seen else float(np.max(mean))
        ei = expected_improvement(mean, std, best, self.config.xi)
        order = np.lexsort((-mean, -ei))  # by EI, then by mean where EI ties (e.g. at zero)
        if self.config.diversity > 0:
            rank_score = np.empty(len(order))
            rank_score[order] = -np.arange(len(order), dtype=float)
            spread = np.median(np.linalg.norm(feats - feats[order[0]], axis=1))
            order = np.array(diverse_top(rank_score, feats, k, self.config.diversity * float(spread)))
        picked = [candidates[i] for i in order[:k]]
        for a in picked:
            self._pending[a] = ORIGIN_PREDICTED
        return picked

    # ----- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        bo = {
            "predictor_sha256": self.choice.sha256,
            "initial_asked": self._initial_asked,
            "adaptations": [list(a) for a in self._adaptations],
        }
        return {**super().state_dict(), "bo": bo}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot; refuses one taken with another predictor file (the surrogate would differ)."""
        bo = state["bo"]
        if bo["predictor_sha256"] != self.choice.sha256:
            raise ValueError(
                f"{self.name}: the search state was made with predictor sha256 {bo['predictor_sha256']}, but "
                f"warm_start={self.config.warm_start!r} now resolves to {self.choice.sha256} ({self.message})"
            )
        if "adaptations" not in bo:
            raise ValueError(
                f"{self.name}: the search state was saved by an earlier metanas (it records no surrogate "
                "adaptations, and that bo drew its candidates differently), so the search cannot resume exactly: "
                "start it again in a new run directory"
            )
        super().load_state_dict(state)
        self._initial_asked = bool(bo["initial_asked"])
        self._adaptations = [(int(n), int(seed)) for n, seed in bo["adaptations"]]
        self._adapted = None  # replayed on the restored evaluations at the next round
