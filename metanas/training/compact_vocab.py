"""Train only the word-embedding rows that the training data uses.

On CPU the gradient of a model's word embeddings is a dense [vocab, width] tensor
allocated and zeroed every step (30,522 x 384 floats for MiniLM: 47 MB, past glibc's
mmap threshold, so every step also pays its page faults), and AdamW then updates
every row. A distillation set of a few thousand passages uses about a third of the
vocabulary; the other rows get a zero gradient and only weight decay. Training a
compact table of the rows in use gives the same updates to those rows, leaves the
rest exactly as they were, and cut the quickstart student's step by about a quarter
(docs/benchmarks.md, "Session 9").
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers import PreTrainedModel


class CompactVocabulary:
    """While open, `model`'s word embeddings are the rows of `token_ids` only; `remap` translates a batch."""

    def __init__(self, model: PreTrainedModel, token_ids: Iterable[Iterable[int]]) -> None:
        self.model = model
        self.full = model.get_input_embeddings()
        ids = {int(t) for row in token_ids for t in row}
        pad = getattr(model.config, "pad_token_id", None)
        if pad is not None:
            ids.add(int(pad))  # collators pad with it
        vocab = self.full.num_embeddings
        if not ids or min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"token ids must lie in [0, {vocab}) (the model's vocabulary), got {sorted(ids)[:3]}...")
        self.used = torch.tensor(sorted(ids), dtype=torch.long)
        self.lookup = torch.full((vocab,), -1, dtype=torch.long)
        self.lookup[self.used] = torch.arange(len(self.used))
        padding = None if self.full.padding_idx is None else int(self.lookup[self.full.padding_idx])
        self.compact = nn.Embedding.from_pretrained(
            self.full.weight.detach()[self.used].clone(),
            freeze=not self.full.weight.requires_grad,
            padding_idx=None if padding is None or padding < 0 else padding,
        )

    def __enter__(self) -> CompactVocabulary:
        self.model.set_input_embeddings(self.compact)
        return self

    def __exit__(self, *exc: object) -> None:
        """Write the trained rows back into the full table and put it back (also after an error or Ctrl-C)."""
        with torch.no_grad():
            self.full.weight[self.used] = self.compact.weight.to(self.full.weight.dtype)
        self.model.set_input_embeddings(self.full)

    def remap(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`inputs` with `input_ids` as rows of the compact table."""
        ids = self.lookup[inputs["input_ids"]]
        if bool((ids < 0).any()):
            unknown = inputs["input_ids"][ids < 0].unique()[:5].tolist()
            raise ValueError(f"token ids {unknown} are not in the training data this vocabulary was compacted for")
        return {**inputs, "input_ids": ids}
