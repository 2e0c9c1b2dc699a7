import hashlib
import sqlite3
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from metanas import ArchConfig
from metanas.meta import EvalRecord, HistoryStore
from metanas.meta.history import SCHEMA_VERSION

ARCH_A = ArchConfig(2, 32, (2, 4), (32, 64))
ARCH_B = ArchConfig(3, 24, (4, 4, 2), (64, 64, 16))


def record(run_id="r1", task_id="sst2", arch=ARCH_A, fitness=0.5, origin="evolved", **kw) -> EvalRecord:
    base = dict(
        run_id=run_id,
        task_id=task_id,
        space_signature="sig0",
        arch=arch,
        fitness=fitness,
        metric_name="accuracy",
        metric_value=fitness,
        params=1000,
        non_embedding_params=600,
        flops=2000,
        origin=origin,
        generation=1,
        timestamp=1_700_000_000.0,
    )
    base.update(kw)
    return EvalRecord(**base)


# The tests taking `history_url` run on SQLite and on a real PostgreSQL server (tests/conftest.py).


def test_round_trip_keeps_every_field(history_url):
    rec = record(arch=ARCH_B, latency_ms=3.25, task_meta={"n_classes": 2, "lang": "en"}, generation=4)
    with HistoryStore(history_url) as store:
        store.add_records([rec, record(latency_ms=None)])
        back = store.records()
    assert [r.id for r in back] == [1, 2]
    got = back[0]
    assert got.arch == ARCH_B and isinstance(got.arch, ArchConfig)
    assert got.task_meta == {"n_classes": 2, "lang": "en"}
    assert (got.fitness, got.latency_ms, got.generation, got.origin) == (0.5, 3.25, 4, "evolved")
    assert (got.params, got.non_embedding_params, got.flops, got.timestamp) == (1000, 600, 2000, 1_700_000_000.0)
    assert back[1].latency_ms is None
    # A reopened store sees the same rows.
    with HistoryStore(history_url) as store:
        assert len(store.records()) == 2


def test_default_location_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "sub" / "env.db"))
    with HistoryStore() as store:
        store.add_records([record()])
    assert (tmp_path / "sub" / "env.db").is_file()
    with HistoryStore(f"sqlite:///{tmp_path / 'sub' / 'env.db'}") as store:
        assert len(store.records()) == 1


def test_filters_and_evaluated_archs(history_url):
    with HistoryStore(history_url) as store:
        store.add_records(
            [
                record("r1", "sst2", ARCH_A),
                record("r1", "sst2", ARCH_B),
                record("r1", "sst2", ARCH_A),
                record("r2", "mrpc", ARCH_A, space_signature="sig1"),
            ]
        )
        assert len(store.records()) == 4
        assert len(store.records(run_id="r1")) == 3
        assert len(store.records(task_id="mrpc")) == 1
        assert len(store.records(space_signature="sig1")) == 1
        assert store.records(run_id="r1", task_id="mrpc") == []
        assert store.evaluated_archs("r1") == {ARCH_A.to_json(), ARCH_B.to_json()}
        assert store.evaluated_archs("nope") == set()


def test_runs_summary(history_url, tmp_path):
    with HistoryStore(history_url) as store:
        store.start_run("r1", "sst2", "evolution", {"population": 50, "path": tmp_path})
        store.add_records([record("r1", fitness=0.25), record("r1", fitness=0.75)])
        store.finish_run("r1", "finished")
        store.start_run("r2", "sst2", "random")
        store.add_records([record("orphan", task_id="cola", fitness=-1.0, timestamp=time.time() + 60)])
        runs = {r["run_id"]: r for r in store.runs()}
        assert [r["run_id"] for r in store.runs()] == ["r1", "r2", "orphan"]
        assert runs["r1"]["status"] == "finished" and runs["r1"]["strategy"] == "evolution"
        assert runs["r1"]["config"] == {"population": 50, "path": str(tmp_path)}
        assert (runs["r1"]["n_records"], runs["r1"]["best_fitness"]) == (2, 0.75)
        assert (runs["r2"]["status"], runs["r2"]["n_records"], runs["r2"]["best_fitness"]) == ("running", 0, None)
        assert (runs["orphan"]["task_id"], runs["orphan"]["status"], runs["orphan"]["n_records"]) == ("cola", None, 1)
        # Resuming marks the run running again; another task under the same id is refused.
        store.start_run("r1", "sst2", "evolution")
        assert {r["run_id"]: r["status"] for r in store.runs()}["r1"] == "running"
        with pytest.raises(ValueError, match="already exists for task 'sst2'"):
            store.start_run("r1", "mrpc", "evolution")
        with pytest.raises(ValueError, match="unknown run 'r9'"):
            store.finish_run("r9")
        with pytest.raises(ValueError, match="status must be one of"):
            store.finish_run("r1", "done")


def test_export_csv_and_parquet(history_url, tmp_path):
    with HistoryStore(history_url) as store:
        store.add_records([record(arch=ARCH_A, latency_ms=1.5), record(arch=ARCH_B, fitness=0.9)])
        csv = store.export(tmp_path / "out" / "h.csv")
        parquet = store.export(tmp_path / "h.parquet", run_id="r1")
        with pytest.raises(ValueError, match=r"must end with one of \.csv, \.parquet"):
            store.export(tmp_path / "h.xlsx")
    for df in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert list(df["id"]) == [1, 2]
        assert list(df["fitness"]) == [0.5, 0.9]
        assert ArchConfig.from_json(df["arch"][1]) == ARCH_B
        assert df["latency_ms"][0] == 1.5 and pd.isna(df["latency_ms"][1])
        assert list(df["params"]) == [1000, 1000]


def test_invalid_origin_and_nan_fitness():
    with pytest.raises(ValueError, match="origin must be one of.*'anchor'"):
        record(origin="mutated")
    with pytest.raises(ValueError, match="NaN"):
        record(fitness=float("nan"))


def test_corrupted_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not sqlite at all\n" * 200)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"{path.name}.*not a SQLite database"):
        HistoryStore(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    # A valid header with a garbage body fails as clearly, and is not touched either.
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"{path.name}.*cannot be read"):
        HistoryStore(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "h.db"
    HistoryStore(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(ValueError, match=f"schema version {SCHEMA_VERSION + 1}.*reads version {SCHEMA_VERSION}"):
        HistoryStore(path)


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from metanas import ArchConfig
    from metanas.meta import EvalRecord, HistoryStore

    path, run_id, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = HistoryStore(path)
    while not go.exists():
        time.sleep(0.01)
    arch = ArchConfig(1, 8, (1,), (8,))
    for i in range(0, 200, 2):
        store.add_records([
            EvalRecord(run_id, "t", "sig", arch, float(i + j), "m", 0.0, 1, 1, 1, "random", generation=i + j)
            for j in range(2)
        ])
    store.close()
    """
)


@pytest.mark.slow
def test_two_processes_write_concurrently_without_losing_rows(history_url, tmp_path):
    path = history_url
    go = tmp_path / "go"
    HistoryStore(path).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), run_id, str(go)], stderr=subprocess.PIPE)
        for run_id in ("a", "b")
    ]
    time.sleep(0.5)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with HistoryStore(path) as store:
        for run_id in ("a", "b"):
            rows = store.records(run_id=run_id)
            assert sorted(r.generation for r in rows) == list(range(200))
        assert len(store.records()) == 400


def test_postgres_unreachable_server_and_wrong_password_fail_in_one_line(postgres_server):
    from pg_server import _free_port

    database = postgres_server.create_database().rsplit("/", 1)[1]
    with pytest.raises(ValueError, match="password authentication failed.*nothing was written") as wrong:
        HistoryStore(postgres_server.url(database, password="wrong"))
    closed = f"postgresql+psycopg://metanas:x@127.0.0.1:{_free_port()}/nothing"
    with pytest.raises(ValueError, match="cannot connect .*nothing was written") as unreachable:
        HistoryStore(closed)
    for e in (wrong, unreachable):
        assert "\n" not in str(e.value) and "***" in str(e.value)
    with HistoryStore(postgres_server.url(database)) as store:  # nothing was created by the failed attempts
        assert store.runs() == [] and store.records() == []
