"""Evolution warm-started by the meta-predictor (strategy `warm_evolution`).

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

With no predictor (`warm_start="off"`, or `"auto"` without a usable default) the
strategy is plain `Evolution`: the same proposals for the same seed.

Resume: `state_dict` holds the evaluations, RNG, guard mode, the log, the predictions
made for outstanding proposals and the predictor file's sha256. The adapted and
target-only models are not stored: they are refit at the start of every `ask` from
the predictor file and the stored evaluations, with seeds derived from the search
seed and the round, on one thread, so a resumed search recomputes the same weights
and proposes exactly what the uninterrupted one would. Seeds (previous tasks'
incumbents) come from the sources given at the time of round 2; a search resumed
before that round must be given the same sources.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from metanas.search.base import DEFAULT_MAX_TRIES, ORIGIN_EVOLVED, Feasible, Sampler
from metanas.search.evolution import Evolution
from metanas.space import ArchConfig, SearchSpace

# The predictor side (torch, scipy, SQLAlchemy) is imported where it is used, so that
# importing metanas.search stays light for searches that do not warm start.
if TYPE_CHECKING:
    from metanas.meta.history import EvalRecord
    from metanas.meta.predictor import MetaPredictor
    from metanas.meta.warmstart import SourceTask

ORIGIN_ANCHOR = "anchor"
ORIGIN_PREDICTED = "predicted"
ORIGIN_SEED = "seed"
MIN_UNFILTERED_SHARE = 0.1
MIN_TARGET_ROWS = 4  # fewer target evaluations than this cannot train a target-only model


class WarmStartEvolution(Evolution):
    """`Evolution` whose first population and offspring are chosen by the meta-predictor, with a fallback guard."""

    name = "warm_evolution"

    def __init__(
        self,
        space: SearchSpace,
        feasible: Feasible | None = None,
        seed: int = 0,
        *,
        population_size: int = 50,
        generations: int = 20,
        parents: int = 10,
        mutation_count: int | None = None,
        crossover_count: int | None = None,
        mutation_prob: float = 0.2,
        depth_prob: float = 0.4,
        hidden_prob: float = 0.4,
        crossover_prob: float = 0.5,
        warm_start: str = "auto",
        task_meta: Mapping[str, Any] | None = None,
        pool_size: int = 2000,
        candidate_factor: int = 10,
        unfiltered_share: float = 0.2,
        random_share: float = 0.1,
        seed_archs: int = 2,
        seed_tasks: int = 2,
        beta: float = 0.5,
        diversity: float = 0.25,
        adapt_steps: int = 50,
        adapt_lr: float = 2e-3,
        target_epochs: int = 200,
        guard_patience: int = 2,
        plain_tau: float = 0.1,
        sampler: Sampler | None = None,
        max_tries: int = DEFAULT_MAX_TRIES,
    ) -> None:
        """`warm_start`: "auto" | "off" | a predictor file (see `resolve_warm_start`); `task_meta`: the target's
        objective, higher_is_better, seq_len, corpus_size (the runner fills it from the evaluator)."""
        super().__init__(
            space,
            feasible,
            seed,
            population_size=population_size,
            generations=generations,
            parents=parents,
            mutation_count=mutation_count,
            crossover_count=crossover_count,
            mutation_prob=mutation_prob,
            depth_prob=depth_prob,
            hidden_prob=hidden_prob,
            crossover_prob=crossover_prob,
            sampler=sampler,
            max_tries=max_tries,
        )
        if not MIN_UNFILTERED_SHARE <= unfiltered_share <= 1.0:
            raise ValueError(
                f"WarmStartEvolution: unfiltered_share must be in [{MIN_UNFILTERED_SHARE}, 1] (the predictor never "
                f"chooses every evaluation), got {unfiltered_share}"
            )
        if not 0.0 <= random_share <= 1.0:
            raise ValueError(f"WarmStartEvolution: random_share must be in [0, 1], got {random_share}")
        for name, value in (("pool_size", pool_size), ("candidate_factor", candidate_factor)):
            if value < 1:
                raise ValueError(f"WarmStartEvolution: {name} must be >= 1, got {value}")
        for name, value in (("seed_archs", seed_archs), ("seed_tasks", seed_tasks), ("adapt_steps", adapt_steps)):
            if value < 0:
                raise ValueError(f"WarmStartEvolution: {name} must be >= 0, got {value}")
        if beta < 0 or diversity < 0 or target_epochs < 1:
            raise ValueError("WarmStartEvolution: beta and diversity must be >= 0 and target_epochs >= 1")
        self.warm_start = str(warm_start)
        self.task_meta = dict(task_meta or {})
        self.pool_size = pool_size
        self.candidate_factor = candidate_factor
        self.unfiltered_share = unfiltered_share
        self.random_share = random_share
        self.seed_archs = seed_archs
        self.seed_tasks = seed_tasks
        self.beta = beta
        self.diversity = diversity
        self.adapt_steps = adapt_steps
        self.adapt_lr = adapt_lr
        self.target_epochs = target_epochs
        from metanas.meta.anchors import anchor_archs
        from metanas.meta.warmstart import TransferGuard, resolve_warm_start

        self.guard = TransferGuard(guard_patience, plain_tau)
        self.choice = resolve_warm_start(self.warm_start)
        self.base: MetaPredictor | None = self.choice.predictor
        self.anchors: list[ArchConfig] = []
        if self.base is not None:
            enc = self.base.encoding
            self.anchors = anchor_archs(
                space,
                int(enc["anchor_k"]),
                int(enc["anchor_seed"]),
                seq_len=int(enc["seq_len"]),
                max_layers=int(enc["max_layers"]),
            )
        self.sources: list[SourceTask] = []
        self.anchor_rounds = 0  # 1 once the anchor round was asked (it then counts as a round of the schedule)
        self._anchors_asked = False
        self._predictions: dict[ArchConfig, dict[str, float]] = {}
        self.transfer_log: list[dict[str, Any]] = [
            {
                "generation": 0,
                "event": "warm_start",
                "requested": self.warm_start,
                "mode": "meta" if self.base is not None else "evolution",
                "predictor": None if self.choice.path is None else str(self.choice.path),
                "message": self.choice.message,
            }
        ]
        if self.base is None:
            self.guard.mode = "evolution"

    # ----- configuration -----------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {
            **super().options(),
            "warm_start": self.warm_start,
            "task_meta": self.task_meta,
            "pool_size": self.pool_size,
            "candidate_factor": self.candidate_factor,
            "unfiltered_share": self.unfiltered_share,
            "random_share": self.random_share,
            "seed_archs": self.seed_archs,
            "seed_tasks": self.seed_tasks,
            "beta": self.beta,
            "diversity": self.diversity,
            "adapt_steps": self.adapt_steps,
            "adapt_lr": self.adapt_lr,
            "target_epochs": self.target_epochs,
            "guard_patience": self.guard.patience,
            "plain_tau": self.guard.plain_tau,
        }

    def add_sources(self, records: Sequence[EvalRecord]) -> None:
        """Evaluations of previous tasks in this space, whose incumbents seed the initial population.

        Records of other spaces are ignored (their archs may not exist here).
        """
        from metanas.meta.warmstart import source_tasks

        signature = self.space.signature()
        self.sources = source_tasks([r for r in records if r.space_signature == signature], self.anchors)

    @property
    def mode(self) -> str:
        """`meta`, `target` or `evolution`: what chooses the next proposals."""
        return self.guard.mode

    def _schedule_over(self) -> bool:
        return self.generation >= self.generations + self.anchor_rounds

    # ----- proposals -----------------------------------------------------------
    def ask(self, n: int | None = None) -> list[ArchConfig]:
        n = n or self.population_size
        if self.base is None or self.mode == "evolution":
            return super().ask(n)
        if not self._anchors_asked:
            self._anchors_asked = True
            anchors = [a for a in self.anchors if self.is_new(a) and self.feasible(a)]
            if anchors:
                self.anchor_rounds = 1
                for a in anchors:
                    self._pending[a] = ORIGIN_ANCHOR
                return anchors
        from metanas.meta.warmstart import single_thread

        with single_thread():
            models = self._fit_models()
            if self.generation == self.anchor_rounds:
                archs = self._initial_population(n, models)
            else:
                archs = self._offspring(n, models)
            self._record_predictions(archs, models)
        return self._finish_ask(archs)

    def _anchor_fitness(self) -> dict[ArchConfig, float]:
        return {a: self.evaluated[a].fitness for a in self.anchors if a in self.evaluated}

    def _fit_models(self) -> dict[str, Any]:
        """The adapted meta-predictor (and, when the guard needs it, a target-only model) on every evaluation so far.

        A deterministic function of the evaluations and the round, so a resumed search refits the same models.
        """
        from metanas.meta.predictor import TargetOnlyPredictor
        from metanas.meta.warmstart import encode, target_embedding, target_only_kwargs

        assert self.base is not None
        x_task = target_embedding(self.anchors, self._anchor_fitness(), self.task_meta)
        rows = [e for e in self.evaluated.values() if math.isfinite(e.fitness)]
        x = encode(self.base, self.space, [e.arch for e in rows])
        y = np.array([e.fitness for e in rows])
        model_seed = self.seed * 1000 + self.generation
        meta = self.base
        if len(rows) >= 2 and self.adapt_steps > 0:
            tiled = np.tile(x_task, (len(rows), 1))
            meta = self.base.adapt(x, tiled, y, steps=self.adapt_steps, lr=self.adapt_lr, seed=model_seed)
        target = None
        if self.guard.wants_target_model and len(rows) >= MIN_TARGET_ROWS and len(np.unique(y)) >= 2:
            target = TargetOnlyPredictor(**target_only_kwargs(self.base)).fit(x, y, self.target_epochs, model_seed)
        return {"meta": meta, "target": target, "x_task": x_task}

    def _predict(self, models: Mapping[str, Any], archs: Sequence[ArchConfig]) -> dict[str, np.ndarray]:
        """Mean and std of the meta model (and the target-only model's mean when fitted) per arch."""
        from metanas.meta.warmstart import encode

        x = encode(self.base, self.space, archs)
        mean, std = models["meta"].predict(x, np.tile(models["x_task"], (len(archs), 1)))
        out = {"meta": mean, "meta_std": std}
        if models["target"] is not None:
            out["target"], out["target_std"] = models["target"].predict(x)
        return out

    def _ucb(self, models: Mapping[str, Any], archs: Sequence[ArchConfig]) -> np.ndarray:
        """The ranking score of the model the guard currently trusts: mean + beta * std."""
        pred = self._predict(models, archs)
        key = "target" if self.mode == "target" and "target" in pred else "meta"
        return pred[key] + self.beta * pred[f"{key}_std"]

    def _register(self, archs: Sequence[ArchConfig], origin: str) -> list[ArchConfig]:
        for a in archs:
            self._pending[a] = origin
        return list(archs)

    def _initial_population(self, n: int, models: Mapping[str, Any]) -> list[ArchConfig]:
        """Seeds from similar tasks, a random share, and the rest by UCB from a random pool with diversity."""
        from metanas.meta.warmstart import diverse_top, encode, transferred_incumbents

        seeds = transferred_incumbents(
            self.sources,
            self._anchor_fitness(),
            min(self.seed_archs, n),
            lambda a: self.is_new(a) and self.feasible(a),
            self.seed_tasks,
        )
        out = self._register([a for a, _, _ in seeds], ORIGIN_SEED)
        out += self._random_batch(min(round(self.random_share * n), n - len(out)))
        need = n - len(out)
        if need <= 0:
            return out
        pool = list(dict.fromkeys(self._sample() for _ in range(self.pool_size)))
        pool = [a for a in pool if self.is_new(a) and self.feasible(a)]
        if not pool:
            return out
        scores = self._ucb(models, pool)
        feats = encode(self.base, self.space, pool)
        best = int(np.argmax(scores))
        min_distance = self.diversity * float(np.median(np.linalg.norm(feats - feats[best], axis=1)))
        picked = [pool[i] for i in diverse_top(scores, feats, need, min_distance)]
        out += self._register(picked, ORIGIN_PREDICTED)
        return out + self._random_batch(n - len(out))

    def _candidates(self, count: int) -> list[ArchConfig]:
        """Up to `count` distinct new feasible offspring of the top parents, not yet registered as proposals."""
        parents = [e.arch for e in self.top(self.parents)]
        n_mut = round(count * self.mutation_count / (self.mutation_count + self.crossover_count))

        def make(i: int) -> ArchConfig:
            if i < n_mut or len(parents) < 2:
                return self.mutate(self.rng.choice(parents))
            a, b = self.rng.sample(parents, 2)
            return self.space.crossover(a, b, self.rng, self.crossover_prob)

        out: dict[ArchConfig, None] = {}
        for i in range(count):
            for _ in range(self.max_tries):
                child = make(i)
                if child not in out and self.is_new(child) and self.feasible(child):
                    out[child] = None
                    break
            else:
                break  # the parents' neighbourhood is exhausted
        return list(out)

    def _offspring(self, n: int, models: Mapping[str, Any]) -> list[ArchConfig]:
        """Top offspring by UCB (origin predicted) plus an unfiltered random share of the rest (origin evolved)."""
        candidates = self._candidates(self.candidate_factor * n)
        n_free = min(n, max(1, math.ceil(self.unfiltered_share * n)))
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
            self._predictions[a] = {k: float(pred[k][i]) for k in ("meta", "target") if k in pred}

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
        from metanas.meta.predictor import params_proxy

        fit = [self.evaluated[archs[i]].fitness for i in judged]
        proxy = params_proxy(self.space, [archs[i] for i in judged])
        target = [preds[i].get("target") for i in judged]
        entry = self.guard.update(
            generation,
            fit,
            proxy,
            [preds[i]["meta"] for i in judged],
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
