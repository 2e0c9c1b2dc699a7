"""The five stages of `compress`, in order: latency -> train -> search -> export -> report.

Each is one `Stage` record (see `stagelog`): its recipe keys, the stages it
consumes, the run-dir entries it owns, and the function below that runs it. A
stage function takes the run, the stage log and a tracker section, writes its
outputs, and returns the summary recorded in `stages.json`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoModel, PreTrainedModel

from metanas._io import atomic_dir, atomic_write_json
from metanas.cost.latency import build_latency_predictor
from metanas.meta.history import HistoryStore
from metanas.pipeline.paths import (
    BASELINE_DIR,
    LATENCY_DIR,
    LAYER_DROP_DIR,
    MODEL_DIR,
    PREDICTOR_FILE,
    SEARCH_DIR,
    TRAIN_DIR,
)
from metanas.pipeline.reporting import REPORT_OUTPUTS, report_stage
from metanas.pipeline.stagelog import Stage, StageLog, StageTracker
from metanas.pipeline.verify import baseline_archs, layer_drop_archs, ranked_archs, verified
from metanas.search.runner import run_search
from metanas.search.study import run_study
from metanas.space import ArchConfig
from metanas.supernet.convert import load_teacher_model
from metanas.supernet.export import ARCH_FILE, write_model_dir
from metanas.supernet.onnx_export import write_format
from metanas.tracking import read_metrics
from metanas.training import CHECKPOINT_FILE, SUPERNET_FILE, train_supernet
from metanas.training.distill import batch_schedule, distill, example_lengths, prefill, save_weights
from metanas.training.pace import DistillPace, TimeBudget
from metanas.training.teacher_cache import TeacherCache

if TYPE_CHECKING:
    from metanas.config import Recipe
    from metanas.pipeline.run import CompressRun

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- 1. latency


def latency_stage(run: CompressRun, log: StageLog, section: StageTracker) -> dict[str, Any]:
    """The latency model the search needs, and the latency budget's feasibility, before any training."""
    if not run.needs_latency:
        return {"skipped": "no latency budget, objective or measurement requested"}
    lat, budget = run.recipe.search.latency, run.budget
    out_dir = run.run_dir / LATENCY_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    sn = run.timing_supernet()
    info: dict[str, Any] = {"source": "measured per candidate" if lat.measure else "predictor"}
    if lat.measure:
        measure = run.measured_latency(sn)
        for arch in (run.space.smallest(), run.space.largest()):
            measure(arch)
    else:
        predictor = build_latency_predictor(
            sn,
            n=lat.predictor_archs,
            batch_size=budget.batch_size,
            seq_len=budget.seq_len,
            threads=lat.threads,
            cache_dir=lat.cache_dir,
            warmup=lat.warmup,
            runs=lat.runs,
            rounds=lat.rounds,
            seed=run.recipe.search.seed,
            fmt=run.recipe.export.format,  # time the format that ships
        )
        predictor.save(out_dir / PREDICTOR_FILE)
        info.update(archs_measured=len(predictor.measurements), holdout_mape=predictor.holdout_mape)
    cost_model = run.cost_model(sn)
    absolute = cost_model.check_feasible(run.search_budget)
    teacher = cost_model.teacher_costs(need_latency=True)
    info.update(teacher_latency_ms=teacher["latency_ms"], search_budget=dataclasses.asdict(absolute))
    section.log({"latency/teacher_ms": teacher["latency_ms"]}, step=0)
    return info


# --------------------------------------------------------------------------- 2. train


def train_stage(run: CompressRun, log: StageLog, section: StageTracker) -> dict[str, Any]:
    """Convert, rewire and train the supernet in `train/` (resumed from its checkpoint)."""
    r = run.recipe
    resume = (run.train_dir / CHECKPOINT_FILE).is_file()
    if not resume and run.train_dir.exists():  # a start that never reached its first checkpoint
        for p in run.train_dir.iterdir():
            if p.name != "cache":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    train_recipe = dataclasses.replace(
        r,
        teacher=dataclasses.replace(r.teacher, path=run.teacher.path, tiny=False),
        logging=dataclasses.replace(r.logging, wandb=False),  # the compress run's tracker carries W&B
    )
    relaxed = r.training.sampling == "relaxed"  # single-stage: the budget's costs, latency from the latency stage
    costs = run.cost_model() if relaxed else None
    result = train_supernet(train_recipe, run.train_dir, resume=resume, cost_model=costs)
    for record in read_metrics(run.train_dir):
        if "summary" in record:
            section.summary({f"train/{k}": v for k, v in record["summary"].items()})
        elif "step" in record:
            metrics = {f"train/{k}": v for k, v in record.items() if k not in ("step", "time")}
            section.log(metrics, step=record["step"])
    return {
        "steps": result.steps,
        "metric_name": result.metric_name,
        "before": result.before,
        "after": result.after,
        "final_losses": result.final_losses,
    }


# --------------------------------------------------------------------------- 3. search


def search_stage(run: CompressRun, log: StageLog, section: StageTracker) -> dict[str, Any]:
    """The search under the budget (`search/`, resumed from its state), warm-started when a predictor is in use."""
    s = run.recipe.search
    cost_model = run.cost_model(run.trained.supernet)
    if run.budget.latency_ms is not None and not cost_model.has_latency:
        raise ValueError("the latency budget has no latency model: run the latency stage first")
    strategy = run.strategy
    logger.info("search: %s", strategy.message)
    task_meta = {
        "objective": run.recipe.objective.name,
        "corpus_size": len(run.bundle.train),
        "space": run.space.to_dict(),
    }
    with HistoryStore(s.history) as history:
        common = dict(
            strategy_name=strategy.name,
            strategy_options=strategy.options,
            run_dir=run.run_dir / SEARCH_DIR,
            history=history,
            task_id=run.task_id,
            seed=s.seed,
            tracker=section,
            objectives=s.objectives,
            task_meta=task_meta,
        )
        if s.study is None:
            result = run_search(run.evaluator(), run.space, cost_model, run.search_budget, **common)
        else:  # one worker of a shared study (metanas.search.study)
            study = run.run_dir.resolve().name if s.study == "auto" else s.study
            timing = {"heartbeat_seconds": s.heartbeat_seconds, "stale_seconds": s.stale_seconds}
            result = run_study(run.evaluator(), run.space, cost_model, run.search_budget, study, **common, **timing)
        history_url = history.url
    return {
        "strategy": strategy.name,
        "warm_start": result.warm_start or strategy.message,
        "history": history_url,
        "best_arch": result.best_arch.to_dict(),
        "best_metric": result.best_metric,
        "metric_name": result.metric_name,
        "best_costs": result.best_costs,
        "num_evaluations": result.num_evaluations,
        "evals_per_minute": result.evals_per_minute,
        "sources": result.sources,
        "budget": dataclasses.asdict(cost_model.check_feasible(run.budget)),
        "search_budget": dataclasses.asdict(cost_model.check_feasible(run.search_budget)),
    }


# --------------------------------------------------------------------------- 4. export


PACE_PROBE_STEPS = 20


def _distill(
    run: CompressRun,
    model: PreTrainedModel,
    arch: ArchConfig,
    teacher: PreTrainedModel,
    steps: int,
    desc: str,
    cache: TeacherCache,
    budget: TimeBudget | None = None,
) -> dict[str, Any]:
    """`distill` with the recipe's final-distillation settings, on the run's training data; each of `arch`'s
    layers is matched to the teacher layer it was cut from."""
    e = run.recipe.export
    return distill(
        model, teacher, run.bundle.train, run.collate, steps=steps, lr=e.distill_lr, batch_size=e.distill_batch_size,
        bf16=e.distill_bf16, dropout=e.distill_dropout, seed=run.recipe.training.seed, desc=desc, cache=cache,
        teacher_layers=run.space.layer_indices(arch), layer_weight=e.distill_layer_weight, budget=budget,
    )  # fmt: skip


def _fitting_steps(
    run: CompressRun, model: PreTrainedModel, arch: ArchConfig, teacher: PreTrainedModel, cache: TeacherCache
) -> tuple[int, TimeBudget, dict[str, Any]]:
    """A first plan of how many steps of `model` fit in export.distill_seconds, its teacher outputs included, and
    the budget the distillation plans again against as it runs.

    A probe on a copy (the run's first batches) times steps against their padded
    tokens and the teacher per example; the teacher then runs on every example the
    steps that would fit draw, timed, and what that left of the budget sets the steps
    at the probe's pace, batch by batch (`metanas.training.pace`). The distillation that follows finds all its examples
    cached.
    """
    e = run.recipe.export
    probe = min(PACE_PROBE_STEPS, e.distill_steps)
    pace = DistillPace.from_probe(_distill(run, copy.deepcopy(model), arch, teacher, probe, "distill pace", cache))
    lengths, batch = example_lengths(run.bundle.train), e.distill_batch_size
    schedule = batch_schedule(lengths, batch, e.distill_steps, run.recipe.training.seed)  # what distill will draw
    planned = pace.steps_in(e.distill_seconds, schedule, lengths, cache)
    prefilled, seconds = prefill(
        teacher, run.bundle.train, run.collate, cache, planned, batch, e.distill_bf16, run.recipe.training.seed,
        layered=e.distill_layer_weight > 0,
    )  # fmt: skip
    steps = pace.steps_in(e.distill_seconds - seconds, schedule[:planned], lengths, cache)
    logger.info(
        "final distillation: %.3f s a step + %.1f ms per 1,000 padded tokens; the teacher took %.0f s for the "
        "examples of %d steps, so %d steps fit in export.distill_seconds=%g (at most %d)",
        pace.step_s, pace.token_s * 1e6, seconds, planned, steps, e.distill_seconds, e.distill_steps,
    )  # fmt: skip
    budget = TimeBudget(e.distill_seconds - seconds, e.distill_steps, pace.teacher_s_per_example)
    return steps, budget, {"teacher_prefilled": prefilled, "teacher_prefill_seconds": round(seconds, 2)}


def export_distilled(
    run: CompressRun,
    name: str,
    arch: ArchConfig,
    out: Path,
    teacher: PreTrainedModel | None,
    cache: TeacherCache,
    steps: int | None,
) -> dict[str, Any]:
    """Export `arch`, distil it when asked (`steps` None: as many as fit in export.distill_seconds), and move
    it into `out` only when finished."""
    with atomic_dir(out, overwrite=True) as tmp:
        write_model_dir(run.trained.supernet, arch, tmp, tokenizer=run.tokenizer, extra_info={"role": name})
        distill_info = None
        if teacher is not None:
            model = AutoModel.from_pretrained(str(tmp), trust_remote_code=True)
            prefilled: dict[str, Any] = {}  # the teacher's pass when the time budget ran it before the steps
            budget = None
            if steps is None:
                steps, budget, prefilled = _fitting_steps(run, model, arch, teacher, cache)
            distill_info = {**_distill(run, model, arch, teacher, steps, f"distill {name}", cache, budget), **prefilled}
            if budget is not None and distill_info["steps"] != steps:
                logger.info(
                    "final distillation: planned again from its own steps as it ran: %d steps instead of %d",
                    distill_info["steps"], steps,
                )  # fmt: skip
            save_weights(model, tmp)
            info = json.loads((tmp / ARCH_FILE).read_text())
            info["final_distillation"] = {k: v for k, v in distill_info.items() if k != "history"}
            atomic_write_json(info, tmp / ARCH_FILE)
        write_format(tmp, run.recipe.export.format)  # onnx/model.onnx (+ model_qint8.onnx) of the final weights
    return {"arch": arch.to_dict(), "dir": out.name, "distill": distill_info}


def export_stage(run: CompressRun, log: StageLog, section: StageTracker) -> dict[str, Any]:
    """The best arch (`model/`), the uniform-shrink (`baseline/`) and layer-drop (`layer_drop/`) baselines,
    each verified and distilled."""
    e = run.recipe.export
    parts: dict[str, tuple[Callable[[], Iterator[tuple[ArchConfig, Any]]], Path]] = {
        "student": (lambda: ranked_archs(run), run.run_dir / MODEL_DIR)
    }
    if e.baseline:
        parts["baseline"] = (lambda: baseline_archs(run), run.run_dir / BASELINE_DIR)
    if e.layer_drop:
        parts["layer_drop"] = (lambda: layer_drop_archs(run), run.run_dir / LAYER_DROP_DIR)
    done: dict[str, Any] = dict(log.stages["export"].get("parts", {}))
    teacher = load_teacher_model(run.teacher.path) if e.distill_steps else None
    # the same batches for every part: one teacher pass, for any width the space allows
    teacher_width = run.space.largest().hidden
    cache = TeacherCache.for_students(e.distill_cache_mb * 2**20, run.space.hidden_choices, teacher_width)
    steps = e.distill_steps if e.distill_seconds is None else None  # None: the student's time budget decides
    for i, (name, (candidates, out)) in enumerate(parts.items()):
        if name in done and out.is_dir():
            steps = done[name]["distill"]["steps"] if done[name]["distill"] else steps
            continue
        shutil.rmtree(out, ignore_errors=True)  # written by an attempt that did not record it
        cache.store = i < len(parts) - 1  # no later model reads what the last one would add
        arch, fraction, checks = verified(run, candidates())
        record = export_distilled(run, name, arch, out, teacher, cache, steps)
        steps = record["distill"]["steps"] if record["distill"] else steps  # every baseline: the student's steps
        record.update(fraction=fraction, latency_checks=checks)
        if record["distill"]:
            for step, h in enumerate(record["distill"].pop("history")):
                section.log({f"export/{name}/{k}": v for k, v in h.items()}, step=i * (e.distill_steps + 1) + step)
        done[name] = record
        log.stages["export"]["parts"] = done
        log.save()
    return {"parts": done}


# --------------------------------------------------------------------------- the records, in order

LATENCY_KEYS = ("teacher", "space", "budget", "search.latency", "export.format")  # the format is what is timed
LATENCY = Stage("latency", LATENCY_KEYS, (), (LATENCY_DIR,), latency_stage)
# train/cache (tokenized data) is not owned: it is kept across attempts and recipe changes.
TRAIN_OUTPUTS = (f"{TRAIN_DIR}/{CHECKPOINT_FILE}", f"{TRAIN_DIR}/{SUPERNET_FILE}")


def _relaxed_training_inputs(recipe: Recipe) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Relaxed (single-stage) training drives the architecture into the budget, with the latency stage's model."""
    return (("budget",), ("latency",)) if recipe.training.sampling == "relaxed" else ((), ())


TRAIN = Stage(
    "train",
    ("teacher", "data", "objective", "space", "training"),
    (),
    TRAIN_OUTPUTS,
    train_stage,
    _relaxed_training_inputs,
)
SEARCH = Stage("search", ("budget", "search"), ("latency", "train"), (SEARCH_DIR,), search_stage)
EXPORT = Stage("export", ("export",), ("search",), (MODEL_DIR, BASELINE_DIR, LAYER_DROP_DIR), export_stage)
REPORT = Stage("report", ("report",), ("export",), REPORT_OUTPUTS, report_stage)
STAGES = (LATENCY, TRAIN, SEARCH, EXPORT, REPORT)
