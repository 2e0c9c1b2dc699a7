"""Training-side text batches for calibrating a supernet (rewiring importance)."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from metanas.data import Collator, builtin_corpus, train_validation_split
from metanas.supernet.model import ElasticBert

DEFAULT_VALIDATION_FRACTION = 0.1  # must match DataConfig's default so rewiring never sees validation text


def builtin_batch(
    tokenizer: PreTrainedTokenizerBase,
    n: int = 64,
    max_length: int = 128,
    split: str = "train",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The first `n` builtin-corpus documents of one side of the default train/validation split."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    train, validation = train_validation_split(builtin_corpus(), DEFAULT_VALIDATION_FRACTION, seed)
    docs = list((train if split == "train" else validation).select(range(n))["text"])
    enc = tokenizer(docs, truncation=True, max_length=max_length)
    return Collator(tokenizer)([{k: enc[k][i] for k in enc} for i in range(n)])


def default_rewire_batch(sn: ElasticBert, n: int = 64, max_length: int = 128) -> dict[str, torch.Tensor]:
    """A training batch of the builtin corpus tokenized with the teacher's own tokenizer."""
    if not sn.source:
        raise ValueError("rewire: the supernet has no teacher path to load a tokenizer from; pass a batch")
    return builtin_batch(AutoTokenizer.from_pretrained(sn.source), n, max_length)
