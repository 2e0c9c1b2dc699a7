"""Stage 5, the report: teacher, student and baseline measured alike, in one process, side by side.

Parameters and FLOPs by formula, latency by timing the standalone models (HAT
protocol, rounds interleaved so load from other processes hits all models alike),
size on disk, and quality on held-out examples (`metanas.report`); then the budget
checked again on the exported student, and `report.json` / `report.md` written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoModel

from metanas._paths import shareable
from metanas.config import Recipe
from metanas.cost.isolated import SavedModel, measure_saved_models
from metanas.data import batches_of
from metanas.downstream import evaluate_downstream
from metanas.pipeline.paths import MODEL_DIR, RECIPE_FILE, SEARCH_DIR
from metanas.pipeline.stagelog import StageLog, StageTracker
from metanas.report import (
    EMBEDDING_METRIC,
    REPORT_FORMAT,
    REPORT_JSON,
    REPORT_MD,
    dir_bytes,
    embed,
    embedding_agreement,
    objective_quality,
    weights_bytes,
    write_report,
)
from metanas.search.runner import CURVE_PLOT, PARETO_PLOT
from metanas.space import ArchConfig
from metanas.supernet.convert import load_teacher_model
from metanas.supernet.export import ARCH_FILE, load_subnet_weights
from metanas.supernet.onnx_export import FORMAT_FILES, OnnxEncoder, export_onnx, load_encoder, onnx_available

if TYPE_CHECKING:
    from metanas.pipeline.run import CompressRun

EMBEDDING_OBJECTIVES = ("kd", "contrastive")
ROLE_PARTS = (("student", "student"), ("uniform_baseline", "baseline"), ("layer_drop", "layer_drop"))  # role -> part
INT8_TEACHER = "int8_teacher"  # the teacher only quantized (onnx-int8): what compression must beat
REPORT_OUTPUTS = (REPORT_JSON, REPORT_MD, PARETO_PLOT, CURVE_PLOT)


SHARED_PATH_KEYS = (("teacher", "path"), ("data", "source"), ("search", "history"), ("search", "warm_start"))


def shareable_recipe(recipe: Recipe, run_dir: Path) -> dict[str, Any]:
    """The recipe as the report shows it: paths named without the machine's absolute paths (`shareable`)."""
    data = recipe.to_dict()
    for section, key in SHARED_PATH_KEYS:
        value = data[section][key]
        if isinstance(value, list):  # a list of data sources
            data[section][key] = [shareable(v, run_dir) for v in value]
        elif value not in (None, "auto", "off"):
            data[section][key] = shareable(value, run_dir)
    data["run_dir"] = shareable(data["run_dir"], run_dir) if data["run_dir"] else None
    for entry in data["report"]["eval"]:
        entry["source"] = shareable(entry["source"], run_dir)
    return data


def _quality(
    run: CompressRun,
    models: Mapping[str, Any],
    arches: Mapping[str, ArchConfig],
    torch_models: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The quality metric of each model on the report's held-out examples.

    Embedding objectives score each model as given (an `OnnxEncoder` too). The MLM and
    task heads run through the supernet, so they score the torch weights of an ONNX
    model (`torch_models`; `quality_of: torch`) and none for the int8 teacher, which
    gets its embedding cosine to the teacher instead.
    """
    _, report_range, _ = run.heldout
    batches = batches_of(run.bundle.validation, report_range, run.recipe.report.batch_size, run.collate)
    out: dict[str, dict[str, Any]] = {}
    if run.recipe.objective.name in EMBEDDING_OBJECTIVES:
        reference = embed(models["teacher"], batches)
        for role, model in models.items():
            agreement = embedding_agreement(embed(model, batches), reference)
            out[role] = {
                "quality": agreement[EMBEDDING_METRIC],
                "quality_metric": EMBEDDING_METRIC,
                "higher_is_better": True,
                "embedding_cosine": agreement["embedding_cosine"],
            }
        return out
    teacher_sn = run.trained.original_teacher()
    torch_models = torch_models if torch_models is not None else models
    for role, model in models.items():
        if role not in torch_models:  # an int8 model: no objective head runs on it
            cosine = embedding_agreement(embed(model, batches), embed(models["teacher"], batches))["embedding_cosine"]
            out[role] = {**out["teacher"], "quality": None, "embedding_cosine": cosine}
            continue
        sn = teacher_sn if role == "teacher" else run.trained.supernet
        if role != "teacher":
            load_subnet_weights(sn, arches[role], torch_models[role])
        name, value, higher = objective_quality(run.objective, sn, arches[role], batches)
        out[role] = {"quality": value, "quality_metric": name, "higher_is_better": higher}
        if isinstance(model, OnnxEncoder):
            out[role]["quality_of"] = "torch"
    return out


def _budget_check(
    run: CompressRun, entries: Mapping[str, Mapping[str, Any]], log: StageLog
) -> dict[str, dict[str, Any]]:
    """Each limit against the exported student; a relative latency limit against the teacher re-measured now."""
    resolved = log.info("search")["budget"]
    student, teacher = entries["student"], entries["teacher"]
    check = {}
    for key, requested in run.budget.limits().items():
        limit = resolved[key]
        relative = key == "latency_ms" and isinstance(requested, str)
        if relative:  # against the teacher in the student's format
            limit = run.budget.absolute(key, teacher.get("shipped_latency_ms", teacher["latency_ms"]))
        value = student["flops_per_token"] if key == "flops" else student[key]
        check[key] = {"limit": limit, "value": value, "ok": bool(value <= limit)}
        if key == "latency_ms":
            reference = teacher.get("shipped_latency_rounds_ms", teacher["latency_rounds_ms"]) if relative else None
            check[key].update(timing_noise(check[key], student["latency_rounds_ms"], reference))
    return check


def timing_noise(
    check: Mapping[str, Any], rounds: Sequence[float], reference: Sequence[float] | None
) -> dict[str, float | bool]:
    """How far the latency check is over its limit, against how much this report's timing rounds disagree.

    `spread` is max/min - 1 of the student's per-round latencies, or, for a limit
    relative to the teacher, of its per-round ratios to the teacher timed in the same
    rounds. A student over the limit by less than that spread is `within_noise`: the
    report cannot tell it from one just under the limit (on a shared 2-core machine
    rounds of one model differ by a few percent).
    """
    per_round = [s / t for s, t in zip(rounds, reference)] if reference else list(rounds)
    spread = max(per_round) / min(per_round) - 1
    over = check["value"] / check["limit"] - 1
    return {"over_by": over, "spread": spread, "within_noise": bool(not check["ok"] and over <= spread)}


def budget_verdict(check: Mapping[str, Mapping[str, Any]]) -> str:
    """'yes' if every limit holds, 'within timing noise' if only latency misses by less than its spread, else 'no'."""
    failed = [c for c in check.values() if not c["ok"]]
    if not failed:
        return "yes"
    return "within timing noise" if all(c.get("within_noise") for c in failed) else "no"


def _copy_plots(run: CompressRun) -> dict[str, str]:
    out = {}
    for key, name in (("pareto", PARETO_PLOT), ("curve", CURVE_PLOT)):
        src = run.run_dir / SEARCH_DIR / name
        if src.is_file():
            shutil.copy2(src, run.run_dir / name)
        out[key] = name
    return out


def _teacher_formats(run: CompressRun, teacher: Any, directory: Path) -> dict[str, Path]:
    """The teacher's ONNX files in `directory`: int8 (a report row, when ONNX Runtime is installed) and the
    shipped format."""
    fmt = run.recipe.export.format
    wanted = (["onnx-int8"] if onnx_available() else []) + (["onnx"] if fmt == "onnx" else [])
    if not wanted:
        return {}
    export_onnx(teacher, directory, "onnx-int8" if "onnx-int8" in wanted else "onnx")
    return {f: directory / FORMAT_FILES[f] for f in wanted}


def _measure_models(run: CompressRun, log: StageLog) -> dict[str, dict[str, Any]]:
    """Per role (teacher, student, uniform_baseline, int8_teacher): arch, params, FLOPs, latency, size and quality.

    The student and baseline are measured as they ship (`export.format`); the teacher
    as given (torch), and once more in the student's format for the budget check.
    """
    lat, fmt = run.recipe.search.latency, run.recipe.export.format
    parts = log.info("export")["parts"]
    models: dict[str, Any] = {"teacher": load_teacher_model(run.teacher.path)}
    saved = {"teacher": SavedModel("teacher", str(run.teacher.path))}  # what is timed, by where it is saved
    arches = {"teacher": run.space.largest()}
    torch_models = dict(models)
    for role, key in ROLE_PARTS:
        if key in parts:
            model_dir = run.run_dir / parts[key]["dir"]
            torch_models[role] = AutoModel.from_pretrained(str(model_dir), trust_remote_code=True)
            models[role] = torch_models[role] if fmt == "torch" else load_encoder(model_dir, fmt, lat.threads)
            saved[role] = (
                SavedModel("hf", str(model_dir))
                if fmt == "torch"
                else SavedModel("onnx", str(model_dir / FORMAT_FILES[fmt]))
            )
            arches[role] = ArchConfig.from_dict(parts[key]["arch"])
    b = run.budget
    with tempfile.TemporaryDirectory(prefix="metanas-onnx-") as tmp:
        teacher_files = _teacher_formats(run, models["teacher"], Path(tmp))
        for f, path in teacher_files.items():
            saved[INT8_TEACHER if f == "onnx-int8" else "teacher_onnx"] = SavedModel("onnx", str(path))
        if "onnx-int8" in teacher_files:
            models[INT8_TEACHER] = OnnxEncoder(teacher_files["onnx-int8"], lat.threads)
            arches[INT8_TEACHER] = arches["teacher"]
        rounds = measure_saved_models(
            saved, run.space.vocab_size, b.batch_size, b.seq_len, lat.threads, run.recipe.report.latency_rounds,
            lat.warmup, lat.runs,
        )  # fmt: skip
    latency = {name: min(ms) for name, ms in rounds.items()}
    quality = _quality(run, models, arches, torch_models)
    for role, q in quality.items():
        if q["quality"] is None:
            continue
        if not math.isfinite(q["quality"]):
            raise ValueError(
                f"report: the {role}'s {q['quality_metric']} is {q['quality']} on the held-out examples; a non-finite "
                "quality is not a result (are the held-out texts empty after tokenization?)"
            )
    r = run.recipe
    downstream = evaluate_downstream(models, r.report.eval, run.tokenizer, r.data.max_length, r.report.batch_size)
    entries: dict[str, dict[str, Any]] = {}
    for role, model in models.items():
        arch = arches[role]
        entries[role] = {
            "arch": arch.to_dict(),
            "params": run.space.params(arch),
            "non_embedding_params": run.space.params(arch, embeddings=False),
            "flops_per_token": run.space.flops(arch, b.seq_len),
            "latency_ms": latency[role],
            "latency_rounds_ms": rounds[role],
            "size_bytes": model.size_bytes if isinstance(model, OnnxEncoder) else weights_bytes(model),
            "format": ("onnx-int8" if role == INT8_TEACHER else "torch" if role == "teacher" else fmt),
            **quality[role],
        }
        if r.report.eval:
            entries[role]["downstream"] = downstream[role]
    shipped_teacher = {"torch": "teacher", "onnx": "teacher_onnx", "onnx-int8": INT8_TEACHER}[fmt]
    entries["teacher"]["shipped_latency_ms"] = latency[shipped_teacher]
    entries["teacher"]["shipped_latency_rounds_ms"] = rounds[shipped_teacher]
    entries["teacher"]["source"] = shareable(run.teacher.source, run.run_dir)
    entries["student"]["dir_bytes"] = dir_bytes(run.run_dir / MODEL_DIR)
    student_info = json.loads((run.run_dir / MODEL_DIR / ARCH_FILE).read_text())
    entries["student"]["vanilla"] = student_info["vanilla"]
    if fmt != "torch":
        entries["student"]["onnx_file"] = student_info["onnx_file"]
    for role, key in ROLE_PARTS[1:]:
        if role in entries:
            entries[role]["fraction"] = parts[key]["fraction"]
    return entries


def build_report(run: CompressRun, log: StageLog) -> dict[str, Any]:
    """The report's content: every model measured alike, the budget re-checked, the search and the recipe."""
    r = run.recipe
    entries = _measure_models(run, log)
    parts = log.info("export")["parts"]
    check = _budget_check(run, entries, log)
    search = log.info("search")
    plots = _copy_plots(run)
    _, report_range, overlap = run.heldout
    return {
        "format": REPORT_FORMAT,
        "run_name": run.run_dir.resolve().name,
        "objective": r.objective.name,
        "teacher": entries["teacher"],
        "student": entries["student"],
        "uniform_baseline": entries.get("uniform_baseline"),
        "layer_drop": entries.get("layer_drop"),
        INT8_TEACHER: entries.get(INT8_TEACHER),
        "export_format": r.export.format,
        "budget": {
            "requested": dataclasses.asdict(run.budget),
            "resolved": search["budget"],
            "searched_under": search["search_budget"],
            "description": run.budget.describe(),
        },
        "within_budget": all(c["ok"] for c in check.values()),
        "budget_verdict": budget_verdict(check),
        "budget_check": check,
        "export_dir": MODEL_DIR,
        "speedup": entries["teacher"]["latency_ms"] / entries["student"]["latency_ms"],
        "held_out": {"examples": len(report_range), "overlap": overlap},
        "search": {
            **{k: search[k] for k in ("strategy", "warm_start", "num_evaluations", "best_metric", "metric_name")},
            "sources": search.get("sources"),
        },
        "distillation": {
            "steps": (parts["student"].get("distill") or {}).get("steps", 0),
            "lr": r.export.distill_lr,
            "seconds_budget": r.export.distill_seconds,
        },
        "latency_checks": {role: parts[key].get("latency_checks") for role, key in ROLE_PARTS if key in parts},
        "plots": plots,
        "stage_seconds": {s: rec.get("seconds", 0.0) for s, rec in log.stages.items() if rec.get("done")},
        "recipe": shareable_recipe(r, run.run_dir),
        "recipe_file": RECIPE_FILE,
    }


def _log_artifact(run: CompressRun, report: Mapping[str, Any]) -> None:
    """The student directory as a W&B model artifact, with its headline numbers."""
    wandb_run = run.tracker.wandb_run if run.tracker is not None else None
    if wandb_run is None:
        return
    import wandb  # loaded only when W&B is on, as in metanas.tracking

    name = re.sub(r"[^\w.-]", "-", f"{run.run_dir.resolve().name}-student")
    keys = ("params", "flops_per_token", "latency_ms", "quality", "quality_metric")
    meta = {k: report["student"][k] for k in keys}
    artifact = wandb.Artifact(name, type="model", metadata={**meta, "arch": report["student"]["arch"]})
    artifact.add_dir(str(run.run_dir / MODEL_DIR))
    wandb_run.log_artifact(artifact)


def report_stage(run: CompressRun, log: StageLog, section: StageTracker) -> dict[str, Any]:
    """Measure, write `report.json` and `report.md`, and log the headline numbers and the model artifact."""
    report = build_report(run, log)
    json_path, _ = write_report(report, run.run_dir)
    section.log(
        {
            f"report/{role}/{k}": report[role][k]
            for role in ("teacher", "student")
            for k in ("params", "latency_ms", "quality")
        },
        step=0,
    )
    section.summary(
        {
            "report/within_budget": report["within_budget"],
            "report/student_quality": report["student"]["quality"],
            "report/speedup": report["speedup"],
        }
    )
    _log_artifact(run, report)
    return {"report": json_path.name, "within_budget": report["within_budget"]}
