"""The final distillation's teacher cache: the same training, the teacher run once per example."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertModel

import metanas.training.distill as distill_module
from metanas.training.distill import TeacherForward, batch_schedule, distill, prefill, prefill_teacher
from metanas.training.pace import TimeBudget
from metanas.training.teacher_cache import TeacherCache


class Rows:
    """A column-indexed stand-in for a tokenized dataset (`rows[indices]` -> {column: [values]})."""

    def __init__(self, examples: list[dict[str, list[int]]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, indices: list[int] | str) -> dict[str, list[list[int]]] | list[list[int]]:
        if isinstance(indices, str):  # a column, as a datasets.Dataset gives it
            return [ex[indices] for ex in self.examples]
        picked = [self.examples[i] for i in indices]
        return {k: [ex[k] for ex in picked] for k in picked[0]}


def collate(examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    seq = max(len(ex["input_ids"]) for ex in examples)
    ids = torch.zeros(len(examples), seq, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, ex in enumerate(examples):
        ids[row, : len(ex["input_ids"])] = torch.tensor(ex["input_ids"])
        mask[row, : len(ex["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def tiny_bert(seed: int, layers: int = 2) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=32
    )
    return BertModel(config).eval()


@pytest.fixture()
def rows() -> Rows:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 12, (24,), generator=g).tolist()
    return Rows([{"input_ids": torch.randint(1, 50, (n,), generator=g).tolist()} for n in lengths])


def run(student: BertModel, teacher: BertModel, rows: Rows, cache: TeacherCache | None) -> dict:
    return distill(student, teacher, rows, collate, steps=9, lr=1e-3, batch_size=4, cache=cache)  # 1.5 passes


def test_a_cached_teacher_trains_the_student_exactly_as_recomputing_it(rows: Rows) -> None:
    teacher, student = tiny_bert(0), tiny_bert(1, layers=1)
    plain = run(copy.deepcopy(student), teacher, rows, cache=None)
    cache = TeacherCache(2**30)
    first = run(copy.deepcopy(student), teacher, rows, cache)
    again = run(copy.deepcopy(student), teacher, rows, cache)  # a second model, the same seeded batches
    for other in (first, again):
        assert [h["loss"] for h in other["history"]] == pytest.approx([h["loss"] for h in plain["history"]], abs=1e-5)
    assert plain["teacher_examples_computed"] == 36  # 9 steps x 4, nothing kept
    assert all(h["seconds"] > 0 for h in plain["history"])  # each step timed: export.distill_seconds' pace
    drawn = len(cache)
    assert first["teacher_examples_computed"] == drawn == 24 < 36  # the second pass comes from the cache
    assert first["teacher_prefilled"] == drawn  # all before the first step, in batches of PREFILL_BATCH
    assert plain["teacher_prefilled"] == 0  # a cache with no room: the teacher runs inside each step
    assert again["teacher_examples_computed"] == again["teacher_prefilled"] == 0
    assert cache.hits == 72 and cache.misses == drawn  # every step of both runs served from the cache


def test_the_cache_stops_storing_at_its_limit_and_stays_correct(rows: Rows) -> None:
    teacher = tiny_bert(0)
    inputs = collate(rows.examples[:4])
    with torch.no_grad():
        full = teacher(**inputs).last_hidden_state
    per_example = 16 * 4 * 4  # hidden + q, k, v of width 16, float32, per token

    def forward(sub: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            hidden = teacher(**sub).last_hidden_state
        return [hidden, hidden, hidden, hidden]

    first_len = int(inputs["attention_mask"][0].sum())
    cache = TeacherCache(first_len * per_example)  # room for the first example only
    hidden, *_ = cache.outputs([0, 1, 2, 3], inputs, forward)
    assert len(cache) == 1 and cache.bytes == first_len * per_example
    mask = inputs["attention_mask"].bool()
    assert torch.allclose(hidden[mask], full[mask], atol=1e-6)
    assert torch.all(hidden[~mask] == 0)  # padding is zeros: every loss masks it
    hidden, *_ = cache.outputs([3, 0, 1, 2], {k: v[[3, 0, 1, 2]] for k, v in inputs.items()}, forward)
    assert torch.allclose(hidden[mask[[3, 0, 1, 2]]], full[[3, 0, 1, 2]][mask[[3, 0, 1, 2]]], atol=1e-6)
    assert cache.hits == 1 and cache.misses == 7


def test_a_cache_that_stops_storing_still_serves_what_it_holds(rows: Rows) -> None:
    teacher, student = tiny_bert(0), tiny_bert(1, layers=1)
    cache = TeacherCache(2**30)
    run(copy.deepcopy(student), teacher, rows, cache)
    held = len(cache)
    cache.store = False  # the last model distilled: nothing it adds would be read
    again = run(copy.deepcopy(student), teacher, rows, cache)
    assert len(cache) == held and again["teacher_examples_computed"] == 0


def test_the_layer_loss_matches_each_student_layer_to_its_teacher_layer_and_is_cached_exactly(rows: Rows) -> None:
    teacher, student = tiny_bert(0, layers=4), tiny_bert(1, layers=2)
    layered = dict(teacher_layers=(1, 3), layer_weight=5.0)

    def layer_run(cache: TeacherCache | None, **options: object) -> dict:
        return distill(copy.deepcopy(student), teacher, rows, collate, steps=4, lr=1e-3, batch_size=4, cache=cache,
                       **options)  # fmt: skip

    plain = layer_run(None, **layered)
    # student layer 0 against teacher layer 1 (layer 1, the last, is the hidden-state loss): by hand on the first batch
    lengths = [len(ex["input_ids"]) for ex in rows.examples]
    first = collate([rows.examples[i] for i in batch_schedule(lengths, 4, 1, seed=0)[0]])
    mask = first["attention_mask"].bool()
    with torch.no_grad():
        s_out = student(**first, output_hidden_states=True).hidden_states[1]
        t_out = teacher(**first, output_hidden_states=True).hidden_states[2]
    expected = (((s_out - t_out) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert plain["history"][0]["layers"] == pytest.approx(float(expected), rel=1e-4)
    last_only = layer_run(None)
    assert "layers" not in last_only["history"][0]
    assert last_only["history"][0]["loss"] < plain["history"][0]["loss"]
    cache = TeacherCache(2**30)
    cached = [layer_run(cache, **layered) for _ in range(2)]  # filling the cache, then served from it
    for other in cached:
        assert [h["loss"] for h in other["history"]] == pytest.approx([h["loss"] for h in plain["history"]], abs=1e-5)
    held = next(iter(cache._rows.values()))
    assert len(held) == 4 + 3  # last hidden, q, k, v, and the outputs of teacher layers 0-2


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="teacher cache size"):
        TeacherCache(-1)


def test_the_final_distillation_runs_without_dropout_unless_asked(rows: Rows) -> None:
    """dropout=False (the default) trains exactly like the same student with every dropout probability at 0."""
    teacher, student = tiny_bert(0), tiny_bert(1, layers=1)
    assert student.config.hidden_dropout_prob > 0 and student.config.attention_probs_dropout_prob > 0
    zeroed = copy.deepcopy(student)
    for module in zeroed.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    off = distill(copy.deepcopy(student), teacher, rows, collate, steps=6, lr=1e-3, batch_size=4)
    zero = distill(zeroed, teacher, rows, collate, steps=6, lr=1e-3, batch_size=4, dropout=True)
    on = distill(copy.deepcopy(student), teacher, rows, collate, steps=6, lr=1e-3, batch_size=4, dropout=True)
    losses = {name: [h["loss"] for h in r["history"]] for name, r in (("off", off), ("zero", zero), ("on", on))}
    assert losses["off"] == pytest.approx(losses["zero"], abs=1e-6)
    assert abs(losses["on"][0] - losses["off"][0]) > 1e-4  # dropout really changes the forward


def test_a_cache_without_the_teachers_query_key_value_trains_an_equal_width_student_the_same(rows: Rows) -> None:
    """At equal width no loss reads the teacher's last-layer q/k/v, so a cache that leaves them out holds 3 tensors
    fewer per example and gives the same steps."""
    teacher, student = tiny_bert(0, layers=4), tiny_bert(1, layers=2)
    layered = dict(teacher_layers=(1, 3), layer_weight=5.0)
    runs, caches = {}, {}
    for qkv in (True, False):
        caches[qkv] = TeacherCache(2**30, qkv=qkv)
        runs[qkv] = distill(copy.deepcopy(student), teacher, rows, collate, steps=6, lr=1e-3, batch_size=4,
                            cache=caches[qkv], **layered)  # fmt: skip
    assert [h["loss"] for h in runs[False]["history"]] == pytest.approx([h["loss"] for h in runs[True]["history"]])
    assert len(next(iter(caches[False]._rows.values()))) == 1 + 3  # last hidden and teacher layers 0-2
    assert len(caches[False]) == len(caches[True]) and caches[False].bytes < caches[True].bytes


def test_a_narrower_student_refuses_a_cache_without_the_teachers_query_key_value(rows: Rows) -> None:
    teacher = tiny_bert(0)
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    narrow = BertModel(config).eval()
    cache = TeacherCache(2**30, qkv=False)
    with pytest.raises(ValueError, match="8 wide and the teacher 16.*query/key/value.*qkv=True"):
        distill(narrow, teacher, rows, collate, steps=2, lr=1e-3, batch_size=4, cache=cache)
    assert len(cache) == 0  # refused before the teacher ran
    trained = distill(narrow, teacher, rows, collate, steps=2, lr=1e-3, batch_size=4)  # its own cache keeps them
    assert "relation" in trained["history"][0]


def test_a_prefill_for_more_steps_serves_every_batch_of_fewer(rows: Rows) -> None:
    """What compress does: the teacher runs for the steps that would fit, timed, then the model distils fewer."""
    teacher, student = tiny_bert(0, layers=4), tiny_bert(1, layers=2)
    layered = dict(teacher_layers=(1, 3), layer_weight=5.0)
    plain = distill(copy.deepcopy(student), teacher, rows, collate, steps=4, lr=1e-3, batch_size=4, **layered)
    cache = TeacherCache(2**30)
    examples, seconds = prefill(teacher, rows, collate, cache, steps=6, batch_size=4, layered=True)
    assert examples == len(cache) > 0 and seconds > 0
    after = distill(copy.deepcopy(student), teacher, rows, collate, steps=4, lr=1e-3, batch_size=4, cache=cache,
                    **layered)  # fmt: skip
    assert after["teacher_examples_computed"] == 0  # the first 4 batches of 6 were all prefilled
    assert [h["loss"] for h in after["history"]] == pytest.approx([h["loss"] for h in plain["history"]], abs=1e-5)
    assert prefill(teacher, rows, collate, cache, steps=6, batch_size=4, layered=True)[0] == 0  # nothing new


def test_the_prefill_batches_examples_of_similar_length(rows: Rows, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shortest first, so a batch pads its rows to little more than their own length."""
    monkeypatch.setattr(distill_module, "PREFILL_BATCH", 4)
    teacher, seen = tiny_bert(0), []
    forward = TeacherForward(teacher, bf16=False, layered=False)

    def recording(inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        seen.append(inputs["attention_mask"].sum(1).tolist())
        return forward(inputs)

    cache = TeacherCache(2**30)
    schedule = [list(range(len(rows)))]
    done, _ = prefill_teacher(cache, recording, rows, collate, schedule)
    assert done == len(rows) == len(cache) and len(seen) == len(rows) // 4
    flat = [n for batch in seen for n in batch]
    assert flat == sorted(len(ex["input_ids"]) for ex in rows.examples)
    padded = sum(len(b) * max(b) for b in seen)
    in_drawn_order = sum(4 * max(len(rows.examples[i]["input_ids"]) for i in range(s, s + 4)) for s in range(0, 24, 4))
    assert padded < in_drawn_order
    forward.close()


def test_a_time_budget_plans_the_steps_again_after_the_warmup_without_changing_a_used_rate(rows: Rows) -> None:
    teacher, student = tiny_bert(0), tiny_bert(1, layers=1)
    common = {"lr": 1e-3, "batch_size": 4, "cache": TeacherCache(2**30)}
    # a first plan of 9 steps (warmup 1); the budget has room for its most, 12: as a plain 12-step run (warmup 1)
    roomy = distill(copy.deepcopy(student), teacher, rows, collate, 9, budget=TimeBudget(1e9, 12), **common)
    plain = distill(copy.deepcopy(student), teacher, rows, collate, 12, **common)
    assert roomy["steps"] == len(roomy["history"]) == 12 and roomy["planned_steps"] == 9
    assert [h["loss"] for h in roomy["history"]] == pytest.approx([h["loss"] for h in plain["history"]], abs=1e-6)
    # no time left after a warmup of 2 (20 planned): one more step, the first of the decay
    spent = distill(copy.deepcopy(student), teacher, rows, collate, 20, budget=TimeBudget(0.0, 30), **common)
    assert spent["steps"] == 3 and spent["planned_steps"] == 20
    # a plan no longer than its warmup has nothing to plan again
    short = distill(copy.deepcopy(student), teacher, rows, collate, 1, budget=TimeBudget(0.0, 30), **common)
    assert short["steps"] == 1
