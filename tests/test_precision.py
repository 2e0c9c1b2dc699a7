"""bf16 autocast only where the machine computes bf16 fast: float32, said once, where it is emulated."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from datasets import Dataset
from transformers import BertConfig, BertModel

import metanas.precision as precision
from metanas.training.distill import distill


@pytest.fixture()
def emulated_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU whose bf16 product is 40x slower than its float32 one (AVX2 only)."""
    monkeypatch.setattr(precision, "cpu_product_seconds", lambda: {"float32": 0.001, "bfloat16": 0.04})
    monkeypatch.setattr(precision, "_warned", set())


def test_bf16_is_kept_where_it_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_product_seconds", lambda: {"float32": 0.004, "bfloat16": 0.001})
    assert precision.use_bf16(True, "cpu", "training.bf16") is True
    assert precision.use_bf16(False, "cpu", "training.bf16") is False
    with precision.bf16_autocast(True, "cpu"):
        assert torch.is_autocast_enabled("cpu")


def test_emulated_bf16_falls_back_to_float32_and_says_so_once(emulated_bf16, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="metanas.precision"):
        assert precision.use_bf16(True, "cpu", "training.bf16") is False
        assert precision.use_bf16(True, "cpu", "training.bf16") is False
        assert precision.use_bf16(True, "cpu", "export.distill_bf16") is False
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # once per setting
    assert "training.bf16" in messages[0] and "40x slower than float32" in messages[0] and "float32" in messages[0]
    with precision.bf16_autocast(True, "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_the_measurement_compares_real_products() -> None:
    seconds = precision.cpu_product_seconds()
    assert set(seconds) == {"float32", "bfloat16"} and all(0 < s < 5 for s in seconds.values())
    assert precision.bf16_is_fast("cpu") == (seconds["bfloat16"] <= seconds["float32"])


def tiny_bert(seed: int, layers: int) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=32)  # fmt: skip
    return BertModel(config).eval()


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    seq = max(len(ex["input_ids"]) for ex in examples)
    ids = torch.zeros(len(examples), seq, dtype=torch.long)
    for row, ex in enumerate(examples):
        ids[row, : len(ex["input_ids"])] = torch.tensor(ex["input_ids"])
    return {"input_ids": ids, "attention_mask": (ids > 0).long()}


def test_a_distillation_asked_for_bf16_on_such_a_cpu_is_the_float32_one(emulated_bf16) -> None:
    g = torch.Generator().manual_seed(0)
    rows = Dataset.from_dict({"input_ids": [torch.randint(1, 50, (n,), generator=g).tolist() for n in range(3, 15)]})
    teacher, student = tiny_bert(0, layers=2), tiny_bert(1, layers=1)
    runs = [
        distill(copy.deepcopy(student), teacher, rows, collate, steps=3, lr=1e-3, batch_size=4, bf16=bf16)
        for bf16 in (False, True)
    ]
    assert [h["loss"] for h in runs[1]["history"]] == [h["loss"] for h in runs[0]["history"]]
