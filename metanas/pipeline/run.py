"""One compress run directory: the recipe and its checks, the state the stages share, the stage loop.

Construction checks everything that needs no training (recipe, teacher config,
space, parameter/FLOPs budgets, an explicit warm-start file); heavy state (the
trained supernet, the tokenized data) is loaded once, when a stage first needs it.
`run()` executes the stages in order, skipping completed ones whose fingerprints
match, and refuses (or, where allowed, redoes) stages made with another recipe.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from metanas._io import atomic_write_json, atomic_write_text
from metanas._lock import LOCK_FILE, RunLock
from metanas._paths import shareable
from metanas._threads import torch_threads
from metanas.config import Recipe, recipe_changes
from metanas.cost.budget import Budget
from metanas.cost.latency import MeasuredLatency, timing_supernet
from metanas.cost.latency_predictor import LatencyPredictor
from metanas.cost.model import CostModel
from metanas.data import Collator, DataBundle, batches_of, build_datasets
from metanas.evaluate import Evaluator
from metanas.meta.choice import resolve_warm_start
from metanas.objectives.base import Objective
from metanas.pipeline.checks import preflight
from metanas.pipeline.paths import (
    LATENCY_DIR,
    MEASURED_FILE,
    PREDICTOR_FILE,
    RECIPE_FILE,
    SPACE_FILE,
    STAGES_FILE,
    TRAIN_DIR,
)
from metanas.pipeline.stagelog import StageLog, StageTracker, dependents, stage_fingerprints, stage_inputs
from metanas.pipeline.stages import STAGES
from metanas.pipeline.teacher import resolve_teacher
from metanas.pipeline.tiny import write_tiny_teacher
from metanas.search.registry import ResolvedStrategy, resolve_strategy
from metanas.space import SearchSpace
from metanas.supernet.export import build_subnet_model
from metanas.supernet.model import ElasticBert
from metanas.supernet.onnx_export import as_format
from metanas.tracking import Tracker
from metanas.training import TOKENIZER_DIR, TrainedSupernet, load_trained_supernet

logger = logging.getLogger(__name__)

STAGE_NAMES = tuple(s.name for s in STAGES)
STAGE_BY_NAME = {s.name: s for s in STAGES}


class CompressInterrupted(KeyboardInterrupt):
    """Ctrl-C during a stage; completed stages are kept and the run resumes where it stopped."""

    def __init__(self, stage: str, run_dir: Path) -> None:
        super().__init__(f"interrupted during stage {stage!r}; completed stages are kept in {run_dir}")
        self.stage = stage
        self.run_dir = run_dir


def heldout_ranges(n_validation: int, n_fitness: int, n_report: int) -> tuple[range, range, bool]:
    """Validation indices for search fitness and for the report, and whether they overlap.

    The report uses the examples after the search's; when too few remain (a small
    validation split), it falls back to the start of the split and says so.
    """
    fit = range(0, min(n_validation, n_fitness))
    rest = range(len(fit), min(n_validation, len(fit) + n_report))
    if len(rest) >= min(n_report, 16):
        return fit, rest, False
    return fit, range(0, min(n_validation, n_report)), True


MAX_SOURCE_NAME = 160


def default_task_id(recipe: Recipe) -> str:
    """The task's name in the history: data source (and config) and objective."""
    d = recipe.data
    names = [shareable(s) for s in d.sources]  # a local file by its name: task ids end up in shared exports
    name = "+".join(names)
    if len(name) > MAX_SOURCE_NAME:  # the history's task_id column holds 255 characters
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{names[0]}+{len(names) - 1} more:{digest}"
    source = name if d.hf_config is None else f"{name}:{d.hf_config}"
    label = f"[{d.label_column}]" if d.label_column else ""
    return f"{source}{label}/{recipe.objective.name}"


def needs_latency(recipe: Recipe) -> bool:
    """Whether the run needs a latency model: a latency budget or objective, or per-candidate timing."""
    return (
        recipe.budget.latency_ms is not None
        or "latency_ms" in recipe.search.objectives
        or recipe.search.latency.measure
    )


def _prepare_run_dir(run_dir: Path, adopt: bool = False) -> None:
    """Create `run_dir` and prove it is writable, with one clear error when it is not.

    A non-empty directory that holds no compress run is refused (unless `adopt`), so
    compress never mixes its files into unrelated ones.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"output directory {str(run_dir)!r} is not writable: a file is in the way")
    is_run = (run_dir / RECIPE_FILE).is_file() or (run_dir / LOCK_FILE).is_file()  # a run, or one starting now
    if not adopt and run_dir.is_dir() and any(run_dir.iterdir()) and not is_run:
        raise ValueError(
            f"output directory {str(run_dir)!r} is not empty and holds no metanas compress run; choose another --out"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output directory {str(run_dir)!r} is not writable: {e.strerror or e}") from None


@dataclass
class CompressResult:
    """Where a finished compress run put its outputs, and the report's content."""

    run_dir: Path
    report: dict[str, Any]
    report_path: Path
    model_dir: Path


class CompressRun:
    """One run directory of `compress`: the recipe, its checks, the stages and their shared state."""

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike, *, train_dir: Path | None = None) -> None:
        """`train_dir`: where the trained supernet is (default `RUN_DIR/train`; a train-supernet run dir
        when searching one, which is then adopted as a run directory)."""
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.train_dir = train_dir or self.run_dir / TRAIN_DIR
        self.adopt = train_dir is not None
        self.teacher = resolve_teacher(recipe, self.run_dir)
        self.space = SearchSpace.from_teacher_config(self.teacher.config, **recipe.space)
        self.budget: Budget = recipe.budget.to_budget()
        if recipe.data.validation_fraction <= 0:
            raise ValueError("compress needs held-out data: set data.validation_fraction > 0")
        if "latency_ms" in recipe.search.objectives and not needs_latency(recipe):
            raise ValueError("a latency_ms objective needs a latency source")
        for warning in preflight(recipe, self.teacher.config, self.space):
            logger.warning("%s", warning)
        s = recipe.search
        if s.strategy == "evolution" and s.warm_start not in ("auto", "off"):
            resolve_warm_start(s.warm_start)  # an explicit predictor file must load now, not after training
        self.fingerprints = stage_fingerprints(recipe, STAGES)
        self.inputs = stage_inputs(recipe, STAGES)
        self.tracker: Tracker | None = None

    # ----- lazily loaded state -------------------------------------------
    @cached_property
    def trained(self) -> TrainedSupernet:
        return load_trained_supernet(self.train_dir)

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The teacher's tokenizer as the train stage saved it (loading it needs no supernet)."""
        return AutoTokenizer.from_pretrained(str(self.train_dir / TOKENIZER_DIR))

    @cached_property
    def bundle(self) -> DataBundle:
        return build_datasets(
            self.recipe.data, self.tokenizer, teacher_config=self.teacher.config, cache_dir=self.train_dir / "cache"
        )

    @cached_property
    def collate(self) -> Collator:
        return Collator(self.tokenizer)

    @cached_property
    def objective(self) -> Objective:
        return self.trained.objective()

    @cached_property
    def strategy(self) -> ResolvedStrategy:
        """The strategy the search runs (evolution becomes warm_evolution when a predictor is in use)."""
        s = self.recipe.search
        return resolve_strategy(s.strategy, s.options, s.warm_start)

    @property
    def needs_latency(self) -> bool:
        return needs_latency(self.recipe)

    @property
    def task_id(self) -> str:
        """The task's name in the history: `search.task_id`, else data source and objective."""
        return self.recipe.search.task_id or default_task_id(self.recipe)

    @property
    def heldout(self) -> tuple[range, range, bool]:
        s = self.recipe.search
        n_fitness = s.eval_batches * s.eval_batch_size
        return heldout_ranges(len(self.bundle.validation), n_fitness, self.recipe.report.examples)

    @property
    def search_budget(self) -> Budget:
        """The budget the search and the baseline must meet: the latency limit less `search.latency.margin`."""
        return self.budget.tightened("latency_ms", self.recipe.search.latency.margin)

    def measured_latency(self, sn: ElasticBert) -> MeasuredLatency:
        lat = self.recipe.search.latency
        path = self.run_dir / LATENCY_DIR / MEASURED_FILE
        b = self.budget
        fmt = self.recipe.export.format
        return MeasuredLatency(sn, path, b.batch_size, b.seq_len, lat.threads, lat.warmup, lat.runs, fmt)

    @cached_property
    def shipped_teacher(self) -> Any:
        """The teacher (the trained supernet's largest arch) as `export.format` ships it, built once: every
        export candidate is timed beside it."""
        model = build_subnet_model(self.trained.supernet, self.space.largest())
        return as_format(model, self.recipe.export.format, self.recipe.search.latency.threads)

    def timing_supernet(self) -> ElasticBert:
        """A supernet of the teacher's shape with random weights: latency does not depend on weights."""
        return timing_supernet(self.teacher.config, self.space)

    def cost_model(self, sn: ElasticBert | None = None) -> CostModel:
        """Costs at the budget's setting; latency from this run's predictor or measurements when it has one."""
        latency: LatencyPredictor | MeasuredLatency | None = None
        predictor_path = self.run_dir / LATENCY_DIR / PREDICTOR_FILE
        if predictor_path.is_file():
            latency = LatencyPredictor.load(predictor_path, self.space)
        elif self.recipe.search.latency.measure and (self.run_dir / LATENCY_DIR / MEASURED_FILE).is_file():
            latency = self.measured_latency(sn if sn is not None else self.timing_supernet())
        return CostModel(self.space, self.budget.seq_len, self.budget.batch_size, latency)

    def evaluator(self) -> Evaluator:
        """Search fitness: the objective on the first validation examples (the report uses later ones)."""
        fit, _, _ = self.heldout
        if len(fit) == 0:
            raise ValueError("the validation split is empty; use more data or a larger data.validation_fraction")
        batches = batches_of(self.bundle.validation, fit, self.recipe.search.eval_batch_size, self.collate)
        return Evaluator(self.trained.supernet, self.objective, batches)

    # ----- stage control -------------------------------------------------
    def did_work(self, name: str) -> bool:
        """Whether stage `name` left outputs in the run directory (a start that failed early left none)."""
        stage = STAGE_BY_NAME[name]
        return any((self.run_dir / entry).exists() for entry in stage.outputs)

    def _check_recorded(self, log: StageLog, redo_allowed: Callable[[str], bool]) -> list[str]:
        """Stages whose records no longer match the recipe; raises when one may not be redone.

        A stage that never finished and left no outputs has nothing to lose, so a
        corrected recipe may always redo it.
        """
        stale = []
        for stage in STAGE_NAMES:
            record = log.stages.get(stage)
            if record is None or record.get("fingerprint") == self.fingerprints[stage]:
                continue
            changed = recipe_changes(record.get("inputs", {}), self.inputs[stage])
            why = f"changed: {', '.join(changed)}" if changed else "a stage it depends on changed"
            nothing_to_lose = not record.get("done") and not self.did_work(stage)
            if not nothing_to_lose and not redo_allowed(stage):
                hint = (
                    "use another --out to train anew"
                    if stage == "train"
                    else "set export.overwrite=true to redo it and later stages, or use another --out"
                )
                raise ValueError(
                    f"{str(self.run_dir)!r} holds stage {stage!r} made with another recipe ({why}); {hint}"
                )
            stale.append(stage)
        return stale  # fingerprints include those of the stages consumed, so dependents are in the list

    def clear_outputs(self, name: str) -> None:
        """Remove what stage `name` wrote into the run directory."""
        stage = STAGE_BY_NAME[name]
        for entry in stage.outputs:
            path = self.run_dir / entry
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    @contextlib.contextmanager
    def _session(self, redo_allowed: Callable[[str], bool]) -> Iterator[StageLog]:
        """The run dir locked, its records checked against the recipe, the recipe saved, the tracker open.

        Nothing is written before the checks pass, so a refused rerun leaves the run as it was.
        """
        r = self.recipe
        _prepare_run_dir(self.run_dir, self.adopt)
        with RunLock(self.run_dir):
            log = StageLog(self.run_dir / STAGES_FILE)
            stale = self._check_recorded(log, redo_allowed)
            for stage in stale:
                self.clear_outputs(stage)
            if stale:
                logger.warning("redoing stages %s: the recipe changed", ", ".join(stale))
                log.forget(stale)
            atomic_write_text(r.to_yaml(), self.run_dir / RECIPE_FILE)
            atomic_write_json(self.space.to_dict(), self.run_dir / SPACE_FILE, indent=1)
            if self.teacher.path is not None and r.teacher.tiny:
                write_tiny_teacher(Path(self.teacher.path), seed=r.training.seed)
            tracker = Tracker(
                self.run_dir,
                config=r.to_dict(),
                use_wandb=r.logging.wandb,
                project=r.logging.project,
                name=r.logging.name or self.run_dir.resolve().name,
                tags=[*r.logging.tags, "compress"],
            )
            self.tracker = tracker
            try:
                with torch_threads(r.threads), tracker:
                    yield log
            finally:
                self.tracker = None

    def run(self, stages: Sequence[str] = STAGE_NAMES, redo: Sequence[str] = ()) -> StageLog:
        """Run `stages` in order, skipping completed ones; `redo` stages are rerun even when recorded."""
        overwrite = self.recipe.export.overwrite
        with self._session(lambda s: s != "train" and (overwrite or s in redo)) as log:
            name = stages[0]
            try:
                for name in stages:
                    if log.done(name):
                        logger.info("stage %s: done already, skipped", name)
                        continue
                    later = [s for s in dependents(name, STAGES, self.recipe) if s in log.stages]
                    if later:  # their outputs were made from what this stage is about to replace
                        log.forget(later)
                    self._run_stage(name, log)
            except KeyboardInterrupt:
                raise CompressInterrupted(name, self.run_dir) from None
        return log

    def _run_stage(self, name: str, log: StageLog) -> None:
        stage = STAGE_BY_NAME[name]
        started = time.perf_counter()
        logger.info("stage %d/%d %s", STAGE_NAMES.index(name) + 1, len(STAGES), name)
        log.start(name, self.fingerprints[name], self.inputs[name])
        assert self.tracker is not None
        section = StageTracker(self.tracker, log.data["next_step"])
        info = stage.run(self, log, section)
        log.data["next_step"] = section.last + 1
        log.finish(name, time.perf_counter() - started, info)
