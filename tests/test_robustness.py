"""A careless user's bad input and bad luck: every failure is one line, and nothing is lost or hidden.

Each test runs the command line in-process on the tiny recipe (a random 3-layer BERT,
offline) and asserts the exit code, that stderr ends in one `error:` line without a
traceback, and what the files look like afterwards: the user's files intact, a run
directory unchanged or resumable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, child_env, wait_until
from synthetic import minilm_space, synthetic_evaluator, synthetic_loss

import metanas._io as io
from metanas._lock import LOCK_FILE
from metanas.cli import _resume_command, build_parser, main
from metanas.config import load_recipe
from metanas.cost.model import CostModel
from metanas.meta.history import HistoryStore
from metanas.pipeline import compress
from metanas.search.runner import run_search
from metanas.search.sources import frozen_sources
from metanas.training.checkpoint import Checkpoint, TrainState

TINY = REPO / "recipes" / "tiny.yaml"
QUICK = ["--no-wandb", "training.steps=4", "export.distill_steps=2", "report.latency_rounds=1"]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The last stderr line, which must be the one `error:` line, and no traceback anywhere."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err[-2000:]
    return last


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with a digest of its content."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny compress run (the `R` of the issue)."""
    root = tmp_path_factory.mktemp("robust")
    history = f"search.history={root / 'history.db'}"
    compress(load_recipe(TINY, [*QUICK[1:], "logging.wandb=false", history]), root / "R")
    return root / "R"


@pytest.fixture()
def run_copy(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    shutil.copytree(finished, tmp_path / "R")
    return tmp_path / "R"


# --------------------------------------------------------------------------- 1. data loss: export --overwrite


@pytest.mark.slow
def test_export_overwrite_never_replaces_user_files_or_a_run(run_copy, tmp_path, capsys):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    (mine / "sub" / "data.csv").write_text("a,b")
    before = tree(mine)
    assert main(["export", "--run-dir", str(run_copy), "--from-search", "--out", str(mine), "--overwrite"]) == 2
    assert "metanas did not export" in error_line(capsys) and tree(mine) == before

    run_before = tree(run_copy)
    assert main(["export", "--run-dir", str(run_copy), "--from-search", "--out", str(run_copy), "--overwrite"]) == 2
    assert "never replaced" in error_line(capsys) and tree(run_copy) == run_before

    afile = tmp_path / "afile.json"
    afile.write_text('{"keep": true}')
    assert main(["export", "--run-dir", str(run_copy), "--from-search", "--out", str(afile), "--overwrite"]) == 2
    assert "is a file" in error_line(capsys) and afile.read_text() == '{"keep": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R", "afile.json", "mine"]

    model = tmp_path / "model"  # an earlier export is what --overwrite replaces
    assert main(["export", "--run-dir", str(run_copy), "--from-search", "--out", str(model)]) == 0
    assert main(["export", "--run-dir", str(run_copy), "--from-search", "--out", str(model), "--overwrite"]) == 0
    assert (model / "metanas_arch.json").is_file()


# --------------------------------------------------------------------------- 2. one run directory, one process


@pytest.mark.slow
def test_a_second_compress_on_the_same_out_refuses_and_the_history_has_no_duplicates(tmp_path, capsys, monkeypatch):
    history = tmp_path / "history.db"
    monkeypatch.setenv("METANAS_HISTORY", str(history))
    out = tmp_path / "same"
    args = ["compress", str(TINY), "--out", str(out), "--no-wandb", "search.options.generations=6"]
    first = subprocess.Popen(
        [sys.executable, "-m", "metanas", *args], env=child_env(history=history), stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: (out / "stages.json").is_file(), first, what="the first run started its stages")
        assert main(args) == 2
        line = error_line(capsys)
        assert f"is in use by pid {first.pid} on host" in line and "another --out" in line
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    report = json.loads((out / "report.json").read_text())
    with HistoryStore(history) as store:
        rows = store.records()
    assert len(rows) == report["search"]["num_evaluations"] == len({(r.run_id, r.arch) for r in rows})
    assert not (out / LOCK_FILE).exists()  # released when the run ended


@pytest.mark.slow
def test_a_stale_lock_is_reported_and_taken_over(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    out = tmp_path / "stale"
    out.mkdir()
    dead = {"pid": 999999, "host": "elsewhere", "started": 0, "command": "metanas compress (killed)"}
    (out / LOCK_FILE).write_text(json.dumps(dead))
    assert main(["compress", str(TINY), "--out", str(out), *QUICK]) == 0
    assert "taking over a stale lock of pid 999999 on host elsewhere" in caplog.text
    assert (out / "report.json").is_file() and not (out / LOCK_FILE).exists()


# --------------------------------------------------------------------------- 3. the sources a warm start learns from


def test_same_recorded_sources_give_the_same_search_whatever_the_history_holds(tmp_path):
    from test_warmstart import SEARCH, family, train_predictor

    space = minilm_space()
    sources = family(space, 40)
    predictor = train_predictor(sources, space, tmp_path / "p.safetensors")
    options = {**SEARCH, "warm_start": str(predictor)}

    def search(run_dir: Path, store: HistoryStore) -> dict:
        run_search(
            synthetic_evaluator(synthetic_loss), space, CostModel(space), {"non_embedding_params": "40%"},
            "warm_evolution", options, run_dir, history=store, task_id="target", seed=5,
        )  # fmt: skip
        return json.loads((run_dir / "search_state.json").read_text())

    full = HistoryStore(tmp_path / "full.db")
    full.add_records([r for recs in sources.values() for r in recs])
    reference = search(tmp_path / "a", full)
    frozen = json.loads((tmp_path / "a" / "sources.json").read_text())
    assert reference["sources"]["records"] == sum(len(v) for v in sources.values()) == len(frozen["records"])
    assert set(reference["sources"]["tasks"]) == set(sources)

    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "sources.json", tmp_path / "b" / "sources.json")
    empty = HistoryStore(tmp_path / "empty.db")  # another history: the recorded sources decide, not the history
    again = search(tmp_path / "b", empty)
    assert again["evaluations"] == reference["evaluations"] and again["sources"] == reference["sources"]
    result = json.loads((tmp_path / "a" / "search.json").read_text())
    assert result["sources"]["digest"] == frozen["digest"]

    (tmp_path / "b" / "sources.json").write_text('{"format": "metanas.search-sources/1", "digest": "x", "rec')
    with pytest.raises(ValueError, match="sources.json' is damaged"):
        frozen_sources(tmp_path / "b", empty, space.signature(), "target")


# --------------------------------------------------------------------------- 4-5. wrong results are not results


@pytest.mark.slow
def test_text_with_no_known_token_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    data = tmp_path / "emoji.txt"
    data.write_text("".join(f"{x}\n" for x in ["😀😀 🎉", "\x01\x02\x03", "🙂🙃 🤖", "\x07\x08"] * 15))
    out = tmp_path / "emoji"
    assert (
        main(["compress", str(TINY), "--out", str(out), *QUICK, f"data.source={data}", "data.max_documents=null"]) == 2
    )
    assert "hold a token the tokenizer knows" in error_line(capsys)
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert not any(s.get("done") and name == "train" for name, s in stages.items())
    assert not (out / "report.json").exists() and not (out / "train" / "supernet.pt").exists()


@pytest.mark.slow
def test_a_diverging_run_stops_at_the_first_bad_step_and_the_fixed_recipe_reuses_the_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    out = tmp_path / "diverged"
    assert main(["compress", str(TINY), "--out", str(out), *QUICK, "training.lr=1e30", "training.grad_clip=0"]) == 2
    line = error_line(capsys)
    assert "training diverged at step" in line and "lower training.lr" in line.lower()
    assert not (out / "train" / "supernet.pt").exists() and not (out / "search").exists()
    assert main(["compress", str(TINY), "--out", str(out), *QUICK]) == 0  # no work was done: the fix may reuse it
    assert json.loads((out / "report.json").read_text())["within_budget"] is True
    assert main(["compress", str(TINY), "--out", str(tmp_path / "inf"), *QUICK, "training.lr=.inf"]) == 2
    assert "training.lr must be a finite number" in error_line(capsys)


def test_a_non_finite_fitness_is_an_invalid_evaluation_never_best_never_a_crash(tmp_path):
    space = minilm_space()

    def sometimes_nan(arch):
        return math.nan if arch.depth % 2 else synthetic_loss(arch)

    store = HistoryStore(tmp_path / "h.db")
    options = {"population_size": 8, "generations": 2, "parents": 3}
    result = run_search(
        synthetic_evaluator(sometimes_nan), space, CostModel(space), {"params": "80%"}, "evolution", options,
        tmp_path / "run", history=store, task_id="nan",
    )  # fmt: skip
    rows = store.records(task_id="nan")
    invalid = [r for r in rows if r.arch.depth % 2]
    assert invalid and all(r.fitness == -math.inf and r.metric_value == math.inf for r in invalid)
    assert result.best_arch.depth % 2 == 0 and math.isfinite(result.best_fitness)
    text = (tmp_path / "run" / "search.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: non-finite values are null
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    with pytest.raises(ValueError, match="all 8 evaluations of the search were invalid"):
        run_search(
            synthetic_evaluator(lambda a: math.nan), space, CostModel(space), {"params": "80%"}, "evolution",
            {**options, "generations": 1}, tmp_path / "all-nan",
        )  # fmt: skip


# --------------------------------------------------------------------------- 6 and early checks


def test_an_empty_recipe_or_one_without_a_budget_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["compress", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "is empty" in error_line(capsys) and not (tmp_path / "e").exists()
    assert main(["compress", str(TINY), "--out", str(tmp_path / "b"), "--dry-run", "budget.params=null"]) == 2
    assert "budget: no limit is set" in error_line(capsys) and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.max_length=200", "data.max_length=200 exceeds the teacher's 128 usable positions"),
        ("budget.seq_len=600", "budget.seq_len=600 exceeds the teacher's 128 usable positions"),
        ("objective.options.relation_head=2", "did you mean 'options.relation_heads'"),
        ("search.options.population_size=0", "population_size must be an integer >= 1, got 0"),
        ("space.hidden_choices=[7]", "space.hidden_choices: the largest choice must be the teacher's 32"),
        ("search.history=postgresql+pg8000://u@localhost/db", "needs the database driver"),  # psycopg is installed
        ("search.history=foo://bar", "is not a database URL"),
    ],
)
def test_checks_that_need_no_training_fail_in_the_dry_run_and_before_any_stage(
    override, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    assert main(["compress", str(TINY), "--out", str(tmp_path / "dry"), "--dry-run", override]) == 2
    assert message in error_line(capsys)
    assert main(["compress", str(TINY), "--out", str(tmp_path / "run"), "--no-wandb", override]) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "run" / "stages.json").exists() and not (tmp_path / "run" / "compress.yaml").exists()


def test_a_limit_that_constrains_nothing_is_said(tmp_path, capsys):
    assert main(["compress", str(TINY), "--out", str(tmp_path / "x"), "--dry-run", "budget.params=150%"]) == 0
    assert "warning: budget.params=150% constrains nothing" in capsys.readouterr().out


@pytest.mark.slow
def test_a_refused_rerun_leaves_the_recipe_file_alone(run_copy, capsys):
    recipe_file = run_copy / "compress.yaml"
    before = recipe_file.read_bytes()
    assert main(["compress", str(TINY), "--out", str(run_copy), *QUICK, "training.steps=5"]) == 2
    assert "another --out" in error_line(capsys) and recipe_file.read_bytes() == before


# --------------------------------------------------------------------------- damaged files


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


@pytest.mark.slow
def test_damaged_files_are_named_with_what_to_do(run_copy, tmp_path, capsys):
    _truncate(run_copy / "train" / "supernet.pt")
    assert main(["export", "--run-dir", str(run_copy), "--from-search", "--out", str(tmp_path / "m")]) == 2
    line = error_line(capsys)
    assert "supernet.pt' is damaged" in line and "train again" in line

    (run_copy / "search" / "search.json").write_text('{"best": ')
    shutil.copy(tmp_path / "R" / "train" / "checkpoint.pt", tmp_path / "ckpt.pt")
    assert main(["compress", str(TINY), "--out", str(run_copy), *QUICK]) == 0  # done stages are not read again

    (run_copy / "stages.json").write_text('{"format": "metanas.compress-stages/1", "stag')
    assert main(["compress", str(TINY), "--out", str(run_copy), *QUICK]) == 2
    line = error_line(capsys)
    assert "stages.json' is damaged" in line and "delete it to redo every stage" in line

    _truncate(tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="ckpt.pt' is damaged .*delete it to train from step 0"):
        Checkpoint.load(tmp_path / "ckpt.pt")


def test_a_damaged_search_result_is_named_on_export(run_copy, tmp_path, capsys):
    (run_copy / "search" / "search.json").write_text("{")
    assert main(["export", "--run-dir", str(run_copy), "--out", str(tmp_path / "m")]) == 2
    assert "search.json' is damaged" in error_line(capsys)


# --------------------------------------------------------------------------- a full disk, and failing writers


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_and_the_previous_file_survives(tmp_path):
    path = io.atomic_write_json({"v": 1}, tmp_path / "state.json")
    with pytest.raises(io.NoSpaceLeft, match=r"^no space left on device while writing .*state.json$"):
        io.atomic_write(path, lambda f: (f.write("{partial"), _enospc()), binary=False)
    assert json.loads(path.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failing_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    Checkpoint(TrainState(step=3), 1, {}, {"model": {"w": torch.ones(2)}}).save(path)

    def torn(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(RuntimeError, match="file write failed"):
        Checkpoint(TrainState(step=9), 1, {}, {"model": {"w": torch.zeros(2)}}).save(path)
    monkeypatch.undo()
    kept = Checkpoint.load(path)
    assert kept.state.step == 3 and kept.modules["model"]["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.slow
def test_a_failing_export_keeps_the_previous_export(run_copy, tmp_path, capsys, monkeypatch):
    model = tmp_path / "model"
    assert main(["export", "--run-dir", str(run_copy), "--from-search", "--out", str(model)]) == 0
    before = tree(model)
    from transformers import PreTrainedModel

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", _enospc)
    assert main(["export", "--run-dir", str(run_copy), "--from-search", "--out", str(model), "--overwrite"]) == 2
    assert error_line(capsys) == f"error: no space left on device while writing {model}"
    assert tree(model) == before and sorted(p.name for p in tmp_path.iterdir()) == ["R", "model"]


# --------------------------------------------------------------------------- small commands


def test_small_commands_refuse_bad_arguments_before_any_work(tmp_path, capsys):
    db = tmp_path / "h.db"
    HistoryStore(db).close()
    assert main(["meta-train", "--db", str(db), "--out", str(tmp_path) + "/"]) == 2
    assert "--out must be a predictor file ending in .safetensors" in error_line(capsys)
    assert main(["export", "--run-dir", str(tmp_path), "--arch", "missing.json", "--out", str(tmp_path / "m")]) == 2
    assert "--arch: file not found: 'missing.json'" in error_line(capsys)
    assert main(["compress", str(TINY), "--out", "", "--dry-run"]) == 2
    assert "--out must name a directory" in error_line(capsys)
    assert main(["history", "export", str(tmp_path / "x.csv"), "--db", str(db), "--run-id", "nosuch"]) == 2
    assert "no evaluations match run_id='nosuch'" in error_line(capsys) and not (tmp_path / "x.csv").exists()


def test_the_resume_hint_is_a_command_that_works_when_pasted():
    args = build_parser().parse_args(["compress", "my recipes/tiny.yaml", "--out", "runs/a b", "--no-wandb"])
    args.overrides = ["search.options.generations=6", "data.source=my data/x.txt"]
    hint = _resume_command("compress", args, "--out", "runs/a b")
    assert shlex.split(hint) == [
        "metanas", "compress", "my recipes/tiny.yaml", "--out", "runs/a b", "--no-wandb",
        "search.options.generations=6", "data.source=my data/x.txt",
    ]  # fmt: skip


def test_an_unexpected_error_is_one_line_unless_debugging(tmp_path, capsys, monkeypatch):
    import metanas.pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(metanas.pipeline, "plan", broken)
    assert main(["compress", str(TINY), "--out", str(tmp_path / "x"), "--dry-run"]) == 2
    line = error_line(capsys)
    assert "RuntimeError: something inside broke" in line and "--debug" in line
    monkeypatch.setenv("METANAS_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something inside broke"):
        main(["compress", str(TINY), "--out", str(tmp_path / "x"), "--dry-run"])


# --------------------------------------------------------------------------- privacy


@pytest.mark.slow
def test_shared_outputs_carry_no_absolute_path_of_this_machine(finished):
    roots = {str(finished.parent), str(REPO), sys.prefix, str(Path.home())}
    for rel in ("report.json", "report.md", "model/metanas_arch.json", "baseline/metanas_arch.json"):
        text = (finished / rel).read_text()
        leaked = [r for r in roots if r in text]
        assert not leaked, (rel, leaked)
    report = json.loads((finished / "report.json").read_text())
    assert report["recipe"]["search"]["history"] == "history.db"
    # `auto` with no other task in the history: the shipped predictor, named relative to its package
    line = report["search"]["warm_start"]
    assert line.startswith("warm start auto: shipped predictor (metanas/checkpoints/meta_predictor.safetensors")
    with HistoryStore(finished.parent / "history.db") as store:
        assert {r.task_id for r in store.records()} == {"builtin/kd"}


def test_a_local_data_file_is_named_by_its_name_in_the_task_id(tmp_path):
    from metanas.pipeline.run import default_task_id

    data = tmp_path / "corpus" / "reviews.txt"
    recipe = load_recipe(TINY, [f"data.source={data}"])
    assert default_task_id(recipe) == "reviews.txt/kd"


def test_a_list_of_sources_names_each_and_a_long_list_stays_within_the_task_id_column(tmp_path):
    from metanas.pipeline.reporting import shareable_recipe
    from metanas.pipeline.run import MAX_SOURCE_NAME, default_task_id

    data = tmp_path / "corpus" / "reviews.txt"
    recipe = load_recipe(TINY, [f"data.source=[builtin, {data}]"])
    assert default_task_id(recipe) == "builtin+reviews.txt/kd"
    shared = shareable_recipe(recipe, tmp_path / "run")
    assert shared["data"]["source"] == ["builtin", "reviews.txt"]  # a list, no absolute path
    many = [str(tmp_path / f"part-{i:03d}-of-a-large-corpus.txt") for i in range(20)]
    long = default_task_id(load_recipe(TINY, [f"data.source=[{', '.join(many)}]"]))
    assert long.startswith("part-000-of-a-large-corpus.txt+19 more:") and len(long) <= MAX_SOURCE_NAME + 40
