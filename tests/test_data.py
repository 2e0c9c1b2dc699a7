"""Tests for metanas.data: offline, with an in-process WordPiece tokenizer."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import tiny_tokenizer
from transformers import AutoConfig, BertConfig

from metanas.data import (
    Collator,
    DataBundle,
    DataConfig,
    batches_of,
    build_datasets,
    builtin_corpus,
    check_tokenizer_matches,
    load_texts,
    tokenize_dataset,
    train_validation_split,
)
from metanas.data.corpus import MIN_DOC_CHARS, _collect_stdlib_docstrings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path, monkeypatch):
    """Keep `load_dataset`'s arrow cache out of the user's home directory."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _texts(ds: datasets.Dataset) -> list[str]:
    return list(ds["text"])


def _corpus_digest(documents: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(documents).encode()).hexdigest()


# --------------------------------------------------------------------------- builtin corpus


def test_builtin_corpus_is_large_clean_deduplicated_and_sorted():
    corpus = builtin_corpus()
    assert corpus is builtin_corpus()  # cached per process
    assert corpus.column_names == ["text", "module"]
    texts, modules = _texts(corpus), list(corpus["module"])
    assert len(texts) >= 3000
    assert len(set(texts)) == len(texts)
    assert min(map(len, texts)) >= MIN_DOC_CHARS
    # whitespace collapsed inside paragraphs; paragraphs separated by exactly one blank line
    assert not any("  " in t or "\t" in t or "\n\n\n" in t or t != t.strip() for t in texts)
    assert all("\n" not in t.replace("\n\n", "") for t in texts)
    assert modules == sorted(modules)  # sorted by module name first
    families = set(modules)
    assert {"json", "email", "collections", "asyncio", "xml"} <= families
    assert not families & {"tkinter", "idlelib", "lib2to3", "antigravity", "this", "test", "distutils"}
    assert not any(m.startswith("_") for m in families)
    # attributed to the defining package; encodings keeps only its own few docstrings
    json_docs = [t for t, m in zip(texts, modules, strict=True) if m == "json"]
    assert any(t.startswith("JSON (JavaScript Object Notation)") for t in json_docs)
    assert modules.count("encodings") < 10


@pytest.mark.slow
def test_builtin_corpus_is_deterministic_across_calls_and_processes():
    expected = [(t, m) for t, m in zip(builtin_corpus()["text"], builtin_corpus()["module"], strict=True)]
    assert _collect_stdlib_docstrings() == expected  # a fresh collection, not the cache

    # Another process imports a different set of modules first and randomizes str hashing.
    script = (
        "import hashlib, json; from metanas.data.corpus import _collect_stdlib_docstrings as c; "
        "print(hashlib.sha256(json.dumps(c()).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, check=True
    )
    assert result.stdout.strip() == _corpus_digest([list(doc) for doc in expected])


# --------------------------------------------------------------------------- loading


def test_txt_without_blank_lines_is_one_document_per_line(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("first line here\n  second line  \nthird\n", encoding="utf-8")
    ds = load_texts(DataConfig(source=str(path)))
    assert ds.column_names == ["text"]
    assert _texts(ds) == ["first line here", "second line", "third"]


def test_txt_with_blank_lines_is_one_document_per_paragraph(tmp_path):
    path = tmp_path / "paragraphs.txt"
    path.write_text("a wrapped\nparagraph\n\nsecond one\n \n\n\nthird\nand last\n", encoding="utf-8")
    ds = load_texts(DataConfig(source=str(path)))
    assert _texts(ds) == ["a wrapped paragraph", "second one", "third and last"]


def test_jsonl_string_labels_map_to_sorted_ids_and_drop_empty_texts(tmp_path):
    rows = [
        {"text": "good film", "sentiment": "pos", "extra": 1},
        {"text": "   ", "sentiment": "zzz", "extra": 2},
        {"text": "bad film", "sentiment": "neg", "extra": 3},
        {"text": "great", "sentiment": "pos", "extra": 4},
    ]
    path = _write_jsonl(tmp_path / "reviews.jsonl", rows)
    ds = load_texts(DataConfig(source=str(path), label_column="sentiment"))
    assert ds.column_names == ["text", "label"]
    assert ds.features["label"].names == ["neg", "pos"]  # "zzz" belonged to an empty text only
    assert ds[:] == {"text": ["good film", "bad film", "great"], "label": [1, 0, 1]}


def test_json_array_file_loads(tmp_path):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"text": "alpha doc"}, {"text": "beta doc"}]), encoding="utf-8")
    assert _texts(load_texts(DataConfig(source=str(path)))) == ["alpha doc", "beta doc"]


def test_csv_custom_text_column_and_integer_labels_sort_numerically(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("body,stars\nten stars,10\none star,1\nthree stars,3\nagain ten,10\n", encoding="utf-8")
    ds = load_texts(DataConfig(source=str(path), text_column="body", label_column="stars"))
    assert ds.features["label"].names == ["1", "3", "10"]
    assert ds[:] == {"text": ["ten stars", "one star", "three stars", "again ten"], "label": [2, 0, 1, 2]}


def test_parquet_and_directory_sources(tmp_path):
    table = pa.table({"text": ["one doc", "two doc", "three doc"], "topic": ["b", "a", "b"]})
    pq.write_table(table, tmp_path / "part.parquet")
    ds = load_texts(DataConfig(source=str(tmp_path / "part.parquet"), label_column="topic"))
    assert ds[:] == {"text": ["one doc", "two doc", "three doc"], "label": [1, 0, 1]}

    shards = tmp_path / "shards"
    shards.mkdir()
    _write_jsonl(shards / "b.jsonl", [{"text": "from b"}])
    _write_jsonl(shards / "a.jsonl", [{"text": "from a"}, {"text": "also a"}])
    (shards / "README").write_text("not data", encoding="utf-8")
    assert _texts(load_texts(DataConfig(source=str(shards)))) == ["from a", "also a", "from b"]


def test_builtin_module_column_works_as_label():
    ds = load_texts(DataConfig(label_column="module"))
    names = ds.features["label"].names
    assert names == sorted(set(builtin_corpus()["module"]))
    assert len(ds) == len(builtin_corpus())


def test_max_documents_keeps_a_seeded_subset_in_corpus_order():
    full = _texts(builtin_corpus())
    position = {text: i for i, text in enumerate(full)}
    subset = _texts(load_texts(DataConfig(max_documents=200, seed=1)))
    assert len(subset) == 200
    assert [position[t] for t in subset] == sorted(position[t] for t in subset)
    assert subset == _texts(load_texts(DataConfig(max_documents=200, seed=1)))
    assert subset != _texts(load_texts(DataConfig(max_documents=200, seed=2)))
    assert subset != full[:200]  # spread over the corpus, not its alphabetical head


# --------------------------------------------------------------------------- loading errors


@pytest.mark.parametrize("source", ["./absent.txt", "missing.csv", "data/sub/corpus", "/no/such/dir"])
def test_missing_path_is_file_not_found(source):
    with pytest.raises(FileNotFoundError, match=f"data file not found: '{source}'"):
        load_texts(DataConfig(source=source))


def test_hub_name_offline_error_names_the_source(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="'nobody/no-such-dataset' is not a local path.*Hugging Face hub"):
        load_texts(DataConfig(source="nobody/no-such-dataset"))


def test_unsupported_extension_lists_supported_ones(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unsupported file extension '\.tsv'.*\.csv, \.json, \.jsonl"):
        load_texts(DataConfig(source=str(path)))


def test_directory_without_data_files(tmp_path):
    (tmp_path / "notes.md").write_text("hi", encoding="utf-8")
    with pytest.raises(ValueError, match="has no data files; supported extensions: .csv"):
        load_texts(DataConfig(source=str(tmp_path)))


@pytest.mark.parametrize("content", ["", "\n\n  \n\t\n"])
def test_empty_txt_corpus(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="is empty: no non-empty texts in column 'text'"):
        load_texts(DataConfig(source=str(path)))


def test_whitespace_only_jsonl_corpus_is_empty(tmp_path):
    path = _write_jsonl(tmp_path / "blank.jsonl", [{"text": ""}, {"text": "  \n"}])
    with pytest.raises(ValueError, match="is empty"):
        load_texts(DataConfig(source=str(path)))


def test_missing_text_column_names_available_columns(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"body": "x y z", "y": "a"}])
    with pytest.raises(ValueError, match="text column 'text' not found .* available columns: body, y"):
        load_texts(DataConfig(source=str(path)))


def test_missing_label_column_names_available_columns(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "x y z", "y": "a"}])
    with pytest.raises(ValueError, match="label column 'label' not found .* available columns: text, y"):
        load_texts(DataConfig(source=str(path), label_column="label"))


def test_txt_has_no_label_column(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="label column 'topic' not found .* available columns: text"):
        load_texts(DataConfig(source=str(path), label_column="topic"))


def test_float_labels_and_non_string_texts_are_rejected(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "a b", "score": 0.5, "n": 3}])
    with pytest.raises(ValueError, match="label column 'score' has type .*float"):
        load_texts(DataConfig(source=str(path), label_column="score"))
    with pytest.raises(ValueError, match="text column 'n' must hold strings"):
        load_texts(DataConfig(source=str(path), text_column="n"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": ""}, r"DataConfig.source must be a non-empty string"),
        ({"split": " "}, r"DataConfig.split must be a non-empty string"),
        ({"source": []}, r"DataConfig.source must be a non-empty string or a non-empty list of them, got \[\]"),
        ({"source": ["builtin", ""]}, r"DataConfig.source must be a non-empty string or a non-empty list"),
        ({"text_column": None}, r"DataConfig.text_column must be a non-empty string"),
        ({"hf_config": ""}, r"DataConfig.hf_config must be None or a non-empty string"),
        ({"label_column": "text"}, r"DataConfig.label_column must differ from text_column"),
        ({"max_length": 1}, r"DataConfig.max_length must be an integer >= 2, got 1"),
        ({"max_length": True}, r"DataConfig.max_length must be an integer >= 2, got True"),
        ({"validation_fraction": 1.0}, r"DataConfig.validation_fraction must be a number in \[0, 1\), got 1.0"),
        ({"validation_fraction": -0.1}, r"DataConfig.validation_fraction must be a number in \[0, 1\)"),
        ({"max_documents": 0}, r"DataConfig.max_documents must be None or an integer >= 1, got 0"),
        ({"seed": "7"}, r"DataConfig.seed must be an integer, got '7'"),
    ],
)
def test_data_config_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


# --------------------------------------------------------------------------- split


def test_split_is_disjoint_deterministic_and_near_the_fraction():
    corpus = builtin_corpus()
    train, validation = train_validation_split(corpus, 0.2, seed=0)
    train_texts, validation_texts = set(_texts(train)), set(_texts(validation))
    assert not train_texts & validation_texts
    assert len(train) + len(validation) == len(corpus)
    assert abs(len(validation) / len(corpus) - 0.2) < 0.03
    again_train, again_validation = train_validation_split(corpus, 0.2, seed=0)
    assert _texts(again_train) == _texts(train) and _texts(again_validation) == _texts(validation)
    assert set(_texts(train_validation_split(corpus, 0.2, seed=1)[1])) != validation_texts


def test_split_is_stable_when_documents_are_added_and_keeps_duplicates_together():
    corpus = builtin_corpus()
    _, validation = train_validation_split(corpus, 0.1, seed=3)
    held_out = set(_texts(validation))
    half = corpus.select(range(0, len(corpus), 2))
    _, half_validation = train_validation_split(half, 0.1, seed=3)
    assert set(_texts(half_validation)) == held_out & set(_texts(half))

    repeated = datasets.Dataset.from_dict({"text": _texts(corpus.select(range(40))) * 3})
    train, validation = train_validation_split(repeated, 0.5, seed=0)
    assert not set(_texts(train)) & set(_texts(validation))
    assert len(validation) % 3 == 0


def test_split_with_zero_fraction_and_invalid_fraction():
    corpus = builtin_corpus().select(range(50))
    train, validation = train_validation_split(corpus, 0.0, seed=0)
    assert (len(train), len(validation)) == (50, 0)
    with pytest.raises(ValueError, match=r"validation fraction must be a number in \[0, 1\), got 1.5"):
        train_validation_split(corpus, 1.5, seed=0)


# --------------------------------------------------------------------------- tokenization


def test_tokenize_truncates_without_padding_and_keeps_labels(tokenizer):
    ds = load_texts(DataConfig(label_column="module", max_documents=300))
    tokenized = tokenize_dataset(ds, tokenizer, max_length=16)
    assert sorted(tokenized.column_names) == ["attention_mask", "input_ids", "label", "token_type_ids"]
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    assert max(lengths) == 16 and min(lengths) < 16  # truncated, and not padded
    for row in tokenized.select(range(20)):
        assert row["input_ids"][0] == tokenizer.cls_token_id
        assert row["input_ids"][-1] == tokenizer.sep_token_id
        assert row["attention_mask"] == [1] * len(row["input_ids"])
        assert tokenizer.pad_token_id not in row["input_ids"]
    assert tokenized["label"] == ds["label"]
    with pytest.raises(ValueError, match="max_length=2 leaves no room for text: the tokenizer adds 2"):
        tokenize_dataset(ds, tokenizer, max_length=2)


def test_tokenize_cache_hit_skips_the_tokenizer(tokenizer, tmp_path, monkeypatch):
    ds = load_texts(DataConfig(max_documents=100))
    first = tokenize_dataset(ds, tokenizer, max_length=32, cache_dir=tmp_path / "tok")
    cache_files = sorted((tmp_path / "tok").glob("tokenized-*.arrow"))
    assert len(cache_files) == 1
    assert first.cache_files[0]["filename"] == str(cache_files[0])

    def fail(*args, **kwargs):
        raise AssertionError("tokenizer called despite a cache hit")

    with monkeypatch.context() as patch:
        patch.setattr(type(tokenizer), "__call__", fail)
        second = tokenize_dataset(ds, tokenizer, max_length=32, cache_dir=tmp_path / "tok")
    assert second.cache_files[0]["filename"] == str(cache_files[0])
    assert second["input_ids"] == first["input_ids"]

    tokenize_dataset(ds, tokenizer, max_length=24, cache_dir=tmp_path / "tok")
    assert len(list((tmp_path / "tok").glob("tokenized-*.arrow"))) == 2  # new key for a new length


# --------------------------------------------------------------------------- tokenizer vs teacher


def test_tokenizer_larger_than_teacher_vocab(tokenizer):
    teacher = BertConfig(vocab_size=len(tokenizer) - 1)
    message = f"tokenizer and teacher disagree: .*{len(tokenizer)} tokens.*vocab_size is {len(tokenizer) - 1}"
    with pytest.raises(ValueError, match=message):
        check_tokenizer_matches(tokenizer, teacher)
    with pytest.raises(ValueError, match="tokenizer and teacher disagree"):
        build_datasets(DataConfig(), tokenizer, teacher_config=teacher)
    check_tokenizer_matches(tokenizer, BertConfig(vocab_size=len(tokenizer)))


def test_pad_token_outside_teacher_vocab():
    class PadBeyondVocab:
        pad_token_id = 120

        def __len__(self) -> int:
            return 100

    with pytest.raises(ValueError, match="tokenizer and teacher disagree: .*pad_token_id 120 .* vocab_size 110"):
        check_tokenizer_matches(PadBeyondVocab(), BertConfig(vocab_size=110))


@pytest.mark.parametrize(
    ("model_type", "positions", "usable"),
    [("bert", 512, 512), ("roberta", 514, 512), ("xlm-roberta", 514, 512), ("camembert", 514, 512)],
)
def test_max_length_against_teacher_positions(tokenizer, model_type, positions, usable):
    teacher = AutoConfig.for_model(model_type, vocab_size=1000, max_position_embeddings=positions, pad_token_id=1)
    check_tokenizer_matches(tokenizer, teacher, max_length=usable)
    with pytest.raises(ValueError, match=f"max_length={usable + 1} exceeds the teacher's {usable} usable"):
        check_tokenizer_matches(tokenizer, teacher, max_length=usable + 1)


# --------------------------------------------------------------------------- collator and loaders


def test_collator_pads_to_longest_with_pad_id():
    collate = Collator(SimpleNamespace(pad_token_id=7))
    batch = collate(
        [
            {"input_ids": [2, 10, 3], "attention_mask": [1, 1, 1], "token_type_ids": [0, 1, 1], "label": 4},
            {"input_ids": [2, 11, 12, 13, 3], "attention_mask": [1, 1, 1, 1, 1], "token_type_ids": [0] * 5, "label": 0},
        ]
    )
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].tolist() == [[2, 10, 3, 7, 7], [2, 11, 12, 13, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [4, 0]


def test_collator_without_token_types_or_labels():
    batch = Collator(SimpleNamespace(pad_token_id=1))([{"input_ids": [5, 6]}, {"input_ids": [5]}])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert batch["input_ids"].tolist() == [[5, 6], [5, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0], [0, 0]]


def test_collator_errors():
    with pytest.raises(ValueError, match="tokenizer has no pad token"):
        Collator(SimpleNamespace(pad_token_id=None))
    with pytest.raises(ValueError, match="empty batch"):
        Collator(SimpleNamespace(pad_token_id=0))([])


def test_build_datasets_and_batches_in_order(tokenizer, tmp_path):
    cfg = DataConfig(label_column="module", max_length=24, validation_fraction=0.2, max_documents=400, seed=5)
    bundle = build_datasets(cfg, tokenizer, teacher_config=BertConfig(vocab_size=len(tokenizer)), cache_dir=tmp_path)
    assert isinstance(bundle, DataBundle)
    assert bundle.num_documents == 400 == len(bundle.train) + len(bundle.validation)
    assert 40 <= len(bundle.validation) <= 120
    assert bundle.num_labels == len(bundle.label_names) and "json" in bundle.label_names
    assert sorted(bundle.train.column_names) == ["attention_mask", "input_ids", "label", "token_type_ids"]

    batches = batches_of(bundle.train, range(20), 8, Collator(tokenizer))
    assert [b["input_ids"].shape[0] for b in batches] == [8, 8, 4]
    assert all(b["input_ids"].shape[1] <= 24 for b in batches)
    assert torch.cat([b["labels"] for b in batches]).tolist() == bundle.train["label"][:20]
    first = bundle.train[0]["input_ids"]
    assert batches[0]["input_ids"][0, : len(first)].tolist() == first


def test_build_datasets_rejects_an_empty_validation_split(tokenizer, tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("only one document here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="split of 1 documents .* both must be non-empty"):
        build_datasets(DataConfig(source=str(path), validation_fraction=0.1), tokenizer)
