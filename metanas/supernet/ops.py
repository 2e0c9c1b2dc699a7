"""Elastic ops: full-size parameters, used through their leading prefix.

Prefix slicing (first k rows/columns) is how AutoFormer, HAT, OFA and DynaBERT share
weights; after importance rewiring the prefix holds the most important units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ElasticLinear(nn.Linear):
    """A Linear layer that can run with only its first `out_features` x `in_features` block."""

    def forward(self, x: torch.Tensor, out_features: int | None = None) -> torch.Tensor:  # type: ignore[override]
        out = self.out_features if out_features is None else out_features
        inp = x.shape[-1]
        weight = self.weight
        if out != weight.shape[0] or inp != weight.shape[1]:
            weight = weight[:out, :inp]
        bias = None if self.bias is None else self.bias[:out]
        return F.linear(x, weight, bias)


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm that normalizes over the active width only (the input's last dim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        width = x.shape[-1]
        return F.layer_norm(x, (width,), self.weight[:width], self.bias[:width], self.eps)


class ElasticEmbedding(nn.Embedding):
    """Embedding whose rows are read through their first `width` columns."""

    def forward(self, ids: torch.Tensor, width: int | None = None) -> torch.Tensor:  # type: ignore[override]
        out = F.embedding(ids, self.weight, self.padding_idx)
        # Slicing the looked-up rows rather than the table keeps backward to one dense
        # [vocab, dim] gradient instead of a narrow one copied into a zero-filled full one.
        return out if width is None or width == self.embedding_dim else out[..., :width]
