"""`metanas compress` end to end on `recipes/tiny.yaml`, plus its parts.

The tiny recipe writes a random 3-layer BERT (hidden 32) into the run directory, so
everything runs offline in seconds. One in-process run (W&B offline) is shared by
the tests of the report, the exported model, reruns and the thin subcommands; the
kill-and-resume test runs `python -m metanas` in subprocesses and compares the
resumed run's result with the shared run's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, child_env, wait_until
from transformers import AutoModel

from metanas.cli import main
from metanas.config import Recipe, load_recipe
from metanas.cost import CostModel
from metanas.objectives.losses import relation_loss
from metanas.pipeline import STAGES, compress
from metanas.pipeline.reporting import budget_verdict, timing_noise
from metanas.pipeline.run import heldout_ranges
from metanas.pipeline.stagelog import dependents, stage_fingerprints
from metanas.search.runner import STATE_FILE
from metanas.space import SearchSpace
from metanas.tracking import read_metrics
from metanas.training.distill import (
    MATH_ATTENTION_MAX_TOKENS,
    _DecayPlan,
    batch_schedule,
    distillation_loss,
    training_attention,
)
from metanas.training.pace import PACE_WINDOW, DistillPace, TimeBudget, padded_tokens
from metanas.training.schedule import lr_multiplier

TINY = REPO / "recipes" / "tiny.yaml"
# Six generations: a search long enough that a kill right after training lands before it ends.
OVERRIDES = ["search.options.generations=6"]


def _train_done(stages: Path) -> bool:
    """Whether the run's stage log says the train stage is done."""
    return stages.is_file() and bool(json.loads(stages.read_text())["stages"].get("train", {}).get("done"))


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("history") / "history.db"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, history):
    """One uninterrupted tiny compress run, W&B offline; returns (run dir, result)."""
    saved = os.environ.get("METANAS_HISTORY")
    os.environ["METANAS_HISTORY"] = str(history)
    try:
        run_dir = tmp_path_factory.mktemp("compress") / "tiny"
        result = compress(load_recipe(TINY, OVERRIDES), run_dir)
    finally:
        if saved is None:
            os.environ.pop("METANAS_HISTORY")
        else:
            os.environ["METANAS_HISTORY"] = saved
    return run_dir, result


# --------------------------------------------------------------------------- parts


def test_a_latency_overrun_smaller_than_the_rounds_spread_is_within_timing_noise():
    """Relative limit: the spread is that of the per-round student/teacher ratios, not of either model alone."""
    teacher = [20.0, 22.0, 21.0]  # ms per interleaved round; the limit is 50% of the best, 10.0 ms
    student = [10.2, 10.6, 10.3]  # ratios 0.510, 0.482, 0.490: spread 0.510 / 0.482 - 1 = 5.8%
    check = {"limit": 10.0, "value": 10.2, "ok": False}
    noise = timing_noise(check, student, teacher)
    assert noise["over_by"] == pytest.approx(0.02)
    assert noise["spread"] == pytest.approx((10.2 / 20.0) / (10.6 / 22.0) - 1)
    assert noise["within_noise"] is True
    assert budget_verdict({"latency_ms": {**check, **noise}}) == "within timing noise"
    # 8% over is more than the rounds disagree: a real miss
    far = {"limit": 10.0, "value": 10.8, "ok": False}
    assert timing_noise(far, [10.8, 11.9, 11.3], teacher)["within_noise"] is False  # ratios 0.540 .. 0.541
    # an absolute limit: the student's own rounds (10.2 .. 10.6, 3.9%)
    absolute = timing_noise(check, student, None)
    assert absolute["spread"] == pytest.approx(10.6 / 10.2 - 1) and absolute["within_noise"] is True
    # under the limit is never "within noise", and any other failed limit makes the verdict no
    ok = {"limit": 10.0, "value": 9.0, "ok": True}
    assert timing_noise(ok, [9.0, 9.5], None)["within_noise"] is False
    assert budget_verdict({"latency_ms": {**ok, "within_noise": False}}) == "yes"
    params = {"limit": 1e6, "value": 2e6, "ok": False}
    assert budget_verdict({"latency_ms": {**check, **noise}, "params": params}) == "no"


def test_a_distillation_time_budget_runs_what_fits_between_one_step_and_the_most():
    lengths = [10] * 1000
    schedule = batch_schedule(lengths, 16, 2000, seed=0)
    everything = set(range(1000))  # all cached: only the model's steps cost
    plain = DistillPace(step_s=0.25, token_s=0.0, teacher_s_per_example=0.0)
    assert plain.steps_in(60.0, schedule, lengths, everything) == 240
    assert DistillPace(0.01, 0.0, 0.0).steps_in(60.0, schedule, lengths, everything) == 2000  # export.distill_steps
    assert plain.steps_in(0.1, schedule, lengths, everything) == 1  # always at least one step
    assert DistillPace(0.0, 0.0, 0.0).steps_in(60.0, schedule[:300], lengths, ()) == 300  # too fast to time: all


def test_a_step_costs_its_padded_tokens_and_the_teacher_once_per_new_example():
    lengths = [4, 4, 8, 8, 2, 2]
    schedule = [[0, 1], [2, 3], [0, 1], [4, 5]]  # 8, 16, 8 and 4 padded tokens; 6 distinct examples
    assert [padded_tokens(b, lengths) for b in schedule] == [8, 16, 8, 4]
    pace = DistillPace(step_s=1.0, token_s=0.5, teacher_s_per_example=10.0)
    # steps 5, 9, 5, 3 s; teacher 20, 20, 0, 20 s: cumulative 25, 54, 59, 82
    assert [pace.steps_in(s, schedule, lengths, ()) for s in (24.9, 25.0, 58.9, 59.0, 81.9, 82.0)] == [1, 1, 2, 3, 3, 4]
    assert pace.steps_in(59.0 - 40.0, schedule, lengths, {0, 1, 2, 3}) == 3  # cached examples cost no teacher
    # from a probe: a fixed cost and a cost per padded token, robust to a slow first step
    history = [{"seconds": 0.02 + 1e-4 * t, "tokens": t} for t in (512, 768, 1024, 1024, 640, 256)]
    history[0]["seconds"] = 0.9  # the first step also builds the kernels
    probe = {"history": history, "teacher_prefilled": 48, "teacher_prefill_seconds": 0.48}
    measured = DistillPace.from_probe(probe)
    assert measured.step_s == pytest.approx(0.02) and measured.token_s == pytest.approx(1e-4)
    assert measured.teacher_s_per_example == pytest.approx(0.01)
    assert DistillPace.from_probe({**probe, "teacher_prefilled": 0}).teacher_s_per_example == 0.0
    same = DistillPace.from_probe({**probe, "history": [{"seconds": s, "tokens": 1024} for s in (0.3, 0.1, 0.2)]})
    assert same.token_s == 0.0 and same.step_s == pytest.approx(0.15)  # one length: the mean step after the first
    # the intercept is the mean residual: the line sums the steps it was fitted on
    skewed = [
        {"seconds": 0.1 + 1e-4 * t + (0.05 if i % 5 == 0 else 0.0), "tokens": t}
        for i, t in enumerate(range(64, 1088, 64))
    ]
    line = DistillPace.from_steps(skewed, 0.0)
    assert line.token_s == pytest.approx(1e-4) and line.step_s == pytest.approx(0.1 + 0.05 * 4 / 16)
    with pytest.raises(ValueError, match="at least one timed step"):
        DistillPace.from_probe({**probe, "history": []})


def test_a_budget_plans_again_from_the_latest_steps_run_so_far():
    lengths = [4, 4, 8, 8, 2, 2]
    schedule = [[0, 1], [2, 3], [0, 1], [4, 5], [2, 3]]  # 8, 16, 8, 4, 16 padded tokens
    # the first step also built the kernels (left out); then 9 s and 5 s: 1 s a step + 0.5 s a token
    history = [{"seconds": 2.0, "tokens": 8}, {"seconds": 9.0, "tokens": 16}, {"seconds": 5.0, "tokens": 8}]
    budget = TimeBudget(seconds=30.0, most_steps=5, teacher_s_per_example=10.0)
    # 13 s spent, 17 left: step 4 costs 3 s + 20 s of teacher for examples 4 and 5, step 5 costs 9 s
    drawn = {0, 1, 2, 3}  # cached by the steps so far
    assert budget.replanned_steps(13.0, history, schedule, lengths, drawn) == 4  # over: still one more step
    assert budget.replanned_steps(13.0, history, schedule, lengths, set(range(6))) == 5  # all cached: 3 + 9 s
    assert budget.replanned_steps(18.0, history, schedule, lengths, set(range(6))) == 5  # 12 s left: just
    assert budget.replanned_steps(19.0, history, schedule, lengths, set(range(6))) == 4  # 11 s left: step 4 only
    assert TimeBudget(1e9, 3).replanned_steps(13.0, history, schedule, lengths, ()) == 3  # at the most: no more
    # the pace is the latest PACE_WINDOW steps': a machine that slowed from 1 s to 2 s a step
    slowed = [{"seconds": 5.0, "tokens": 8}] + [{"seconds": 1.0, "tokens": 8}] * 100
    slowed += [{"seconds": 2.0, "tokens": 8}] * PACE_WINDOW
    uniform = [[0, 1]] * 400
    assert TimeBudget(20.0, 400).replanned_steps(0.0, slowed, uniform, lengths, drawn) == len(slowed) + 10


def test_a_replanned_decay_goes_on_from_the_current_rate_to_zero_at_the_new_total():
    plain = _DecayPlan(100)
    assert [plain.multiplier(s) for s in range(101)] == pytest.approx(
        [lr_multiplier(s, 10, 100, "linear") for s in range(101)]
    )
    plan = _DecayPlan(100)
    assert not plan.due(9) and plan.due(10)  # at the end of the warmup
    assert plan.replan(10, 200) == 200 and plan.multiplier(10) == 1.0 and plan.multiplier(200) == 0.0
    assert plan.multiplier(105) == pytest.approx(0.5) and not plan.due(29) and plan.due(30)  # every tenth
    before = plan.multiplier(30)
    assert plan.replan(30, 50) == 50 and plan.multiplier(30) == pytest.approx(before)  # no jump
    assert plan.multiplier(40) == pytest.approx(before / 2) and plan.multiplier(50) == 0.0
    assert plan.replan(45, 0) == 46  # always one more step
    assert not plan.due(46)


def test_the_schedule_passes_over_the_data_in_batches_of_similar_length():
    rng = random.Random(0)
    lengths = [rng.randint(2, 64) for _ in range(1000)]
    schedule = batch_schedule(lengths, 16, 130, seed=3)
    assert schedule == batch_schedule(lengths, 16, 130, seed=3) and schedule != batch_schedule(lengths, 16, 130, 4)
    assert batch_schedule(lengths, 16, 40, seed=3) == schedule[:40]  # fewer steps: a prefix
    first_pass = [i for b in schedule[:62] for i in b]  # 1,000 examples: 3 windows of 256 and one of 232, 62 batches
    assert len(first_pass) == len(set(first_pass)) == 992  # each example at most once a pass
    real = sum(lengths[i] for b in schedule for i in b)
    assert real / sum(padded_tokens(b, lengths) for b in schedule) > 0.9  # 0.95; random batches of 16: 0.56
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        batch_schedule(lengths[:10], 16, 5, seed=0)


def test_uniform_shrink_takes_the_largest_even_fraction_within_budget():
    space = SearchSpace(
        depth_choices=(2, 4, 6, 8),
        hidden_choices=(64, 96, 128),
        head_choices=(2, 3, 4),
        ffn_choices=(128, 256, 384, 512),
        head_dim=32,
        vocab_size=100,
        max_position_embeddings=64,
        type_vocab_size=2,
    )
    assert space.uniform_at(1.0) == space.largest()
    assert space.uniform_at(0.0) == space.smallest()
    half = space.uniform_at(0.5)
    assert (half.depth, half.hidden, half.heads[0], half.ffn[0]) == (4, 64, 2, 256)
    cm = CostModel(space)
    limit = 0.6 * space.params(space.largest())
    arch, fraction = next(space.uniform_shrinks(lambda a: space.params(a) <= limit))
    assert space.params(arch) <= limit
    # one step up the fraction grid breaks the budget: it is the largest uniform arch that fits
    grid = {c / max(ch) for ch in (space.depth_choices, space.hidden_choices, space.ffn_choices) for c in ch}
    larger = [space.uniform_at(f) for f in grid if f > fraction]
    assert all(space.params(a) > limit for a in larger if a != arch)
    assert cm.costs(arch)["params"] == space.params(arch)


def test_stage_dependents_follow_what_each_stage_consumes():
    plain = Recipe.from_dict({"teacher": {"tiny": True}})
    assert dependents("latency", STAGES, plain) == ["search", "export", "report"]
    assert dependents("train", STAGES, plain) == ["search", "export", "report"]
    assert dependents("export", STAGES, plain) == ["report"] and dependents("report", STAGES, plain) == []
    # single-stage training reads the budget and the latency stage's model
    relaxed = Recipe.from_dict({"teacher": {"tiny": True}, "training": {"sampling": "relaxed"}})
    assert dependents("latency", STAGES, relaxed) == ["train", "search", "export", "report"]


def test_fingerprints_follow_stage_dependencies():
    base = Recipe.from_dict({"teacher": {"tiny": True}})

    def fingerprints(**sections):
        return stage_fingerprints(Recipe.from_dict({"teacher": {"tiny": True}, **sections}), STAGES)

    names = [s.name for s in STAGES]
    fp = stage_fingerprints(base, STAGES)
    export = fingerprints(export={"distill_steps": 5})
    assert [s for s in names if fp[s] != export[s]] == ["export", "report"]
    budget = fingerprints(budget={"params": "50%"})
    assert [s for s in names if fp[s] != budget[s]] == ["latency", "search", "export", "report"]
    steps = fingerprints(training={"steps": 7})
    assert [s for s in names if fp[s] != steps[s]] == ["train", "search", "export", "report"]
    where = fingerprints(search={"history": "/x.db"})
    assert where == fp  # where evaluations are recorded does not change results
    relaxed, relaxed_budget = (
        fingerprints(training={"sampling": "relaxed"}, budget=b) for b in ({"params": "40%"}, {"params": "50%"})
    )
    assert [s for s in names if relaxed[s] != relaxed_budget[s]] == ["latency", "train", "search", "export", "report"]


def test_distillation_loss_is_zero_for_the_teacher_itself_and_works_across_widths():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 16)
    qkv = [torch.randn(3, 5, 16) for _ in range(3)]
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    loss, parts = distillation_loss(h, h, qkv, qkv, mask, relation_heads=4)
    assert set(parts) == {"similarity", "hidden", "cosine"}  # equal widths: hidden states, no relations
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
    other_qkv = [torch.randn(3, 5, 16) for _ in range(3)]
    assert float(distillation_loss(h, h, other_qkv, qkv, mask, 4)[0]) == pytest.approx(0.0, abs=1e-5)
    narrow = [torch.randn(3, 5, 8) for _ in range(3)]
    loss, parts = distillation_loss(torch.randn(3, 5, 8), h, narrow, qkv, mask, relation_heads=4)
    assert set(parts) == {"relation", "similarity"} and float(loss) > 0
    assert parts["relation"] == pytest.approx(float(relation_loss(narrow, qkv, mask, 4)), rel=1e-6)


def test_short_training_batches_run_attention_on_the_math_kernel():
    q = torch.randn(2, 2, 8, 4, requires_grad=True)
    reference = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    with training_attention(MATH_ATTENTION_MAX_TOKENS):
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)  # the same attention, another kernel
    out.sum().backward()
    assert q.grad is not None
    with training_attention(MATH_ATTENTION_MAX_TOKENS + 1):
        assert torch.backends.cuda.flash_sdp_enabled()  # longer: PyTorch's own choice


def test_the_layer_loss_is_the_weighted_mean_mse_of_each_layer_pair():
    torch.manual_seed(0)
    h, t = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
    qkv = [torch.randn(2, 4, 16) for _ in range(3)]
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2:] = False
    s_layers, t_layers = [torch.randn(2, 4, 16), torch.randn(2, 4, 16)], [torch.randn(2, 4, 16), torch.zeros(2, 4, 16)]
    base, _ = distillation_loss(h, t, qkv, qkv, mask, 4)
    loss, parts = distillation_loss(h, t, qkv, qkv, mask, 4, s_layers, t_layers, layer_weight=3.0)
    real = mask[..., None].float()
    mses = [
        float((((s - r) ** 2).mean(-1, keepdim=True) * real).sum() / real.sum()) for s, r in zip(s_layers, t_layers)
    ]
    assert parts["layers"] == pytest.approx(sum(mses) / 2, rel=1e-5)
    assert float(loss) == pytest.approx(float(base) + 3.0 * parts["layers"], rel=1e-5)
    assert float(distillation_loss(h, t, qkv, qkv, mask, 4, t_layers, t_layers, layer_weight=3.0)[0]) == pytest.approx(
        float(base), rel=1e-6
    )  # a student whose layers match the teacher's pays nothing more
    _, narrow = distillation_loss(h[..., :8], t, [q[..., :8] for q in qkv], qkv, mask, 4, s_layers, t_layers, 3.0)
    assert "layers" not in narrow  # other widths: no layer loss, as no hidden-state loss


def test_heldout_ranges_keep_report_examples_apart_from_search_fitness():
    fit, report, overlap = heldout_ranges(100, 32, 50)
    assert (fit, report, overlap) == (range(0, 32), range(32, 82), False)
    fit, report, overlap = heldout_ranges(36, 32, 50)  # too few left: fall back and say so
    assert report == range(0, 36) and overlap


# --------------------------------------------------------------------------- the whole pipeline


@pytest.mark.slow
def test_report_fields_are_present_and_consistent(finished):
    run_dir, result = finished
    report = json.loads((run_dir / "report.json").read_text())
    assert report == result.report
    for role in ("teacher", "student", "uniform_baseline"):
        entry = report[role]
        for key in ("params", "flops_per_token", "latency_ms", "quality", "quality_metric", "size_bytes"):
            assert entry[key] is not None, (role, key)
        assert entry["quality_metric"] == "embedding_spearman"
        assert entry["latency_ms"] > 0 and -1 <= entry["quality"] <= 1
    teacher, student, baseline = report["teacher"], report["student"], report["uniform_baseline"]
    assert teacher["quality"] == pytest.approx(1.0) and teacher["embedding_cosine"] == pytest.approx(1.0)
    assert student["params"] < teacher["params"] and baseline["params"] < teacher["params"]
    # within_budget is the re-check of every limit on the exported student; the tiny recipe's one limit is
    # params "80%", exact by formula, and the student's params are under 0.8 x the teacher's
    limit = report["budget"]["resolved"]["params"]
    assert limit == pytest.approx(0.8 * teacher["params"])
    assert report["budget_check"]["params"] == {"limit": limit, "value": student["params"], "ok": True}
    assert set(report["budget_check"]) == {"params"}
    assert student["params"] < 0.8 * teacher["params"] and report["within_budget"] is True
    assert report["export_dir"] == "model" and (run_dir / report["export_dir"]).is_dir()
    assert baseline["params"] <= limit and 0 < baseline["fraction"] < 1
    assert report["search"]["num_evaluations"] >= 8
    assert (run_dir / "report.md").read_text().count("| student (searched) |") == 1
    for plot in report["plots"].values():
        assert (run_dir / plot).stat().st_size > 0
    assert report["recipe"]["teacher"]["tiny"] is True
    stages = json.loads((run_dir / "stages.json").read_text())["stages"]
    assert all(stages[s.name]["done"] for s in STAGES)
    assert stages["export"]["info"]["parts"]["student"]["distill"]["steps"] == 8


@pytest.mark.slow
def test_exported_student_loads_with_automodel_and_matches_the_report(finished):
    run_dir, result = finished
    model = AutoModel.from_pretrained(run_dir / "model", trust_remote_code=True).eval()
    assert sum(p.numel() for p in model.parameters()) == result.report["student"]["params"]
    info = json.loads((run_dir / "model" / "metanas_arch.json").read_text())
    assert info["arch"] == result.report["student"]["arch"]
    assert info["final_distillation"]["steps"] == 8
    ids = torch.randint(5, 100, (2, 9))
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert out.shape == (2, 9, result.report["student"]["arch"]["hidden"]) and torch.isfinite(out).all()


@pytest.mark.slow
def test_one_tracked_run_holds_every_stage(finished):
    run_dir, _ = finished
    keys = {k for record in read_metrics(run_dir) for k in record}
    for prefix in ("train/", "search/", "export/", "report/"):
        assert any(k.startswith(prefix) for k in keys), prefix
    steps = [r["step"] for r in read_metrics(run_dir) if "step" in r]
    assert steps == sorted(steps)  # stages continue each other's steps
    assert (run_dir / "wandb").is_dir()  # offline W&B run with the model artifact


@pytest.mark.slow
def test_kill_after_training_resumes_at_search_and_matches(finished, tmp_path):
    run_dir, result = finished
    history = tmp_path / "history.db"
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "metanas", "compress", str(TINY), "--out", str(out), "--no-wandb", *OVERRIDES]
    proc = subprocess.Popen(cmd, env=child_env(history=history), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stages = out / "stages.json"
    try:
        wait_until(lambda: _train_done(stages), proc, 180, "the train stage was done")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    log = json.loads(stages.read_text())["stages"]
    assert log["train"]["done"] and not log.get("search", {}).get("done"), "killed after the train stage"
    assert not (out / "report.json").exists() and not (out / "model").exists()

    rerun = subprocess.run(cmd, env=child_env(history=history), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "stage train: done already, skipped" in rerun.stderr
    assert "stage 3/5 search" in rerun.stderr and "stage 2/5 train" not in rerun.stderr
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["student"]["arch"] == result.report["student"]["arch"]
    assert resumed["search"]["best_metric"] == pytest.approx(result.report["search"]["best_metric"], rel=1e-5)


@pytest.mark.slow
def test_rerun_skips_done_stages_and_changed_export_needs_overwrite(finished, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    run_dir = tmp_path / "copy"
    shutil.copytree(finished[0], run_dir)
    before = (run_dir / "report.json").read_text()
    assert main(["compress", str(TINY), "--out", str(run_dir), "--no-wandb", *OVERRIDES]) == 0
    assert (run_dir / "report.json").read_text() == before  # nothing was redone

    changed = [*OVERRIDES, "export.distill_steps=4"]
    assert main(["compress", str(TINY), "--out", str(run_dir), "--no-wandb", *changed]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "export.distill_steps" in err and "export.overwrite=true" in err

    assert main(["compress", str(TINY), "--out", str(run_dir), "--no-wandb", *changed, "export.overwrite=true"]) == 0
    stages = json.loads((run_dir / "stages.json").read_text())["stages"]
    assert stages["export"]["info"]["parts"]["student"]["distill"]["steps"] == 4
    assert json.loads((run_dir / "report.json").read_text())["distillation"]["steps"] == 4

    assert main(["compress", str(TINY), "--out", str(run_dir), "--no-wandb", "training.steps=17"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training.steps" in err and "another --out" in err

    # A time budget: the student's pace decides its steps (1 to export.distill_steps), every baseline gets as many.
    for seconds, expected in (("1e-9", 1), ("1e9", 8)):
        timed = [*OVERRIDES, f"export.distill_seconds={seconds}", "export.overwrite=true"]
        assert main(["compress", str(TINY), "--out", str(run_dir), "--no-wandb", *timed]) == 0
        parts = json.loads((run_dir / "stages.json").read_text())["stages"]["export"]["info"]["parts"]
        assert {name: part["distill"]["steps"] for name, part in parts.items()} == dict.fromkeys(parts, expected)
        # the pace probe and the timed prefill ran the teacher on every example first; here the probe's 8 steps
        # are all the steps there are, so the prefill finds nothing new
        student = parts["student"]["distill"]
        assert student["teacher_examples_computed"] == student["teacher_prefilled"] == 0
        assert student["teacher_prefill_seconds"] == 0.0
        distillation = json.loads((run_dir / "report.json").read_text())["distillation"]
        assert distillation["steps"] == expected and distillation["seconds_budget"] == float(seconds)


@pytest.mark.slow
def test_search_and_export_subcommands_on_a_finished_run(finished, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    run_dir = tmp_path / "copy"
    shutil.copytree(finished[0], run_dir)
    assert (
        main(
            [
                "search",
                str(TINY),
                "--run-dir",
                str(run_dir),
                "--warm-start",
                "off",
                "--no-wandb",
                *OVERRIDES,
                "budget.params=60%",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "evaluations" in out and "best kd_loss" in out
    result = json.loads((run_dir / "search" / "search.json").read_text())
    assert result["strategy"] == "evolution" and result["budget"]["params"] == pytest.approx(
        0.6 * finished[1].report["teacher"]["params"]
    )
    stages = json.loads((run_dir / "stages.json").read_text())["stages"]
    assert stages["search"]["done"] and "export" not in stages  # the next compress redoes export and report

    assert main(["export", "--run-dir", str(run_dir), "--from-search", "--out", str(tmp_path / "best")]) == 0
    exported = json.loads((tmp_path / "best" / "metanas_arch.json").read_text())
    assert exported["arch"] == result["best"]["arch"]
    arch = '{"depth": 1, "hidden": 16, "heads": [2], "ffn": [32]}'
    assert main(["export", "--run-dir", str(run_dir), "--arch", arch, "--out", str(tmp_path / "best")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["export", "--run-dir", str(run_dir), "--arch", arch, "--out", str(tmp_path / "best"), "--overwrite"]) == 0
    )
    model = AutoModel.from_pretrained(tmp_path / "best", trust_remote_code=True)
    assert model.config.hidden_size == 16


@pytest.mark.slow
def test_history_and_meta_train_subcommands_read_the_runs(finished, tmp_path, history, capsys):
    assert main(["history", "list", "--db", str(history)]) == 0
    out = capsys.readouterr().out
    assert "builtin/kd" in out and "finished" in out
    assert main(["history", "export", str(tmp_path / "evals.csv"), "--db", str(history)]) == 0
    lines = (tmp_path / "evals.csv").read_text().splitlines()
    assert lines[0].startswith("id,run_id,task_id") and len(lines) > 8
    predictor = tmp_path / "meta.safetensors"
    assert main(["meta-train", "--db", str(history), "--epochs", "20", "--out", str(predictor)]) == 0
    from metanas.meta.choice import resolve_warm_start

    assert resolve_warm_start(str(predictor)).active


@pytest.mark.slow
def test_ctrl_c_stops_with_a_resume_hint_and_leaves_no_stage_half_done(tmp_path):
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "metanas", "compress", str(TINY), "--out", str(out), "--no-wandb", *OVERRIDES]
    proc = subprocess.Popen(
        cmd, env=child_env(history=tmp_path / "h.db"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    stages = out / "stages.json"
    try:
        wait_until(lambda: _train_done(stages), proc, 180, "the train stage was done")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted during stage" in err and f"resume with: metanas compress {TINY} --out {out}" in err
    log = json.loads(stages.read_text())["stages"]
    assert log["train"]["done"] and not any(log[s]["done"] for s in log if s not in ("latency", "train"))
    assert not (out / "report.json").exists() and not (out / "model").exists()


@pytest.mark.slow
def test_latency_budget_protocol_times_candidates_beside_the_teacher(tmp_path, monkeypatch):
    """A relative latency budget: the search runs under it with a margin, each exported model is the first of
    its candidates (in search order) that meets the limit when timed beside the teacher, and the report
    re-checks the student against the teacher re-measured. Whether the timing passes is not asserted:
    timing on a shared machine is noisy."""
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "h.db"))
    verify = 2
    overrides = [
        "budget.params=null",
        "budget.latency_ms=70%",
        f"search.latency={{predictor_archs: 10, warmup: 2, runs: 8, verify: {verify}, margin: 0.05, cache_dir: null}}",
        "search.options={population_size: 6, generations: 2}",
        "training.steps=4",
        "export.distill_steps=0",
        "report.latency_rounds=1",
        "logging.wandb=false",
    ]
    run_dir = tmp_path / "run"
    result = compress(load_recipe(TINY, overrides), run_dir)
    report = result.report
    stages = json.loads((run_dir / "stages.json").read_text())["stages"]
    assert stages["latency"]["info"]["archs_measured"] == 10
    search_limit = stages["search"]["info"]["search_budget"]["latency_ms"]
    assert search_limit == pytest.approx(0.95 * stages["search"]["info"]["budget"]["latency_ms"])

    # The student's candidates: every arch the search evaluated, best fitness first, each once.
    evaluations = json.loads((run_dir / "search" / STATE_FILE).read_text())["evaluations"]
    ranked = []
    for e in sorted(evaluations, key=lambda e: -e["fitness"]):
        if e["arch"] not in ranked:
            ranked.append(e["arch"])
    parts = stages["export"]["info"]["parts"]
    assert set(parts) == {"student", "baseline", "layer_drop"}
    for name, part in parts.items():
        checks = part["latency_checks"]
        assert 1 <= len(checks) <= verify
        # the limit: 70% of the teacher timed beside the candidate, less the 5% search margin
        assert all(c["limit_ms"] == pytest.approx(0.665 * c["teacher_ms"]) for c in checks)
        assert all(c["ok"] == (c["ms"] <= c["limit_ms"]) for c in checks)
        # timed in search order, stopping at the first that passes: only the last may pass, and it does
        # unless all `verify` candidates were timed
        archs = [c["arch"] for c in checks]
        if name == "student":
            assert archs == ranked[: len(checks)]
            exhausted = len(checks) == min(verify, len(ranked))
        elif name == "layer_drop":  # spread layers at full width, deepest first (every other layer at most)
            assert all(a.get("layer_selection") == "spread" for a in archs)
            depths = [a["depth"] for a in archs]
            assert depths == sorted(set(depths), reverse=True) and depths[0] <= 3 // 2
            exhausted = len(checks) == min(verify, 3 // 2)
        else:  # uniform shrinks, largest first
            sizes = [(a["depth"], a["hidden"], a["heads"][0], a["ffn"][0]) for a in archs]
            assert all(set(a["heads"]) == {a["heads"][0]} and set(a["ffn"]) == {a["ffn"][0]} for a in archs)
            assert sizes == sorted(set(sizes), reverse=True)
            exhausted = len(checks) == verify
        assert not any(c["ok"] for c in checks[:-1])
        assert checks[-1]["ok"] or exhausted
        # exported: the passing candidate, else the one closest to its limit
        chosen = checks[-1] if checks[-1]["ok"] else min(checks, key=lambda c: c["ms"] / c["limit_ms"])
        assert part["arch"] == chosen["arch"]
    assert report["student"]["arch"] == parts["student"]["arch"]
    assert report["uniform_baseline"]["arch"] == parts["baseline"]["arch"]
    assert report["layer_drop"]["arch"] == parts["layer_drop"]["arch"]
    assert report["latency_checks"] == {
        "student": parts["student"]["latency_checks"],
        "uniform_baseline": parts["baseline"]["latency_checks"],
        "layer_drop": parts["layer_drop"]["latency_checks"],
    }

    # The report re-checks the student against 70% of the teacher's latency, both re-measured in the report.
    check = report["budget_check"]["latency_ms"]
    assert set(report["budget_check"]) == {"latency_ms"}
    assert check["limit"] == pytest.approx(0.7 * report["teacher"]["latency_ms"])
    assert check["value"] == report["student"]["latency_ms"]
    assert check["ok"] == (check["value"] <= check["limit"])
    assert report["within_budget"] == (report["student"]["latency_ms"] <= 0.7 * report["teacher"]["latency_ms"])
    assert report["student"]["latency_rounds_ms"] == [check["value"]]  # report.latency_rounds=1
    assert check["spread"] == 0 and check["within_noise"] is False  # one round: no spread to forgive an overrun
    assert report["budget_verdict"] == ("yes" if check["ok"] else "no")


@pytest.mark.slow
def test_workers_search_subcommand_runs_a_shared_study(finished, tmp_path, capsys):
    """`metanas search` with `search.study` is a worker of a shared study: the first worker runs it, a second one
    started later joins the finished study and writes the same search.json (nothing evaluated twice)."""
    from metanas.meta.history import HistoryStore

    db = tmp_path / "shared.db"
    common = [str(TINY), "--warm-start", "off", "--no-wandb", *OVERRIDES, "search.study=tiny-study"]
    common.append(f"search.history={db}")
    results = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        shutil.copytree(finished[0], run_dir)
        assert main(["search", "--run-dir", str(run_dir), *common]) == 0, capsys.readouterr().err
        results.append(json.loads((run_dir / "search" / "search.json").read_text()))
    assert results[0]["best"] == results[1]["best"] and results[0]["generations"] == results[1]["generations"]
    assert results[0]["study"] == "tiny-study" and results[0]["num_evaluations"] == 48  # 8 x 6 generations
    with HistoryStore(db) as store:
        rows = store.records(run_id="tiny-study")
    assert len(rows) == 48 and len({r.arch for r in rows}) == 48


@pytest.mark.slow
def test_single_stage_compress_trains_logits_under_the_latency_predictor_and_searches_from_them(tmp_path, monkeypatch):
    """`training.sampling: relaxed` with a latency budget: the latency stage's predictor prices the relaxed arch
    during training, and the differentiable search starts from the logits trained with the supernet."""
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "h.db"))
    overrides = [
        "budget.params=null",
        "budget.latency_ms=70%",
        "search.latency={predictor_archs: 10, warmup: 2, runs: 8, cache_dir: null}",
        "training.sampling=relaxed",
        "training.steps=6",
        "search.strategy=differentiable",
        "search.warm_start=off",
        "search.options={rounds: 2, steps_per_round: 3, top_k: 2}",
        "export.distill_steps=0",
        "report.latency_rounds=1",
        "logging.wandb=false",
    ]
    run_dir = tmp_path / "run"
    compress(load_recipe(TINY, overrides), run_dir)
    relaxation = json.loads((run_dir / "train" / "train_summary.json").read_text())["relaxation"]
    assert relaxation["relaxation_steps"] == 6 and set(relaxation["expected_costs"]) == {"latency_ms"}
    stages = json.loads((run_dir / "stages.json").read_text())["stages"]
    # the recipe's budget made absolute by the latency stage's predictor, as the search sees it
    assert relaxation["expected_costs"]["latency_ms"]["limit"] == stages["search"]["info"]["budget"]["latency_ms"]
    extra = json.loads((run_dir / "search" / STATE_FILE).read_text())["extra"]["differentiable"]
    assert extra["started_from"] == "trained" and extra["relaxation_steps"] == 6
