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
