"""Warm start of a search from the meta-predictor: which predictor, the target fingerprint, seeds and the guard.

A warm-started search (`metanas.search.warm.WarmStartEvolution`) first scores the
anchor archs on the new task, embeds the task with their scores, and lets the
meta-predictor (adapted online to the target's own evaluations) choose most of
what is evaluated next. This module holds the parts that do not depend on the
evolutionary loop:

- `resolve_warm_start("auto" | "off" | PATH)`: which predictor a search uses,
  and why, said in a log line. `auto` takes the shipped default when it exists and
  loads, and otherwise searches cold with a warning; an explicit PATH that cannot
  be used is an error, never a silent cold start.
- `target_task_meta`, `target_embedding`: the new task's fingerprint, built the way
  `metatrain.task_embedding_from_records` builds the sources' so the predictor
  sees the same encoding at search time as in meta-training.
- `source_tasks`, `transferred_incumbents`: the best archs of the most similar
  previous tasks (similarity: rank correlation of the anchor scores both tasks have).
- `anchor_subset_variants`: meta-training augmentation. A search under a budget
  can only score the anchors that fit it, so the predictor must also be trained
  on fingerprints in which the anchors too large for common budgets are missing.
- `diverse_top`: top candidates by score under a minimum feature distance.
- `TransferGuard`: the negative-transfer guard. Every generation it compares the
  predictor's ranking of the freshly evaluated archs (predictions made before they
  were evaluated) with a parameter-count proxy; after `patience` losses in a row
  the search falls back to a target-only predictor, and to plain evolution when
  that one ranks below `plain_tau`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from metanas.meta.encoding import (
    OBJECTIVES,
    arch_feature_matrix,
    normalize_anchor_scores,
    task_embedding,
    task_embedding_dim,
)
from metanas.meta.history import EvalRecord
from metanas.meta.predictor import MetaPredictor
from metanas.space import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

PREDICTOR_FILE = "meta_predictor.safetensors"
PREDICTOR_ENV_VAR = "METANAS_META_PREDICTOR"
# The repository's checkpoints/ folder (present in a source checkout or an editable install).
REPO_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
ENCODING_KEYS = ("anchor_k", "anchor_seed", "max_layers", "seq_len")
MODES = ("meta", "target", "evolution")


def default_predictor_path() -> Path:
    """`$METANAS_META_PREDICTOR`, else `checkpoints/meta_predictor.safetensors` of the source tree."""
    env = os.environ.get(PREDICTOR_ENV_VAR)
    return Path(env).expanduser() if env else REPO_CHECKPOINTS / PREDICTOR_FILE


def file_sha256(path: str | os.PathLike) -> str:
    """Digest of a predictor file: a resumed search checks it still uses the same one."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_warm_predictor(path: str | os.PathLike) -> MetaPredictor:
    """Load a meta-predictor and check it records the encoding a search needs (anchors, features).

    Raises FileNotFoundError for a missing file and ValueError for a damaged file, a
    file of another format version, or one whose task dimension does not match its
    recorded anchor count.
    """
    predictor = MetaPredictor.load(path)
    missing = [k for k in ENCODING_KEYS if k not in predictor.encoding]
    if missing:
        raise ValueError(
            f"predictor file {path} records no {', '.join(missing)} in its encoding, so a search cannot rebuild "
            "its anchors and features; retrain it with metanas.meta.metatrain.meta_train"
        )
    want = task_embedding_dim(int(predictor.encoding["anchor_k"]))
    if predictor.task_dim != want:
        raise ValueError(
            f"predictor file {path} expects {predictor.task_dim} task features, but its "
            f"{predictor.encoding['anchor_k']} anchors give {want} in this metanas; retrain it"
        )
    return predictor


@dataclass(frozen=True)
class WarmStartChoice:
    """What `resolve_warm_start` decided: a predictor (None: search cold), its file and digest, and why."""

    predictor: MetaPredictor | None
    path: Path | None
    sha256: str | None
    message: str

    @property
    def active(self) -> bool:
        return self.predictor is not None


def resolve_warm_start(warm_start: str | os.PathLike) -> WarmStartChoice:
    """Turn `"auto" | "off" | PATH` into a predictor, logging which one a search will use.

    `auto`: the default predictor (`default_predictor_path()`) when it exists and
    loads; plain evolution when it does not exist (info) or cannot be used (a warning
    naming the problem). `off`: plain evolution. A PATH must load: a missing, damaged
    or incompatible file raises.
    """
    requested = str(warm_start)
    if requested == "off":
        message = "warm start off: plain evolution"
        logger.info(message)
        return WarmStartChoice(None, None, None, message)
    if requested == "auto":
        path = default_predictor_path()
        if not path.is_file():
            message = f"warm start auto: no default predictor at {path}; plain evolution"
            logger.info(message)
            return WarmStartChoice(None, None, None, message)
        try:
            predictor = load_warm_predictor(path)
        except ValueError as e:
            message = f"warm start auto: the default predictor cannot be used ({e}); continuing cold (plain evolution)"
            logger.warning(message)
            return WarmStartChoice(None, path, None, message)
    else:
        path = Path(requested).expanduser()
        predictor = load_warm_predictor(path)
    card = predictor.card
    message = (
        f"warm start from {path} (meta-trained on {len(card.get('tasks', []))} tasks, "
        f"held-out Kendall tau {card.get('val_kendall_tau')})"
    )
    logger.info(message)
    return WarmStartChoice(predictor, path, file_sha256(path), message)


# --------------------------------------------------------------------------- the target task


def target_task_meta(
    task_meta: Mapping[str, Any] | None, metric_name: str, higher_is_better: bool, seq_len: int
) -> dict[str, Any]:
    """The target's task metadata with objective, metric direction and seq_len filled in when missing.

    Mirrors `metatrain.task_meta_from_records` (objective from a metric name such as
    `kd_loss`, `accuracy` -> task), so target and sources are described alike.
    """
    meta = dict(task_meta or {})
    if "objective" not in meta:
        prefix = metric_name.split("_")[0]
        if prefix in OBJECTIVES:
            meta["objective"] = prefix
        elif metric_name == "accuracy":
            meta["objective"] = "task"
    meta.setdefault("higher_is_better", bool(higher_is_better))
    meta.setdefault("seq_len", int(seq_len))
    return meta


def target_embedding(
    anchors: Sequence[ArchConfig], fitness: Mapping[ArchConfig, float], meta: Mapping[str, Any]
) -> np.ndarray:
    """Task embedding from the anchors scored so far (unscored or failed ones count as missing)."""
    scores = [fitness.get(a) for a in anchors]
    scores = [f if f is not None and math.isfinite(f) else None for f in scores]
    return task_embedding(normalize_anchor_scores(scores), meta, k=len(anchors))


def encode(predictor: MetaPredictor, space: SearchSpace, archs: Sequence[ArchConfig]) -> np.ndarray:
    """Arch features with the encoding the predictor was trained with."""
    enc = predictor.encoding
    return arch_feature_matrix(space, archs, int(enc["seq_len"]), int(enc["max_layers"]))


def target_only_kwargs(predictor: MetaPredictor) -> dict[str, Any]:
    """The meta-predictor's architecture and optimizer settings: a target-only model that differs only in data."""
    return {
        "n_members": predictor.n_members,
        "hidden": predictor.hidden,
        "n_layers": predictor.n_layers,
        "lr": predictor.lr,
        "weight_decay": predictor.weight_decay,
        "pairs_per_row": predictor.pairs_per_row,
        "mse_weight": predictor.mse_weight,
    }


def kendall(scores: Sequence[float] | np.ndarray, fitness: Sequence[float] | np.ndarray) -> float:
    """Kendall tau of scores against fitness over finite fitness values; 0 where undefined (too few, constant)."""
    s, f = np.asarray(scores, dtype=float), np.asarray(fitness, dtype=float)
    keep = np.isfinite(f) & np.isfinite(s)
    if keep.sum() < 3:
        return 0.0
    tau = kendalltau(s[keep], f[keep]).statistic
    return 0.0 if np.isnan(tau) else float(tau)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the predictor's small matmuls on one thread: faster on shared CPUs, and bit-identical across runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- previous tasks


@dataclass
class SourceTask:
    """One previous task in the target's space: its anchor scores and its archs, best first."""

    task_id: str
    anchor_fitness: dict[ArchConfig, float]
    ranked: list[tuple[ArchConfig, float]] = field(default_factory=list)


def source_tasks(records: Sequence[EvalRecord], anchors: Sequence[ArchConfig]) -> list[SourceTask]:
    """Group records of previous tasks (one space) by task: mean anchor fitness, and archs by best fitness."""
    anchor_set = set(anchors)
    by_task: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        if math.isfinite(r.fitness):
            by_task[r.task_id].append(r)
    out = []
    for task_id in sorted(by_task):
        anchor_scores: dict[ArchConfig, list[float]] = defaultdict(list)
        best: dict[ArchConfig, float] = {}
        for r in by_task[task_id]:
            if r.origin == "anchor" and r.arch in anchor_set:
                anchor_scores[r.arch].append(r.fitness)
            best[r.arch] = max(best.get(r.arch, -math.inf), r.fitness)
        ranked = sorted(best.items(), key=lambda item: -item[1])
        out.append(SourceTask(task_id, {a: float(np.mean(v)) for a, v in anchor_scores.items()}, ranked))
    return out


def task_similarity(target: Mapping[ArchConfig, float], source: Mapping[ArchConfig, float]) -> float:
    """Spearman correlation of the anchor scores both tasks have (fitness is per task, so only ranks compare).

    The anchor block of the task embedding is a copula transform of these scores;
    with anchors missing on either side (budgets), correlating the common ones is
    what stays comparable. Fewer than 3 common anchors, or constant scores: 0.
    """
    common = [a for a in target if a in source and math.isfinite(target[a]) and math.isfinite(source[a])]
    if len(common) < 3:
        return 0.0
    rho = spearmanr([target[a] for a in common], [source[a] for a in common]).statistic
    return 0.0 if np.isnan(rho) else float(rho)


def transferred_incumbents(
    sources: Sequence[SourceTask],
    target_anchor_fitness: Mapping[ArchConfig, float],
    n: int,
    accept: Callable[[ArchConfig], bool],
    n_tasks: int = 2,
) -> list[tuple[ArchConfig, str, float]]:
    """Up to `n` (arch, task id, similarity): the best accepted archs of the `n_tasks` most similar sources.

    Taken round-robin (best of each task, then second best, ...), so one task does
    not fill every slot; tasks with similarity <= 0 give nothing (an anti-correlated
    task's incumbent is no better than a random arch).
    """
    if n <= 0:
        return []
    scored = sorted(
        ((task_similarity(target_anchor_fitness, s.anchor_fitness), s) for s in sources),
        key=lambda item: (-item[0], item[1].task_id),
    )
    chosen = [(sim, s) for sim, s in scored[:n_tasks] if sim > 0]
    queues = [[a for a, _ in s.ranked if accept(a)] for _, s in chosen]
    out: list[tuple[ArchConfig, str, float]] = []
    taken: set[ArchConfig] = set()
    depth = 0
    while len(out) < n and any(depth < len(q) for q in queues):
        for (sim, s), queue in zip(chosen, queues):
            if depth < len(queue) and queue[depth] not in taken and len(out) < n:
                out.append((queue[depth], s.task_id, sim))
                taken.add(queue[depth])
        depth += 1
    return out


def anchor_subset_variants(
    records_by_task: Mapping[str, Sequence[EvalRecord]],
    anchors: Sequence[ArchConfig],
    space: SearchSpace,
    fractions: Sequence[float],
    seed: int = 0,
) -> dict[str, list[EvalRecord]]:
    """Meta-training augmentation: each task split into variants whose anchor records are those a budget admits.

    Variant `task@full` keeps every anchor; `task@nonemb<p>` keeps only the anchors
    with at most `p` of the largest arch's non-embedding parameters, as a search
    under that budget would score. A task's non-anchor records are dealt to the
    variants in a seeded shuffle (not copied), so augmentation adds no rows; every
    variant is its own task (records carry the variant name as task_id) and ranking
    group in meta-training. Hold out all variants of a task together (`variant_task`).
    """
    top = space.params(space.largest(), embeddings=False)
    anchor_set = set(anchors)
    out: dict[str, list[EvalRecord]] = {}
    for task_id in sorted(records_by_task):
        recs = list(records_by_task[task_id])
        anchor_recs = [r for r in recs if r.origin == "anchor" and r.arch in anchor_set]
        others = [r for r in recs if not (r.origin == "anchor" and r.arch in anchor_set)]
        random.Random(f"{seed}:{task_id}").shuffle(others)
        names = [f"{task_id}@full"] + [f"{task_id}@nonemb{round(100 * p)}" for p in fractions]
        limits = [math.inf] + [p * top for p in fractions]
        for i, (name, limit) in enumerate(zip(names, limits)):
            kept = [r for r in anchor_recs if space.params(r.arch, embeddings=False) <= limit]
            out[name] = [replace(r, task_id=name, id=None) for r in kept + others[i :: len(names)]]
    return out


def variant_task(name: str) -> str:
    """The task id of an `anchor_subset_variants` group name."""
    return name.rsplit("@", 1)[0]


def diverse_top(scores: np.ndarray, features: np.ndarray, n: int, min_distance: float) -> list[int]:
    """Indices of up to `n` candidates by decreasing score, skipping any within `min_distance` of one taken.

    When the distance rule leaves fewer than `n`, the best skipped ones fill up, so
    a tight rule never shrinks a generation.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    chosen: list[int] = []
    skipped: list[int] = []
    for i in order:
        if len(chosen) == n:
            break
        if chosen and np.min(np.linalg.norm(features[chosen] - features[i], axis=1)) < min_distance:
            skipped.append(int(i))
        else:
            chosen.append(int(i))
    return chosen + skipped[: n - len(chosen)]


# --------------------------------------------------------------------------- the guard


class TransferGuard:
    """Watches the ranking quality of the predictor a search relies on, and falls back when it fails.

    Modes: `meta` (the adapted meta-predictor ranks candidates), `target` (a model
    trained on the target's evaluations only) and `evolution` (no predictor). After
    each predictor-driven generation, `update` receives the predictions made for the
    generation's archs before they were evaluated, their fitness and the params
    proxy. In `meta` mode a generation where the predictor's Kendall tau is below
    the proxy's is a loss; `patience` losses in a row switch to `target` when the
    target-only model's tau on the same generation is at least `plain_tau`, else to
    `evolution`. In `target` mode, `patience` generations in a row with the
    target-only tau below `plain_tau` switch to `evolution`. Fallbacks are final:
    transfer that failed twice is not trusted again within a search.
    """

    def __init__(self, patience: int = 2, plain_tau: float = 0.1) -> None:
        if patience < 1:
            raise ValueError(f"TransferGuard: patience must be >= 1, got {patience}")
        self.patience = patience
        self.plain_tau = plain_tau
        self.mode = "meta"
        self.strikes = 0

    @property
    def wants_target_model(self) -> bool:
        """True when the next update may need the target-only model's tau (it runs in that mode or may switch)."""
        return self.mode == "target" or (self.mode == "meta" and self.strikes >= self.patience - 1)

    def update(
        self,
        generation: int,
        fitness: Sequence[float],
        proxy: Sequence[float],
        meta_pred: Sequence[float] | None,
        target_pred: Sequence[float] | None,
    ) -> dict[str, Any]:
        """Judge one generation; returns the logged decision (mode before/after, the three taus, strikes)."""
        tau_proxy = kendall(proxy, fitness)
        tau_meta = kendall(meta_pred, fitness) if meta_pred is not None else None
        tau_target = kendall(target_pred, fitness) if target_pred is not None else None
        before = self.mode
        decision = "keep"
        if self.mode == "meta" and tau_meta is not None:
            self.strikes = self.strikes + 1 if tau_meta < tau_proxy else 0
            if self.strikes >= self.patience:
                self.mode = "target" if tau_target is not None and tau_target >= self.plain_tau else "evolution"
                self.strikes = 0
                decision = f"fallback:{self.mode}"
        elif self.mode == "target":
            self.strikes = self.strikes + 1 if tau_target is None or tau_target < self.plain_tau else 0
            if self.strikes >= self.patience:
                self.mode, self.strikes, decision = "evolution", 0, "fallback:evolution"
        return {
            "generation": generation,
            "event": "guard",
            "mode": before,
            "next_mode": self.mode,
            "decision": decision,
            "n": int(np.isfinite(np.asarray(fitness, dtype=float)).sum()),
            "tau_predictor": tau_meta,
            "tau_target_only": tau_target,
            "tau_params_proxy": tau_proxy,
            "strikes": self.strikes,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "strikes": self.strikes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["mode"] not in MODES:
            raise ValueError(f"TransferGuard: unknown mode {state['mode']!r}")
        self.mode = str(state["mode"])
        self.strikes = int(state["strikes"])
