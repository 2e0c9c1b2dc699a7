"""Meta-training: turn the evaluation history of earlier tasks into a `MetaPredictor`.

Records are grouped per (task, space): fitness from different supernets is not
comparable even on one task, so each group is its own ranking problem with its own
copula-normalized targets. A group's task embedding comes from its anchor records
(origin "anchor", matched to the space's anchor list); a group without anchor records
gets the predictor-free fallback embedding: zero anchor scores with the
"fraction of anchors scored" feature at 0, which marks it missing so the predictor
learns to lean on the arch features alone there. Records whose fitness is not finite
(failed evaluations, stored as -inf) are left out: a failure says nothing reliable
about the arch's quality.

Model selection holds out whole tasks (all their spaces), because what matters is
ranking on a task never seen; the saved predictor is then refit on every task with
the chosen epochs and weight decay, and its card reports the held-out numbers.
Everything works on plain lists of `EvalRecord`, so no database is needed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from metanas.meta.anchors import DEFAULT_K, anchor_archs
from metanas.meta.encoding import (
    DEFAULT_MAX_LAYERS,
    DEFAULT_SEQ_LEN,
    arch_feature_matrix,
    copula_normalize,
    normalize_anchor_scores,
    objective_from_metric,
    task_embedding,
)
from metanas.meta.history import EvalRecord
from metanas.meta.predictor import MetaPredictor
from metanas.space import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS_GRID = (100, 200, 400)
DEFAULT_WEIGHT_DECAY_GRID = (1e-4, 1e-2)


@dataclass
class TrainingSet:
    """Rows of every (task, space) group: features, copula targets and bookkeeping.

    `groups[i]` names row i's ranking group ("task" or "task@signature" when a task
    was searched in several spaces); `task_of[group]` maps it back to the task id.
    """

    X_arch: np.ndarray
    X_task: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    params: np.ndarray
    task_of: dict[str, str]
    record_counts: dict[str, int]
    anchors_scored: dict[str, int]

    def subset(self, tasks: Iterable[str]) -> TrainingSet:
        """Rows of the groups that belong to `tasks` (task ids, not group names)."""
        wanted = set(tasks)
        keep_groups = {g for g, t in self.task_of.items() if t in wanted}
        rows = np.isin(self.groups, sorted(keep_groups))
        return TrainingSet(
            self.X_arch[rows],
            self.X_task[rows],
            self.y[rows],
            self.groups[rows],
            self.params[rows],
            {g: t for g, t in self.task_of.items() if g in keep_groups},
            {g: c for g, c in self.record_counts.items() if g in keep_groups},
            {g: c for g, c in self.anchors_scored.items() if g in keep_groups},
        )


def task_meta_from_records(records: Sequence[EvalRecord]) -> dict[str, Any]:
    """The first record's task_meta, with objective and metric direction filled in from the records when missing.

    The objective comes from a metric name like "kd_loss"; the direction from the
    sign linking fitness to metric_value (fitness is the metric or its negation).
    """
    meta = dict(records[0].task_meta) if records else {}
    if "objective" not in meta and records and objective_from_metric(records[0].metric_name) is not None:
        meta["objective"] = objective_from_metric(records[0].metric_name)
    if "higher_is_better" not in meta:
        for r in records:
            if np.isfinite(r.fitness) and r.metric_value != 0:
                meta["higher_is_better"] = bool(r.fitness == r.metric_value)
                break
    return meta


def task_embedding_from_records(
    records: Sequence[EvalRecord], anchors: Sequence[ArchConfig], meta: Mapping[str, Any] | None = None
) -> tuple[np.ndarray, int]:
    """Task embedding from one task's records in one space, and how many anchors were scored.

    Uses the records with origin "anchor" whose arch is in `anchors` (mean fitness
    per anchor); `meta` defaults to `task_meta_from_records(records)`. A search
    builds its target embedding with this too, so it matches meta-training exactly.
    """
    index = {a: i for i, a in enumerate(anchors)}
    scores: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r.origin == "anchor" and r.arch in index and np.isfinite(r.fitness):
            scores[index[r.arch]].append(r.fitness)
    fitness = [float(np.mean(scores[i])) if i in scores else None for i in range(len(anchors))]
    meta = task_meta_from_records(records) if meta is None else meta
    return task_embedding(normalize_anchor_scores(fitness), meta, k=len(anchors)), len(scores)


def build_training_set(
    records_by_task: Mapping[str, Sequence[EvalRecord]],
    spaces: Mapping[str, SearchSpace],
    anchors: Mapping[str, Sequence[ArchConfig]] | None = None,
    *,
    anchor_k: int = DEFAULT_K,
    anchor_seed: int = 0,
    seq_len: int = DEFAULT_SEQ_LEN,
    max_layers: int = DEFAULT_MAX_LAYERS,
) -> TrainingSet:
    """Features, task embeddings and per-group copula targets for every record.

    `spaces` maps space signatures to spaces; records of other spaces are skipped
    (with a warning). `anchors` maps signatures to anchor lists (default:
    `anchor_archs(space, anchor_k, anchor_seed)`); every list must have the same
    length, since it fixes the task-embedding size.
    """
    if anchors is None:
        anchors = {
            sig: anchor_archs(sp, anchor_k, anchor_seed, seq_len=seq_len, max_layers=max_layers)
            for sig, sp in spaces.items()
        }
    ks = {len(anchors[sig]) for sig in spaces if sig in anchors}
    if len(ks) > 1:
        raise ValueError(f"build_training_set: every space needs the same number of anchors, got {sorted(ks)}")
    missing = sorted(set(spaces) - set(anchors))
    if missing:
        raise ValueError(f"build_training_set: no anchors given for spaces {missing}")
    xa, xt, ys, gs, ps = [], [], [], [], []
    task_of: dict[str, str] = {}
    counts: dict[str, int] = {}
    scored: dict[str, int] = {}
    skipped: dict[str, int] = defaultdict(int)
    for task_id in sorted(records_by_task):
        by_space: dict[str, list[EvalRecord]] = defaultdict(list)
        for r in records_by_task[task_id]:
            if r.space_signature not in spaces:
                skipped[r.space_signature] += 1
            elif np.isfinite(r.fitness):
                by_space[r.space_signature].append(r)
        for sig in sorted(by_space):
            recs = by_space[sig]
            group = task_id if len(by_space) == 1 else f"{task_id}@{sig}"
            space = spaces[sig]
            emb, n_scored = task_embedding_from_records(recs, anchors[sig])
            xa.append(arch_feature_matrix(space, [r.arch for r in recs], seq_len, max_layers))
            xt.append(np.tile(emb, (len(recs), 1)))
            ys.append(copula_normalize([r.fitness for r in recs]))
            gs.extend([group] * len(recs))
            ps.extend(r.params for r in recs)
            task_of[group], counts[group], scored[group] = task_id, len(recs), n_scored
    for sig, n in skipped.items():
        logger.warning("skipped %d records of space %s, which is not among the given spaces", n, sig)
    if not xa:
        raise ValueError("build_training_set: no usable records (none with finite fitness in the given spaces)")
    return TrainingSet(
        np.concatenate(xa),
        np.concatenate(xt),
        np.concatenate(ys),
        np.asarray(gs),
        np.asarray(ps, dtype=float),
        task_of,
        counts,
        scored,
    )


def spaces_from_records(
    records: Sequence[EvalRecord], space_files: Sequence[str | os.PathLike] = ()
) -> dict[str, SearchSpace]:
    """The search spaces the records were made in, by signature: from `space.json` files of runs, and from
    the space description compress stores in each record's task_meta."""
    spaces: dict[str, SearchSpace] = {}
    for path in space_files:
        space = SearchSpace.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        spaces[space.signature()] = space
    for r in records:
        if r.space_signature not in spaces and isinstance(r.task_meta.get("space"), dict):
            space = SearchSpace.from_dict(r.task_meta["space"])
            if space.signature() == r.space_signature:
                spaces[space.signature()] = space
    return spaces


def kendall_tau_by_group(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Kendall tau between scores and targets within each group (0 where undefined, e.g. constant scores)."""
    out = {}
    for g in np.unique(groups):
        rows = groups == g
        tau = kendalltau(scores[rows], y[rows]).statistic if rows.sum() > 1 else np.nan
        out[str(g)] = 0.0 if np.isnan(tau) else float(tau)
    return out


def _collect(
    source: Any, spaces: Mapping[str, SearchSpace], tasks: Sequence[str] | None
) -> dict[str, list[EvalRecord]]:
    """Records per task from a HistoryStore (anything with `.records(space_signature=...)`) or plain records."""
    if hasattr(source, "records"):
        records: Iterable[EvalRecord] = [r for sig in spaces for r in source.records(space_signature=sig)]
    elif isinstance(source, Mapping):
        records = [r for recs in source.values() for r in recs]
    else:
        records = source
    by_task: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        if tasks is None or r.task_id in tasks:
            by_task[r.task_id].append(r)
    return dict(by_task)


def _split(task_ids: list[str], val_tasks: Sequence[str] | float, seed: int) -> tuple[list[str], list[str]]:
    if isinstance(val_tasks, (int, float)) and not isinstance(val_tasks, bool):
        if not 0.0 <= val_tasks < 1.0:
            raise ValueError(f"meta_train: a val_tasks fraction must be in [0, 1), got {val_tasks}")
        n_val = max(1, int(round(val_tasks * len(task_ids)))) if val_tasks > 0 and len(task_ids) > 1 else 0
        order = np.random.default_rng(seed).permutation(len(task_ids))
        val = sorted(task_ids[i] for i in order[:n_val])
    else:
        val = sorted(set(val_tasks))
        unknown = sorted(set(val) - set(task_ids))
        if unknown:
            raise ValueError(f"meta_train: validation tasks {unknown} have no records")
    train = [t for t in task_ids if t not in val]
    if not train:
        raise ValueError("meta_train: every task is a validation task; leave at least one for training")
    return train, val


def _select(
    data: TrainingSet,
    train_tasks: Sequence[str],
    val_ids: Sequence[str],
    epochs_grid: Sequence[int],
    weight_decay_grid: Sequence[float],
    encoding: Mapping[str, Any],
    seed: int,
    predictor_kwargs: Mapping[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]], float | None]:
    """The (epochs, weight decay) with the best mean held-out Kendall tau, every grid point's score, and the
    params proxy's tau on the same tasks; without held-out tasks, the largest grid values."""
    selection: list[dict[str, Any]] = []
    if not val_ids:
        return {"epochs": max(epochs_grid), "weight_decay": weight_decay_grid[-1]}, selection, None
    train, val = data.subset(train_tasks), data.subset(val_ids)
    checkpoints = set(epochs_grid)
    for wd in weight_decay_grid:

        def score(epoch: int, p: MetaPredictor, wd: float = wd) -> None:
            if epoch in checkpoints:
                taus = kendall_tau_by_group(p.predict(val.X_arch, val.X_task)[0], val.y, val.groups)
                selection.append(
                    {
                        "epochs": epoch,
                        "weight_decay": wd,
                        "val_kendall_tau": float(np.mean(list(taus.values()))),
                        "per_task": taus,
                    }
                )

        MetaPredictor(weight_decay=wd, encoding=encoding, **predictor_kwargs).fit(
            train.X_arch, train.X_task, train.y, train.groups, epochs=max(epochs_grid), seed=seed, callback=score
        )
    best = max(selection, key=lambda s: s["val_kendall_tau"])  # ties: the first weight decay, then fewer epochs
    proxy_tau = float(np.mean(list(kendall_tau_by_group(val.params, val.y, val.groups).values())))
    return best, selection, proxy_tau


def meta_train(
    source: Any,
    spaces: Mapping[str, SearchSpace] | Iterable[SearchSpace],
    tasks: Sequence[str] | None = None,
    val_tasks: Sequence[str] | float = 0.25,
    seed: int = 0,
    out_path: str | os.PathLike | None = None,
    *,
    anchors: Mapping[str, Sequence[ArchConfig]] | None = None,
    anchor_k: int = DEFAULT_K,
    anchor_seed: int = 0,
    seq_len: int = DEFAULT_SEQ_LEN,
    max_layers: int = DEFAULT_MAX_LAYERS,
    epochs_grid: Sequence[int] = DEFAULT_EPOCHS_GRID,
    weight_decay_grid: Sequence[float] = DEFAULT_WEIGHT_DECAY_GRID,
    **predictor_kwargs: Any,
) -> MetaPredictor:
    """Meta-train a predictor on the history of `tasks` (default: all) and save it to `out_path` if given.

    `source`: a HistoryStore, a dict task_id -> records, or an iterable of records.
    `val_tasks`: held-out task ids, or the fraction of tasks to hold out (seeded).
    `anchors` (default: `anchor_archs(space, anchor_k, anchor_seed)` per space) are
    recorded in the file's encoding by k and seed, so pass lists made that way.
    The (epochs, weight decay) pair with the best mean held-out Kendall tau is
    refit on all tasks; without held-out tasks the largest grid values are used.
    The card lists tasks, record counts, the held-out taus of the predictor and of
    the params proxy, and the selection grid.
    """
    if not isinstance(spaces, Mapping):
        spaces = {sp.signature(): sp for sp in spaces}
    if not epochs_grid or not weight_decay_grid:
        raise ValueError("meta_train: epochs_grid and weight_decay_grid need at least one value")
    if anchors is not None and {len(a) for a in anchors.values()} != {anchor_k}:
        raise ValueError(f"meta_train: the given anchor lists must all hold anchor_k={anchor_k} archs")
    records = _collect(source, spaces, tasks)
    absent = sorted(set(tasks or ()) - set(records))
    if absent:
        raise ValueError(f"meta_train: tasks {absent} have no records in the given spaces")
    data = build_training_set(
        records,
        spaces,
        anchors,
        anchor_k=anchor_k,
        anchor_seed=anchor_seed,
        seq_len=seq_len,
        max_layers=max_layers,
    )
    task_ids = sorted(set(data.task_of.values()))
    train_tasks, val_ids = _split(task_ids, val_tasks, seed)
    encoding = {"max_layers": max_layers, "seq_len": seq_len, "anchor_k": anchor_k, "anchor_seed": anchor_seed}
    best, selection, proxy_tau = _select(
        data, train_tasks, val_ids, epochs_grid, weight_decay_grid, encoding, seed, predictor_kwargs
    )
    predictor = MetaPredictor(weight_decay=best["weight_decay"], encoding=encoding, **predictor_kwargs)
    predictor.fit(data.X_arch, data.X_task, data.y, data.groups, epochs=best["epochs"], seed=seed)
    predictor.card = {
        "tasks": task_ids,
        "train_tasks": train_tasks,
        "val_tasks": val_ids,
        "record_counts": data.record_counts,
        "anchors_scored": data.anchors_scored,
        "spaces": sorted(spaces),
        "seed": seed,
        "epochs": best["epochs"],
        "weight_decay": best["weight_decay"],
        "val_kendall_tau": best.get("val_kendall_tau"),
        "val_kendall_tau_per_task": best.get("per_task"),
        "val_kendall_tau_params_proxy": proxy_tau,
        "selection": [{k: v for k, v in s.items() if k != "per_task"} for s in selection],
    }
    if out_path is not None:
        predictor.save(out_path)
    return predictor


# --------------------------------------------------------------------------- augmentation


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
