"""Data for supernet training: text sources, the split, tokenization and batching.

- `corpus`: the builtin corpus (standard-library docstrings, no download);
- `loading`: local files and hub datasets as one `text` (+ `label`) Dataset, and the
  hash-based train/validation split;
- `tokens`: cached tokenization, tokenizer/teacher checks, `DataBundle`, `Collator`;
- `calibration`: builtin-corpus batches for rewiring.
"""

from metanas.config import DataConfig
from metanas.data.corpus import builtin_corpus
from metanas.data.loading import load_texts, train_validation_split
from metanas.data.tokens import (
    Collator,
    DataBundle,
    batches_of,
    build_datasets,
    check_tokenizer_matches,
    collate_rows,
    tokenize_dataset,
)

__all__ = [
    "Collator",
    "DataBundle",
    "DataConfig",
    "batches_of",
    "build_datasets",
    "builtin_corpus",
    "check_tokenizer_matches",
    "collate_rows",
    "load_texts",
    "tokenize_dataset",
    "train_validation_split",
]
