"""Downstream evaluation (`report.eval`): the probe, the pair correlation, early errors, the report table."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from helpers import tiny_tokenizer
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from tiny_models import tiny_teacher

from metanas.config import EvalEntry, Recipe
from metanas.data import Collator, batches_of, tokenize_dataset
from metanas.downstream import evaluate_downstream, load_eval, pair_spearman, probe_classification
from metanas.pipeline.checks import preflight
from metanas.report import embed, render_markdown

TOPICS = {
    "network": ["socket", "server", "client", "port", "host", "url"],
    "text": ["string", "character", "encoding", "bytes", "decode", "unicode"],
    "threads": ["thread", "lock", "queue", "process", "signal", "event"],
}
FILLER = "the of and to a in is it that for as with was on be by this are".split()


def _labeled_rows(n: int = 150, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = list(TOPICS)[i % len(TOPICS)]
        words = rng.sample(TOPICS[topic], 3) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        rows.append({"body": " ".join(words), "topic": topic})
    return rows


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("downstream")
    tok = tiny_tokenizer(tmp / "tok")
    model = tiny_teacher("bert", vocab_size=len(tok))
    return tmp, tok, model


def _budget_recipe(eval_entries) -> Recipe:
    return Recipe.from_dict({"budget": {"params": 1e6}, "report": {"eval": eval_entries}})


def test_probe_learns_labels_and_matches_sklearn(setup):
    tmp, tok, model = setup
    source = _write_jsonl(tmp / "topics.jsonl", _labeled_rows())
    entry = EvalEntry(name="topics", source=source, text_column="body", label_column="topic", seed=3)
    result = evaluate_downstream({"teacher": model}, [entry], tok, max_length=32, batch_size=16)["teacher"]["topics"]
    assert result["examples"] == 150 and result["classes"] == 3 and result["test_examples"] == 50
    assert result["accuracy"] > 0.8, result  # chance is 1/3

    # the same number computed directly with scikit-learn on the same embeddings and split
    ds = load_eval(entry)
    tokenized = tokenize_dataset(ds, tok, 32)
    x = embed(model, batches_of(tokenized, range(len(ds)), 16, Collator(tok))).numpy()
    y = np.asarray(ds["label"])
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.33, random_state=3, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    predicted = LogisticRegression(max_iter=1000).fit(scaler.transform(x_tr), y_tr).predict(scaler.transform(x_te))
    assert result["accuracy"] == pytest.approx(accuracy_score(y_te, predicted))
    assert result["macro_f1"] == pytest.approx(f1_score(y_te, predicted, average="macro"))


def test_probe_on_random_features_is_near_chance():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 8)), rng.integers(0, 2, 300)
    assert probe_classification(x, y, 0.33, 0)["accuracy"] < 0.65


def test_pairs_spearman_equals_scipy(setup, tmp_path):
    _, tok, model = setup
    rng = random.Random(1)
    rows = [
        {"a": " ".join(rng.sample(FILLER, 4)), "b": " ".join(rng.sample(FILLER, 4)), "gold": rng.random()}
        for _ in range(40)
    ]
    source = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    entry = EvalEntry(
        name="sim", source=source, kind="pairs", text_a_column="a", text_b_column="b", score_column="gold"
    )
    result = evaluate_downstream({"m": model}, [entry], tok, max_length=32)["m"]["sim"]
    assert result["pairs"] == 40

    def emb(texts):
        ds = tokenize_dataset(load_eval(entry).rename_column(texts, "text"), tok, 32)
        return embed(model, batches_of(ds, range(len(ds)), 32, Collator(tok)))

    cos = torch.nn.functional.cosine_similarity(emb("text_a"), emb("text_b")).numpy()
    expected = spearmanr(cos, [r["gold"] for r in rows]).statistic
    assert result["spearman"] == pytest.approx(expected)
    assert pair_spearman(torch.eye(3), torch.eye(3), [1, 2, 3]) == {"spearman": None, "pairs": 3}  # constant cosine


def test_recipe_rejects_classification_without_label_column():
    with pytest.raises(ValueError, match=r"report\.eval\[0\]: eval 'x': classification needs label_column"):
        Recipe.from_dict({"report": {"eval": [{"name": "x", "source": "data.csv"}]}})


def test_recipe_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"report\.eval\[0\]\.kind must be one of classification, pairs; got 'probe'"):
        Recipe.from_dict({"report": {"eval": [{"name": "x", "source": "d.csv", "kind": "probe"}]}})


def test_recipe_rejects_pairs_without_columns():
    with pytest.raises(ValueError, match="pairs needs text_b_column, score_column"):
        Recipe.from_dict(
            {"report": {"eval": [{"name": "x", "source": "d.csv", "kind": "pairs", "text_a_column": "a"}]}}
        )


def test_preflight_names_a_missing_label_column(tmp_path):
    source = _write_jsonl(tmp_path / "t.jsonl", _labeled_rows(30))
    recipe = _budget_recipe([{"name": "t", "source": source, "text_column": "body", "label_column": "category"}])
    with pytest.raises(
        ValueError, match=r"report.eval 't': label column 'category' not found .* available columns: body, topic"
    ):
        preflight(recipe, None, None)


def test_preflight_names_a_missing_pair_column(tmp_path):
    source = _write_jsonl(tmp_path / "p.jsonl", [{"a": "x y", "b": "y z", "score": 0.5}] * 5)
    entry = {"name": "p", "source": source, "kind": "pairs", "text_a_column": "a", "text_b_column": "b"}
    recipe = _budget_recipe([{**entry, "score_column": "gold"}])
    with pytest.raises(ValueError, match=r"report.eval 'p': column 'gold' not found .* available columns: a, b, score"):
        preflight(recipe, None, None)
    assert preflight(_budget_recipe([{**entry, "score_column": "score"}]), None, None) == []


def test_preflight_refuses_a_single_class(tmp_path):
    rows = [{"text": f"row {i}", "label": "only"} for i in range(20)]
    recipe = _budget_recipe(
        [{"name": "one", "source": _write_jsonl(tmp_path / "o.jsonl", rows), "label_column": "label"}]
    )
    with pytest.raises(ValueError, match="report.eval .one.: .* has 1 class; a probe needs at least 2"):
        preflight(recipe, None, None)


def _entry(quality: float, downstream=None) -> dict:
    entry = {
        "params": 1000,
        "flops_per_token": 2e6,
        "latency_ms": 1.0,
        "size_bytes": 4000,
        "quality": quality,
        "quality_metric": "embedding_spearman",
        "arch": {"depth": 2},
        "source": "teacher",
    }
    return {**entry, **({"downstream": downstream} if downstream else {})}


def test_markdown_shows_the_downstream_table():
    def results(acc, rho):
        return {
            "topics": {"accuracy": acc, "macro_f1": acc - 0.1, "examples": 90, "test_examples": 30, "classes": 3},
            "sim": {"spearman": rho, "pairs": 40},
        }

    report = {
        "run_name": "r",
        "objective": "kd",
        "teacher": _entry(1.0, results(0.9, 0.5)),
        "student": _entry(0.8, results(0.7, 0.25)),
        "budget": {"description": "params <= 1000"},
        "export_dir": "model",
        "within_budget": True,
        "budget_check": {},
        "held_out": {"examples": 8, "overlap": False},
        "search": {"strategy": "random", "warm_start": "cold", "num_evaluations": 1, "metric_name": "m",
                   "best_metric": 0.1, "sources": None},
        "distillation": {"steps": 0},
        "plots": {"pareto": "p.png", "curve": "c.png"},
        "stage_seconds": {},
        "recipe": {},
    }  # fmt: skip
    md = render_markdown(report)
    assert "## Downstream evaluation" in md
    assert "| model | topics accuracy | topics macro-F1 | sim Spearman |" in md
    assert "| teacher | 0.9000 | 0.8000 | 0.5000 |" in md
    assert "| student (searched) | 0.7000 | 0.6000 | 0.2500 |" in md
    assert "`topics` 30 test examples of 90, 3 classes, `sim` 40 pairs" in md
    del report["teacher"]["downstream"], report["student"]["downstream"]
    assert "Downstream" not in render_markdown(report)


@pytest.mark.slow
def test_compress_report_has_downstream_results_for_every_model(tmp_path, monkeypatch):
    from helpers import REPO

    from metanas.config import load_recipe
    from metanas.pipeline import compress

    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    source = _write_jsonl(tmp_path / "topics.jsonl", _labeled_rows(60))
    entry = f'{{name: topics, source: "{source}", text_column: body, label_column: topic}}'
    result = compress(load_recipe(REPO / "recipes" / "tiny.yaml", [f"report.eval=[{entry}]"]), tmp_path / "run")
    report = result.report
    roles = [
        role for role in ("teacher", "student", "uniform_baseline", "layer_drop", "int8_teacher") if report.get(role)
    ]
    assert {"teacher", "student"} <= set(roles)
    for role in roles:
        topics = report[role]["downstream"]["topics"]
        assert topics["examples"] == 60 and topics["test_examples"] == 20 and 0 <= topics["accuracy"] <= 1
    assert report["recipe"]["report"]["eval"][0]["source"] == "topics.jsonl"  # no absolute path of this machine
    md = (result.run_dir / "report.md").read_text()
    assert "| model | topics accuracy | topics macro-F1 |" in md
