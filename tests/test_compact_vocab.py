"""The final distillation trains only the word-embedding rows its data uses, exactly as the full table would."""

from __future__ import annotations

import copy

import pytest
import torch
from test_teacher_cache import Rows, collate, tiny_bert

from metanas.training.compact_vocab import CompactVocabulary
from metanas.training.distill import distill
from metanas.training.schedule import adamw, param_groups


def batches(rows: Rows) -> list[dict[str, torch.Tensor]]:
    return [collate(rows.examples[i : i + 4]) for i in range(0, 12, 4)]


def train(model: torch.nn.Module, data: list[dict[str, torch.Tensor]], remap=lambda b: b) -> None:
    """Three AdamW steps (weight decay 0.01) on a loss that reaches every token's embedding."""
    optimizer = adamw(param_groups(model, 0.01), lr=1e-2)
    for batch in data:
        out = model(**remap(batch)).last_hidden_state
        loss = (out * batch["attention_mask"][..., None]).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def test_the_compact_table_trains_the_rows_in_use_as_the_full_table_does_and_leaves_the_rest() -> None:
    rows = Rows([{"input_ids": [2, 5, 7, 9, 5]}, {"input_ids": [3, 5, 11]}, {"input_ids": [2, 13, 7, 4]}] * 4)
    data = batches(rows)
    full, compacted = tiny_bert(1), tiny_bert(1)
    original = full.get_input_embeddings().weight.detach().clone()
    table = compacted.get_input_embeddings()
    train(full, data)
    with CompactVocabulary(compacted, rows["input_ids"]) as vocabulary:
        assert vocabulary.compact.num_embeddings == 9  # 2, 3, 4, 5, 7, 9, 11, 13 and the padding id 0
        assert compacted.get_input_embeddings() is vocabulary.compact
        train(compacted, data, vocabulary.remap)
    assert compacted.get_input_embeddings() is table and table.num_embeddings == 50  # the full table is back
    used = torch.tensor([0, 2, 3, 4, 5, 7, 9, 11, 13])
    unused = torch.tensor([i for i in range(50) if i not in used.tolist()])
    after_full, after_compact = full.get_input_embeddings().weight, table.weight
    assert torch.allclose(after_compact[used], after_full[used], atol=1e-6)
    assert not torch.allclose(after_compact[used[1:]], original[used[1:]], atol=1e-3)  # they did train
    assert torch.equal(after_compact[unused], original[unused])  # untouched ...
    decay = (1 - 1e-2 * 0.01) ** 3
    assert torch.allclose(after_full[unused], original[unused] * decay, atol=1e-7)  # ... where AdamW only decays
    others = dict(compacted.named_parameters())
    for name, p in full.named_parameters():
        if "word_embeddings" not in name:
            assert torch.allclose(others[name], p, atol=1e-6), name


def test_distillation_hands_back_the_full_vocabulary_and_refuses_tokens_outside_its_data() -> None:
    rows = Rows([{"input_ids": [2, 5, 7, 9]}, {"input_ids": [3, 5, 11]}] * 4)
    teacher, student = tiny_bert(0), tiny_bert(1, layers=1)
    before = copy.deepcopy(student.get_input_embeddings().weight.detach())
    distill(student, teacher, rows, collate, steps=3, lr=1e-3, batch_size=4)
    weight = student.get_input_embeddings().weight
    assert weight.shape == (50, 16)  # what export saves: the model's own keys and shapes
    changed = (weight != before).any(-1).nonzero().flatten().tolist()
    assert changed == [2, 3, 5, 7, 9, 11]
    vocabulary = CompactVocabulary(student, rows["input_ids"])
    with pytest.raises(ValueError, match=r"token ids \[12\] are not in the training data"):
        vocabulary.remap({"input_ids": torch.tensor([[2, 12]])})
    with pytest.raises(ValueError, match=r"must lie in \[0, 50\)"):
        CompactVocabulary(student, [[3, 50]])
