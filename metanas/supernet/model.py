"""ElasticBert: a weight-sharing BERT supernet whose active subnet is an ArchConfig.

Module and parameter names follow Hugging Face's BERT layout exactly, so a teacher's
weights load by name and a subnet exports by slicing each tensor.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from metanas.space import ArchConfig, SearchSpace
from metanas.supernet.convert import TeacherLoadError, check_supported, load_teacher_model
from metanas.supernet.families import ROBERTA_POSITION_TYPES
from metanas.supernet.ops import ElasticEmbedding, ElasticLayerNorm, ElasticLinear
from metanas.supernet.rewire import rewire as rewire_by_importance


@dataclass
class ElasticBertOutput(ModelOutput):
    """Like HF's BaseModelOutputWithPooling, plus per-layer Q/K/V for relation distillation.

    `qkv[i]` is a `(query, key, value)` triple of layer i, each `[batch, seq, heads*head_dim]`
    (before the split into heads), so relation losses can re-split it into any number
    of relation heads whatever the subnet's own head count.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    qkv: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...] | None = None


def roberta_position_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """RoBERTa positions: count non-pad tokens from padding_idx + 1; pads keep padding_idx."""
    mask = input_ids.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


class _Module(nn.Module):
    """Plain container so attribute names can mirror HF's (`attention.self`, `output.dense`)."""


# Copied to metanas.supernet.remote.modeling_metanas_bert.MetanasBertEmbeddings: change both.
class ElasticEmbeddings(nn.Module):
    def __init__(self, space: SearchSpace, config: PretrainedConfig) -> None:
        super().__init__()
        width = space.embedding_size or max(space.hidden_choices)
        self.position_style = "roberta" if config.model_type in ROBERTA_POSITION_TYPES else "bert"
        self.pad_token_id = config.pad_token_id if config.pad_token_id is not None else 0
        self.word_embeddings = ElasticEmbedding(space.vocab_size, width, padding_idx=self.pad_token_id)
        pos_pad = self.pad_token_id if self.position_style == "roberta" else None
        self.position_embeddings = ElasticEmbedding(space.max_position_embeddings, width, padding_idx=pos_pad)
        self.token_type_embeddings = ElasticEmbedding(space.type_vocab_size, width)
        self.LayerNorm = ElasticLayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.elastic_width = space.embedding_size is None

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None, hidden: int) -> torch.Tensor:
        width = hidden if self.elastic_width else None
        seq = input_ids.shape[1]
        if self.position_style == "roberta":
            position_ids = roberta_position_ids(input_ids, self.pad_token_id)
        else:
            position_ids = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids, width)
            + self.token_type_embeddings(token_type_ids, width)
            + self.position_embeddings(position_ids, width)
        )
        return self.dropout(self.LayerNorm(x))


class ElasticSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.query = ElasticLinear(hidden, heads * head_dim)
        self.key = ElasticLinear(hidden, heads * head_dim)
        self.value = ElasticLinear(hidden, heads * head_dim)
        self.dropout_p = dropout


# Copied to metanas.supernet.remote.modeling_metanas_bert.MetanasBertLayer: change both.
class ElasticLayer(nn.Module):
    """One encoder layer; names mirror BertLayer so state dicts match key for key."""

    def __init__(self, space: SearchSpace, config: PretrainedConfig) -> None:
        super().__init__()
        hidden, heads, ffn = max(space.hidden_choices), max(space.head_choices), max(space.ffn_choices)
        self.attention = _Module()
        self.attention.self = ElasticSelfAttention(hidden, heads, space.head_dim, config.attention_probs_dropout_prob)
        self.attention.output = _Module()
        self.attention.output.dense = ElasticLinear(heads * space.head_dim, hidden)
        self.attention.output.LayerNorm = ElasticLayerNorm(hidden, eps=config.layer_norm_eps)
        self.intermediate = _Module()
        self.intermediate.dense = ElasticLinear(hidden, ffn)
        self.output = _Module()
        self.output.dense = ElasticLinear(ffn, hidden)
        self.output.LayerNorm = ElasticLayerNorm(hidden, eps=config.layer_norm_eps)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        heads: int,
        ffn: int,
        need_probs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        attn = self.attention.self
        b, s, h = x.shape
        d = attn.head_dim
        width = heads * d
        q, k, v = attn.query(x, width), attn.key(x, width), attn.value(x, width)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, heads, d).transpose(1, 2)

        qh, kh, vh = split(q), split(k), split(v)
        p = attn.dropout_p if self.training else 0.0
        probs = None
        if need_probs:
            scores = qh @ kh.transpose(-1, -2) / math.sqrt(d)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(dim=-1)
            ctx = F.dropout(probs, p, self.training) @ vh
        else:
            ctx = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, dropout_p=p)
        ctx = ctx.transpose(1, 2).reshape(b, s, width)
        a = self.attention.output
        x = a.LayerNorm(self.dropout(a.dense(ctx, h)) + x)
        y = self.act(self.intermediate.dense(x, ffn))
        x = self.output.LayerNorm(self.dropout(self.output.dense(y, h)) + x)
        return x, probs, (q, k, v)


class ElasticBert(nn.Module):
    """Weight-sharing supernet over a `SearchSpace`; the largest arch is the teacher.

    Set the active subnet with `set_arch` or pass `arch=` to `forward`.
    """

    def __init__(self, config: PretrainedConfig, space: SearchSpace | None = None) -> None:
        super().__init__()
        self.config = config
        self.space = space or SearchSpace.from_teacher_config(config)
        self.source: str | None = None  # where the teacher came from (tokenizer files are copied from it)
        # Teacher hidden channel held by each supernet channel after hidden rewiring (None: not rewired).
        self.hidden_order: list[int] | None = None
        self.embeddings = ElasticEmbeddings(self.space, config)
        if self.space.embedding_size:
            self.embeddings_project = ElasticLinear(self.space.embedding_size, max(self.space.hidden_choices))
        self.encoder = _Module()
        self.encoder.layer = nn.ModuleList(ElasticLayer(self.space, config) for _ in range(self.space.max_depth))
        if self.space.has_pooler:
            self.pooler = _Module()
            self.pooler.dense = ElasticLinear(max(self.space.hidden_choices), max(self.space.hidden_choices))
        self.active_arch = self.space.largest()

    # ----- construction -------------------------------------------------
    @classmethod
    def from_teacher(
        cls,
        teacher: str | os.PathLike | PreTrainedModel,
        *,
        rewire: bool = False,
        rewire_batch: dict[str, torch.Tensor] | None = None,
        space_overrides: dict[str, Any] | None = None,
    ) -> ElasticBert:
        """Build a supernet from a HF checkpoint (directory or hub id) or an in-memory model.

        Its largest arch is the teacher. With `rewire=True`, heads and FFN neurons are
        permuted by importance measured on `rewire_batch`, a batch of training text
        (e.g. `metanas.data.calibration.builtin_batch(tokenizer)`).
        """
        if rewire and rewire_batch is None:
            raise ValueError(
                "rewire=True needs rewire_batch: a batch of training text to measure importance on, e.g. "
                "metanas.data.calibration.builtin_batch(tokenizer)"
            )
        source = None
        if isinstance(teacher, (str, os.PathLike)):
            source = str(teacher)
            teacher = load_teacher_model(teacher)
        if not isinstance(teacher, PreTrainedModel):
            raise TypeError(f"teacher must be a path, hub id or PreTrainedModel, got {type(teacher).__name__}")
        check_supported(teacher.config)
        base = getattr(teacher, teacher.base_model_prefix, teacher) if teacher.base_model_prefix else teacher
        space = SearchSpace.from_teacher_config(teacher.config, **(space_overrides or {}))
        space.check_slices(teacher.config)
        sn = cls(teacher.config, space)
        sn.source = source or getattr(teacher, "name_or_path", None) or None
        sn.load_teacher_weights(base)
        sn.eval()
        if rewire:
            rewire_by_importance(sn, rewire_batch)
        return sn

    def load_teacher_weights(self, base: nn.Module) -> None:
        """Copy parameters by name; the supernet mirrors HF's names so every key must match."""
        ours = dict(self.named_parameters())
        theirs = dict(base.named_parameters())
        missing = sorted(set(ours) - set(theirs))
        unexpected = sorted(set(theirs) - set(ours))
        if missing or unexpected:
            raise TeacherLoadError(
                f"teacher weights do not match the BERT layout: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        with torch.no_grad():
            for name, p in ours.items():
                src = theirs[name]
                if src.shape != p.shape:
                    raise TeacherLoadError(
                        f"teacher weight {name} has shape {tuple(src.shape)}, expected {tuple(p.shape)}"
                    )
                p.copy_(src.to(p.dtype))

    # ----- arch ---------------------------------------------------------
    def set_arch(self, arch: ArchConfig) -> None:
        self.active_arch = self.space.runnable.validate(arch)

    # ----- forward ------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        arch: ArchConfig | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_qkv: bool | list[int] = False,
    ) -> ElasticBertOutput:
        """Run the active (or given) subnet.

        `output_qkv`: True for every layer, or a list of layer indices (negative
        indices count from the subnet's last layer), e.g. `[-1]` for MiniLM-style KD.
        """
        arch = self.active_arch if arch is None else self.space.runnable.validate(arch)
        h = arch.hidden
        x = self.embeddings(input_ids, token_type_ids, h)
        if self.space.embedding_size:
            x = self.embeddings_project(x, h)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # like HF, skip the mask when nothing is padded: SDPA is faster without one
            mask = attention_mask.bool()[:, None, None, :]
        if output_qkv is True:
            qkv_layers = set(range(arch.depth))
        else:
            qkv_layers = {i % arch.depth for i in (output_qkv or [])}
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        qkv = [] if qkv_layers else None
        for i, layer in enumerate(self.space.layer_indices(arch)):
            x, probs, layer_qkv = self.encoder.layer[layer](x, mask, arch.heads[i], arch.ffn[i], output_attentions)
            if hidden_states is not None:
                hidden_states.append(x)
            if attentions is not None:
                attentions.append(probs)
            if qkv is not None and i in qkv_layers:
                qkv.append(layer_qkv)
        pooled = None
        if self.space.has_pooler:
            pooled = torch.tanh(self.pooler.dense(x[:, 0], h))
        return ElasticBertOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
            qkv=tuple(qkv) if qkv is not None else None,
        )
