"""Text sources (builtin corpus, local files, packaged corpora, hub datasets) and the hash-based split.

Everything ends up as a `datasets.Dataset` with a ``text`` column (plus ``label`` for
classification), split by a content hash so the split survives corpus growth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, Features, Value

from metanas._paths import is_hub_id
from metanas.config import DataConfig, is_fraction
from metanas.data.corpus import builtin_corpus
from metanas.data.orange_tab import read_orange_tab
from metanas.data.packaged import PREFIX as PACKAGED_PREFIX
from metanas.data.packaged import load_packaged

# Extension (compound ones included) -> how its files load, in the order error messages list
# them: the common formats, then the corpus ones. .tab is Orange's format, .cor (gensim's line
# corpora) one document per line; ``datasets`` decompresses .csv.bz2 and .csv.gz itself.
_LOADERS = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".tab": "orange-tab",
    ".cor": "lines",
    ".csv.bz2": "csv",
    ".csv.gz": "csv",
}


def content_digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); re-encode it as UTF-8") from exc


def _read_txt(path: Path) -> list[str]:
    """One document per line, unless the file has blank lines: then one per blank-line-separated paragraph.

    Lines inside a paragraph are joined with a space (hard-wrapped prose).
    """
    content = _read_utf8(path)
    if re.search(r"\n\s*\n", content.strip()):
        blocks = re.split(r"\n\s*\n", content)
        return [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in blocks]
    return [line.strip() for line in content.splitlines()]


def _read_lines(path: Path) -> list[str]:
    """One document per line, as gensim's line corpora are; blank lines are dropped later as empty texts."""
    return _read_utf8(path).splitlines()


_TEXT_READERS = {"text": _read_txt, "lines": _read_lines}


def _extension(path: Path) -> str:
    """The file's extension as `_LOADERS` knows it (``.csv.bz2`` before ``.bz2``), else its last suffix."""
    name = path.name.lower()
    return max((ext for ext in _LOADERS if name.endswith(ext)), key=len, default=path.suffix.lower())


def _load_orange_tabs(files: list[Path]) -> Dataset:
    tables = [read_orange_tab(path) for path in files]
    for path, table in zip(files[1:], tables[1:]):
        if table.column_names != tables[0].column_names:
            raise ValueError(
                f"{path} has columns {table.column_names}, {files[0]} has {tables[0].column_names}; "
                "the .tab files of one source must share their columns"
            )
    return datasets.concatenate_datasets(tables)


def _load_files(files: list[Path]) -> Dataset:
    kind = _LOADERS[_extension(files[0])]
    if kind in _TEXT_READERS:
        documents = [doc for path in files for doc in _TEXT_READERS[kind](path)]
        return Dataset.from_dict({"text": documents}, features=Features({"text": Value("string")}))
    if kind == "orange-tab":
        return _load_orange_tabs(files)
    return datasets.load_dataset(kind, data_files=[str(p) for p in files], split="train")


def _data_files(path: Path) -> list[Path]:
    """The files a path stands for: itself, or a directory's files that share one supported format."""
    supported = ", ".join(_LOADERS)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _extension(p) in _LOADERS)
        if not files:
            raise ValueError(f"directory {str(path)!r} has no data files; supported extensions: {supported}")
        kinds = {_LOADERS[_extension(p)] for p in files}
        if len(kinds) > 1:
            raise ValueError(f"directory {str(path)!r} mixes data formats ({', '.join(sorted(kinds))})")
        return files
    if _extension(path) not in _LOADERS:
        raise ValueError(
            f"unsupported file extension {path.suffix or '(none)'!r} for {str(path)!r}; supported: {supported}"
        )
    return [path]


def _label_names(ds: Dataset, column: str) -> Dataset:
    """A ClassLabel column as its names (strings), so sources with different label encodings can be joined."""
    feature = ds.features[column]
    if not isinstance(feature, ClassLabel):
        return ds
    features = ds.features.copy()
    features[column] = Value("string")
    return ds.map(
        lambda batch: {column: [feature.int2str(v) for v in batch[column]]},
        batched=True,
        features=features,
        new_fingerprint=content_digest(ds._fingerprint, "label-names", column),
    )


def _load_mixture(cfg: DataConfig) -> Dataset:
    """Several sources, their documents concatenated in order, keeping the text (and label) column.

    Each source's text column must hold strings. Labels join as they are when every source
    has the same label type; otherwise they are joined as strings (class names for a
    ClassLabel), then encoded as one set of classes like any string labels.
    """
    columns = [c for c in (cfg.text_column, cfg.label_column) if c is not None]
    parts = []
    for source in cfg.sources:
        raw = _load_raw(dataclasses.replace(cfg, source=source))
        missing = [c for c in columns if c not in raw.column_names]
        if missing:
            raise ValueError(
                f"data.source {source!r} (one of {cfg.source_label}) has no column {missing[0]!r}; "
                f"available columns: {', '.join(raw.column_names)}"
            )
        text = raw.features[cfg.text_column]
        if not (isinstance(text, Value) and text.dtype in ("string", "large_string")):
            raise ValueError(
                f"text column {cfg.text_column!r} of data.source {source!r} must hold strings, found {text}"
            )
        parts.append(raw.select_columns(columns))
    label = cfg.label_column
    mixed = label is not None and len({repr(p.features[label]) for p in parts}) > 1
    strings = {cfg.text_column: Value("string"), **({label: Value("string")} if mixed else {})}
    joined = []
    for part in parts:  # text as `string` (not `large_string`); labels as strings where their types differ
        part = _label_names(part, label) if mixed else part
        target = Features({**part.features, **strings})
        joined.append(part if part.features == target else part.cast(target))
    return datasets.concatenate_datasets(joined)


def _load_raw(cfg: DataConfig) -> Dataset:
    if isinstance(cfg.source, list):
        return _load_mixture(cfg)
    if cfg.source == "builtin":
        return builtin_corpus()
    if cfg.source.startswith(PACKAGED_PREFIX):
        return load_packaged(cfg.source[len(PACKAGED_PREFIX) :])
    path = Path(cfg.source).expanduser()
    if path.exists():
        return _load_files(_data_files(path))
    if not is_hub_id(cfg.source):
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
        new_fingerprint=content_digest(ds._fingerprint, "labels", names),
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
                f"{role} column {column!r} not found in {cfg.source_label!r}; "
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
        raise ValueError(f"corpus {cfg.source_label!r} is empty: no non-empty texts in column {cfg.text_column!r}")
    if len(non_empty) < len(ds):
        ds = ds.select(non_empty)
    if cfg.label_column is not None:
        ds = _encode_labels(ds, cfg.label_column)
    if cfg.max_documents is not None and cfg.max_documents < len(ds):
        keys = _unit_hashes(ds, cfg.seed, "subset")
        ds = ds.select(sorted(sorted(range(len(ds)), key=keys.__getitem__)[: cfg.max_documents]))
    return ds


def load_table(source: str, columns: list[str], split: str = "train", hf_config: str | None = None) -> Dataset:
    """Load ``source`` (any `data.source` string) keeping only ``columns``, each required to exist.

    For data that is not one text column, such as text pairs with a score; a missing column is
    named with the ones the source has.
    """
    raw = _load_raw(DataConfig(source=source, split=split, hf_config=hf_config))
    for column in columns:
        if column not in raw.column_names:
            raise ValueError(
                f"column {column!r} not found in {source!r}; available columns: {', '.join(raw.column_names)}"
            )
    return raw.select_columns(list(dict.fromkeys(columns)))


# --------------------------------------------------------------------------- split


def train_validation_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split by a hash of (seed, text), so a document's side never depends on the rest of the corpus.

    Adding documents does not move existing ones, and exact duplicates share a side, so the
    validation set cannot leak through repeated text. The validation share is ``fraction`` in
    expectation, not exactly. Both parts keep corpus order.
    """
    if not is_fraction(fraction):
        raise ValueError(f"validation fraction must be a number in [0, 1), got {fraction!r}")
    keys = _unit_hashes(ds, seed, "split")
    validation = [i for i, key in enumerate(keys) if key < fraction]
    train = [i for i, key in enumerate(keys) if key >= fraction]
    return ds.select(train), ds.select(validation)
