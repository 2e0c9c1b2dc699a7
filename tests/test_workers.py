"""Shared studies: many worker processes on one search through the history (SQLite or a real PostgreSQL server).

The workers are `tests/study_worker.py` processes; PostgreSQL comes from the
`postgres_url` fixture (tests/conftest.py, tests/pg_server.py). Select these with
`pytest -k "postgres or distributed or workers"`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, child_env, wait_until
from study_worker import STUDY_OPTIONS, run_worker

from metanas.config import SearchSection
from metanas.meta.history import HistoryStore
from metanas.meta.studies import StudyStore, list_studies
from metanas.search.runner import RESULT_FILE, run_search

WORKER = REPO / "tests" / "study_worker.py"
# What search.json must agree on whichever workers ran the study (timings and the study name aside).
SAME = ("best", "pareto_front", "generations", "num_evaluations", "strategy", "options", "budget", "space_signature")


def spawn(url: str, study: str, run_dir: Path, kind: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(WORKER), url, study, str(run_dir), kind, *extra]
    return subprocess.Popen(cmd, env=child_env(), stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]


def report(run_dir: Path) -> dict:
    data = json.loads((run_dir / RESULT_FILE).read_text())
    return {k: data[k] for k in SAME}


def check_complete(url: str, study: str, planned: int) -> list:
    """Exactly the budget evaluated, each arch once, every one with its history row."""
    with HistoryStore(url) as history:
        trials = StudyStore(history, study).trials()
        records = history.records(run_id=study)
    assert len(trials) == planned and all(t.status == "done" for t in trials)
    assert len({t.arch for t in trials}) == planned
    assert len(records) == planned and {r.arch.to_json() for r in records} == {t.arch for t in trials}
    return trials


# --------------------------------------------------------------------------- config and bad input


def test_workers_study_settings_are_checked_in_the_recipe() -> None:
    section = SearchSection(strategy="nsga2", objectives=["fitness", "params"], study="s1")
    assert section.study == "s1" and section.stale_seconds >= 2 * section.heartbeat_seconds
    SearchSection(strategy="evolution", warm_start="off", study="s1")
    with pytest.raises(ValueError, match="cannot run 'aging'.*use one of random, evolution, nsga2"):
        SearchSection(strategy="aging", study="s1")
    with pytest.raises(ValueError, match="cannot run evolution with a warm start.*warm_start: off"):
        SearchSection(strategy="evolution", warm_start="auto", study="s1")
    with pytest.raises(ValueError, match="stale_seconds .* at least twice search.heartbeat_seconds"):
        SearchSection(heartbeat_seconds=10, stale_seconds=15)
    with pytest.raises(ValueError, match="heartbeat_seconds must be a positive number"):
        SearchSection(heartbeat_seconds=0)
    SearchSection(strategy="aging")  # without a study every strategy runs, in one process


@pytest.mark.slow
def test_workers_one_worker_study_equals_the_single_process_search(tmp_path: Path) -> None:
    """A study run by one worker is the same search as `run_search` (same seed, same proposals, same results)."""
    from study_worker import BUDGETS, _evaluator
    from synthetic import minilm_space

    from metanas.cost import CostModel

    db = str(tmp_path / "h.db")
    run_worker(db, "solo", str(tmp_path / "solo"))
    space = minilm_space()
    with HistoryStore(db) as history:
        opts = STUDY_OPTIONS["evolution"]
        run_search(
            _evaluator("synthetic", 0, 0),
            space,
            CostModel(space),
            BUDGETS["synthetic"],
            "evolution",
            opts,
            tmp_path / "ref",
            history=history,
            task_id="workers-synthetic",
            seed=5,
        )
        (study,) = list_studies(history)
    assert report(tmp_path / "solo") == report(tmp_path / "ref")
    check_complete(db, "solo", 24)
    assert study["status"] == "finished" and study["trials"]["done"] == 24
    assert [w["status"] for w in study["workers"]] == ["finished"] and study["workers"][0]["evaluations"] == 24


def test_workers_study_with_another_config_is_refused_and_nothing_written(history_url: str, tmp_path: Path) -> None:
    run_worker(history_url, "s", str(tmp_path / "a"), strategy="random")
    with HistoryStore(history_url) as history:
        before = (StudyStore(history, "s").trials(), list_studies(history), len(history.records()))
    with pytest.raises(ValueError, match="study 's' .* another recipe or space \\(differs in: options, strategy"):
        run_worker(history_url, "s", str(tmp_path / "b"), strategy="evolution")
    with HistoryStore(history_url) as history:
        assert (StudyStore(history, "s").trials(), list_studies(history), len(history.records())) == before
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- several processes


@pytest.mark.slow
def test_four_postgres_workers_run_one_tiny_supernet_study_like_one_worker(postgres_url: str, tmp_path: Path) -> None:
    """4 processes on one PostgreSQL study of a tiny trained supernet: the budget exactly, each arch once, and the
    same search.json as one worker alone (evolution is synchronous by generation)."""
    run_worker(str(tmp_path / "solo.db"), "tiny", str(tmp_path / "solo"), kind="tiny")
    procs = [spawn(postgres_url, "tiny", tmp_path / f"w{i}", "tiny") for i in range(4)]
    finish(procs)
    trials = check_complete(postgres_url, "tiny", 24)
    assert all(t.claims == 1 for t in trials)
    with HistoryStore(postgres_url) as history:
        (study,) = list_studies(history)
    workers = study["workers"]
    assert len(workers) == 4 and {w["status"] for w in workers} == {"finished"}
    # how the 24 split depends on start-up timing (a worker may finish the tiny study before another has
    # imported torch); that another worker takes over a claim is what the kill -9 test shows
    assert sum(w["evaluations"] for w in workers) == 24
    solo = report(tmp_path / "solo")
    assert all(report(tmp_path / f"w{i}") == solo for i in range(4))


@pytest.mark.slow
@pytest.mark.parametrize("backend,n_workers", [("postgres", 4), ("sqlite", 2)])
def test_workers_kill_9_of_one_worker_its_claim_is_evaluated_again(
    backend: str, n_workers: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`kill -9` of a worker in the middle of an evaluation: another worker evaluates its arch again after the
    claim goes stale, and the study still ends with exactly the budget, each arch once."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else str(tmp_path / "h.db")
    run_worker(str(tmp_path / "solo.db"), "kill", str(tmp_path / "solo"), delay=0.02)
    victim = spawn(url, "kill", tmp_path / "victim", "synthetic", "--hang-at", "3", "--delay", "0.02")
    history = HistoryStore(url)
    try:

        def hung() -> bool:
            try:
                (study,) = list_studies(history)
            except ValueError:
                return False
            me = [w for w in study["workers"] if w["pid"] == victim.pid]
            return bool(me) and me[0]["evaluations"] == 2

        wait_until(hung, victim, 120, "the victim completed 2 evaluations and hangs in its 3rd", interval=0.05)
        others = [spawn(url, "kill", tmp_path / f"w{i}", "synthetic", "--delay", "0.2") for i in range(n_workers - 1)]
        time.sleep(0.5)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        finish(others)
        trials = check_complete(url, "kill", 24)
        (study,) = list_studies(history)
    finally:
        if victim.poll() is None:
            victim.kill()
        history.close()
    (dead,) = [w for w in study["workers"] if w["pid"] == victim.pid]
    assert dead["status"] == "stale" and dead["evaluations"] == 2
    again = [t for t in trials if t.claims == 2]
    assert len(again) == 1 and again[0].worker != dead["worker"]  # its claim, evaluated by another worker
    assert all(t.claims == 1 for t in trials if t is not again[0])
    assert all(report(tmp_path / f"w{i}") == report(tmp_path / "solo") for i in range(n_workers - 1))


def test_workers_history_cli_lists_studies_and_exports(history_url: str, tmp_path: Path, capsys) -> None:
    """`metanas history list` shows the study and its workers; `export` reads PostgreSQL as it reads SQLite."""
    import pandas as pd

    from metanas.cli import main

    run_worker(history_url, "cli-study", str(tmp_path / "w"), strategy="random")
    capsys.readouterr()
    assert main(["history", "list", "--db", history_url]) == 0
    out = capsys.readouterr().out
    assert "cli-study" in out and "study cli-study (random, task workers-synthetic): finished" in out
    assert "trials 20 done, 0 running, 0 waiting, 0 failed; 1 workers" in out
    assert "finished" in out.split("  worker ")[1] and "20 evaluations" in out
    assert main(["history", "export", str(tmp_path / "h.csv"), "--db", history_url, "--run-id", "cli-study"]) == 0
    df = pd.read_csv(tmp_path / "h.csv")
    assert len(df) == 20 and set(df["run_id"]) == {"cli-study"} and df["arch"].nunique() == 20
