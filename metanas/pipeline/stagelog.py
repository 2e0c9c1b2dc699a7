"""The stage records, their fingerprints, and the stage log of a run directory (`stages.json`).

A `Stage` holds every fact about a stage in one place: the recipe keys its outputs
depend on, the stages whose outputs it consumes, the outputs it owns in the run
directory, and the function that runs it. A stage's fingerprint is a digest of its
own inputs and of the fingerprints of the stages it consumes, so changing a key
invalidates exactly that stage and everything downstream of it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metanas._io import atomic_write_json, read_json
from metanas.config import Recipe

if TYPE_CHECKING:
    from metanas.pipeline.run import CompressRun
    from metanas.tracking import Tracker

STAGES_FORMAT = "metanas.compress-stages/1"
# Settings that change where or how results are recorded, not what they are.
# The study settings say which workers share the search, not what it finds (its strategies are
# synchronous by generation: one worker or many give the same search.json).
UNFINGERPRINTED = (
    "search.history",
    "search.study",
    "search.heartbeat_seconds",
    "search.stale_seconds",
    "export.overwrite",
    "export.distill_cache_mb",  # speed only: a resume with a smaller cache keeps the finished parts
)


@dataclass(frozen=True)
class Stage:
    """One stage of `compress`: what it depends on, what it owns, and how it runs."""

    name: str
    recipe_keys: tuple[str, ...]  # dotted recipe keys its outputs depend on
    consumes: tuple[str, ...]  # stages whose outputs it reads
    outputs: tuple[str, ...]  # run-dir entries it writes, removed when it is redone
    run: Callable[[CompressRun, StageLog, StageTracker], dict[str, Any]]  # returns the stage's summary
    # what a recipe adds to recipe_keys and consumes (e.g. relaxed training reads the budget and the latency model)
    extra: Callable[[Recipe], tuple[tuple[str, ...], tuple[str, ...]]] | None = None

    def keys(self, recipe: Recipe) -> tuple[str, ...]:
        return self.recipe_keys + (self.extra(recipe)[0] if self.extra else ())

    def deps(self, recipe: Recipe) -> tuple[str, ...]:
        return self.consumes + (self.extra(recipe)[1] if self.extra else ())


def dependents(name: str, stages: Sequence[Stage], recipe: Recipe) -> list[str]:
    """The stages that consume `name`'s outputs, directly or through others, in stage order."""
    out: list[str] = []
    for other in stages:
        if any(d == name or d in out for d in other.deps(recipe)):
            out.append(other.name)
    return out


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _drop(data: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part, {})
    if isinstance(node, dict):
        node.pop(last, None)


def stage_inputs(recipe: Recipe, stages: Sequence[Stage]) -> dict[str, dict[str, Any]]:
    """Per stage, the recipe values its outputs depend on (dotted key -> value)."""
    data = recipe.to_dict()
    for key in UNFINGERPRINTED:
        _drop(data, key)
    return {s.name: {k: _get(data, k) for k in s.keys(recipe)} for s in stages}


def stage_fingerprints(recipe: Recipe, stages: Sequence[Stage]) -> dict[str, str]:
    """A digest per stage of its own inputs and those of the stages it consumes."""
    inputs = stage_inputs(recipe, stages)
    out: dict[str, str] = {}
    for s in stages:
        payload = {"inputs": inputs[s.name], "deps": [out[d] for d in s.deps(recipe)]}
        out[s.name] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


class StageLog:
    """`stages.json`: per stage its fingerprint, inputs, whether it finished, its seconds and summary.

    A stage is recorded as started (done: false) before it writes anything and as
    done only after its outputs are complete, so a crash never leaves a stage that
    looks finished.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"format": STAGES_FORMAT, "stages": {}, "next_step": 0}
        if path.is_file():
            data = read_json(path, "restore it, or delete it to redo every stage of this run")
            if data.get("format") != STAGES_FORMAT:
                raise ValueError(f"{str(path)!r} is not a metanas compress stage log")
            self.data = data

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def done(self, stage: str) -> bool:
        return bool(self.stages.get(stage, {}).get("done"))

    def info(self, stage: str) -> dict[str, Any]:
        return self.stages.get(stage, {}).get("info", {})

    def save(self) -> None:
        atomic_write_json(self.data, self.path)

    def start(self, stage: str, fingerprint: str, inputs: Mapping[str, Any]) -> None:
        record = self.stages.setdefault(stage, {})
        record.update(fingerprint=fingerprint, inputs=dict(inputs), done=False)
        self.save()

    def finish(self, stage: str, seconds: float, info: Mapping[str, Any]) -> None:
        record = self.stages[stage]
        record.update(done=True, seconds=record.get("seconds", 0.0) + seconds, info=dict(info))
        self.save()

    def forget(self, stages: Sequence[str]) -> None:
        for stage in stages:
            self.stages.pop(stage, None)
        self.save()


class StageTracker:
    """A view of the compress run's tracker for one stage: its steps continue after the previous stage's.

    W&B needs increasing steps within a run; with an offset per stage, one run holds
    every stage, each under its own key prefix (`train/`, `search/`, `export/`, `report/`).
    """

    def __init__(self, tracker: Tracker, base: int) -> None:
        self.tracker = tracker
        self.base = base
        self.last = base

    def _step(self, step: int) -> int:
        self.last = max(self.last, self.base + step)
        return self.base + step

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.tracker.log(metrics, step=self._step(step))

    def log_table(self, key: str, columns: Sequence[str], rows: Any, step: int) -> None:
        self.tracker.log_table(key, columns, rows, step=self._step(step))

    def log_image(self, key: str, path: str | os.PathLike, step: int) -> None:
        self.tracker.log_image(key, path, step=self._step(step))

    def summary(self, values: Mapping[str, Any]) -> None:
        self.tracker.summary(values)
