"""Importance rewiring: permute heads and FFN neurons so prefixes keep the important ones.

Importance of a unit is the expected L2 norm of what it writes into the residual
stream, measured on a training batch with the largest arch:

- head j of a layer: ``|| ctx_j @ W_O[:, j]^T ||`` per token (its share of the
  attention output projection);
- FFN neuron j: ``|a_j| * ||W_2[:, j]||`` per token (activation times its output weights).

This is the first-order effect of deleting the unit on the layer's output, the same
quantity DynaBERT's gradient-times-mask score estimates, but it needs no labels or
loss, so it works for any teacher. Permutations keep the largest arch's function exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the supernet calls rewire(); rewire only needs its attributes
    from metanas.supernet.model import ElasticBert


@torch.no_grad()
def unit_importance(sn: ElasticBert, batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer head and FFN-neuron importance of the largest arch on `batch`."""
    arch = sn.space.largest()
    d = sn.space.head_dim
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(batch["input_ids"])
    weight = mask.float() / mask.sum()
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


def rewire(sn: ElasticBert, batch: dict[str, torch.Tensor]) -> dict[str, list[list[int]]]:
    """Sort every layer's heads and FFN neurons by importance, most important first.

    `batch` must come from training data (`metanas.data.calibration` makes one from
    the builtin corpus). Returns the permutations applied (the trained-supernet file
    keeps them, so the original teacher can be rebuilt).
    """
    head_scores, ffn_scores = unit_importance(sn, batch)
    applied: dict[str, list[list[int]]] = {"heads": [], "ffn": []}
    for i, (hs, fs) in enumerate(zip(head_scores, ffn_scores)):
        head_order = torch.argsort(hs, descending=True, stable=True)
        ffn_order = torch.argsort(fs, descending=True, stable=True)
        permute_layer(sn, i, head_order, ffn_order)
        applied["heads"].append(head_order.tolist())
        applied["ffn"].append(ffn_order.tolist())
    return applied
