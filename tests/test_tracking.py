"""Tracker: JSONL always, real wandb offline when no API key is configured."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from metanas.tracking import METRICS_FILE, Tracker, read_metrics, wandb_api_key_configured, wandb_mode


@pytest.fixture
def no_wandb_credentials(monkeypatch, tmp_path):
    """An environment with no W&B key anywhere: no env vars, an empty netrc."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("", encoding="utf-8")
    monkeypatch.setenv("NETRC", str(netrc))
    return netrc


def test_offline_without_any_key(no_wandb_credentials):
    assert not wandb_api_key_configured()
    assert wandb_mode() == "offline"


def test_a_netrc_entry_or_env_key_means_online(no_wandb_credentials, monkeypatch):
    no_wandb_credentials.write_text("machine api.wandb.ai\n  login user\n  password abc123\n", encoding="utf-8")
    assert wandb_api_key_configured() and wandb_mode() is None
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")  # the entry is for another host
    assert not wandb_api_key_configured()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_api_key_configured() and wandb_mode() is None


def test_an_explicit_wandb_mode_is_respected(no_wandb_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() is None  # wandb reads WANDB_MODE itself


def test_jsonl_only_one_flushed_line_per_call(tmp_path):
    with Tracker(tmp_path, use_wandb=False) as tracker:
        tracker.log({"loss/largest": torch.tensor(1.5), "lr": 1e-3, "bad": math.nan}, step=3)
        # Flushed at once: readable before finish().
        assert json.loads((tmp_path / METRICS_FILE).read_text().splitlines()[0])["loss/largest"] == 1.5
        tracker.log_table("archs", ["role", "params"], [("smallest", 10), ("largest", 20)], step=3)
        tracker.summary({"after/kd_loss/largest": 0.25})
    records = read_metrics(tmp_path)
    assert records[0]["step"] == 3 and records[0]["lr"] == 1e-3 and records[0]["bad"] == "nan"
    assert records[0]["time"] > 0
    assert records[1]["archs"] == {"columns": ["role", "params"], "data": [["smallest", 10], ["largest", 20]]}
    assert records[2]["summary"] == {"after/kd_loss/largest": 0.25}
    assert not (tmp_path / "wandb").exists()


def test_resumed_tracker_appends_and_non_main_ranks_write_nothing(tmp_path):
    for step in (1, 2):
        with Tracker(tmp_path / "run", use_wandb=False) as tracker:
            tracker.log({"x": step}, step=step)
    assert [r["x"] for r in read_metrics(tmp_path / "run")] == [1, 2]
    with Tracker(tmp_path / "other", use_wandb=True, is_main=False) as tracker:
        tracker.log({"x": 1}, step=1)
        assert tracker.wandb_run is None
    assert not (tmp_path / "other").exists()


@pytest.mark.slow  # starts the wandb-core service process: seconds when no other test started it
def test_wandb_offline_run_lives_in_the_run_dir(no_wandb_credentials, tmp_path):
    run_dir = tmp_path / "run"
    with Tracker(run_dir, config={"training": {"steps": 3}}, project="metanas-test", name="t", tags=["ci"]) as t:
        assert t.wandb_run is not None and t.wandb_run.settings.mode == "offline"
        t.log({"loss/smallest": 2.0, "tokens_per_s": 100.0}, step=1)
        t.log({"loss/smallest": 1.0, "tokens_per_s": 120.0}, step=2)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (run_dir / "wandb_id.txt").read_text()
    assert runs[0].name.endswith(run_id)
    # wandb-core may still be flushing its transaction log after finish() returns
    deadline = time.monotonic() + 30
    while True:
        log = (runs[0] / f"run-{run_id}.wandb").read_bytes()
        if (b"loss/smallest" in log and b"tokens_per_s" in log) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert b"loss/smallest" in log and b"tokens_per_s" in log
    assert [r["loss/smallest"] for r in read_metrics(run_dir)] == [2.0, 1.0]
