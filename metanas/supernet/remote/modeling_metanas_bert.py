"""A plain BERT-like encoder with per-layer head counts and FFN sizes.

Copied next to exported weights and loaded with `trust_remote_code=True`; it must
not import metanas. Parameter names follow Hugging Face's BertModel.

The embeddings, the layer and the encoder loop are deliberate copies of
`metanas.supernet.model` with the slicing removed (marked "Copied from" below, as
Hugging Face marks its copies); `tests/test_export.py` checks that an exported
model computes what the supernet computes for the same arch.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_metanas_bert import MetanasBertConfig


class _Node(nn.Module):
    """Container that lets attribute names mirror BertModel's (`attention.self`, ...)."""


# Copied from metanas.supernet.model.ElasticEmbeddings (fixed width)
class MetanasBertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        width = config.embedding_size or config.hidden_size
        pos_pad = config.pad_token_id if config.position_style == "roberta" else None
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width, padding_idx=pos_pad)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_style = config.position_style
        self.pad_token_id = config.pad_token_id

    def forward(self, input_ids, token_type_ids):
        if self.position_style == "roberta":
            keep = input_ids.ne(self.pad_token_id).int()
            position_ids = (torch.cumsum(keep, dim=1).type_as(keep) * keep).long() + self.pad_token_id
        else:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(token_type_ids)
            + self.position_embeddings(position_ids)
        )
        return self.dropout(self.LayerNorm(x))


# Copied from metanas.supernet.model.ElasticLayer (fixed heads and FFN size)
class MetanasBertLayer(nn.Module):
    def __init__(self, config, heads, ffn):
        super().__init__()
        h, d = config.hidden_size, config.attention_head_size
        self.heads, self.head_dim = heads, d
        self.attention = _Node()
        self.attention.self = _Node()
        self.attention.self.query = nn.Linear(h, heads * d)
        self.attention.self.key = nn.Linear(h, heads * d)
        self.attention.self.value = nn.Linear(h, heads * d)
        self.attention.output = _Node()
        self.attention.output.dense = nn.Linear(heads * d, h)
        self.attention.output.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.intermediate = _Node()
        self.intermediate.dense = nn.Linear(h, ffn)
        self.output = _Node()
        self.output.dense = nn.Linear(ffn, h)
        self.output.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attn_dropout = config.attention_probs_dropout_prob

    def forward(self, x, mask, output_attentions=False):
        b, s, _ = x.shape
        sa = self.attention.self

        def split(t):
            return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
        p = self.attn_dropout if self.training else 0.0
        probs = None
        if output_attentions:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            probs = scores.softmax(-1)
            ctx = F.dropout(probs, p, self.training) @ v
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        ctx = ctx.transpose(1, 2).reshape(b, s, self.heads * self.head_dim)
        x = self.attention.output.LayerNorm(self.dropout(self.attention.output.dense(ctx)) + x)
        y = self.act(self.intermediate.dense(x))
        return self.output.LayerNorm(self.dropout(self.output.dense(y)) + x), probs


class MetanasBertPreTrainedModel(PreTrainedModel):
    config_class = MetanasBertConfig
    base_model_prefix = "metanas_bert"

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, std)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()


class MetanasBertModel(MetanasBertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = MetanasBertEmbeddings(config)
        if config.embedding_size:  # ELECTRA-style: narrow embeddings projected up
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        else:
            self.embeddings_project = None
        self.encoder = _Node()
        self.encoder.layer = nn.ModuleList(
            MetanasBertLayer(config, n, f) for n, f in zip(config.layer_heads, config.layer_intermediate_sizes)
        )
        if config.add_pooling_layer:
            self.pooler = _Node()
            self.pooler.dense = nn.Linear(config.hidden_size, config.hidden_size)
        else:
            self.pooler = None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    # Copied from metanas.supernet.model.ElasticBert.forward (fixed arch, no Q/K/V output)
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        output_hidden_states=None,
        output_attentions=None,
        return_dict=None,
        **kwargs,
    ):
        x = self.embeddings(input_ids, token_type_ids)
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)
        mask = None
        # skip an all-ones mask, except when exporting a graph (ONNX): the graph must handle padding too
        exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
        if attention_mask is not None and (exporting or not bool(attention_mask.all())):
            mask = attention_mask.bool()[:, None, None, :]
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.encoder.layer:
            x, probs = layer(x, mask, bool(output_attentions))
            if hidden_states is not None:
                hidden_states.append(x)
            if attentions is not None:
                attentions.append(probs)
        pooled = torch.tanh(self.pooler.dense(x[:, 0])) if self.pooler is not None else None
        return BaseModelOutputWithPooling(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
