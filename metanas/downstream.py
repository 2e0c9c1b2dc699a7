"""Downstream evaluation (`report.eval`): how useful each model's frozen sentence embeddings are.

The report's own quality metric says how closely a student follows its teacher; this says
what a user gets out of it on labeled data. Every model is probed on the same examples:

- ``classification``: a logistic-regression probe (scikit-learn) on standardized mean-pooled
  embeddings, fit on a seeded stratified share and scored on the rest (accuracy, macro-F1);
- ``pairs``: the Spearman correlation of the cosine of the two texts' embeddings with the
  gold similarity score (no fitting).

`load_eval` loads and checks one entry's data, so `metanas.pipeline.checks.preflight` can
refuse a bad entry before training; `evaluate_downstream` measures the models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import PreTrainedTokenizerBase

from metanas.config import DataConfig, EvalEntry
from metanas.data import Collator, batches_of, load_texts, tokenize_dataset
from metanas.data.loading import load_table
from metanas.report import embed

MIN_PAIRS = 3


def _subset(n: int, limit: int, seed: int) -> list[int]:
    """At most `limit` of `n` row indices, seeded, in their original order."""
    if n <= limit:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def _load_classification(entry: EvalEntry) -> Dataset:
    cfg = DataConfig(
        source=entry.source,
        split=entry.split,
        hf_config=entry.hf_config,
        text_column=entry.text_column,
        label_column=entry.label_column,
        validation_fraction=0.0,
        max_documents=entry.max_examples,
        seed=entry.seed,
    )
    ds = load_texts(cfg)
    classes = len(set(ds["label"]))
    if classes < 2:
        raise ValueError(
            f"label column {entry.label_column!r} of {entry.source!r} has {classes} class; a probe needs at least 2"
        )
    test = round(len(ds) * entry.test_fraction)
    if test < 1 or len(ds) - test < 2:
        raise ValueError(
            f"{len(ds)} examples leave no train or test share at test_fraction "
            f"{entry.test_fraction}; give more examples"
        )
    return ds


def _load_pairs(entry: EvalEntry) -> Dataset:
    a, b, score = entry.text_a_column, entry.text_b_column, entry.score_column
    table = load_table(entry.source, entry.columns(), entry.split, entry.hf_config)
    rows = table.to_dict()
    keep = []
    for i, (x, y, s) in enumerate(zip(rows[a], rows[b], rows[score])):
        if isinstance(x, str) and x.strip() and isinstance(y, str) and y.strip():
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not np.isfinite(s):
                raise ValueError(f"score column {score!r} must hold numbers, row {i} has {s!r}")
            keep.append(i)
    keep = [keep[i] for i in _subset(len(keep), entry.max_examples, entry.seed)]
    if len(keep) < MIN_PAIRS:
        raise ValueError(
            f"{len(keep)} pairs with both texts non-empty in {entry.source!r}; a correlation needs at least {MIN_PAIRS}"
        )
    return Dataset.from_dict(
        {
            "text_a": [rows[a][i] for i in keep],
            "text_b": [rows[b][i] for i in keep],
            "score": [rows[score][i] for i in keep],
        }
    )


def load_eval(entry: EvalEntry) -> Dataset:
    """The entry's examples, checked: ``text`` + ``label`` (classification) or ``text_a``/``text_b``/``score``.

    Errors name the entry (`report.eval NAME: ...`), so a recipe with several says which one is wrong.
    """
    try:
        return _load_classification(entry) if entry.kind == "classification" else _load_pairs(entry)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"report.eval {entry.name!r}: {e}") from None


# --------------------------------------------------------------------------- metrics


def probe_classification(
    embeddings: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int
) -> dict[str, float | int]:
    """Accuracy and macro-F1 of a logistic-regression probe on standardized embeddings, on a held-out share.

    The split is stratified (when every class has 2 examples and each side can hold every
    class) and seeded, so every model of a report is probed on the same split.
    """
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    test = int(np.ceil(len(labels) * test_fraction))
    stratify = labels if counts.min() >= 2 and min(test, len(labels) - test) >= len(counts) else None
    train_idx, test_idx = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=stratify)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(embeddings[train_idx], labels[train_idx])
    predicted = probe.predict(embeddings[test_idx])
    return {
        "accuracy": float(accuracy_score(labels[test_idx], predicted)),
        "macro_f1": float(f1_score(labels[test_idx], predicted, average="macro")),
        "examples": int(len(labels)),
        "test_examples": int(len(test_idx)),
        "classes": int(len(counts)),
    }


def pair_spearman(a: torch.Tensor, b: torch.Tensor, scores: Sequence[float]) -> dict[str, float | int | None]:
    """Spearman correlation of cosine(a_i, b_i) with the gold scores; None when either side is constant."""
    cosine = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).numpy()
    gold = np.asarray(scores, dtype=float)
    if np.ptp(cosine) == 0 or np.ptp(gold) == 0:  # undefined (scipy would warn and return NaN)
        return {"spearman": None, "pairs": len(cosine)}
    return {"spearman": float(spearmanr(cosine, gold).statistic), "pairs": len(cosine)}


# --------------------------------------------------------------------------- measuring models


@dataclass
class _Prepared:
    entry: EvalEntry
    inputs: list[list[dict[str, torch.Tensor]]]  # one or two lists of batches
    targets: np.ndarray


def _batches(texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int) -> list:
    ds = tokenize_dataset(Dataset.from_dict({"text": texts}), tokenizer, max_length)
    return batches_of(ds, range(len(ds)), batch_size, Collator(tokenizer))


def _prepare(entry: EvalEntry, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int) -> _Prepared:
    ds = load_eval(entry)
    if entry.kind == "classification":
        inputs = [_batches(ds["text"], tokenizer, max_length, batch_size)]
        return _Prepared(entry, inputs, np.asarray(ds["label"]))
    inputs = [_batches(ds[column], tokenizer, max_length, batch_size) for column in ("text_a", "text_b")]
    return _Prepared(entry, inputs, np.asarray(ds["score"], dtype=float))


def _measure(model: Any, prepared: _Prepared) -> dict[str, float | int]:
    entry = prepared.entry
    if entry.kind == "classification":
        features = embed(model, prepared.inputs[0]).numpy()
        return probe_classification(features, prepared.targets, entry.test_fraction, entry.seed)
    a, b = (embed(model, batches) for batches in prepared.inputs)
    return pair_spearman(a, b, prepared.targets)


def evaluate_downstream(
    models: Mapping[str, Any],
    entries: Sequence[EvalEntry],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    batch_size: int = 32,
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per model (role), per entry name: the probe's metrics; every model sees the same examples.

    ``models`` are standalone encoders returning ``last_hidden_state`` (torch or `OnnxEncoder`);
    the texts are tokenized once with ``tokenizer`` (truncated to ``max_length``).
    """
    prepared = [_prepare(entry, tokenizer, max_length, batch_size) for entry in entries]
    return {role: {p.entry.name: _measure(model, p) for p in prepared} for role, model in models.items()}
