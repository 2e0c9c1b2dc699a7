"""Training checkpoints: the loop's position, every module's and every RNG's state, written atomically.

A checkpoint is exactly a `TrainState` (where training stands) plus the state
dicts of the modules and the RNGs of every rank, so what resume restores and what
the checkpoint stores are one definition. Ctrl-C asks the loop to stop at the next
step boundary (`GracefulInterrupt`), so the checkpoint written then is exact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metanas._io import atomic_write
from metanas.objectives.base import Objective

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "metanas.train-checkpoint/2"


@dataclass
class TrainState:
    """Where training stands; with the module and RNG states it is the whole checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    before: dict[str, float] | None = None  # validation metric of the probe subnets before training
    relaxation: dict[str, Any] | None = None  # the architecture logits' state (training.sampling: relaxed)


@dataclass
class Checkpoint:
    """A `TrainState`, the recipe it ran, and the states of the modules (model, objective, optimizer,
    scheduler) and of each rank's RNGs."""

    state: TrainState
    world_size: int
    recipe: dict[str, Any]
    modules: dict[str, dict[str, Any]]
    rng: list[dict[str, Any]] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> Path:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "state_json": json.dumps(dataclasses.asdict(self.state)),
            "world_size": self.world_size,
            "recipe_json": json.dumps(self.recipe),
            "modules": self.modules,
            "rng": self.rng,
        }
        return atomic_write(path, lambda f: torch.save(payload, f))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Checkpoint:
        """Read a checkpoint (weights-only unpickling: no code runs on load)."""
        data = load_torch_file(path, "delete it to train from step 0, or restore it")
        if data.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{str(path)!r} is not a metanas training checkpoint of this version ({CHECKPOINT_FORMAT})"
            )
        return cls(
            TrainState(**json.loads(data["state_json"])),
            data["world_size"],
            json.loads(data["recipe_json"]),
            data["modules"],
            data["rng"],
        )


def load_torch_file(path: str | os.PathLike, fix: str) -> dict[str, Any]:
    """A torch file metanas wrote (weights-only unpickling); a damaged one is a ValueError naming it and `fix`."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises RuntimeError, OSError, EOFError or UnpicklingError for a truncated file
        raise ValueError(
            f"{str(path)!r} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:200]}); {fix}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} is not a metanas file; {fix}")
    return data


# --------------------------------------------------------------------------- RNG state


def rng_state(objective: Objective) -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "objective": objective.get_rng_state() if hasattr(objective, "get_rng_state") else None,
    }
    return state


def set_rng_state(state: dict[str, Any], objective: Objective) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if state["objective"] is not None:
        objective.set_rng_state(state["objective"])


# --------------------------------------------------------------------------- Ctrl-C


class GracefulInterrupt:
    """Turns the first SIGINT into a request to stop after the current step (a second one aborts).

    Stopping at a step boundary means the checkpoint written on Ctrl-C is exact.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to abort without saving)")

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class TrainingDiverged(ValueError):
    """A training loss became NaN or infinite; nothing of that step was applied."""

    def __init__(self, step: int, losses: dict[str, float], lr: float, checkpoint: Path | None) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in losses.items())
        kept = f"the last checkpoint ({checkpoint}) is from before" if checkpoint else "no checkpoint was written yet"
        super().__init__(
            f"training diverged at step {step + 1}: non-finite loss ({bad}); {kept}. Lower training.lr "
            f"(now {lr:g}), keep training.grad_clip > 0, or try training.bf16=false"
        )
        self.step = step


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once the checkpoint is on disk; `step` is the last completed step."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted after step {step}; checkpoint saved to {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint
