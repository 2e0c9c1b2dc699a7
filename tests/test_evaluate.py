"""Tests of the subnet evaluator on a tiny in-process supernet (offline, seeded)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from tiny_models import tiny_teacher

from metanas.evaluate import Evaluator
from metanas.objectives import build_objective
from metanas.space import ArchConfig
from metanas.supernet.model import ElasticBert


def random_batches(n: int, seed: int = 0, size: int = 8, seq: int = 16) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 120, (size, seq), generator=g)
        mask = torch.ones_like(ids)
        mask[0, seq // 2 :] = 0  # one padded row, so masking is exercised
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    return out


@pytest.fixture(scope="module")
def supernet() -> ElasticBert:
    return ElasticBert.from_teacher(tiny_teacher("bert", initializer_range=0.2))


def count_forwards(sn: ElasticBert) -> list[int]:
    """A counter bumped by every forward pass of `sn`."""
    calls = [0]
    sn.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_evaluator_caches_and_is_deterministic() -> None:
    sn = ElasticBert.from_teacher(tiny_teacher("bert", initializer_range=0.2))
    objective = build_objective("kd", sn)
    batches = random_batches(3)
    ev = Evaluator(sn, objective, batches, max_batches=2)
    assert len(ev.batches) == 2 and ev.metric_name == "kd_loss" and not ev.higher_is_better
    forwards = count_forwards(sn)
    arch = sn.space.uniform(2, 24, 2, 32)

    first = ev.metric(arch)
    assert forwards[0] == 2  # one forward per validation batch (the teacher is a separate module)
    assert ev.fitness(arch) == -first and ev.metric(arch) == first
    assert forwards[0] == 2 and ev.num_evaluations == 1 and ev.cache_hits == 2
    # The fixed subset is the first `max_batches` batches, scored exactly as the objective does.
    assert first == objective.evaluate(sn, arch, batches[:2])
    assert first > 1e-3 and ev.metric(sn.space.largest()) < 1e-6  # the largest subnet is the teacher

    # A fresh evaluator on the same supernet reproduces every value bit for bit.
    again = Evaluator(sn, objective, batches, max_batches=2)
    for a in (arch, sn.space.smallest(), sn.space.sample(random.Random(3))):
        assert again.metric(a) == ev.metric(a)
    assert ev.num_evaluations == 4 and ev.eval_seconds > 0 and ev.evals_per_minute > 0
    assert ev.cache_hits == 3


def test_evaluator_signs_and_errors(supernet: ElasticBert) -> None:
    g = torch.Generator().manual_seed(1)
    batches = random_batches(2, seed=1)
    for b in batches:
        b["labels"] = torch.randint(0, 2, (b["input_ids"].shape[0],), generator=g)
    task = build_objective("task", supernet, num_labels=2)
    ev = Evaluator(supernet, task, batches)
    arch = supernet.space.smallest()
    acc = ev.metric(arch)
    assert ev.higher_is_better and 0.0 <= acc <= 1.0 and ev.fitness(arch) == acc
    assert ev.to_fitness(math.nan) == -math.inf  # a diverged subnet ranks last
    kd = Evaluator(supernet, build_objective("kd", supernet), batches)
    assert kd.to_fitness(0.25) == -0.25 and kd.evals_per_minute == 0.0
    with pytest.raises(ValueError, match="at least one validation batch"):
        Evaluator(supernet, task, [])
    with pytest.raises(ValueError, match="max_batches"):
        Evaluator(supernet, task, batches, max_batches=0)
    with pytest.raises(ValueError, match="outside the space"):
        ev.metric(ArchConfig(1, 7, (1,), (16,)))
