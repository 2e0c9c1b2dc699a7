"""Importance rewiring: permute heads, FFN neurons and hidden channels so prefixes keep the important ones.

Importance of a unit is the expected L2 norm of what it writes into the residual
stream, measured on a training batch with the largest arch:

- head j of a layer: ``|| ctx_j @ W_O[:, j]^T ||`` per token (its share of the
  attention output projection);
- FFN neuron j: ``|a_j| * ||W_2[:, j]||`` per token (activation times its output weights).

This is the first-order effect of deleting the unit on the layer's output, the same
quantity DynaBERT's gradient-times-mask score estimates, but it needs no labels or
loss, so it works for any teacher. Permutations keep the largest arch's function exactly.

Hidden channels (the residual stream, shared by the embeddings and every layer) get one
permutation applied to every tensor that reads or writes the stream; LayerNorm is
equivariant to it, so the largest arch computes the teacher's function with its output
channels reordered (export puts them back in the teacher's order). Two measures:

- "activation" (Minitron): mean |output| of the channel over every LayerNorm on the stream;
- "gradient" (first-order Taylor, gradient x weight): |sum of g * w| over the channel's
  weights, for a label-free denoising loss (the MSE between the last hidden states of the
  batch and of a copy with 15% of its tokens replaced at random).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the supernet calls rewire(); rewire only needs its attributes
    from metanas.supernet.model import ElasticBert


def _stream_mask(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's attention mask (all ones when absent) and each real token's weight in a mean over tokens."""
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(batch["input_ids"])
    return mask, mask.float() / mask.sum()


@torch.no_grad()
def unit_importance(sn: ElasticBert, batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer head and FFN-neuron importance of the largest arch on `batch`."""
    arch = sn.space.largest()
    d = sn.space.head_dim
    mask, weight = _stream_mask(batch)
    head_scores: list[torch.Tensor] = []
    ffn_scores: list[torch.Tensor] = []
    hooks = []

    def on_attention_output(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        ctx = inputs[0]  # [B, S, n*d]
        b, s, width = ctx.shape
        per_head = ctx.view(b, s, width // d, d)
        w = module.weight.view(module.weight.shape[0], width // d, d)  # [H, n, d]
        contrib = torch.einsum("bsnd,hnd->bsnh", per_head, w)
        head_scores.append((contrib.norm(dim=-1) * weight[..., None]).sum(dim=(0, 1)))

    def on_ffn_output(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        act = inputs[0].abs()  # [B, S, F]
        mean_act = (act * weight[..., None]).sum(dim=(0, 1))
        ffn_scores.append(mean_act * module.weight.norm(dim=0))

    for layer in sn.encoder.layer:
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(on_attention_output))
        hooks.append(layer.output.dense.register_forward_pre_hook(on_ffn_output))
    was_training = sn.training
    sn.eval()
    try:
        sn(batch["input_ids"], attention_mask=mask, token_type_ids=batch.get("token_type_ids"), arch=arch)
    finally:
        for h in hooks:
            h.remove()
        sn.train(was_training)
    return head_scores, ffn_scores


@torch.no_grad()
def permute_layer(sn: ElasticBert, index: int, head_order: torch.Tensor, ffn_order: torch.Tensor) -> None:
    """Reorder one layer's heads and FFN neurons; the layer's function is unchanged."""
    layer = sn.encoder.layer[index]
    d = sn.space.head_dim
    rows = (head_order[:, None] * d + torch.arange(d)).reshape(-1)
    attn = layer.attention.self
    for lin in (attn.query, attn.key, attn.value):
        lin.weight.copy_(lin.weight[rows])
        lin.bias.copy_(lin.bias[rows])
    out = layer.attention.output.dense
    out.weight.copy_(out.weight[:, rows])
    inter, ffn_out = layer.intermediate.dense, layer.output.dense
    inter.weight.copy_(inter.weight[ffn_order])
    inter.bias.copy_(inter.bias[ffn_order])
    ffn_out.weight.copy_(ffn_out.weight[:, ffn_order])


HIDDEN_IMPORTANCE = ("activation", "gradient")
CORRUPT_FRACTION = 0.15  # tokens replaced at random for the gradient measure's denoising loss

# (pattern on a parameter name in the BERT layout, the axes along the hidden stream). The
# embeddings' own tensors are on the stream only when they share its width (not ELECTRA's).
_STREAM_AXES = (
    (re.compile(r"embeddings_project\.(weight|bias)$"), (0,)),
    (re.compile(r"attention\.self\.(query|key|value)\.weight$"), (1,)),
    (re.compile(r"attention\.output\.(dense|LayerNorm)\.(weight|bias)$"), (0,)),
    (re.compile(r"intermediate\.dense\.weight$"), (1,)),
    (re.compile(r"layer\.\d+\.output\.(dense|LayerNorm)\.(weight|bias)$"), (0,)),
    (re.compile(r"pooler\.dense\.weight$"), (0, 1)),
    (re.compile(r"pooler\.dense\.bias$"), (0,)),
)
_EMBEDDING_AXES = (
    (re.compile(r"embeddings\.(word|position|token_type)_embeddings\.weight$"), (1,)),
    (re.compile(r"embeddings\.LayerNorm\.(weight|bias)$"), (0,)),
)


def hidden_axes(name: str, elastic_embeddings: bool) -> tuple[int, ...]:
    """The axes of parameter `name` that run along the hidden stream (empty when none do)."""
    rules = _STREAM_AXES + (_EMBEDDING_AXES if elastic_embeddings else ())
    for pattern, axes in rules:
        if pattern.search(name):
            return axes
    return ()


@torch.no_grad()
def permute_hidden(params: Mapping[str, torch.Tensor], order: torch.Tensor, elastic_embeddings: bool) -> None:
    """Reorder the hidden channels of every tensor in `params` in place: new channel j is old `order[j]`.

    Works on the supernet (full width) and on an exported model (its own width) alike,
    because both use the BERT parameter names.
    """
    for name, p in params.items():
        for axis in hidden_axes(name, elastic_embeddings):
            p.copy_(p.index_select(axis, order.to(p.device)))


@torch.no_grad()
def activation_importance(sn: ElasticBert, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Minitron's channel importance: mean |LayerNorm output| per channel, summed over the stream's LayerNorms."""
    mask, weight = _stream_mask(batch)
    total = torch.zeros(max(sn.space.hidden_choices))

    def on_norm(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        total.add_((output.float().abs() * weight[..., None]).sum(dim=(0, 1)))

    norms = [m for layer in sn.encoder.layer for m in (layer.attention.output.LayerNorm, layer.output.LayerNorm)]
    if sn.space.embedding_size is None:
        norms.append(sn.embeddings.LayerNorm)
    hooks = [m.register_forward_hook(on_norm) for m in norms]
    was_training = sn.training
    sn.eval()
    try:
        sn(batch["input_ids"], attention_mask=mask, token_type_ids=batch.get("token_type_ids"), arch=sn.space.largest())
    finally:
        for h in hooks:
            h.remove()
        sn.train(was_training)
    return total


def gradient_importance(sn: ElasticBert, batch: dict[str, torch.Tensor], seed: int = 0) -> torch.Tensor:
    """|sum of gradient x weight| per hidden channel for a label-free denoising loss (see the module docstring)."""
    mask, weight = _stream_mask(batch)
    ids = batch["input_ids"]
    gen = torch.Generator().manual_seed(seed)
    corrupt = (torch.rand(ids.shape, generator=gen) < CORRUPT_FRACTION) & mask.bool()
    noisy = torch.where(corrupt, torch.randint(0, sn.space.vocab_size, ids.shape, generator=gen), ids)
    arch, types = sn.space.largest(), batch.get("token_type_ids")
    was_training = sn.training
    sn.eval()
    params = dict(sn.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    try:
        with torch.no_grad():
            clean = sn(ids, attention_mask=mask, token_type_ids=types, arch=arch).last_hidden_state
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        out = sn(noisy, attention_mask=mask, token_type_ids=types, arch=arch).last_hidden_state
        loss = (((out.float() - clean.float()) ** 2).sum(-1) * weight).sum()
        loss.backward()
        elastic = sn.space.embedding_size is None
        total = torch.zeros(max(sn.space.hidden_choices), dtype=torch.float64)
        with torch.no_grad():
            for name, p in params.items():
                if p.grad is None:  # the pooler: not on the path to the hidden states
                    continue
                gw = (p.grad * p).double()
                for axis in hidden_axes(name, elastic):
                    total += gw.sum(dim=[d for d in range(gw.dim()) if d != axis]) if gw.dim() > 1 else gw
    finally:
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(flags[n])
        sn.train(was_training)
    return total.abs().float()


def hidden_order(sn: ElasticBert, batch: dict[str, torch.Tensor], importance: str = "activation") -> torch.Tensor:
    """Hidden channels sorted by `importance`, most important first."""
    if importance == "activation":
        scores = activation_importance(sn, batch)
    elif importance == "gradient":
        scores = gradient_importance(sn, batch)
    else:
        raise ValueError(f"hidden importance {importance!r} is unknown; allowed: {list(HIDDEN_IMPORTANCE)}")
    return torch.argsort(scores, descending=True, stable=True)


def rewire(
    sn: ElasticBert, batch: dict[str, torch.Tensor], hidden_importance: str | None = "activation"
) -> dict[str, list]:
    """Sort every layer's heads and FFN neurons, and the hidden channels, by importance, most important first.

    Hidden channels are rewired only when the space searches the hidden size (and
    `hidden_importance` is not None); otherwise the supernet's outputs keep the teacher's
    channel order. `batch` must come from training data (`metanas.data.calibration` makes
    one from the builtin corpus). Returns the permutations applied (the trained-supernet
    file keeps them, so the original teacher can be rebuilt).
    """
    head_scores, ffn_scores = unit_importance(sn, batch)
    applied: dict[str, list] = {"heads": [], "ffn": []}
    for i, (hs, fs) in enumerate(zip(head_scores, ffn_scores)):
        head_order = torch.argsort(hs, descending=True, stable=True)
        ffn_order = torch.argsort(fs, descending=True, stable=True)
        permute_layer(sn, i, head_order, ffn_order)
        applied["heads"].append(head_order.tolist())
        applied["ffn"].append(ffn_order.tolist())
    if hidden_importance is not None and len(sn.space.hidden_choices) > 1:
        order = hidden_order(sn, batch, hidden_importance)
        apply_hidden_order(sn, order.tolist())
        applied["hidden"] = order.tolist()
    return applied


def apply_hidden_order(sn: ElasticBert, order: list[int]) -> None:
    """Permute `sn`'s hidden stream by `order` and remember it (export restores the teacher's channel order)."""
    if sn.hidden_order is not None:
        raise ValueError("the supernet's hidden channels are already rewired; rewire a fresh supernet")
    permute_hidden(dict(sn.named_parameters()), torch.tensor(order), sn.space.embedding_size is None)
    sn.hidden_order = list(order)


def restore_permutation(sn: ElasticBert, applied: Mapping[str, list] | None) -> None:
    """Apply a permutation `rewire` returned to a freshly converted supernet (the original teacher again)."""
    if applied is None:
        return
    for i, (heads, ffn) in enumerate(zip(applied["heads"], applied["ffn"])):
        permute_layer(sn, i, torch.tensor(heads), torch.tensor(ffn))
    if applied.get("hidden") is not None:
        apply_hidden_order(sn, applied["hidden"])
