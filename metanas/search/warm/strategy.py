"""Evolution warm-started by the meta-predictor, or a baseline scorer (strategy `warm_evolution`).

Rounds, each one `ask`/`tell`:

1. Anchors: the predictor's anchor archs that meet the constraint (origin
   `anchor`; they count as evaluations). Their scores fingerprint the task.
2. Initial population of `population_size`: the best archs of the most similar
   previous tasks (origin `seed`, from `add_sources`), a `random_share` of random
   archs (origin `random`), and the rest picked from `pool_size` random feasible
   archs by the predictor's UCB under a minimum feature distance (origin `predicted`).
3. Every later round: `candidate_factor` x `population_size` offspring (mutation
   and crossover of the top `parents`, never evaluated before) are ranked by UCB;
   the top ones are evaluated (origin `predicted`) and an `unfiltered_share` (at
   least 10%) drawn at random from the rest is evaluated unfiltered (origin `evolved`),
   so the predictor never chooses every evaluation.

The predictor conditions on the target as evaluations arrive: the task embedding
is rebuilt from the anchors' scores, and before every round the meta-predictor
is re-adapted (`MetaPredictor.adapt`, from the file's weights) on every target
evaluation so far. A `TransferGuard` compares, after every predictor-driven round,
the Kendall tau of the predictions made before evaluation with a params proxy and
falls back to a target-only predictor, then to plain evolution (see its docstring).
Every decision is appended to `transfer_log`, which the runner writes to its state,
`search.json` and the tracker.

Which predictor: `warm_start="auto"` is decided in `attach`, once the runner has frozen
the previous tasks' records: a predictor meta-trained on them when they hold enough
tasks (`metanas.meta.autotrain`), else the shipped one. With no predictor
(`warm_start="off"`, or `"auto"` with neither) the strategy is plain `Evolution`: the
same proposals for the same seed.

Baselines (`scorer`), on the same rounds, anchors included (they are evaluations of
the budget, so every scorer spends the same number), with no source task and no
predictor file: `proxy` ranks by the params proxy (log parameter count, larger is
better; every candidate is within the budget), and the guard only logs its tau;
`target` ranks by a target-only model fitted on the target's evaluations, by the
proxy while fewer than `MIN_TARGET_ROWS` exist (those rounds are not judged), and its
guard falls back to plain evolution when that model ranks below `plain_tau`.

Resume: `state_dict` holds the evaluations, RNG, guard mode, the log, the predictions
made for outstanding proposals and the predictor file's sha256 (a history-trained
predictor is copied into the run directory, so a resume finds it). The adapted and
target-only models are not stored: they are refit at the start of every `ask` from
the predictor file and the stored evaluations, with seeds derived from the search
seed and the round, on one thread, so a resumed search recomputes the same weights
and proposes exactly what the uninterrupted one would. Seeds (previous tasks'
incumbents) come from the sources given at the time of round 2; a search resumed
before that round must be given the same sources.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metanas._threads import torch_threads
from metanas.meta.anchors import anchor_archs
from metanas.meta.autotrain import DEFAULT_ENCODING, resolve_auto
from metanas.meta.choice import WarmStartChoice, resolve_warm_start
from metanas.meta.encoding import arch_feature_matrix, target_embedding
from metanas.meta.history import EvalRecord
from metanas.meta.predictor import MetaPredictor, params_proxy, ucb
from metanas.search.base import ORIGIN_EVOLVED, StrategyEvent
from metanas.search.configs import WarmStartConfig
from metanas.search.evolution import Evolution
from metanas.search.warm.guard import TransferGuard
from metanas.search.warm.seeding import SourceTask, diverse_top, source_tasks, transferred_incumbents
from metanas.space import ArchConfig

ORIGIN_ANCHOR = "anchor"
ORIGIN_PREDICTED = "predicted"
ORIGIN_SEED = "seed"
MIN_TARGET_ROWS = 4  # fewer target evaluations than this cannot train a target-only model
BASELINES = {
    "proxy": "proposals ranked by the params proxy (larger is better within the budget)",
    "target": "proposals ranked by a model fitted on the target's evaluations only",
}

logger = logging.getLogger(__name__)


class WarmStartEvolution(Evolution):
    """`Evolution` whose first population and offspring are ranked by a scorer (the meta-predictor, or a baseline),
    with a fallback guard."""

    name = "warm_evolution"
    Config = WarmStartConfig
    config: WarmStartConfig

    def __init__(self, *args: Any, task_meta: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """`task_meta`: the target's objective, higher_is_better, seq_len, corpus_size (the runner's `attach`
        fills it when not given)."""
        super().__init__(*args, **kwargs)
        c = self.config
        self.warm_start = str(c.warm_start)
        self.scorer = str(c.scorer)
        self.task_meta = dict(task_meta or {})
        self.guard = TransferGuard(c.guard_patience, c.plain_tau)
        self.sources: list[SourceTask] = []
        self.anchor_rounds = 0  # 1 once the anchor round was asked (it then counts as a round of the schedule)
        self._anchors_asked = False
        self._predictions: dict[ArchConfig, dict[str, float]] = {}
        self._use(self._first_choice())

    def _first_choice(self) -> WarmStartChoice:
        """What is known before the sources: `resolve_warm_start` for the meta scorer, no predictor for a baseline."""
        if self.scorer == "meta":
            return resolve_warm_start(self.warm_start)
        message = f"warm start scorer={self.scorer}: {BASELINES[self.scorer]}; no source tasks, no predictor file"
        logger.info(message)
        return WarmStartChoice(None, None, None, message)

    def _use(self, choice: WarmStartChoice) -> None:
        """Rank with `choice`: its predictor, encoding and anchors (a baseline's are the default ones)."""
        self.choice = choice
        self.base: MetaPredictor | None = choice.predictor
        if self.base is not None:
            self.encoding = dict(self.base.encoding)
        else:
            self.encoding = dict(DEFAULT_ENCODING) if self.scorer != "meta" else {}
        self.anchors: list[ArchConfig] = []
        if self.encoding:
            enc = self.encoding
            self.anchors = anchor_archs(
                self.space,
                int(enc["anchor_k"]),
                int(enc["anchor_seed"]),
                seq_len=int(enc["seq_len"]),
                max_layers=int(enc["max_layers"]),
            )
        if self.scorer != "meta":
            self.guard.mode = self.scorer
        else:
            self.guard.mode = "meta" if self.base is not None else "evolution"
        self.transfer_log: list[dict[str, Any]] = [
            {
                "generation": 0,
                "event": "warm_start",
                "requested": self.warm_start,
                "scorer": self.scorer,
                "mode": self.guard.mode,
                "predictor": None if choice.path is None else str(choice.path),
                "message": choice.message,
            }
        ]

    # ----- configuration and the runner's hooks ---------------------------------
    def options(self) -> dict[str, Any]:
        return {**super().options(), "task_meta": self.task_meta}

    def planned_evaluations(self) -> int:
        """The schedule plus the anchor round (the anchors within the budget) when a scorer is in use."""
        return super().planned_evaluations() + len(self.anchors)

    @property
    def wants_sources(self) -> bool:
        """The meta scorer learns from previous tasks (`auto` may even train on them); the baselines never do."""
        return self.scorer == "meta" and self.warm_start != "off"

    def attach(self, task_meta: Mapping[str, Any], sources: Sequence[EvalRecord], run_dir: Path | None = None) -> None:
        """Take the task's metadata (unless given) and previous tasks of this space as seeds; call once, before
        the first `ask` or `load_state_dict`.

        With `warm_start="auto"` the predictor is chosen here, since it depends on the sources: one meta-trained
        on them when they hold enough tasks (kept in `run_dir` for an exact resume), else the shipped one.
        """
        if not self.task_meta:
            self.task_meta = dict(task_meta)
        if self.scorer == "meta" and self.warm_start == "auto":
            self._use(resolve_auto(self.space, sources, self.choice, run_dir))
        if self.base is not None:
            self.add_sources(sources)

    def describe(self) -> StrategyEvent:
        return StrategyEvent(self.choice.message, {"transfer/warm_start": self.choice.message})

    def extra_state(self) -> dict[str, Any]:
        return {"transfer": self.transfer_log}

    def events(self, generation: int) -> list[StrategyEvent]:
        """The guard's verdict on `generation` (kept, or a fallback), with the three Kendall taus."""
        out = []
        for e in self.transfer_log:
            if e.get("event") != "guard" or e["generation"] != generation:
                continue
            message = (
                f"warm start gen {generation}: {e['decision']} (predictor tau {_fmt_tau(e['tau_predictor'])}, "
                f"target-only tau {_fmt_tau(e['tau_target_only'])}, params-proxy tau {e['tau_params_proxy']:.3f})"
            )
            metrics = {
                "transfer/mode": e["next_mode"],
                "transfer/decision": e["decision"],
                "transfer/tau_predictor": e["tau_predictor"],
                "transfer/tau_target_only": e["tau_target_only"],
                "transfer/tau_params_proxy": e["tau_params_proxy"],
            }
            out.append(StrategyEvent(message, metrics, warning=e["decision"] != "keep"))
        return out

    def add_sources(self, records: Sequence[EvalRecord]) -> None:
        """Evaluations of previous tasks in this space, whose incumbents seed the initial population.

        Records of other spaces are ignored (their archs may not exist here).
        """
        signature = self.space.signature()
        self.sources = source_tasks([r for r in records if r.space_signature == signature], self.anchors)

    @property
    def mode(self) -> str:
        """`meta`, `target`, `proxy` or `evolution`: what chooses the next proposals."""
        return self.guard.mode

    def _schedule_over(self) -> bool:
        return self.generation >= self.config.generations + self.anchor_rounds

    # ----- proposals -----------------------------------------------------------
    def ask(self, n: int | None = None) -> list[ArchConfig]:
        n = n or self.config.population_size
        if self.mode == "evolution":
            return super().ask(n)
        if not self._anchors_asked:
            self._anchors_asked = True
            anchors = [a for a in self.anchors if self.is_new(a) and self.feasible(a)]
            if anchors:
                self.anchor_rounds = 1
                for a in anchors:
                    self._pending[a] = ORIGIN_ANCHOR
                return anchors
        with torch_threads(1):  # the predictor's small matmuls: faster on shared CPUs, bit-identical across runs
            models = self._fit_models()
            if self.generation == self.anchor_rounds:
                archs = self._initial_population(n, models)
            else:
                archs = self._offspring(n, models)
            self._record_predictions(archs, models)
        return self._finish_ask(archs)

    def _anchor_fitness(self) -> dict[ArchConfig, float]:
        return {a: self.evaluated[a].fitness for a in self.anchors if a in self.evaluated}

    def _features(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Arch features with the scorer's encoding (the predictor's, or the default one of a baseline)."""
        return arch_feature_matrix(self.space, archs, int(self.encoding["seq_len"]), int(self.encoding["max_layers"]))

    def _fit_models(self) -> dict[str, Any]:
        """The adapted meta-predictor (when there is one) and, when the guard needs it, a target-only model, on
        every evaluation so far.

        A deterministic function of the evaluations and the round, so a resumed search refits the same models.
        """
        c = self.config
        rows = [e for e in self.evaluated.values() if math.isfinite(e.fitness)]
        x = self._features([e.arch for e in rows])
        y = np.array([e.fitness for e in rows])
        model_seed = self.seed * 1000 + self.generation
        meta = x_task = None
        if self.base is not None:
            x_task = target_embedding(self.anchors, self._anchor_fitness(), self.task_meta)
            meta = self.base
            if len(rows) >= 2 and c.adapt_steps > 0:
                tiled = np.tile(x_task, (len(rows), 1))
                meta = self.base.adapt(x, tiled, y, steps=c.adapt_steps, lr=c.adapt_lr, seed=model_seed)
        target = None
        if self.guard.wants_target_model and len(rows) >= MIN_TARGET_ROWS and len(np.unique(y)) >= 2:
            template = self.base if self.base is not None else MetaPredictor(encoding=self.encoding)
            target = template.target_only().fit(x, y, c.target_epochs, model_seed)
        return {"meta": meta, "target": target, "x_task": x_task}

    def _predict(self, models: Mapping[str, Any], archs: Sequence[ArchConfig]) -> dict[str, np.ndarray]:
        """Mean and std per arch of each fitted model; the params proxy (std 0) for the proxy scorer, or when no
        model is fitted yet (the target scorer before `MIN_TARGET_ROWS` evaluations)."""
        x = self._features(archs)
        out = {}
        if models["meta"] is not None:
            out["meta"], out["meta_std"] = models["meta"].predict(x, np.tile(models["x_task"], (len(archs), 1)))
        if models["target"] is not None:
            out["target"], out["target_std"] = models["target"].predict(x)
        if self.scorer == "proxy" or not out:
            out["proxy"] = params_proxy(self.space, archs)
            out["proxy_std"] = np.zeros(len(archs))
        return out

    def _ucb(self, models: Mapping[str, Any], archs: Sequence[ArchConfig]) -> np.ndarray:
        """The ranking score of the model the guard currently trusts: mean + beta * std (its stand-in while that
        model is not fitted: the meta-predictor, else the params proxy)."""
        pred = self._predict(models, archs)
        key = self.mode if self.mode in pred else ("meta" if "meta" in pred else "proxy")
        return ucb(pred[key], pred[f"{key}_std"], self.config.beta)

    def _register(self, archs: Sequence[ArchConfig], origin: str) -> list[ArchConfig]:
        for a in archs:
            self._pending[a] = origin
        return list(archs)

    def _initial_population(self, n: int, models: Mapping[str, Any]) -> list[ArchConfig]:
        """Seeds from similar tasks, a random share, and the rest by UCB from a random pool with diversity."""
        c = self.config
        seeds = transferred_incumbents(
            self.sources,
            self._anchor_fitness(),
            min(c.seed_archs, n),
            lambda a: self.is_new(a) and self.feasible(a),
            c.seed_tasks,
        )
        out = self._register([a for a, _, _ in seeds], ORIGIN_SEED)
        out += self._random_batch(min(round(c.random_share * n), n - len(out)))
        need = n - len(out)
        if need <= 0:
            return out
        pool = list(dict.fromkeys(self._sample() for _ in range(c.pool_size)))
        pool = [a for a in pool if self.is_new(a) and self.feasible(a)]
        if not pool:
            return out
        scores = self._ucb(models, pool)
        feats = self._features(pool)
        best = int(np.argmax(scores))
        min_distance = c.diversity * float(np.median(np.linalg.norm(feats - feats[best], axis=1)))
        picked = [pool[i] for i in diverse_top(scores, feats, need, min_distance)]
        out += self._register(picked, ORIGIN_PREDICTED)
        return out + self._random_batch(n - len(out))

    def _candidates(self, count: int) -> list[ArchConfig]:
        """Up to `count` distinct new feasible offspring of the top parents, not yet registered as proposals."""
        make = self.child_maker(count)
        out: dict[ArchConfig, None] = {}
        for i in range(count):
            for _ in range(self.config.max_tries):
                child = make(i)
                if child not in out and self.is_new(child) and self.feasible(child):
                    out[child] = None
                    break
            else:
                break  # the parents' neighbourhood is exhausted
        return list(out)

    def _offspring(self, n: int, models: Mapping[str, Any]) -> list[ArchConfig]:
        """Top offspring by UCB (origin predicted) plus an unfiltered random share of the rest (origin evolved)."""
        candidates = self._candidates(self.config.candidate_factor * n)
        n_free = min(n, max(1, math.ceil(self.config.unfiltered_share * n)))
        out: list[ArchConfig] = []
        if candidates:
            order = np.argsort(-self._ucb(models, candidates), kind="stable")
            ranked = [candidates[i] for i in order]
            out += self._register(ranked[: n - n_free], ORIGIN_PREDICTED)
            rest = ranked[n - n_free :]
            out += self._register(self.rng.sample(rest, min(n_free, len(rest))), ORIGIN_EVOLVED)
        return out + self._random_batch(n - len(out))

    def _record_predictions(self, archs: Sequence[ArchConfig], models: Mapping[str, Any]) -> None:
        """Keep what the models said before evaluation: the guard judges them on these."""
        if not archs:
            return
        pred = self._predict(models, archs)
        for i, a in enumerate(archs):
            self._predictions[a] = {k: float(pred[k][i]) for k in ("meta", "target", "proxy") if k in pred}

    # ----- results -------------------------------------------------------------
    def tell(
        self,
        archs: Sequence[ArchConfig],
        fitnesses: Sequence[float],
        costs: Sequence[Mapping[str, float]] | None = None,
    ) -> None:
        """Record the scores; after a predictor-driven round, let the guard judge the predictions made for it."""
        generation = self.generation
        preds = [self._predictions.pop(a, None) for a in archs]
        super().tell(archs, fitnesses, costs)
        judged = [i for i, p in enumerate(preds) if p is not None]
        if self.mode == "evolution" or not judged:
            return
        meta = [preds[i].get("meta") for i in judged]
        target = [preds[i].get("target") for i in judged]
        if self.scorer == "target" and any(t is None for t in target):
            return  # ranked by the proxy, too few target rows for a model: nothing of the scorer's to judge
        fit = [self.evaluated[archs[i]].fitness for i in judged]
        proxy = params_proxy(self.space, [archs[i] for i in judged])
        entry = self.guard.update(
            generation,
            fit,
            proxy,
            None if any(m is None for m in meta) else meta,
            None if any(t is None for t in target) else target,
        )
        self.transfer_log.append(entry)

    # ----- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "warm": {
                "predictor_sha256": self.choice.sha256,
                "anchor_rounds": self.anchor_rounds,
                "anchors_asked": self._anchors_asked,
                "guard": self.guard.state_dict(),
                "transfer_log": self.transfer_log,
                "predictions": [[a.to_dict(), p] for a, p in self._predictions.items()],
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot; refuses one taken with another predictor file (the models would differ)."""
        warm = state["warm"]
        if warm["predictor_sha256"] != self.choice.sha256:
            raise ValueError(
                f"{self.name}: the search state was made with predictor sha256 {warm['predictor_sha256']}, "
                f"but warm_start={self.warm_start!r} now resolves to {self.choice.sha256} ({self.choice.message})"
            )
        super().load_state_dict(state)
        self.anchor_rounds = int(warm["anchor_rounds"])
        self._anchors_asked = bool(warm["anchors_asked"])
        self.guard.load_state_dict(warm["guard"])
        self.transfer_log = [dict(e) for e in warm["transfer_log"]]
        self._predictions = {ArchConfig.from_dict(a): dict(p) for a, p in warm["predictions"]}


def _fmt_tau(tau: float | None) -> str:
    return "-" if tau is None else f"{tau:.3f}"
