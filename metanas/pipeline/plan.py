"""`compress --dry-run`: what a run would do, and roughly how long it would take, without doing it.

The teacher's config is resolved (a hub id that cannot be fetched offline is named
as unresolved instead of failing), and so are the space and every budget formulas
can resolve. One forward/backward of the teacher's shape is timed here, and each
stage's time is estimated from it, scaled by FLOPs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModel, PretrainedConfig

from metanas._threads import torch_threads
from metanas.config import ExportSection, Recipe
from metanas.cost.budget import Budget
from metanas.cost.model import CostModel
from metanas.meta.history import DEFAULT_PATH, ENV_VAR
from metanas.pipeline.checks import preflight
from metanas.pipeline.paths import STAGES_FILE
from metanas.pipeline.run import STAGE_NAMES, needs_latency
from metanas.pipeline.stagelog import StageLog
from metanas.pipeline.teacher import TeacherInfo, resolve_teacher
from metanas.precision import bf16_autocast, use_bf16
from metanas.search.configs import make_config
from metanas.search.registry import ResolvedStrategy, make_strategy, resolve_strategy
from metanas.space import SearchSpace


@dataclass
class Timing:
    """Seconds for one forward and one forward+backward of the teacher-shaped model, measured here."""

    batch_size: int
    seq_len: int
    forward_s: float
    forward_backward_s: float


def time_teacher_shape(config: PretrainedConfig, batch_size: int, seq_len: int, bf16: bool) -> Timing:
    """Time the teacher's architecture (random weights, no download) on one batch: the unit of every estimate."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModel.from_config(config)
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len))
    autocast = bf16_autocast(bf16, "cpu", "training.bf16")

    def forward_backward() -> float:
        start = time.perf_counter()
        with autocast:
            out = model(input_ids=ids).last_hidden_state.float().sum()
        out.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode(), autocast:
            model(input_ids=ids)
        return time.perf_counter() - start

    for _ in range(2):  # warm-up: the first calls allocate and pick kernels
        forward_backward()
    fb = min(forward_backward() for _ in range(3))
    fw = min(forward() for _ in range(3))
    return Timing(batch_size, seq_len, fw, fb)


def _fmt_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _resolved_strategy(r: Recipe) -> ResolvedStrategy:
    """The strategy the search would run; an explicit warm-start file that cannot be used is an error."""
    s = r.search
    try:
        return resolve_strategy(s.strategy, s.options, s.warm_start)
    except (OSError, ValueError) as e:
        raise ValueError(f"search.warm_start: {e}") from None


def planned_evaluations(strategy: ResolvedStrategy, space: SearchSpace | None, seed: int) -> int:
    """How many archs the search evaluates: its strategy's schedule (with the warm start's anchor round)."""
    if space is not None:
        return make_strategy(strategy.name, space, None, seed, **strategy.options).planned_evaluations()
    evaluations = make_config(strategy.name, strategy.options).planned_evaluations()
    choice = strategy.warm_start
    if choice is not None and choice.active:  # the anchors are scored first (those within the budget)
        evaluations += int(choice.predictor.encoding["anchor_k"])
    return evaluations


def _budget_fraction(budget: Budget, space: SearchSpace, seq_len: int, default: float) -> float:
    """The share of the teacher's FLOPs a within-budget subnet has at most (latency ~ FLOPs)."""
    top = space.largest()
    teacher = {
        "flops": space.flops(top, seq_len),
        "params": space.params(top),
        "non_embedding_params": space.params(top, embeddings=False),
    }
    fractions = []
    for key, limit in budget.limits().items():
        if isinstance(limit, str):
            fractions.append(budget.absolute(key, 1.0))
        elif key in teacher:
            fractions.append(limit / teacher[key])
    return min([1.0, *fractions]) if fractions else default


def _flops_ratios(r: Recipe, space: SearchSpace | None, budget: Budget) -> dict[str, float]:
    """FLOPs of the probe subnets and of a within-budget subnet, as shares of the teacher's."""
    ratio = {"largest": 1.0, "smallest": 1.0, "middle": 1.0, "budget": 1.0}
    if space is not None:
        seq = r.data.max_length
        flops = space.flops(space.largest(), seq)
        ratio.update(
            smallest=space.flops(space.smallest(), seq) / flops, middle=space.flops(space.middle(), seq) / flops
        )
        ratio["budget"] = _budget_fraction(budget, space, seq, ratio["middle"])
    return ratio


def _estimates(
    r: Recipe, ratio: dict[str, float], budget: Budget, timing: Timing, evaluations: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Seconds per stage, and a per-unit note (per step, per evaluation) for some."""
    t, s, e, lat = r.training, r.search, r.export, r.search.latency
    per_example_fw = timing.forward_s / timing.batch_size
    subnets = [ratio["largest"], ratio["smallest"]] + [ratio["middle"]] * t.num_random
    if t.sampling == "uniform":
        subnets = [ratio["middle"]]
    teacher_fwd = timing.forward_s if r.objective.name == "kd" else 0
    step = t.grad_accum * (timing.forward_backward_s * sum(subnets) + teacher_fwd)
    evaluation = s.eval_batches * s.eval_batch_size * per_example_fw * ratio["budget"]
    scale = e.distill_batch_size / timing.batch_size
    per_distill = scale * (timing.forward_backward_s * ratio["budget"] + timing.forward_s)
    one_latency = timing.forward_s * budget.batch_size * budget.seq_len / (timing.batch_size * timing.seq_len)
    timed = lat.warmup + lat.runs
    models = 3 if e.baseline else 2
    est = {
        "latency": 0.0,
        "train": t.steps * step,
        "search": evaluations * evaluation,
        "export": (1 + e.baseline + e.layer_drop) * _distill_seconds(e, per_distill),
        "report": models * r.report.latency_rounds * timed * one_latency * 0.7
        + models * r.report.examples * per_example_fw * 0.7,
    }
    if needs_latency(r):
        n = 2 if lat.measure else lat.predictor_archs
        est["latency"] = n * (1 if lat.measure else lat.rounds) * timed * one_latency * 0.6
    if budget.latency_ms is not None and lat.verify:  # one candidate timed beside the teacher per model
        est["export"] += (models - 1) * r.report.latency_rounds * 2 * timed * one_latency * 0.75
    return est, {"train": f", {step:.2f} s/step", "search": f", {evaluation:.2f} s/evaluation"}


def _distill_seconds(e: ExportSection, per_step: float) -> float:
    """One model's final distillation: its steps at `per_step` seconds, or the time budget when that is shorter."""
    full = e.distill_steps * per_step
    return full if e.distill_seconds is None else min(full, e.distill_seconds)


def _stage_lines(r: Recipe, evaluations: int, warm_line: str) -> list[tuple[str, str]]:
    """What each stage would do, in words."""
    t, s, e, lat = r.training, r.search, r.export, r.search.latency
    if not needs_latency(r):
        latency_line = "skipped (no latency budget or objective)"
    else:
        how = (
            f"time every candidate ({lat.warmup}+{lat.runs} runs each)"
            if lat.measure
            else f"fit a latency predictor on {lat.predictor_archs} measured archs (cached in {lat.cache_dir})"
        )
        latency_line = f"{how}; check the latency budget is reachable"
    steps = (
        f"{e.distill_steps} steps"
        if e.distill_seconds is None
        else f"as many steps as fit in {e.distill_seconds:g} s for the student (at most {e.distill_steps})"
    )
    distill = (
        f"final distillation {steps} (batch {e.distill_batch_size}, lr {e.distill_lr:g}) each"
        if e.distill_steps
        else "no final distillation (export.distill_steps=0)"
    )
    subnets = {
        "sandwich": f", {2 + t.num_random} subnets",
        "relaxed": f", {2 + t.num_random} subnets, the random ones drawn from architecture logits trained alongside",
    }.get(t.sampling, "")
    bf16 = ", bf16" if use_bf16(t.bf16, "cpu", "training.bf16") else ""  # float32 where bf16 is emulated
    return [
        ("latency", latency_line),
        (
            "train",
            f"convert{' + rewire' if r.teacher.rewire else ''} the teacher; train the supernet {t.steps} steps "
            f"({t.sampling}{subnets}, batch {t.batch_size} x {r.data.max_length} tokens{bf16})",
        ),
        (
            "search",
            f"{s.strategy}: {evaluations} evaluations on {s.eval_batches} x {s.eval_batch_size} validation "
            f"examples; {warm_line}",
        ),
        ("export", "best arch" + (" + uniform-shrink baseline" if e.baseline else "") + f"; {distill}"),
        (
            "report",
            f"teacher vs student{' vs baseline' if e.baseline else ''}: params, FLOPs, latency "
            f"({r.report.latency_rounds} rounds), size, quality on {r.report.examples} held-out examples",
        ),
    ]


def _plan_stages(r: Recipe, space: SearchSpace | None, budget: Budget, timing: Timing | None) -> list[str]:
    strategy = _resolved_strategy(r)
    evaluations = planned_evaluations(strategy, space, r.search.seed)
    warm_line = "no warm start for this strategy" if strategy.warm_start is None else strategy.message
    estimates: dict[str, float] = {}
    per_unit: dict[str, str] = {}
    if timing is not None:
        estimates, per_unit = _estimates(r, _flops_ratios(r, space, budget), budget, timing, evaluations)
    lines = []
    for i, (stage, text) in enumerate(_stage_lines(r, evaluations, warm_line), 1):
        est = estimates.get(stage)
        suffix = "" if est is None else f"  [~{_fmt_seconds(est)}{per_unit.get(stage, '')}]"
        lines.append(f"  {i}. {stage:8s} {text}{suffix}")
    if timing is not None:
        lines.append(
            f"estimated total: ~{_fmt_seconds(sum(estimates.values()))} (from the timing above, scaled by FLOPs; "
            "a loaded machine is slower)"
        )
    else:
        lines.append("estimated total: unknown (the teacher's config is unresolved)")
    return lines


def _teacher_lines(
    r: Recipe, teacher: TeacherInfo, space: SearchSpace, budget: Budget, measure: bool
) -> tuple[list[str], Timing | None]:
    """The teacher, the absolute budgets and the space (when the config resolved), and the timing."""
    c = teacher.config
    top = space.largest()
    lines = [
        f"  teacher: {c.model_type}, {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
        f"{c.num_attention_heads} heads, FFN {c.intermediate_size}: {space.params(top):,} params, "
        f"{space.flops(top, budget.seq_len) / 1e6:.1f} MFLOPs/token at seq {budget.seq_len}"
    ]
    cm = CostModel(space, budget.seq_len, budget.batch_size)
    absolute = cm.check_feasible(replace(budget, latency_ms=None))
    for key, limit in absolute.limits().items():
        lines.append(f"  {key} <= {limit:,.6g} ({100 * limit / cm.teacher_costs()[key]:.0f}% of the teacher)")
    if budget.latency_ms is not None:
        what = f"{budget.latency_ms} of the teacher's" if isinstance(budget.latency_ms, str) else "an absolute"
        lines.append(f"  latency_ms: {what} latency, measured in stage 1 on this machine before training")
    lines.append(
        f"space: depth {list(space.depth_choices)}, hidden {list(space.hidden_choices)}, heads per layer "
        f"{list(space.head_choices)}, FFN per layer {list(space.ffn_choices)}: {space.size():.3g} archs"
    )
    timing = None
    if measure:
        with torch_threads(r.threads):
            timing = time_teacher_shape(c, r.training.batch_size, r.data.max_length, r.training.bf16)
        lines.append(
            f"measured here: teacher-shaped forward+backward {timing.forward_backward_s:.2f} s, forward "
            f"{timing.forward_s:.2f} s (batch {timing.batch_size} x {timing.seq_len} tokens"
            f"{', bf16' if use_bf16(r.training.bf16, 'cpu', 'training.bf16') else ''})"
        )
    return lines, timing


def plan(recipe: Recipe, run_dir: str | os.PathLike, measure: bool = True) -> str:
    """The dry-run plan as text; `measure` times one teacher-shaped step to estimate each stage."""
    r = recipe
    run_dir = Path(run_dir)
    teacher = resolve_teacher(r, None, allow_unresolved=True)
    lines = ["metanas compress: plan (dry run, nothing is written)", f"run dir: {run_dir}"]
    log_path = run_dir / STAGES_FILE
    if log_path.is_file():
        done = [s for s in STAGE_NAMES if StageLog(log_path).done(s)]
        lines.append(f"  existing run: completed stages {', '.join(done) or 'none'}; compress resumes after them")
    lines.append(f"teacher: {teacher.source}")
    if teacher.config is None:
        lines.append(f"  UNRESOLVED: {teacher.problem}")
        lines.append("  (space size, budgets in absolute terms and cost estimates need the teacher's config)")
    d = r.data
    lines.append(
        f"data: {d.source_label}" + (f" ({d.hf_config})" if d.hf_config else "") + f", split {d.split}, text column "
        f"{d.text_column!r}"
        + (f", label column {d.label_column!r}" if d.label_column else "")
        + f", max_length {d.max_length}, validation {d.validation_fraction:.0%} (not loaded in a dry run)"
    )
    lines.append(f"objective: {r.objective.name} {r.objective.options or ''}".rstrip())
    budget = r.budget.to_budget()
    lines.append(f"budget: {budget.describe()}")
    space = None if teacher.config is None else SearchSpace.from_teacher_config(teacher.config, **r.space)
    lines += [f"  warning: {w}" for w in preflight(r, teacher.config, space)]
    timing = None
    if teacher.config is not None:
        more, timing = _teacher_lines(r, teacher, space, budget, measure)
        lines += more
    lines.append("stages:")
    lines += _plan_stages(r, space, budget, timing)
    history = r.search.history or os.environ.get(ENV_VAR) or str(DEFAULT_PATH)
    lines.append(f"history store: {history}")
    return "\n".join(lines)
