"""Tokenization (cached), the checks that a tokenizer fits its teacher, the data bundle and the collator.

Texts are tokenized without padding; `Collator` pads per batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from datasets import Dataset

from metanas.config import DataConfig
from metanas.data.loading import content_digest, load_texts, train_validation_split
from metanas.supernet.families import MODEL_INPUTS, usable_positions

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


def _tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """Content hash of a tokenizer: vocabulary, normalization and special-token handling."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # runtime settings that every call with truncation=... rewrites
        state.pop("padding", None)
    else:
        state = sorted(tokenizer.get_vocab().items())
    return content_digest(type(tokenizer).__name__, len(tokenizer), tokenizer.truncation_side, state)


def _tokenize_batch(
    batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, list[Any]]:
    encoded = tokenizer(batch["text"], truncation=True, max_length=max_length, return_attention_mask=True)
    return {name: encoded[name] for name in MODEL_INPUTS if name in encoded}


def tokenize_dataset(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Tokenize ``text`` with truncation and no padding; keeps ``label`` and drops everything else.

    With ``cache_dir`` the result is stored there under a key of (tokenizer content, max_length,
    data fingerprint), so re-running a search skips tokenization.
    """
    if "text" not in ds.column_names:
        raise ValueError(f"dataset has no 'text' column; available columns: {', '.join(ds.column_names)}")
    special = tokenizer.num_special_tokens_to_add()
    if max_length <= special:
        raise ValueError(
            f"max_length={max_length} leaves no room for text: the tokenizer adds {special} special tokens"
        )
    fingerprint = content_digest("tokenize-v1", _tokenizer_digest(tokenizer), max_length, ds._fingerprint)
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"tokenized-{fingerprint}.arrow")
    return ds.map(
        _tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
        remove_columns=[c for c in ds.column_names if c != "label"],
        new_fingerprint=fingerprint,
        cache_file_name=cache_file,
        load_from_cache_file=True if cache_file else None,
        desc="tokenizing",
    )


def check_tokenizer_matches(
    tokenizer: PreTrainedTokenizerBase, teacher_config: PretrainedConfig, max_length: int | None = None
) -> None:
    """Fail fast when token ids or sequence lengths would index past the teacher's embeddings.

    Out-of-range ids otherwise surface as CUDA device-side asserts deep inside training.
    """
    vocab_size = teacher_config.vocab_size
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"tokenizer and teacher disagree: the tokenizer has {len(tokenizer)} tokens but the teacher's "
            f"vocab_size is {vocab_size}"
        )
    pad = tokenizer.pad_token_id
    if pad is not None and not 0 <= pad < vocab_size:
        raise ValueError(
            f"tokenizer and teacher disagree: the tokenizer's pad_token_id {pad} is outside the teacher's "
            f"vocab_size {vocab_size}"
        )
    usable = usable_positions(teacher_config)
    if max_length is not None and usable is not None and max_length > usable:
        raise ValueError(
            f"max_length={max_length} exceeds the teacher's {usable} usable positions "
            f"(model_type {teacher_config.model_type!r}, max_position_embeddings "
            f"{teacher_config.max_position_embeddings})"
        )


# --------------------------------------------------------------------------- bundle and batching


@dataclass(frozen=True)
class DataBundle:
    """Tokenized train/validation sets plus what a classification head needs to know."""

    train: Dataset
    validation: Dataset
    num_labels: int | None
    label_names: list[str] | None
    num_documents: int


MIN_USABLE_SHARE = 0.5  # refuse a corpus where fewer documents than this carry a known token
USABLE_SAMPLE = 5000  # documents looked at (evenly spaced): enough to tell a share, cheap on any corpus


def usable_documents(ds: Dataset, tokenizer: PreTrainedTokenizerBase) -> int:
    """How many tokenized documents hold at least one token that is neither special nor unknown."""
    special = set(tokenizer.all_special_ids)
    count = 0
    for batch in ds.select_columns("input_ids").iter(batch_size=10_000):
        count += sum(any(t not in special for t in ids) for ids in batch["input_ids"])
    return count


def check_usable(ds: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig) -> None:
    """Refuse text that tokenizes to nothing the teacher knows (emoji, control characters, another script):
    training on it would only ever see [UNK] and padding, and every quality would be NaN."""
    step = max(1, len(ds) // USABLE_SAMPLE)
    sample = ds.select(range(0, len(ds), step)) if step > 1 else ds
    usable = usable_documents(sample, tokenizer)
    if usable < MIN_USABLE_SHARE * len(sample):
        raise ValueError(
            f"data: only {usable} of {len(sample)} {'sampled ' if step > 1 else ''}training documents of "
            f"{cfg.source_label!r} (column {cfg.text_column!r}) "
            f"hold a token the tokenizer knows; the rest tokenize to [UNK] or to nothing (emoji, control "
            "characters, a script the teacher's vocabulary lacks?). Check data.source and data.text_column"
        )


def build_datasets(
    cfg: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    teacher_config: PretrainedConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DataBundle:
    """Load, split and tokenize ``cfg.source``; checks the tokenizer against the teacher first."""
    if teacher_config is not None:
        check_tokenizer_matches(tokenizer, teacher_config, cfg.max_length)
    texts = load_texts(cfg)
    train, validation = train_validation_split(texts, cfg.validation_fraction, cfg.seed)
    if len(train) == 0 or (cfg.validation_fraction > 0 and len(validation) == 0):
        raise ValueError(
            f"split of {len(texts)} documents with validation_fraction={cfg.validation_fraction} left "
            f"{len(train)} for training and {len(validation)} for validation; both must be non-empty"
        )
    label_names = texts.features["label"].names if "label" in texts.column_names else None
    train_tokens = tokenize_dataset(train, tokenizer, cfg.max_length, cache_dir)
    validation_tokens = tokenize_dataset(validation, tokenizer, cfg.max_length, cache_dir)
    check_usable(train_tokens, tokenizer, cfg)
    return DataBundle(
        train=train_tokens,
        validation=validation_tokens,
        num_labels=None if label_names is None else len(label_names),
        label_names=label_names,
        num_documents=len(texts),
    )


class Collator:
    """Pads a list of tokenized examples to the longest one with the tokenizer's pad id.

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids`` (zeros when the tokenizer makes
    none) and ``labels`` when the examples carry a ``label``; all ``torch.long``.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set tokenizer.pad_token before batching")
        self.pad_token_id = int(tokenizer.pad_token_id)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        shape = (len(examples), max(len(ex["input_ids"]) for ex in examples))
        batch = {
            "input_ids": torch.full(shape, self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros(shape, dtype=torch.long),
            "token_type_ids": torch.zeros(shape, dtype=torch.long),
        }
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            batch["input_ids"][row, :length] = torch.as_tensor(example["input_ids"])
            batch["attention_mask"][row, :length] = torch.as_tensor(example.get("attention_mask", 1))
            if "token_type_ids" in example:
                batch["token_type_ids"][row, :length] = torch.as_tensor(example["token_type_ids"])
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([ex["label"] for ex in examples], dtype=torch.long)
        return batch


def collate_rows(ds: Dataset, indices: Sequence[int], collate: Collator) -> dict[str, torch.Tensor]:
    """One collated batch of the tokenized examples `ds[indices]`, in order."""
    rows = ds[list(indices)]
    return collate([{k: rows[k][i] for k in rows} for i in range(len(indices))])


def batches_of(
    ds: Dataset, indices: Sequence[int], batch_size: int, collate: Collator
) -> list[dict[str, torch.Tensor]]:
    """Collated batches of `ds[indices]`, in order."""
    idx = list(indices)
    return [collate_rows(ds, idx[i : i + batch_size], collate) for i in range(0, len(idx), batch_size)]
