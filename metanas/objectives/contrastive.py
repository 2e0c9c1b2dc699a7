"""Unsupervised SimCSE: a sentence and itself under two dropout masks are positives.

Training passes the batch twice (one forward over the batch stacked on itself, so
each copy gets its own dropout mask), pools each copy, and applies InfoNCE with
in-batch negatives: cross entropy over cosine similarities / temperature
(Gao et al. 2021).

Validation must be deterministic, and in eval mode dropout is off, so the two views
would be identical. Instead the second view is the sentence with a fixed,
seeded 10% token deletion (SimCSE's strongest discrete augmentation); the first
and last real tokens (CLS/SEP, <s>/</s>) and any given special ids are never
deleted. The generator is re-seeded on every evaluation, so every arch is scored on
the same views.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from metanas.objectives._common import (
    check_batches,
    evaluation,
    model_inputs,
    module_device,
    to_device,
    token_mask,
)
from metanas.objectives.base import Objective
from metanas.objectives.losses import mean_pool
from metanas.space import ArchConfig
from metanas.supernet.model import ElasticBert

POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence embeddings [B, h]: mean over real tokens, or the first ([CLS]) state."""
    return hidden[:, 0] if pooling == "cls" else mean_pool(hidden, mask)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean cross entropy of matching z1[i] to z2[i] among all z2 (in-batch negatives)."""
    sim = F.cosine_similarity(z1.float().unsqueeze(1), z2.float().unsqueeze(0), dim=-1) / temperature
    return F.cross_entropy(sim, torch.arange(len(z1), device=z1.device))


def delete_tokens(
    batch: dict[str, torch.Tensor],
    prob: float,
    generator: torch.Generator,
    pad_token_id: int,
    special_token_ids: Iterable[int] = (),
) -> dict[str, torch.Tensor]:
    """A copy of `batch` with each deletable real token removed with probability `prob`.

    Survivors are shifted left (order kept) and the tail is padded, so the result is
    a normal padded batch of the same shape. Random draws are on CPU, a fixed
    amount per batch shape, so the views are reproducible on every device.
    """
    ids = batch["input_ids"]
    real = token_mask(batch)
    b, s = ids.shape
    draws = torch.rand((b, s), generator=generator).to(ids.device)
    pos = torch.arange(s, device=ids.device).expand(b, s)
    last = real.long().sum(1, keepdim=True) - 1
    protected = (pos == 0) | (pos == last) | ~real
    specials = torch.tensor(sorted(set(special_token_ids)), dtype=ids.dtype, device=ids.device)
    if specials.numel():
        protected |= torch.isin(ids, specials)
    keep = real & ~((draws < prob) & ~protected)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    new_keep = keep.gather(1, order)
    out = dict(batch)
    out["input_ids"] = ids.gather(1, order).masked_fill(~new_keep, pad_token_id)
    out["attention_mask"] = new_keep.to(batch.get("attention_mask", ids).dtype)
    if batch.get("token_type_ids") is not None:
        out["token_type_ids"] = batch["token_type_ids"].gather(1, order).masked_fill(~new_keep, 0)
    return out


class ContrastiveObjective(Objective):
    """SimCSE InfoNCE; validation metric `contrastive_loss` (lower is better)."""

    name = "contrastive"
    metric_name = "contrastive_loss"
    higher_is_better = False

    def __init__(
        self,
        temperature: float = 0.05,
        pooling: str = "mean",
        deletion_prob: float = 0.1,
        seed: int = 0,
        special_token_ids: Iterable[int] | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"ContrastiveObjective: temperature must be > 0, got {temperature}")
        if pooling not in POOLINGS:
            raise ValueError(f"ContrastiveObjective: pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        if not 0.0 <= deletion_prob < 1.0:
            raise ValueError(f"ContrastiveObjective: deletion_prob must be in [0, 1), got {deletion_prob}")
        self.temperature = float(temperature)
        self.pooling = pooling
        self.deletion_prob = float(deletion_prob)
        self.seed = int(seed)
        self.special_token_ids = sorted(set(special_token_ids or ()))

    def encode(self, sn: ElasticBert, batch: dict[str, torch.Tensor], arch: ArchConfig) -> torch.Tensor:
        """Pooled sentence embeddings [B, h] of `batch` under `arch`."""
        hidden = sn(**model_inputs(batch), arch=arch).last_hidden_state
        return pool(hidden, token_mask(batch), self.pooling)

    def views(
        self, sn: ElasticBert, batch: dict[str, torch.Tensor], arch: ArchConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two embeddings of the same batch from one forward of the batch stacked twice."""
        doubled = {k: torch.cat([v, v]) for k, v in model_inputs(batch).items()}
        z = self.encode(sn, doubled, arch)
        return z.chunk(2)

    def loss(
        self,
        sn: ElasticBert,
        batch: dict[str, torch.Tensor],
        arch: ArchConfig,
        context: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        z1, z2 = self.views(sn, batch, arch)
        loss = info_nce(z1, z2, self.temperature)
        return loss, {"contrastive": loss.detach().item()}

    def evaluate(self, sn: ElasticBert, arch: ArchConfig, batches: list[dict[str, torch.Tensor]]) -> float:
        """Example-weighted InfoNCE of (sentence, sentence with seeded 10% deletion)."""
        check_batches("ContrastiveObjective", batches)
        device = module_device(sn)
        gen = torch.Generator().manual_seed(self.seed)
        pad = sn.embeddings.pad_token_id
        total, count = 0.0, 0
        with evaluation(sn, self):
            for batch in batches:
                batch = to_device(batch, device)
                other = delete_tokens(batch, self.deletion_prob, gen, pad, self.special_token_ids)
                z1, z2 = self.encode(sn, batch, arch), self.encode(sn, other, arch)
                n = len(z1)
                total += float(info_nce(z1, z2, self.temperature)) * n
                count += n
        return total / count
