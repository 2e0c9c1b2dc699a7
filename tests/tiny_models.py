"""Tiny random BERT-like teachers built in-process, shared by the tests."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertModel,
    ElectraConfig,
    ElectraModel,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
)

TINY = dict(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)


def tiny_teacher(kind: str = "bert", seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised tiny `bert`, `roberta` or `electra` base model in eval mode."""
    torch.manual_seed(seed)
    cfg = {**TINY, **overrides}
    if kind == "bert":
        model = BertModel(BertConfig(**cfg))
    elif kind == "roberta":
        model = RobertaModel(RobertaConfig(pad_token_id=1, **cfg))
    elif kind == "electra":
        model = ElectraModel(ElectraConfig(embedding_size=24, **cfg))
    else:
        raise ValueError(kind)
    return model.eval()


def random_batch(vocab: int = 120, batch: int = 3, seq: int = 12, pad_id: int = 0, seed: int = 0):
    """Random ids with the first row padded after 7 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    ids[0, 7:] = pad_id
    return ids, mask
