"""Arch and task encodings shared by every space and task, so one predictor serves them all.

Arch features are fractions of the space's maxima (plus log cost ratios to the largest
arch), so records from a 6-layer MiniLM space and a 12-layer BERT-base space land in
one feature space and the largest arch of every space has the same vector. Targets are
normalized per task with a rank-based Gaussian copula, because raw metrics (a KD loss,
an accuracy) are not comparable across tasks. A task is described by the normalized
scores of its anchor archs plus a little metadata.

Per-layer layout: the per-layer head and FFN fractions are *resampled* onto
`max_layers` slots that span the teacher's full depth (slot j covers relative
depth [j/S, (j+1)/S), area-weighted over the teacher layers it overlaps), not padded
by absolute layer index. With absolute padding, layer 5 is the last layer of a
6-layer MiniLM but the middle of BERT-base, so a predictor would mix unrelated
layers; with resampling the top layers of both teachers occupy the top slots, and
dropping the top third of the layers zeroes the top third of the slots in both.
Layer roles (lower layers syntactic, upper ones semantic) follow relative depth,
which is what transfers across teachers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from metanas.objectives import OBJECTIVES
from metanas.space import ArchConfig, SearchSpace

DEFAULT_MAX_LAYERS = 24
DEFAULT_SEQ_LEN = 128
# task_meta keys the task embedding reads; all optional (unknown -> 0).
TASK_META_KEYS = ("objective", "higher_is_better", "seq_len", "corpus_size")
# Scales that put the log metadata roughly in [0, 1] (seq_len 512, a corpus of 1e9 examples).
_LOG_SEQ_LEN_SCALE = math.log(512)
_LOG_CORPUS_SCALE = math.log(1e9)
_N_AGGREGATES = 6  # mean/min/max of head fractions, then of FFN fractions
_N_COSTS = 3  # log ratios of params, non-embedding params, FLOPs to the largest arch's
_N_TASK_META = 1 + len(OBJECTIVES) + 3  # observed-anchor fraction, objective, direction, seq_len, corpus


def feature_dim(max_layers: int = DEFAULT_MAX_LAYERS) -> int:
    """Length of `arch_features` for `max_layers` per-layer slots."""
    return 2 + 2 * max_layers + _N_AGGREGATES + _N_COSTS


def task_embedding_dim(k: int) -> int:
    """Length of `task_embedding` for `k` anchors."""
    return k + _N_TASK_META


@lru_cache(maxsize=64)
def _slot_weights(n_layers: int, n_slots: int) -> np.ndarray:
    """(n_slots, n_layers) matrix: the share of each slot's span of relative depth covered by each layer."""
    width = n_layers / n_slots
    w = np.zeros((n_slots, n_layers))
    for j in range(n_slots):
        lo, hi = j * width, (j + 1) * width
        for i in range(int(math.floor(lo)), min(n_layers, int(math.ceil(hi)))):
            w[j, i] = max(0.0, min(hi, i + 1) - max(lo, i)) / width
    w.setflags(write=False)
    return w


@lru_cache(maxsize=64)
def _largest_costs(space: SearchSpace, seq_len: int) -> tuple[float, float, float]:
    top = space.largest()
    return float(space.params(top)), float(space.params(top, embeddings=False)), float(space.flops(top, seq_len))


def arch_features(
    space: SearchSpace, arch: ArchConfig, seq_len: int = DEFAULT_SEQ_LEN, max_layers: int = DEFAULT_MAX_LAYERS
) -> np.ndarray:
    """Fixed-length vector of `arch` relative to `space`, comparable across spaces.

    Layout: depth fraction, hidden fraction, `max_layers` head-fraction slots,
    `max_layers` FFN-fraction slots (resampled over the teacher's depth; layers the
    arch drops count as 0 at their own depth, so a spread selection leaves gaps),
    mean/min/max of the active layers' head fractions and of their FFN fractions,
    then log(params / largest's), log(non-embedding params / largest's) and
    log(FLOPs at `seq_len` / largest's). Fractions lie in [0, 1], log ratios are <= 0,
    and `space.largest()` maps to ones and zeros in every space.
    """
    if max_layers < 1:
        raise ValueError(f"arch_features: max_layers must be >= 1, got {max_layers}")
    space.validate(arch)
    n_layers = space.max_depth
    heads = np.zeros(n_layers)
    ffn = np.zeros(n_layers)
    kept = list(space.layer_indices(arch))  # a layer the arch does not keep counts as 0 where it sits
    heads[kept] = np.asarray(arch.heads, dtype=float) / max(space.head_choices)
    ffn[kept] = np.asarray(arch.ffn, dtype=float) / max(space.ffn_choices)
    slots = _slot_weights(n_layers, max_layers)
    active_heads, active_ffn = heads[kept], ffn[kept]
    top_params, top_non_emb, top_flops = _largest_costs(space, seq_len)
    return np.concatenate(
        [
            [arch.depth / n_layers, arch.hidden / max(space.hidden_choices)],
            slots @ heads,
            slots @ ffn,
            [active_heads.mean(), active_heads.min(), active_heads.max()],
            [active_ffn.mean(), active_ffn.min(), active_ffn.max()],
            [
                math.log(space.params(arch) / top_params),
                math.log(space.params(arch, embeddings=False) / top_non_emb),
                math.log(space.flops(arch, seq_len) / top_flops),
            ],
        ]
    )


def arch_feature_matrix(
    space: SearchSpace,
    archs: Sequence[ArchConfig],
    seq_len: int = DEFAULT_SEQ_LEN,
    max_layers: int = DEFAULT_MAX_LAYERS,
) -> np.ndarray:
    """`arch_features` of each arch stacked into an (n, feature_dim) array."""
    out = np.zeros((len(archs), feature_dim(max_layers)))
    for i, arch in enumerate(archs):
        out[i] = arch_features(space, arch, seq_len, max_layers)
    return out


def copula_normalize(values: Sequence[float] | np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Per-task Gaussian copula: ranks -> (r + 0.5) / n -> standard normal quantiles; ties share their mean rank.

    Only the order within one task survives, so tasks with losses of different
    scales (or accuracies) train one predictor together. The result is always
    higher-is-better; +/-inf are ranked like any value, NaN is refused.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"copula_normalize: expected a 1-D array, got shape {v.shape}")
    if np.isnan(v).any():
        raise ValueError("copula_normalize: values contain NaN")
    if v.size == 0:
        return v.copy()
    ranks = rankdata(v if higher_is_better else -v, method="average") - 1.0
    return norm.ppf((ranks + 0.5) / v.size)


def normalize_anchor_scores(fitness: Sequence[float | None]) -> np.ndarray:
    """Copula-normalize the anchors' fitness (in anchor order); unscored anchors (None/NaN) stay NaN.

    Lets a search build its task embedding before every anchor is scored.
    """
    raw = np.array([np.nan if f is None else float(f) for f in fitness], dtype=float)
    out = np.full(raw.shape, np.nan)
    seen = ~np.isnan(raw)
    out[seen] = copula_normalize(raw[seen])
    return out


def task_embedding(
    anchor_scores: Sequence[float] | np.ndarray | None, meta: Mapping[str, Any], k: int | None = None
) -> np.ndarray:
    """Task fingerprint: the anchors' normalized scores plus task metadata, `task_embedding_dim(k)` long.

    Layout: K anchor scores (NaN/unscored -> 0), the fraction of anchors scored (0
    marks a task without anchors), objective one-hot over `OBJECTIVES`, metric
    direction (+1 higher-is-better, -1 lower, 0 unknown), log(seq_len) / log(512),
    log(1 + corpus_size) / log(1e9). `meta` keys are `TASK_META_KEYS`; missing ones
    encode as 0. `k` is required when `anchor_scores` is None.
    """
    if anchor_scores is None:
        if k is None:
            raise ValueError("task_embedding: pass k (the number of anchors) when anchor_scores is None")
        scores = np.full(k, np.nan)
    else:
        scores = np.asarray(anchor_scores, dtype=float)
        if scores.ndim != 1:
            raise ValueError(f"task_embedding: anchor_scores must be 1-D, got shape {scores.shape}")
        if k is not None and scores.size != k:
            raise ValueError(f"task_embedding: got {scores.size} anchor scores for k={k}")
    seen = ~np.isnan(scores)
    objective = np.zeros(len(OBJECTIVES))
    name = meta.get("objective")
    if name in OBJECTIVES:
        objective[OBJECTIVES.index(name)] = 1.0
    hib = meta.get("higher_is_better")
    direction = 0.0 if hib is None else (1.0 if hib else -1.0)
    seq_len = meta.get("seq_len")
    corpus = meta.get("corpus_size")
    return np.concatenate(
        [
            np.where(seen, scores, 0.0),
            [seen.mean() if scores.size else 0.0],
            objective,
            [
                direction,
                math.log(seq_len) / _LOG_SEQ_LEN_SCALE if seq_len else 0.0,
                math.log1p(corpus) / _LOG_CORPUS_SCALE if corpus else 0.0,
            ],
        ]
    )


def objective_from_metric(metric_name: str) -> str | None:
    """The objective a metric name belongs to (`kd_loss` -> kd, `accuracy` -> task), for records that lack it."""
    prefix = metric_name.split("_")[0]
    if prefix in OBJECTIVES:
        return prefix
    return "task" if metric_name == "accuracy" else None


def target_task_meta(
    task_meta: Mapping[str, Any] | None, metric_name: str, higher_is_better: bool, seq_len: int
) -> dict[str, Any]:
    """A search's task metadata with objective, metric direction and seq_len filled in when missing.

    Sources are described by `metatrain.task_meta_from_records` with the same rules,
    so target and sources are encoded alike.
    """
    meta = dict(task_meta or {})
    if "objective" not in meta and objective_from_metric(metric_name) is not None:
        meta["objective"] = objective_from_metric(metric_name)
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
