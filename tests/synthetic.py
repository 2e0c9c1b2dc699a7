"""Synthetic search tasks shared by the search and warm-start tests.

Scores come from a given function of the arch, so strategies and the runner can be
tested in milliseconds; `trained_tiny_evaluator` is the one real (tiny) supernet.
Nothing here imports transformers at import time: the kill-and-resume worker of
`test_search.py` imports this module and should start fast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch

from metanas.evaluate import Evaluator
from metanas.search import Strategy
from metanas.space import ArchConfig, SearchSpace

# all-MiniLM-L6-v2's config (the space the demo searches), without importing transformers.
MINILM = SimpleNamespace(
    model_type="bert",
    vocab_size=30522,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=1536,
    max_position_embeddings=512,
    type_vocab_size=2,
)


def minilm_space() -> SearchSpace:
    return SearchSpace.from_teacher_config(MINILM)


def synthetic_loss(arch: ArchConfig) -> float:
    """Lower for bigger subnets with diminishing returns, plus per-layer structure: heads pay
    most in early layers, FFN width in late ones, so the best use of a budget is not uniform."""
    gain = 3.0 * math.log(arch.hidden)
    for i, (h, f) in enumerate(zip(arch.heads, arch.ffn)):
        gain += (1.0 - 0.1 * i) * math.log(h) + (0.5 + 0.1 * i) * math.log(f / 96)
    return 60.0 - gain


class SyntheticObjective:
    """Stands in for an `Objective`: `loss(arch)`, ignoring supernet and batches.

    `hang_at`: the n-th evaluation blocks for 600 s (the kill-and-resume worker is killed there).
    `interrupt_at`: the n-th evaluation raises KeyboardInterrupt (Ctrl-C in the middle of a generation).
    """

    higher_is_better = False

    def __init__(
        self,
        loss: Callable[[ArchConfig], float],
        metric_name: str = "synthetic_loss",
        hang_at: int = 0,
        interrupt_at: int = 0,
    ) -> None:
        self.loss = loss
        self.metric_name = metric_name
        self.calls = 0
        self.hang_at = hang_at
        self.interrupt_at = interrupt_at

    def evaluate(self, sn: Any, arch: ArchConfig, batches: list[dict]) -> float:
        self.calls += 1
        if self.calls == self.hang_at:
            time.sleep(600)
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.loss(arch)


def synthetic_evaluator(
    loss: Callable[[ArchConfig], float], metric_name: str = "synthetic_loss", hang_at: int = 0, interrupt_at: int = 0
) -> Evaluator:
    """An `Evaluator` over no supernet and one empty batch, scoring archs by `loss` (lower is better)."""
    return Evaluator(None, SyntheticObjective(loss, metric_name, hang_at, interrupt_at), [{}])


def drive(strategy: Strategy, fitness: Callable[[ArchConfig], float], costs: Any = None) -> list[ArchConfig]:
    """Run a strategy to the end (ask, score, tell); return every arch it asked for, in order."""
    asked: list[ArchConfig] = []
    while not strategy.done:
        archs = strategy.ask()
        if not archs:
            break
        asked.extend(archs)
        strategy.tell(archs, [fitness(a) for a in archs], None if costs is None else [costs(a) for a in archs])
    return asked


def token_batch(seed: int, size: int = 16, seq: int = 24) -> dict[str, torch.Tensor]:
    """Random ids in [5, 120) of the tiny teacher's vocabulary, no padding, one segment."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (size, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def trained_tiny_evaluator(steps: int) -> Evaluator:
    """A tiny BERT supernet after `steps` sandwich steps of KD (batch `token_batch(step)` at each step), scored
    on one fixed validation batch (`token_batch(1000)`).

    `tiny_teacher` seeds torch's global RNG itself, so the result depends on `steps` only.
    """
    from tiny_models import tiny_teacher

    from metanas.objectives import build_objective
    from metanas.supernet.model import ElasticBert
    from metanas.training.schedule import step_archs

    sn = ElasticBert.from_teacher(tiny_teacher("bert", initializer_range=0.2))
    objective = build_objective("kd", sn)
    optimizer = torch.optim.AdamW([*sn.parameters(), *objective.parameters()], lr=1e-3)
    sn.train()
    for step in range(steps):
        batch = token_batch(step)
        context = objective.prepare(sn, batch)
        for _, arch in step_archs(sn.space, "sandwich", 0, step, 2):
            objective.loss(sn, batch, arch, context)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
    return Evaluator(sn.eval(), objective, [token_batch(1000)])
