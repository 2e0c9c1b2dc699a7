"""Supervised sequence classification with an elastic linear head.

Features are the pooler output when the supernet has a pooler (BERT, RoBERTa),
else the first token's final state (ELECTRA), as in the matching HF heads. The
classifier is an ElasticLinear over the supernet's max hidden size whose input
columns are sliced to the active width, so one head serves every subnet.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metanas.objectives._common import (
    check_batches,
    evaluation,
    model_inputs,
    module_device,
    to_device,
)
from metanas.objectives.base import Objective
from metanas.space import ArchConfig
from metanas.supernet.model import ElasticBert
from metanas.supernet.ops import ElasticLinear

NO_LABELS_MESSAGE = "task objective needs labels: set data.label_column"


class TaskObjective(Objective):
    """Cross entropy on `labels`; validation metric `accuracy` (higher is better) or `cross_entropy`.

    Accuracy on a small validation set takes few distinct values, so many archs tie;
    `metric="cross_entropy"` (lower is better) ranks them on a continuous scale.
    """

    name = "task"
    metric_name = "accuracy"
    higher_is_better = True
    needs_labels = True
    METRICS = ("accuracy", "cross_entropy")

    def __init__(
        self, sn: ElasticBert, num_labels: int, dropout: float | None = None, metric: str = "accuracy"
    ) -> None:
        """`dropout` defaults to the config's classifier_dropout, else hidden_dropout_prob."""
        super().__init__()
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"TaskObjective: num_labels must be an integer >= 2, got {num_labels!r}")
        if metric not in self.METRICS:
            raise ValueError(f"TaskObjective: metric must be one of {', '.join(self.METRICS)}, got {metric!r}")
        self.metric_name = metric
        self.higher_is_better = metric == "accuracy"
        config = sn.config
        if dropout is None:
            dropout = getattr(config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(config, "hidden_dropout_prob", 0.1)
        self.num_labels = num_labels
        self.dropout = nn.Dropout(float(dropout))
        self.classifier = ElasticLinear(max(sn.space.hidden_choices), num_labels)
        nn.init.normal_(self.classifier.weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(self.classifier.bias)

    def _labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.get("labels")
        if labels is None:
            raise ValueError(NO_LABELS_MESSAGE)
        labels = labels.long().view(-1)
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_labels:
            raise ValueError(
                f"task objective: labels must be in [0, {self.num_labels - 1}] "
                f"(num_labels={self.num_labels}), got values in [{lo}, {hi}]"
            )
        return labels

    def logits(self, sn: ElasticBert, batch: dict[str, torch.Tensor], arch: ArchConfig) -> torch.Tensor:
        """Class logits [B, num_labels] of `arch`."""
        out = sn(**model_inputs(batch), arch=arch)
        features = out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]
        return self.classifier(self.dropout(features), self.num_labels)

    def loss(
        self,
        sn: ElasticBert,
        batch: dict[str, torch.Tensor],
        arch: ArchConfig,
        context: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        labels = self._labels(batch)
        logits = self.logits(sn, batch, arch).float()
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"task": loss.detach().item(), "train_accuracy": acc.item()}

    def evaluate(self, sn: ElasticBert, arch: ArchConfig, batches: list[dict[str, torch.Tensor]]) -> float:
        """Fraction of validation examples classified correctly, or their mean cross entropy."""
        check_batches("TaskObjective", batches)
        device = module_device(sn)
        correct, total, nll = 0, 0, 0.0
        with evaluation(sn, self):
            for batch in batches:
                batch = to_device(batch, device)
                labels = self._labels(batch)
                logits = self.logits(sn, batch, arch).float()
                correct += int((logits.argmax(-1) == labels).sum())
                nll += float(F.cross_entropy(logits, labels, reduction="sum"))
                total += labels.numel()
        return correct / total if self.metric_name == "accuracy" else nll / total
