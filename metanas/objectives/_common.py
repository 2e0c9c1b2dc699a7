"""Small helpers shared by the objectives (batch plumbing, evaluation mode)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from metanas.supernet.families import MODEL_INPUTS


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter (CPU for a parameterless module)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move tensor values to `device` (a no-op for tensors already there)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The subset of a batch that is passed to the supernet's forward."""
    if "input_ids" not in batch:
        raise ValueError(f"batch has no 'input_ids' (keys: {sorted(batch)})")
    return {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}


def token_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Boolean [B, S] mask of real (non-pad) tokens; all True when the batch has no mask."""
    mask = batch.get("attention_mask")
    if mask is None:
        return torch.ones_like(batch["input_ids"], dtype=torch.bool)
    return mask.bool()


def check_batches(name: str, batches: list[dict[str, torch.Tensor]]) -> None:
    if not batches:
        raise ValueError(f"{name}.evaluate: needs at least one validation batch, got none")


@contextmanager
def evaluation(*modules: nn.Module) -> Iterator[None]:
    """Eval mode + `torch.inference_mode()`, restoring every submodule's previous mode.

    Each submodule's flag is restored individually, so a model with mixed modes
    (e.g. a frozen part kept in eval) comes back exactly as it was.
    """
    saved = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        with torch.inference_mode():
            yield
    finally:
        for m, mode in saved:
            m.training = mode
