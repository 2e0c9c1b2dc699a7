"""Training-side text batches for calibrating a supernet (the importance measured by rewiring)."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from metanas.config import DataConfig
from metanas.data.corpus import builtin_corpus
from metanas.data.loading import train_validation_split
from metanas.data.tokens import Collator

# The split of the default recipe, so rewiring never sees validation text.
DEFAULT_VALIDATION_FRACTION = DataConfig.validation_fraction


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


def default_rewire_batch(teacher: str, n: int = 64, max_length: int = 128) -> dict[str, torch.Tensor]:
    """A training batch of the builtin corpus tokenized with the tokenizer of `teacher` (a path or hub id)."""
    return builtin_batch(AutoTokenizer.from_pretrained(teacher), n, max_length)
