"""Data layer for self-supervised supernet training.

Everything ends up as a `datasets.Dataset` with a ``text`` column (plus ``label`` for
classification), is split by a content hash so the split survives corpus growth, and is
tokenized without padding; `Collator` pads per batch.

`builtin_corpus` exists so that tests, demos and smoke runs have real English prose
without any download: the docstrings of the Python standard library.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
from datasets import ClassLabel, Dataset, Features, Value
from torch.utils.data import DataLoader

from metanas import stdlib_corpus

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

__all__ = [
    "Collator",
    "DataBundle",
    "DataConfig",
    "build_datasets",
    "builtin_corpus",
    "check_tokenizer_matches",
    "load_texts",
    "make_dataloader",
    "tokenize_dataset",
    "train_validation_split",
]

logger = logging.getLogger(__name__)

MIN_DOC_CHARS = stdlib_corpus.MIN_DOC_CHARS
_LOADERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# Suffixes that mark a source as a file even when it does not exist (so it is not sent to the hub).
_FILE_SUFFIXES = frozenset(_LOADERS) | {".tsv", ".arrow", ".gz", ".zip", ".xml", ".md"}
# Models whose position ids start after the padding index, losing pad_token_id + 1 positions.
_PADDING_OFFSET_MODEL_TYPES = frozenset(
    {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "roberta-prelayernorm", "data2vec-text"}
)
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

def _collect_stdlib_docstrings() -> list[tuple[str, str]]:
    """(text, top-level package) pairs, collected in a fresh isolated interpreter.

    A subprocess, because the current one may have had stdlib objects patched or
    extended by already-imported libraries, which would change the corpus.
    """
    proc = subprocess.run(
        [sys.executable, "-I", str(Path(stdlib_corpus.__file__))],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"collecting the builtin corpus failed: {proc.stderr.strip()[-500:]}")
    return [(text, module) for text, module in json.loads(proc.stdout)]


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> Dataset:
    """Standard-library docstrings as a download-free corpus (columns ``text`` and ``module``).

    About 4,300 documents on CPython 3.11, identical for a given Python version. ``module`` is the
    top-level package (``email``, ``json``, ...) so it doubles as a classification label. Cached
    per process: collection imports a few hundred modules.
    """
    start = time.perf_counter()
    documents = _collect_stdlib_docstrings()
    corpus = Dataset.from_dict({"text": [text for text, _ in documents], "module": [module for _, module in documents]})
    logger.info(
        "builtin corpus: %d docstrings from %d packages in %.2fs",
        len(documents),
        len({module for _, module in documents}),
        time.perf_counter() - start,
    )
    return corpus


# --------------------------------------------------------------------------- loading


def _is_fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class DataConfig:
    """Where the training text comes from and how it is cut.

    ``source`` is ``"builtin"`` (stdlib docstrings), a local file (.txt, .json/.jsonl, .csv,
    .parquet) or a directory of such files sharing one format, or a Hugging Face dataset name.
    ``split`` and ``hf_config`` only apply to hub datasets; local files form a single split.
    """

    source: str = "builtin"
    hf_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    label_column: str | None = None
    max_length: int = 128
    validation_fraction: float = 0.1
    max_documents: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("source", "split", "text_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"DataConfig.{name} must be a non-empty string, got {value!r}")
        for name in ("hf_config", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"DataConfig.{name} must be None or a non-empty string, got {value!r}")
        if self.label_column == self.text_column:
            raise ValueError(f"DataConfig.label_column must differ from text_column, both are {self.text_column!r}")
        if not _is_int(self.max_length) or self.max_length < 2:
            raise ValueError(f"DataConfig.max_length must be an integer >= 2, got {self.max_length!r}")
        if not _is_fraction(self.validation_fraction):
            raise ValueError(
                f"DataConfig.validation_fraction must be a number in [0, 1), got {self.validation_fraction!r}"
            )
        if self.max_documents is not None and (not _is_int(self.max_documents) or self.max_documents < 1):
            raise ValueError(f"DataConfig.max_documents must be None or an integer >= 1, got {self.max_documents!r}")
        if not _is_int(self.seed):
            raise ValueError(f"DataConfig.seed must be an integer, got {self.seed!r}")


def _looks_like_path(source: str) -> bool:
    """True when a missing ``source`` should be reported as a missing file, not looked up on the hub.

    Hub ids are ``name`` or ``owner/name``, so one inner slash is not enough to call it a path.
    """
    return (
        source.startswith(("/", "~", "./", "../"))
        or "\\" in source
        or source.count("/") > 1
        or Path(source).suffix.lower() in _FILE_SUFFIXES
    )


def _read_txt(path: Path) -> list[str]:
    """One document per line, unless the file has blank lines: then one per blank-line-separated paragraph.

    Lines inside a paragraph are joined with a space (hard-wrapped prose).
    """
    content = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    if re.search(r"\n\s*\n", content.strip()):
        blocks = re.split(r"\n\s*\n", content)
        return [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in blocks]
    return [line.strip() for line in content.splitlines()]


def _load_files(files: list[Path]) -> Dataset:
    kind = _LOADERS[files[0].suffix.lower()]
    if kind == "text":
        documents = [doc for path in files for doc in _read_txt(path)]
        return Dataset.from_dict({"text": documents}, features=Features({"text": Value("string")}))
    return datasets.load_dataset(kind, data_files=[str(p) for p in files], split="train")


def _data_files(path: Path) -> list[Path]:
    """The files a path stands for: itself, or a directory's files that share one supported format."""
    supported = ", ".join(sorted(_LOADERS))
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _LOADERS)
        if not files:
            raise ValueError(f"directory {str(path)!r} has no data files; supported extensions: {supported}")
        kinds = {_LOADERS[p.suffix.lower()] for p in files}
        if len(kinds) > 1:
            raise ValueError(f"directory {str(path)!r} mixes data formats ({', '.join(sorted(kinds))})")
        return files
    if path.suffix.lower() not in _LOADERS:
        raise ValueError(
            f"unsupported file extension {path.suffix or '(none)'!r} for {str(path)!r}; supported: {supported}"
        )
    return [path]


def _load_raw(cfg: DataConfig) -> Dataset:
    if cfg.source == "builtin":
        return builtin_corpus()
    path = Path(cfg.source).expanduser()
    if path.exists():
        return _load_files(_data_files(path))
    if _looks_like_path(cfg.source):
        raise FileNotFoundError(f"data file not found: {cfg.source!r}")
    try:
        return datasets.load_dataset(cfg.source, cfg.hf_config, split=cfg.split)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"source {cfg.source!r} is not a local path and could not be loaded from the Hugging Face hub: {first_line}"
        ) from exc


def _unit_hashes(ds: Dataset, seed: int, purpose: str) -> list[float]:
    """A stable pseudo-random number in [0, 1) per document, from its text, the seed and a purpose."""
    salt = f"{purpose}:{seed}:".encode()
    keys = []
    for batch in ds.select_columns("text").iter(batch_size=10_000):
        keys.extend(
            int.from_bytes(hashlib.blake2b(salt + text.encode(), digest_size=8).digest(), "big") / 2**64
            for text in batch["text"]
        )
    return keys


def _encode_labels(ds: Dataset, column: str) -> Dataset:
    """Turn ``label`` into an int ClassLabel, names sorted by value; ``column`` is its source name."""
    feature = ds.features["label"]
    if isinstance(feature, ClassLabel):
        if -1 in ds.unique("label"):
            raise ValueError(f"label column {column!r} has unlabeled rows (-1)")
        return ds
    if not isinstance(feature, Value) or not (
        feature.dtype in ("string", "large_string", "bool") or feature.dtype.startswith(("int", "uint"))
    ):
        raise ValueError(
            f"label column {column!r} has type {feature}; labels must be strings, integers, booleans or a ClassLabel"
        )
    values = ds.unique("label")
    if None in values:
        raise ValueError(f"label column {column!r} has missing values")
    names = sorted(values)
    index = {value: i for i, value in enumerate(names)}
    features = ds.features.copy()
    features["label"] = ClassLabel(names=[str(name) for name in names])
    return ds.map(
        lambda batch: {"label": [index[value] for value in batch["label"]]},
        batched=True,
        features=features,
        new_fingerprint=_digest(ds._fingerprint, "labels", names),
    )


def load_texts(cfg: DataConfig) -> Dataset:
    """Load ``cfg.source`` as a Dataset with a ``text`` column (and ``label`` if ``cfg.label_column``).

    Empty and whitespace-only texts are dropped. String (or integer) labels become ints indexed by
    their sorted values; the names are kept in ``ds.features["label"].names``. ``max_documents``
    keeps a seed-dependent, hash-chosen subset in corpus order.
    """
    raw = _load_raw(cfg)
    for role, column in (("text", cfg.text_column), ("label", cfg.label_column)):
        if column is not None and column not in raw.column_names:
            raise ValueError(
                f"{role} column {column!r} not found in {cfg.source!r}; "
                f"available columns: {', '.join(raw.column_names)}"
            )
    text_feature = raw.features[cfg.text_column]
    if not (isinstance(text_feature, Value) and text_feature.dtype in ("string", "large_string")):
        raise ValueError(f"text column {cfg.text_column!r} must hold strings, found {text_feature}")

    renames = {cfg.text_column: "text"}
    if cfg.label_column is not None:
        renames[cfg.label_column] = "label"
    ds = raw.select_columns(list(renames)).rename_columns({old: new for old, new in renames.items() if old != new})
    texts = (text for batch in ds.iter(batch_size=10_000) for text in batch["text"])
    non_empty = [i for i, text in enumerate(texts) if text is not None and text.strip()]
    if not non_empty:
        raise ValueError(f"corpus {cfg.source!r} is empty: no non-empty texts in column {cfg.text_column!r}")
    if len(non_empty) < len(ds):
        ds = ds.select(non_empty)
    if cfg.label_column is not None:
        ds = _encode_labels(ds, cfg.label_column)
    if cfg.max_documents is not None and cfg.max_documents < len(ds):
        keys = _unit_hashes(ds, cfg.seed, "subset")
        ds = ds.select(sorted(sorted(range(len(ds)), key=keys.__getitem__)[: cfg.max_documents]))
    return ds


# --------------------------------------------------------------------------- split


def train_validation_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split by a hash of (seed, text), so a document's side never depends on the rest of the corpus.

    Adding documents does not move existing ones, and exact duplicates share a side, so the
    validation set cannot leak through repeated text. The validation share is ``fraction`` in
    expectation, not exactly. Both parts keep corpus order.
    """
    if not _is_fraction(fraction):
        raise ValueError(f"validation fraction must be a number in [0, 1), got {fraction!r}")
    keys = _unit_hashes(ds, seed, "split")
    validation = [i for i, key in enumerate(keys) if key < fraction]
    train = [i for i, key in enumerate(keys) if key >= fraction]
    return ds.select(train), ds.select(validation)


# --------------------------------------------------------------------------- tokenization


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """Content hash of a tokenizer: vocabulary, normalization and special-token handling."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # runtime settings that every call with truncation=... rewrites
        state.pop("padding", None)
    else:
        state = sorted(tokenizer.get_vocab().items())
    return _digest(type(tokenizer).__name__, len(tokenizer), tokenizer.truncation_side, state)


def _tokenize_batch(
    batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, list[Any]]:
    encoded = tokenizer(batch["text"], truncation=True, max_length=max_length, return_attention_mask=True)
    return {name: encoded[name] for name in _MODEL_INPUTS if name in encoded}


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
    fingerprint = _digest("tokenize-v1", _tokenizer_digest(tokenizer), max_length, ds._fingerprint)
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


def _usable_positions(teacher_config: PretrainedConfig) -> int | None:
    positions = getattr(teacher_config, "max_position_embeddings", None)
    if positions is None:
        return None
    if getattr(teacher_config, "model_type", None) in _PADDING_OFFSET_MODEL_TYPES:
        pad = getattr(teacher_config, "pad_token_id", None)
        return positions - ((1 if pad is None else pad) + 1)
    return positions


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
    usable = _usable_positions(teacher_config)
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
    return DataBundle(
        train=tokenize_dataset(train, tokenizer, cfg.max_length, cache_dir),
        validation=tokenize_dataset(validation, tokenizer, cfg.max_length, cache_dir),
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


def make_dataloader(
    ds: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed``, not on global RNG state."""
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=Collator(tokenizer),
        generator=torch.Generator().manual_seed(seed),
    )
