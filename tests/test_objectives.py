"""Tests of the training objectives on tiny in-process supernets (offline, seeded)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import BertConfig, BertModel

from metanas.objectives import (
    OBJECTIVES,
    ContrastiveObjective,
    KDObjective,
    MLMObjective,
    TaskObjective,
    build_objective,
    make_teacher,
    perplexity,
    relation_loss,
    resolve_relation_heads,
)
from metanas.objectives.contrastive import delete_tokens
from metanas.space import ArchConfig
from metanas.supernet.model import ElasticBert

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = [PAD, CLS, SEP, MASK]
VOCAB = 40


def tiny_supernet(seed: int = 0, dropout: float = 0.1) -> ElasticBert:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return ElasticBert.from_teacher(BertModel(config))


def make_batch(sentences: list[list[int]], labels: list[int] | None = None) -> dict[str, torch.Tensor]:
    """[CLS] tokens [SEP], right-padded with PAD, as the collator does."""
    seqs = [[CLS, *s, SEP] for s in sentences]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    if labels is not None:
        batch["labels"] = torch.tensor(labels)
    return batch


def random_batch(rng: random.Random, n: int, min_len: int = 3, max_len: int = 12) -> dict[str, torch.Tensor]:
    lengths = [rng.randint(min_len, max_len) for _ in range(n)]
    return make_batch([[rng.randrange(4, VOCAB) for _ in range(k)] for k in lengths])


def mid_arch(sn: ElasticBert, heads: int = 2, hidden: int = 16) -> ArchConfig:
    return sn.space.uniform(2, hidden, heads, 32)


# ----- KD ------------------------------------------------------------------------


def test_kd_zero_for_teacher_copy_and_positive_for_smaller_arch() -> None:
    sn = tiny_supernet().eval()
    obj = build_objective("kd", sn)
    assert isinstance(obj, KDObjective)
    batch = random_batch(random.Random(0), 6)
    ctx = obj.prepare(sn, batch)
    loss, parts = obj.loss(sn, batch, sn.space.largest(), ctx)
    assert loss.item() < 1e-6 and parts["relation"] < 1e-6
    small, _ = obj.loss(sn, batch, sn.space.smallest(), ctx)
    assert small.item() > 1e-5  # small: relations of a random-init BERT are near uniform
    # The teacher is frozen and neither optimized nor checkpointed with the objective.
    assert list(obj.parameters()) == [] and list(obj.state_dict()) == []
    assert not any(p.requires_grad for p in obj.teacher.parameters())
    # Validation metric: same loss, deterministic, and modes restored.
    sn.train()
    obj.train()
    val = [batch, random_batch(random.Random(1), 4)]
    assert obj.evaluate(sn, sn.space.largest(), val) < 1e-6
    v1 = obj.evaluate(sn, sn.space.smallest(), val)
    assert v1 > 1e-5 and v1 == obj.evaluate(sn, sn.space.smallest(), val)
    assert sn.training and obj.training and not obj.teacher.training
    assert obj.metric_name == "kd_loss" and not obj.higher_is_better


def test_relation_loss_other_width_reaches_student_qkv() -> None:
    sn = tiny_supernet(dropout=0.0)
    obj = KDObjective(make_teacher(sn))
    assert obj.relation_heads == 4
    batch = random_batch(random.Random(2), 5)
    arch = mid_arch(sn, heads=2)  # attention width 16 vs the teacher's 32
    sn.zero_grad()
    loss, _ = obj.loss(sn, batch, arch, obj.prepare(sn, batch))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    attn = sn.encoder.layer[arch.depth - 1].attention.self
    for proj in (attn.query, attn.key, attn.value):
        g = proj.weight.grad
        assert g is not None and g[:16, :16].abs().sum() > 0
        assert g[16:].abs().sum() == 0  # inactive heads get nothing
    assert all(p.grad is None for p in obj.teacher.parameters())


def test_relation_heads_fallback_rule() -> None:
    assert resolve_relation_heads(24, 32, 4) == 4
    assert resolve_relation_heads(6, 32, 4) == 2  # gcd 2
    assert resolve_relation_heads(320, 768, 12) == 8  # gcd 64 -> largest divisor <= 12
    assert resolve_relation_heads(7, 32, 4) == 1
    torch.manual_seed(0)
    b, s = 3, 7
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, 4:] = 0
    student = [torch.randn(b, s, 6, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(b, s, 32) for _ in range(3)]
    loss = relation_loss(student, teacher, mask, 4)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in student)
    # Pad positions neither act as queries nor as keys.
    assert student[0].grad[0, 4:].abs().sum() == 0
    same = relation_loss(teacher, teacher, mask, 4)
    assert same.item() < 1e-6


def test_kd_hidden_loss_trains_projection() -> None:
    sn = tiny_supernet(dropout=0.0)
    obj = build_objective("kd", sn, hidden_weight=1.0)
    assert [n for n, _ in obj.named_parameters()] == ["projection.weight", "projection.bias"]
    batch = random_batch(random.Random(3), 4)
    ctx = obj.prepare(sn, batch)
    sn.eval()
    loss, parts = obj.loss(sn, batch, sn.space.largest(), ctx)
    assert parts["hidden"] < 1e-10  # identity-initialized projection
    loss, parts = obj.loss(sn, batch, mid_arch(sn, hidden=16), ctx)
    assert parts["hidden"] > 0 and loss.item() == pytest.approx(parts["relation"] + parts["hidden"], rel=1e-5)
    loss.backward()
    g = obj.projection.weight.grad
    assert g is not None and g[:, :16].abs().sum() > 0 and g[:, 16:].abs().sum() == 0


# ----- MLM -----------------------------------------------------------------------


def mlm_objective(sn: ElasticBert, **kw: object) -> MLMObjective:
    return MLMObjective(sn, mask_token_id=MASK, special_token_ids=SPECIALS, **kw)


def test_mlm_masking_rates_and_specials() -> None:
    sn = tiny_supernet()
    obj = mlm_objective(sn, seed=1)
    batch = random_batch(random.Random(4), 512, 20, 40)
    masked, labels = obj.mask_tokens(batch)
    ids = batch["input_ids"]
    eligible = batch["attention_mask"].bool() & (ids >= 4)
    sel = labels != -100
    assert not (sel & ~eligible).any()  # CLS/SEP/PAD never masked
    assert (masked[~sel] == ids[~sel]).all()
    assert (labels[sel] == ids[sel]).all()
    rate = sel.sum().item() / eligible.sum().item()
    assert abs(rate - 0.15) < 0.01
    n = sel.sum().item()
    as_mask = (masked[sel] == MASK).sum().item() / n
    replaced = ((masked[sel] != MASK) & (masked[sel] != ids[sel])).sum().item() / n
    kept = (masked[sel] == ids[sel]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.02
    assert abs(replaced - 0.1 * 35 / 36) < 0.015  # random draws may hit the original token
    assert abs(kept - (0.1 + 0.1 / 36)) < 0.015
    assert (masked[sel] >= 4).logical_or(masked[sel] == MASK).all()  # random tokens are never special


def test_mlm_masking_is_reproducible_and_resumable() -> None:
    sn = tiny_supernet()
    batch = random_batch(random.Random(5), 16)
    a, b = mlm_objective(sn, seed=7), mlm_objective(sn, seed=7)
    first = a.mask_tokens(batch)
    assert all(torch.equal(x, y) for x, y in zip(first, b.mask_tokens(batch), strict=True))
    assert not torch.equal(first[1], a.mask_tokens(batch)[1])  # the training stream advances
    # Exact resume through the state dict (the RNG rides along as extra state).
    state = a.state_dict()
    expected = a.mask_tokens(batch)
    c = mlm_objective(sn, seed=123)
    c.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(expected, c.mask_tokens(batch), strict=True))
    c.set_rng_state(a.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(a.mask_tokens(batch), c.mask_tokens(batch), strict=True))
    # Evaluation masks are the same on every call and do not touch the training stream.
    val = [batch]
    rng = a.get_rng_state()
    sn.train()
    v1 = a.evaluate(sn, sn.space.smallest(), val)
    assert v1 == a.evaluate(sn, sn.space.smallest(), val)
    assert torch.equal(rng, a.get_rng_state()) and sn.training and a.training
    assert perplexity(v1) == pytest.approx(math.exp(v1))


def template_corpus(rng: random.Random, n: int) -> list[list[int]]:
    """Sentences from 6 fixed templates with one random slot: context predicts the rest."""
    trng = random.Random(99)
    templates = [[trng.randrange(4, VOCAB) for _ in range(8)] for _ in range(6)]
    out = []
    for _ in range(n):
        s = list(rng.choice(templates))
        s[rng.randrange(8)] = rng.randrange(4, VOCAB)
        out.append(s)
    return out


def test_mlm_training_beats_unigram_baseline() -> None:
    sn = tiny_supernet(seed=1, dropout=0.0)
    obj = mlm_objective(sn, seed=0)
    rng = random.Random(6)
    train = [make_batch(template_corpus(rng, 32)) for _ in range(20)]
    val = [make_batch(template_corpus(rng, 64)) for _ in range(2)]
    arch = sn.space.largest()
    before = obj.evaluate(sn, arch, val)
    baseline = obj.unigram_baseline_loss(train, val)
    assert 3.0 < baseline < math.log(VOCAB - 4) + 0.1
    opt = torch.optim.Adam([*sn.parameters(), *obj.parameters()], lr=3e-3)
    sn.train()
    obj.train()
    for step in range(160):
        batch = train[step % len(train)]
        loss, parts = obj.loss(sn, batch, arch, obj.prepare(sn, batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = obj.evaluate(sn, arch, val)
    assert after < baseline - 0.5 < before
    assert obj.metric_name == "mlm_loss" and not obj.higher_is_better


def test_mlm_head_follows_active_width() -> None:
    sn = tiny_supernet()
    obj = mlm_objective(sn)
    batch = random_batch(random.Random(7), 4)
    arch = mid_arch(sn, hidden=16)
    loss, parts = obj.loss(sn, batch, arch, obj.prepare(sn, batch))
    assert torch.isfinite(loss) and parts["masked_tokens"] > 0
    loss.backward()
    emb = sn.embeddings.word_embeddings.weight.grad
    assert emb[:, :16].abs().sum() > 0 and emb[:, 16:].abs().sum() == 0  # decoder tied, sliced
    assert obj.bias.grad is not None and obj.dense.weight.grad[16:].abs().sum() == 0


# ----- contrastive ---------------------------------------------------------------


def test_contrastive_views_loss_and_training() -> None:
    sn = tiny_supernet(seed=2)
    obj = ContrastiveObjective()
    batch = random_batch(random.Random(8), 8)
    arch = sn.space.largest()
    sn.train()
    z1, z2 = obj.views(sn, batch, arch)
    assert z1.shape == z2.shape == (8, 32)
    assert not torch.allclose(z1, z2)  # different dropout masks
    with torch.no_grad():
        e1, e2 = obj.views(sn.eval(), batch, arch)
    assert torch.allclose(e1, e2)
    sn.train()
    opt = torch.optim.Adam(sn.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss, parts = obj.loss(sn, batch, arch, obj.prepare(sn, batch))
        assert torch.isfinite(loss) and parts["contrastive"] == pytest.approx(loss.item())
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(losses[-3:]) / 3 < losses[0]
    # Deterministic validation with the deletion view; modes restored.
    val = [batch, random_batch(random.Random(9), 5)]
    v = obj.evaluate(sn, sn.space.smallest(), val)
    assert math.isfinite(v) and v == obj.evaluate(sn, sn.space.smallest(), val) and sn.training
    assert ContrastiveObjective(pooling="cls").evaluate(sn, arch, val) > 0


def test_token_deletion_view() -> None:
    batch = random_batch(random.Random(10), 200, 10, 20)
    out = delete_tokens(batch, 0.1, torch.Generator().manual_seed(0), PAD)
    again = delete_tokens(batch, 0.1, torch.Generator().manual_seed(0), PAD)
    assert torch.equal(out["input_ids"], again["input_ids"])
    n_in, n_out = batch["attention_mask"].sum(1), out["attention_mask"].sum(1)
    assert (n_out <= n_in).all() and (n_out >= 2).all()
    frac = 1 - n_out.sum().item() / n_in.sum().item()
    content = (n_in - 2).sum().item() / n_in.sum().item()
    assert abs(frac - 0.1 * content) < 0.02
    ids, m = out["input_ids"], out["attention_mask"].bool()
    assert (ids[:, 0] == CLS).all() and (ids.gather(1, (n_out - 1)[:, None]) == SEP).all()
    assert (ids[~m] == PAD).all() and (ids[m] != PAD).all()
    for i in range(5):  # survivors keep their order: a subsequence of the original
        src = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        it = iter(src)
        assert all(t in it for t in ids[i][m[i]].tolist())


# ----- task ----------------------------------------------------------------------


def separable(rng: random.Random, n: int) -> dict[str, torch.Tensor]:
    """Label 0 sentences use tokens 4..21, label 1 sentences 22..39."""
    labels = [rng.randrange(2) for _ in range(n)]
    sents = [
        [rng.randrange(4, 22) if y == 0 else rng.randrange(22, VOCAB) for _ in range(rng.randint(3, 9))] for y in labels
    ]
    return make_batch(sents, labels)


def test_task_accuracy_rises_above_chance() -> None:
    sn = tiny_supernet(seed=3)
    obj = build_objective("task", sn, num_labels=2)
    assert isinstance(obj, TaskObjective) and obj.needs_labels and obj.higher_is_better
    rng = random.Random(11)
    train = [separable(rng, 32) for _ in range(5)]
    val = [separable(rng, 100)]
    arch = mid_arch(sn, heads=2, hidden=24)
    opt = torch.optim.Adam([*sn.parameters(), *obj.parameters()], lr=1e-3)
    sn.train()
    obj.train()
    for step in range(25):
        loss, parts = obj.loss(sn, train[step % 5], arch, {})
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = obj.evaluate(sn, arch, val)
    assert acc > 0.85 and sn.training and obj.training


def test_task_label_errors() -> None:
    sn = tiny_supernet()
    obj = TaskObjective(sn, 3)
    batch = random_batch(random.Random(12), 4)
    with pytest.raises(ValueError, match="task objective needs labels: set data.label_column"):
        obj.loss(sn, batch, sn.space.largest(), {})
    with pytest.raises(ValueError, match="task objective needs labels"):
        obj.evaluate(sn, sn.space.largest(), [batch])
    batch["labels"] = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        obj.loss(sn, batch, sn.space.largest(), {})


# ----- build_objective -------------------------------------------------------------


def test_build_objective_errors_and_kinds() -> None:
    sn = tiny_supernet()
    assert OBJECTIVES == ("kd", "mlm", "contrastive", "task")
    with pytest.raises(ValueError, match="unknown objective 'distill'.*kd, mlm, contrastive, task"):
        build_objective("distill", sn)
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'mask_rate'.*allowed options: mask_prob"):
        build_objective("mlm", sn, mask_token_id=MASK, mask_rate=0.2)
    with pytest.raises(ValueError, match="'task' needs num_labels"):
        build_objective("task", sn)
    with pytest.raises(ValueError, match="needs mask_token_id"):
        build_objective("mlm", sn)
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_objective("contrastive", sn, pooling="max")
    mlm = build_objective("mlm", sn, mask_token_id=MASK, special_token_ids=SPECIALS, seed=3, mask_prob=0.3)
    assert isinstance(mlm, MLMObjective) and mlm.mask_prob == 0.3 and mlm.seed == 3
    assert mlm.special_token_ids == SPECIALS
    con = build_objective("contrastive", sn, temperature=0.1, pooling="cls")
    assert isinstance(con, ContrastiveObjective) and con.temperature == 0.1
    teacher = make_teacher(sn)
    kd = build_objective("kd", sn, teacher=teacher, relation_heads=2)
    assert kd.teacher is teacher and kd.relation_heads == 2
    kd_default = build_objective("kd", sn)
    assert kd_default.teacher is not sn and kd_default.relation_heads == 4


def test_objectives_on_electra_layout() -> None:
    """Fixed-width embeddings (decoder untied from the elastic width) and no pooler."""
    from transformers import ElectraConfig, ElectraModel

    torch.manual_seed(0)
    cfg = ElectraConfig(
        vocab_size=VOCAB,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    sn = ElasticBert.from_teacher(ElectraModel(cfg))
    assert sn.space.embedding_size == 16 and not sn.space.has_pooler
    batch = separable(random.Random(13), 6)
    arch = sn.space.smallest()
    kwargs = {"mlm": {"mask_token_id": MASK, "special_token_ids": SPECIALS}, "task": {"num_labels": 2}}
    for name in OBJECTIVES:
        obj = build_objective(name, sn, **kwargs.get(name, {}))
        loss, _ = obj.loss(sn, batch, arch, obj.prepare(sn, batch))
        loss.backward()
        assert torch.isfinite(loss) and math.isfinite(obj.evaluate(sn, arch, [batch]))
