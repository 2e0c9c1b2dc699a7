"""The interface every training objective implements.

An objective owns its trainable head (MLM decoder, classifier, KD projection), knows
how to compute a loss for one subnet on one batch, and defines the validation metric
that the search later uses as fitness.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from metanas.space import ArchConfig
from metanas.supernet.model import ElasticBert


class Objective(nn.Module, ABC):
    """Base class: subclasses set `name`, `metric_name`, `higher_is_better`.

    Training calls, per step: `context = objective.prepare(sn, batch)` once (teacher
    outputs and other per-batch work, under `torch.no_grad`), then
    `objective.loss(sn, batch, arch, context)` for each sampled subnet.
    `objective.evaluate(sn, arch, batches)` returns the validation metric.
    Parameters of the objective itself (its heads) are trained with the supernet.
    """

    name: str = ""
    metric_name: str = ""
    higher_is_better: bool = False
    needs_labels: bool = False

    def prepare(self, sn: ElasticBert, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Per-batch work shared by every subnet of a step (default: none)."""
        return {}

    def loss_count(self, batch: dict[str, torch.Tensor]) -> float | None:
        """What the loss on `batch` is a mean over (e.g. its real tokens), or None when every example weighs the same.

        Under DDP the trainer weighs each rank's loss by its share of this count, so the averaged
        gradient is the one of a single process on the whole global batch.
        """
        return None

    @abstractmethod
    def loss(
        self,
        sn: ElasticBert,
        batch: dict[str, torch.Tensor],
        arch: ArchConfig,
        context: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss for `arch` on `batch`, and named float components for logging."""

    @abstractmethod
    @torch.no_grad()
    def evaluate(self, sn: ElasticBert, arch: ArchConfig, batches: list[dict[str, torch.Tensor]]) -> float:
        """The validation metric of `arch` over `batches` (deterministic: eval mode, no dropout)."""
