"""`warm_start: auto` on the user's own history: a predictor meta-trained on it, cached by content.

Every search writes its evaluations to the history store, and the runner freezes the
other tasks' records of the search's space into the run directory. The user's own
tasks and supernets are what a new search resembles most, so when those records hold
at least `MIN_TASKS` usable tasks, `auto` meta-trains a predictor on them instead of
using the shipped one. A task is usable with `MIN_TASK_EVALUATIONS` finite
evaluations (anchors included) of which at least `MIN_TASK_ANCHORS` score distinct
anchors: the task embedding and the task similarity of the seeding compare anchor
scores, and fewer than 3 give no ranking to compare. Meta-training holds out a
quarter of the tasks (at least one) to choose epochs and weight decay, so 3 tasks
leave 2 to train on.

The predictor uses the shipped predictor's encoding (anchor count and seed, seq_len,
max_layers), so its anchors are the ones every search of the space scores. Training
is deterministic (fixed seed, one torch thread), and the file is cached under
`predictor_cache_dir()` keyed by a digest of the records used, the encoding, the
training settings and the predictor format: the same history reuses the file, any
change to the records used (a new task, more evaluations of one) trains once more.
The search copies the file into its run directory, so a resumed search uses the very
same predictor even when the cache was cleared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metanas._io import atomic_write_bytes
from metanas._paths import shareable
from metanas._threads import torch_threads
from metanas.meta.anchors import DEFAULT_K, anchor_archs
from metanas.meta.choice import WarmStartChoice, file_sha256, load_warm_predictor
from metanas.meta.encoding import DEFAULT_MAX_LAYERS, DEFAULT_SEQ_LEN
from metanas.meta.history import EvalRecord
from metanas.meta.metatrain import DEFAULT_EPOCHS_GRID, DEFAULT_WEIGHT_DECAY_GRID, meta_train
from metanas.meta.predictor import FORMAT, FORMAT_VERSION
from metanas.space import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

MIN_TASKS = 3
MIN_TASK_EVALUATIONS = 20
MIN_TASK_ANCHORS = 3
CACHE_ENV_VAR = "METANAS_PREDICTOR_CACHE"
RUN_PREDICTOR_FILE = "warm_predictor.safetensors"  # the copy a search keeps in its run directory
RECIPE = "metanas.history-predictor/1"  # part of the cache key: bump when the training below changes
# The encoding of a predictor trained without a shipped one to copy it from (the shipped one's values).
DEFAULT_ENCODING = {
    "anchor_k": DEFAULT_K,
    "anchor_seed": 0,
    "max_layers": DEFAULT_MAX_LAYERS,
    "seq_len": DEFAULT_SEQ_LEN,
}
# The record fields training reads; the digest covers these only (not run ids or timestamps).
_TRAINING_FIELDS = ("task_id", "task_meta", "space_signature", "arch", "fitness", "metric_name", "metric_value")


@dataclass(frozen=True)
class HistoryTraining:
    """How a history predictor is meta-trained (part of the cache key): held-out share, seed, selection grids."""

    val_tasks: float = 0.25
    seed: int = 0
    epochs_grid: tuple[int, ...] = DEFAULT_EPOCHS_GRID
    weight_decay_grid: tuple[float, ...] = DEFAULT_WEIGHT_DECAY_GRID


DEFAULT_TRAINING = HistoryTraining()


def predictor_cache_dir() -> Path:
    """`$METANAS_PREDICTOR_CACHE`, else `$XDG_CACHE_HOME/metanas/predictors`, else `~/.cache/metanas/predictors`."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "metanas" / "predictors"


def display_path(path: Path) -> str:
    """A path for a log line without this machine's home: `~/...` under the home directory, else `shareable`."""
    resolved = path.expanduser().resolve()
    home = Path.home().resolve()
    if resolved.is_relative_to(home):
        return "~/" + resolved.relative_to(home).as_posix()
    return str(shareable(resolved))


def usable_tasks(
    records: Sequence[EvalRecord], space: SearchSpace, anchors: Sequence[ArchConfig]
) -> dict[str, list[EvalRecord]]:
    """The finite records of `space`, per task, of the tasks that meet the thresholds (in task order)."""
    signature = space.signature()
    anchor_set = set(anchors)
    by_task: dict[str, list[EvalRecord]] = defaultdict(list)
    for r in records:
        if r.space_signature == signature and math.isfinite(r.fitness):
            by_task[r.task_id].append(r)
    out = {}
    for task_id in sorted(by_task):
        recs = by_task[task_id]
        scored = {r.arch for r in recs if r.origin == "anchor" and r.arch in anchor_set}
        distinct = len({r.fitness for r in recs}) >= 2
        if len(recs) >= MIN_TASK_EVALUATIONS and len(scored) >= MIN_TASK_ANCHORS and distinct:
            out[task_id] = recs
    return out


def history_digest(
    records_by_task: Mapping[str, Sequence[EvalRecord]], encoding: Mapping[str, Any], training: HistoryTraining
) -> str:
    """sha256 of what decides the trained weights: the records (in order), the encoding, training and format."""
    h = hashlib.sha256()
    header = {
        "recipe": RECIPE,
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "encoding": dict(encoding),
        "training": dataclasses.asdict(training),
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for task_id in sorted(records_by_task):
        for r in records_by_task[task_id]:
            row = r.to_row()
            h.update(json.dumps([row[k] for k in _TRAINING_FIELDS]).encode())
    return h.hexdigest()


def cached_predictor_path(digest: str, cache_dir: Path | None = None) -> Path:
    """Where the predictor of `digest` is cached."""
    return (cache_dir or predictor_cache_dir()) / f"history-{digest[:24]}.safetensors"


def history_predictor(
    records_by_task: Mapping[str, Sequence[EvalRecord]],
    space: SearchSpace,
    encoding: Mapping[str, Any],
    training: HistoryTraining | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """The cached predictor meta-trained on `records_by_task`, trained and written atomically when missing or
    damaged."""
    training = training or DEFAULT_TRAINING
    digest = history_digest(records_by_task, encoding, training)
    path = cached_predictor_path(digest, cache_dir)
    if path.is_file():
        try:
            load_warm_predictor(path)
            return path
        except ValueError as e:
            logger.warning("the cached predictor %s cannot be used (%s); training it again", display_path(path), e)
    logger.info("meta-training a predictor on your history (%d tasks)", len(records_by_task))
    with torch_threads(1):  # bit-identical weights for the same records, whatever the machine's thread count
        predictor = meta_train(
            records_by_task,
            {space.signature(): space},
            val_tasks=training.val_tasks,
            seed=training.seed,
            anchor_k=int(encoding["anchor_k"]),
            anchor_seed=int(encoding["anchor_seed"]),
            seq_len=int(encoding["seq_len"]),
            max_layers=int(encoding["max_layers"]),
            epochs_grid=training.epochs_grid,
            weight_decay_grid=training.weight_decay_grid,
        )
    predictor.card.update({"built_by": "metanas warm_start auto (your history)", "history_digest": digest})
    return predictor.save(path)


def _history_choice(path: Path, cache_path: Path) -> WarmStartChoice:
    """The choice of a history predictor; its line is the same whether this call trained it or found it."""
    predictor = load_warm_predictor(path)
    card = predictor.card
    n_records = sum(card.get("record_counts", {}).values())
    message = (
        f"warm start auto: predictor meta-trained on your history ({len(card.get('tasks', []))} tasks, "
        f"{n_records} records; cached at {display_path(cache_path)})"
    )
    logger.info(message)
    return WarmStartChoice(predictor, path, file_sha256(path), message)


def resolve_auto(
    space: SearchSpace,
    sources: Sequence[EvalRecord],
    shipped: WarmStartChoice,
    run_dir: Path | None = None,
    training: HistoryTraining | None = None,
) -> WarmStartChoice:
    """`warm_start: auto` once the sources are known: a predictor trained on them when they hold `MIN_TASKS`
    usable tasks, else `shipped` (what `resolve_warm_start("auto")` chose), with a line saying which and why.

    With `run_dir`, the trained file is copied there; a run directory already holding that copy (a resumed
    search) uses it as is.
    """
    kept = run_dir / RUN_PREDICTOR_FILE if run_dir is not None else None
    if kept is not None and kept.is_file():
        digest = load_warm_predictor(kept).card.get("history_digest", "")
        return _history_choice(kept, cached_predictor_path(digest))
    encoding = dict(shipped.predictor.encoding) if shipped.active else dict(DEFAULT_ENCODING)
    anchors = anchor_archs(
        space,
        int(encoding["anchor_k"]),
        int(encoding["anchor_seed"]),
        seq_len=int(encoding["seq_len"]),
        max_layers=int(encoding["max_layers"]),
    )
    tasks = usable_tasks(sources, space, anchors)
    if len(tasks) < MIN_TASKS:
        message = (
            f"warm start auto: {_shipped_line(shipped)}; your history has {len(tasks)} compatible tasks, "
            f"needs {MIN_TASKS} (each with >= {MIN_TASK_EVALUATIONS} evaluations, >= {MIN_TASK_ANCHORS} anchors)"
        )
        logger.info(message)
        return dataclasses.replace(shipped, message=message)
    cache_path = history_predictor(tasks, space, encoding, training)
    path = cache_path
    if kept is not None:
        path = atomic_write_bytes(cache_path.read_bytes(), kept)
    return _history_choice(path, cache_path)


def _shipped_line(shipped: WarmStartChoice) -> str:
    """What `auto` falls back to, in words: the shipped (or `$METANAS_META_PREDICTOR`) predictor, or none."""
    if not shipped.active:
        return shipped.message.removeprefix("warm start auto: ")
    card = shipped.predictor.card
    return (
        f"shipped predictor ({shareable(shipped.path)}, meta-trained on {len(card.get('tasks', []))} tasks, "
        f"held-out Kendall tau {card.get('val_kendall_tau')})"
    )
