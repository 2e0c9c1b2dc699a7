"""Supernet training: sampling rules, schedules, data order, exact resume, DDP, CLI errors.

A tiny random BERT (hidden 32, 3 layers, 4 heads, FFN 64) with a WordPiece tokenizer
is saved to a temporary directory and used as the teacher; data is a capped slice of
the builtin corpus. Multi-process tests launch real subprocesses (`python -m metanas`,
`torch.distributed.run`) with one thread each so results are deterministic.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import child_env, tiny_teacher_dir, torchrun_two, wait_until
from transformers import AutoTokenizer

from metanas.cli import main
from metanas.config import Recipe
from metanas.space import SearchSpace
from metanas.tracking import read_metrics
from metanas.training import CHECKPOINT_FILE, SUPERNET_FILE, load_trained_supernet, train_supernet
from metanas.training.checkpoint import Checkpoint
from metanas.training.schedule import EpochOrder, eval_archs, lr_multiplier, param_groups, step_archs
from metanas.training.trainer import SupernetWithObjective

# Exact-resume recipe: MLM (its own masking RNG), dropout, sandwich with random subnets,
# in-place distillation, gradient accumulation, cosine warmup, periodic evaluation, and
# enough steps to cross an epoch boundary of the shuffled data.
EXACT_TRAINING = {
    "steps": 24,
    "batch_size": 8,
    "lr": 0.001,
    "schedule": "cosine",
    "warmup_ratio": 0.1,
    "grad_accum": 2,
    "inplace_distill": True,
    "eval_every": 10,
    "checkpoint_every": 6,
    "log_every": 4,
    "eval_batches": 2,
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return tiny_teacher_dir(tmp_path_factory.mktemp("teacher"))


def recipe_dict(teacher: Path, objective: str = "kd", **training) -> dict:
    return {
        "teacher": {"path": str(teacher)},
        "data": {"max_length": 32, "max_documents": 300},
        "objective": {"name": objective},
        "training": {"steps": 6, "batch_size": 8, "lr": 0.001, "eval_batches": 2, "log_every": 2, **training},
        "logging": {"wandb": False},
    }


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cli(recipe: Path, run_dir: Path, *extra: str, tmp: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metanas", "train-supernet", str(recipe), "--run-dir", str(run_dir), "--no-wandb"]
    return subprocess.Popen(
        [*cmd, *extra],
        env=child_env(hf_datasets_cache=tmp / "hf-cache"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def supernet_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    data = torch.load(run_dir / SUPERNET_FILE, weights_only=True)
    out = {f"sn.{k}": v for k, v in data["supernet"].items()}
    out.update({f"obj.{k}": v for k, v in data["objective"].items() if v.dtype.is_floating_point})
    return out


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# --------------------------------------------------------------------------- pure parts


def tiny_space() -> SearchSpace:
    return SearchSpace(
        depth_choices=(1, 2, 3),
        hidden_choices=(16, 24, 32),
        head_choices=(2, 3, 4),
        ffn_choices=(16, 32, 48, 64),
        head_dim=8,
        vocab_size=100,
        max_position_embeddings=64,
        type_vocab_size=2,
    )


def test_sandwich_is_largest_smallest_then_seeded_randoms():
    space = tiny_space()
    archs = step_archs(space, "sandwich", seed=3, step=5, num_random=2)
    assert [role for role, _ in archs] == ["largest", "smallest", "random", "random"]
    assert archs[0][1] == space.largest() and archs[1][1] == space.smallest()
    rng = random.Random("metanas-archs:3:5")
    assert [a for _, a in archs[2:]] == [space.sample(rng), space.sample(rng)]
    assert archs == step_archs(space, "sandwich", seed=3, step=5, num_random=2)  # a pure function
    randoms = {a for step in range(20) for role, a in step_archs(space, "sandwich", 3, step) if role == "random"}
    assert len(randoms) >= 30  # different steps draw different subnets


def test_uniform_is_one_seeded_random_subnet():
    space = tiny_space()
    archs = step_archs(space, "uniform", seed=0, step=7)
    assert [role for role, _ in archs] == ["random"]
    assert archs[0][1] == space.sample(random.Random("metanas-archs:0:7"))
    assert step_archs(space, "uniform", 0, 7) != step_archs(space, "uniform", 1, 7)
    with pytest.raises(ValueError, match="sampling must be"):
        step_archs(space, "greedy", 0, 0)


def test_middle_arch_takes_the_median_choices():
    arch = tiny_space().middle()
    assert (arch.depth, arch.hidden, arch.heads, arch.ffn) == (2, 24, (3, 3), (48, 48))
    assert list(eval_archs(tiny_space())) == ["smallest", "middle", "largest"]


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]),
        ("cosine", [0.5, 1.0, 1.0, 0.853553, 0.5, 0.146447, 0.0]),
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_lr_schedules_warm_up_then_decay(schedule, expected):
    # Step s uses multiplier(s); step 6 is past the end (what the scheduler shows after the last step).
    got = [lr_multiplier(s, warmup=2, total=6, schedule=schedule) for s in range(7)]
    assert got == pytest.approx(expected, abs=1e-6)


def test_no_weight_decay_on_biases_and_layernorm():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    model[1].weight.requires_grad_(True)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert [p.shape for p in no_decay["params"]] == [torch.Size([3]), torch.Size([3]), torch.Size([3])]


def test_epoch_order_shards_ranks_and_regenerates_each_epoch():
    ranks = [EpochOrder(50, batch_size=4, world_size=2, rank=r, seed=1) for r in range(2)]
    assert ranks[0].batches_per_epoch == 6  # 50 // 8, the incomplete batch is dropped
    epoch0 = [i for b in range(6) for order in ranks for i in order.indices(0, b)]
    assert len(epoch0) == len(set(epoch0)) == 48
    assert set(ranks[0].indices(0, 0)).isdisjoint(ranks[1].indices(0, 0))
    fresh = EpochOrder(50, 4, 2, 0, seed=1)
    assert fresh.indices(0, 3) == ranks[0].indices(0, 3)  # regenerable: resume needs no saved order
    assert fresh.indices(1, 0) != fresh.indices(0, 0)
    assert EpochOrder(50, 4, 2, 0, seed=2).indices(0, 0) != fresh.indices(0, 0)
    with pytest.raises(ValueError, match="fewer than one global batch of 64"):
        EpochOrder(50, batch_size=32, world_size=2, rank=0, seed=0)


# --------------------------------------------------------------------------- in-process training


@pytest.mark.slow
def test_training_loop_runs_the_archs_of_the_sampling_rule(teacher, tmp_path, monkeypatch):
    seen = []
    original = SupernetWithObjective.forward

    def spy(self, batch, arch, context, **kwargs):
        seen.append(arch)
        return original(self, batch, arch, context, **kwargs)

    monkeypatch.setattr(SupernetWithObjective, "forward", spy)
    for sampling, per_step in (("sandwich", 4), ("uniform", 1)):
        seen.clear()
        recipe = Recipe.from_dict(recipe_dict(teacher, steps=3, sampling=sampling, seed=5, eval_every=0))
        result = train_supernet(recipe, tmp_path / sampling)
        expected = [a for step in range(3) for _, a in step_archs(result.supernet.space, sampling, 5, step, 2)]
        assert len(seen) == 3 * per_step and seen == expected
        logged = set().union(*(r.keys() for r in read_metrics(tmp_path / sampling) if "step" in r))
        roles = {"loss/largest", "loss/smallest", "loss/random"} if sampling == "sandwich" else {"loss/random"}
        assert {k for k in logged if k.startswith("loss/")} == roles


@pytest.mark.slow
def test_train_writes_summary_metrics_and_a_loadable_supernet(teacher, tmp_path):
    recipe = Recipe.from_dict(recipe_dict(teacher, steps=12, lr=0.003, eval_every=6, checkpoint_every=5))
    result = train_supernet(recipe, tmp_path / "run")
    summary = json.loads(result.summary_path.read_text())
    assert summary["steps"] == 12 and summary["metric_name"] == "kd_loss" and not summary["higher_is_better"]
    before, after = summary["before"], summary["after"]
    assert set(before) == set(after) == {"smallest", "middle", "largest"}
    assert before["largest"] == pytest.approx(0.0, abs=1e-9)  # the largest subnet is the teacher
    assert before["smallest"] > 1e-5 and after["smallest"] < before["smallest"]
    assert after["middle"] < before["middle"]
    assert summary["params"]["smallest"] < summary["params"]["middle"] < summary["params"]["largest"]

    records = read_metrics(result.run_dir)
    train_steps = [r["step"] for r in records if "loss/largest" in r]
    assert train_steps == [2, 4, 6, 8, 10, 12]
    for r in records:
        if "loss/largest" in r:
            assert r["lr"] >= 0 and r["tokens_per_s"] > 0 and r["grad_norm"] > 0
    assert [r["step"] for r in records if "val/kd_loss/middle" in r] == [0, 6, 12]
    assert Checkpoint.load(result.checkpoint_path).state.step == 12

    trained = load_trained_supernet(result.run_dir)
    assert max_abs_diff(trained.supernet.state_dict(), result.supernet.state_dict()) == 0.0
    # KD rebuilds the original (rewired) teacher from the source checkpoint and the saved permutation.
    objective = trained.objective()
    assert trained.meta["objective"]["name"] == "kd"
    assert max_abs_diff(objective.teacher.state_dict(), result.objective.teacher.state_dict()) == 0.0
    g = torch.Generator().manual_seed(0)
    probe = [{"input_ids": torch.randint(5, 300, (2, 10), generator=g), "attention_mask": torch.ones(2, 10).long()}]
    largest = trained.supernet.space.largest()
    reloaded = objective.evaluate(trained.supernet, largest, probe)
    assert reloaded > 0 and reloaded == pytest.approx(result.objective.evaluate(result.supernet, largest, probe))
    tokenizer = AutoTokenizer.from_pretrained(str(trained.tokenizer_path))
    assert len(tokenizer) == trained.supernet.space.vocab_size


@pytest.mark.slow
def test_bf16_uniform_sampling_and_space_overrides_train(teacher, tmp_path, monkeypatch):
    monkeypatch.setattr("metanas.precision.bf16_is_fast", lambda device_type: True)  # bf16 even where emulated
    data = recipe_dict(teacher, "mlm", steps=4, bf16=True, sampling="uniform", eval_every=0)
    data["space"] = {"depth_choices": [2, 3], "hidden_choices": [16, 32]}
    result = train_supernet(Recipe.from_dict(data), tmp_path / "bf16")
    assert result.supernet.space.depth_choices == (2, 3) and result.supernet.space.hidden_choices == (16, 32)
    assert result.steps == 4 and 0 < result.final_losses["loss/random"] < 10
    assert all(p.dtype == torch.float32 for p in result.supernet.parameters())  # autocast, fp32 master weights
    # The MLM head and its masking RNG come back with the trained supernet.
    trained = load_trained_supernet(result.run_dir)
    assert trained.supernet.space == result.supernet.space
    assert max_abs_diff(trained.objective().state_dict(), result.objective.state_dict()) == 0.0


# --------------------------------------------------------------------------- bad input


def test_task_objective_without_labels_fails_before_any_work(teacher, tmp_path):
    recipe = Recipe.from_dict(recipe_dict(teacher, "task"))
    with pytest.raises(ValueError, match="task objective needs labels: set data.label_column"):
        train_supernet(recipe, tmp_path / "task")
    assert not (tmp_path / "task").exists()


def test_sequence_longer_than_teacher_positions_is_a_clear_error(teacher, tmp_path):
    data = recipe_dict(teacher)
    data["data"]["max_length"] = 128
    with pytest.raises(ValueError, match="max_length=128 exceeds the teacher's 64 usable positions"):
        train_supernet(Recipe.from_dict(data), tmp_path / "long")


def test_unknown_objective_option_names_the_allowed_ones(teacher, tmp_path):
    data = recipe_dict(teacher)
    data["objective"]["options"] = {"relation_head": 2}
    with pytest.raises(ValueError, match="unknown option.*'relation_head'.*allowed options: relation_heads"):
        train_supernet(Recipe.from_dict(data), tmp_path / "opt")


@pytest.mark.slow
def test_resume_needs_a_checkpoint_and_a_checkpoint_needs_resume(teacher, tmp_path):
    recipe = Recipe.from_dict(recipe_dict(teacher, steps=1, eval_every=0))
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train_supernet(recipe, tmp_path / "r", resume=True)
    train_supernet(recipe, tmp_path / "r")
    with pytest.raises(ValueError, match="already holds a checkpoint; pass --resume"):
        train_supernet(recipe, tmp_path / "r")


@pytest.mark.parametrize(
    "edit, overrides, message",
    [
        (lambda d: d.update(trainig={}), [], "unknown key 'trainig' (did you mean 'training'?)"),
        (lambda d: None, ["training.stesp=3"], "unknown key 'training.stesp' (did you mean 'training.steps'?)"),
        (lambda d: None, ["objective.name=distill"], "objective.name must be one of contrastive, kd, mlm, task"),
        (lambda d: None, ["objective.name=task"], "task objective needs labels: set data.label_column"),
        (lambda d: None, ["data.max_length=100"], "max_length=100 exceeds the teacher's 64 usable positions"),
    ],
)
def test_cli_reports_bad_input_in_one_line(teacher, tmp_path, capsys, edit, overrides, message):
    data = recipe_dict(teacher)
    edit(data)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    code = main(["train-supernet", str(recipe), "--run-dir", str(tmp_path / "run"), *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_cli_missing_recipe_and_stray_arguments(tmp_path, capsys):
    assert main(["train-supernet", str(tmp_path / "nope.yaml")]) == 2
    assert "error: recipe file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train-supernet", "r.yaml", "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


# --------------------------------------------------------------------------- subprocesses


@pytest.fixture(scope="module")
def interrupted_runs(teacher, tmp_path_factory):
    """One run SIGKILLed and one Ctrl-C'd mid-run (CLI subprocesses), then resumed in-process
    (through the CLI and through the API), plus an uninterrupted reference run, same recipe."""
    tmp = tmp_path_factory.mktemp("resume")
    data = recipe_dict(teacher, "mlm", **EXACT_TRAINING)
    recipe = write_recipe(tmp / "exact.yaml", data)
    dirs = {name: tmp / name for name in ("reference", "killed", "interrupted")}
    procs = {name: cli(recipe, dirs[name], tmp=tmp) for name in ("killed", "interrupted")}
    out = {}
    for name, sig in (("killed", signal.SIGKILL), ("interrupted", signal.SIGINT)):
        checkpoint = dirs[name] / CHECKPOINT_FILE  # the first periodic checkpoint
        wait_until(checkpoint.exists, procs[name], 180, f"{checkpoint} appeared")
        procs[name].send_signal(sig)
    for name, proc in procs.items():
        out[name] = finish(proc)
        out[f"{name}_step"] = Checkpoint.load(dirs[name] / CHECKPOINT_FILE).state.step
    # In-process on one thread, as in the subprocesses (the session fixture of conftest.py).
    out["killed_resumed"] = main(["train-supernet", str(recipe), "--run-dir", str(dirs["killed"]), "--resume"])
    out["interrupted_resumed"] = train_supernet(Recipe.from_dict(data), dirs["interrupted"], resume=True).steps
    train_supernet(Recipe.from_dict(data), dirs["reference"])
    return dirs, out


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(interrupted_runs):
    dirs, out = interrupted_runs
    assert out["killed"][0] == -signal.SIGKILL  # killed mid-run, not finished
    assert 6 <= out["killed_step"] < 24
    assert out["killed_resumed"] == 0
    assert max_abs_diff(supernet_weights(dirs["killed"]), supernet_weights(dirs["reference"])) <= 1e-6
    ref = json.loads((dirs["reference"] / "train_summary.json").read_text())
    got = json.loads((dirs["killed"] / "train_summary.json").read_text())
    assert got["after"] == pytest.approx(ref["after"], abs=1e-6) and got["before"] == ref["before"]
    assert got["tokens_seen"] == ref["tokens_seen"]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resumes_exactly(interrupted_runs):
    dirs, out = interrupted_runs
    code, err = out["interrupted"]
    step = out["interrupted_step"]
    assert code == 130, err[-3000:]
    assert f"interrupted after step {step}; checkpoint saved to" in err and "--resume" in err
    assert 6 <= step < 24
    assert out["interrupted_resumed"] == 24
    assert max_abs_diff(supernet_weights(dirs["interrupted"]), supernet_weights(dirs["reference"])) <= 1e-6


DDP_DRIVER = """
import sys, torch
import torch.distributed as dist
from metanas.config import load_recipe
from metanas.training import train_supernet
result = train_supernet(load_recipe(sys.argv[1]), sys.argv[2])
state = {**{"sn." + k: v for k, v in result.supernet.state_dict().items()},
         **{"obj." + k: v for k, v in result.objective.state_dict().items() if v.dtype.is_floating_point}}
torch.save({"world": dist.get_world_size(), "state": state}, f"{sys.argv[2]}/rank{dist.get_rank()}.pt")
"""


@pytest.mark.slow
def test_two_process_distributed_ddp_on_cpu_keeps_ranks_identical_and_learns(teacher, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER, encoding="utf-8")
    training = {"steps": 16, "lr": 0.003, "eval_every": 0, "checkpoint_every": 8, "log_every": 4, "grad_accum": 2}
    recipe = write_recipe(tmp_path / "ddp.yaml", recipe_dict(teacher, "mlm", **training))
    run_dir = tmp_path / "ddp"
    torchrun_two(driver, str(recipe), str(run_dir), tmp_path=tmp_path)
    ranks = [torch.load(run_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert max_abs_diff(ranks[0]["state"], ranks[1]["state"]) == 0.0
    assert max_abs_diff(ranks[0]["state"], supernet_weights(run_dir)) == 0.0  # what rank 0 saved
    records = [r for r in read_metrics(run_dir) if "loss/smallest" in r]
    assert [r["step"] for r in records] == [4, 8, 12, 16]
    for role in ("largest", "smallest", "random"):
        assert records[-1][f"loss/{role}"] < records[0][f"loss/{role}"] - 0.05
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert all(summary["after"][r] < summary["before"][r] for r in ("smallest", "middle", "largest"))
    ckpt = Checkpoint.load(run_dir / CHECKPOINT_FILE)
    assert ckpt.world_size == 2 and len(ckpt.rng) == 2
    assert not torch.equal(ckpt.rng[0]["torch"], ckpt.rng[1]["torch"])  # per-rank dropout streams


@pytest.mark.slow
def test_distributed_accelerate_two_processes_equal_one_process_with_the_same_global_batch(teacher, tmp_path):
    """`accelerate launch --num_processes 2` (gloo on CPU) of a KD supernet training, batch 4 per rank, ends with the
    weights of one process with batch 8: the same examples per step (rank r takes the r-th slice of the global
    batch), the same subnets on every rank, each rank's token-mean loss weighted by its share of the global batch's
    tokens. Dropout is off: its masks are per-rank random draws, which no split of a batch reproduces."""
    import shutil

    from pg_server import _free_port

    quiet = tmp_path / "teacher"
    shutil.copytree(teacher, quiet)
    config = json.loads((quiet / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (quiet / "config.json").write_text(json.dumps(config))
    training = {"steps": 8, "eval_every": 0, "checkpoint_every": 4, "log_every": 4}
    one = write_recipe(tmp_path / "one.yaml", {**recipe_dict(quiet, "kd", batch_size=8, **training), "threads": 1})
    two = write_recipe(tmp_path / "two.yaml", {**recipe_dict(quiet, "kd", batch_size=4, **training), "threads": 1})
    env = child_env(hf_datasets_cache=tmp_path / "hf-cache")
    args = ["-m", "metanas", "train-supernet"]
    single = subprocess.run(
        [sys.executable, *args, str(one), "--run-dir", str(tmp_path / "one"), "--no-wandb"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    # On a machine without CUDA, `--multi_gpu` is what makes accelerate start N processes (plain
    # `--num_processes 2` and `--cpu` start one); the trainer then runs DDP over gloo.
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port())]
    double = subprocess.run(
        [*launch, *args, str(two), "--run-dir", str(tmp_path / "two"), "--no-wandb"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert Checkpoint.load(tmp_path / "two" / CHECKPOINT_FILE).world_size == 2
    assert max_abs_diff(supernet_weights(tmp_path / "one"), supernet_weights(tmp_path / "two")) <= 1e-5
