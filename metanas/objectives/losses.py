"""Losses and poolings shared by the objectives and by the final distillation of exported models."""

from __future__ import annotations

import math

import torch

QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings [B, h]: the mean of the real tokens' hidden states (sentence-transformers pooling)."""
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens of the per-token mean squared error of two [B, S, h] hidden states."""
    m = mask.to(pred.dtype)
    return (((pred - target) ** 2).mean(-1) * m).sum() / m.sum().clamp_min(1)


def resolve_relation_heads(student_width: int, teacher_width: int, requested: int) -> int:
    """The number of relation heads actually used for a student/teacher width pair.

    `requested` (default: the teacher's head count) is used when it divides both
    attention widths. Otherwise it falls back to the largest divisor of
    gcd(student_width, teacher_width) that is <= `requested`, so every relation head
    has a whole number of dimensions on both sides (always >= 1).
    """
    if requested < 1:
        raise ValueError(f"relation_heads must be >= 1, got {requested}")
    if student_width % requested == 0 and teacher_width % requested == 0:
        return requested
    g = math.gcd(student_width, teacher_width)
    return max(r for r in range(1, min(requested, g) + 1) if g % r == 0)


def _log_relations(x: torch.Tensor, key_mask: torch.Tensor, heads: int, temperature: float) -> torch.Tensor:
    """Log-softmax relations [B, R, S, S] of one projection, padded keys masked out."""
    b, s, a = x.shape
    d = a // heads
    xh = x.float().reshape(b, s, heads, d).transpose(1, 2)
    scores = xh @ xh.transpose(-1, -2) / (math.sqrt(d) * temperature)
    scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.log_softmax(dim=-1)


def relation_loss(
    student_qkv: QKV | list[torch.Tensor],
    teacher_qkv: QKV | list[torch.Tensor],
    attention_mask: torch.Tensor | None,
    relation_heads: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """MiniLMv2 Q-Q/K-K/V-V relation KL(teacher || student), averaged over relations,
    relation heads and non-pad query positions.

    `student_qkv` / `teacher_qkv`: (q, k, v), each [B, S, width]; the widths may
    differ. The teacher side is detached (it is a target), so the training loop can
    pass the largest subnet's projections for in-place distillation. `relation_heads`
    is adjusted by `resolve_relation_heads` when it does not divide both widths.
    Computed in float32 for stability under mixed precision.
    """
    if len(student_qkv) != 3 or len(teacher_qkv) != 3:
        raise ValueError("relation_loss: expects (query, key, value) triples")
    sq = student_qkv[0]
    if attention_mask is None:
        mask = torch.ones(sq.shape[:2], dtype=torch.bool, device=sq.device)
    else:
        mask = attention_mask.to(sq.device).bool()
    heads = resolve_relation_heads(sq.shape[-1], teacher_qkv[0].shape[-1], relation_heads)
    n_queries = mask.sum().clamp_min(1) * heads
    total = sq.new_zeros((), dtype=torch.float32)
    for s_x, t_x in zip(student_qkv, teacher_qkv, strict=True):
        log_s = _log_relations(s_x, mask, heads, temperature)
        with torch.no_grad():
            log_t = _log_relations(t_x.detach(), mask, heads, temperature)
        kl = log_t.exp() * (log_t - log_s)  # [B, R, S(query), S(key)]
        kl = torch.where(mask[:, None, None, :], kl, torch.zeros_like(kl)).sum(-1)
        total = total + (kl * mask[:, None, :]).sum() / n_queries
    return total / 3
