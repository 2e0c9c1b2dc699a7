"""Suite-wide setup: an offline environment and one torch thread.

The environment defaults are set at import time, before any test module imports
transformers, datasets or wandb (they read these variables when imported).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Every test, and every module fixture that trains a model, runs on one torch thread.

    Tiny models and MLPs only get slower with threads on a shared 2-core machine, and one
    thread keeps the numbers the tests compare reproducible.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- a real PostgreSQL server


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL server for the whole session (tests/pg_server.py); skipped only without the binaries
    or the psycopg driver."""
    import subprocess

    from pg_server import find_binaries, postgres_server

    if find_binaries() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed: pip install 'psycopg[binary]' (bash scripts/setup.sh does)")
    try:
        with postgres_server() as server:
            yield server
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"starting the test PostgreSQL server failed: {e.cmd}\n{e.stderr.decode()}") from e


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's PostgreSQL server, as a SQLAlchemy URL."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgres"])
def history_url(request, tmp_path) -> str:
    """The history store's target: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "h.db")
    return request.getfixturevalue("postgres_url")
