"""An ENAS-style controller (Zoph & Le 2017; Pham et al. 2018, "Efficient Neural Architecture Search via
Parameter Sharing"): a policy over archs trained with REINFORCE on the fitness of what it proposed.

The policy is factorized: one categorical distribution (a vector of logits) for the depth,
one for the hidden size, and one for the heads and one for the FFN size of every layer
position up to the space's largest depth; an arch of depth d reads the first d layer
positions. It starts uniform, which is what `space.sample` draws. Each `ask` samples from it
with the strategy's own `rng`; an over-budget sample is shrunk into the budget
(`Strategy.repaired`, when `repair` is on), and the log-probability used in the update is
that of the arch actually evaluated, so the controller learns what it got. Each `tell` is
one policy-gradient step (Adam) on the told batch:

    loss = -mean_b[(r_b - baseline) * log p(arch_b)] - entropy_weight * H(policy)

with r the fitness normalised within the run (its quantile among the run's evaluations so
far, or a clipped z-score: a loss measured in any unit gives the same updates) and the
baseline a moving average of the batch-mean reward. The entropy bonus keeps the policy from
collapsing onto the first good arch. The reward statistics are recomputed from the
evaluations, so the state adds only the logits, Adam's moments and the baseline to the base
strategy's; all of it is JSON (float32 values written as Python floats, which read back
exactly), so a resumed search proposes exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from metanas._threads import torch_threads
from metanas.search.base import ORIGIN_POLICY, Costs, Strategy, StrategyEvent
from metanas.search.configs import RLConfig
from metanas.space import ArchConfig, SearchSpace

ZSCORE_CLIP = 3.0  # |normalised reward| bound of `reward_norm: zscore`; an invalid (-inf) evaluation gets -3
DIMENSIONS = ("depth", "hidden", "heads", "ffn")


class FactorizedPolicy(torch.nn.Module):
    """Independent categorical logits per dimension: depth, hidden, and heads and FFN per layer position."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.choices = {
            "depth": space.depth_choices,
            "hidden": space.hidden_choices,
            "heads": space.head_choices,
            "ffn": space.ffn_choices,
        }
        layers = space.max_depth
        self.depth = torch.nn.Parameter(torch.zeros(len(space.depth_choices)))
        self.hidden = torch.nn.Parameter(torch.zeros(len(space.hidden_choices)))
        self.heads = torch.nn.Parameter(torch.zeros(layers, len(space.head_choices)))
        self.ffn = torch.nn.Parameter(torch.zeros(layers, len(space.ffn_choices)))

    def logits(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in DIMENSIONS}

    def probabilities(self) -> dict[str, list[Any]]:
        """Softmax of every distribution as Python floats (a vector, or one per layer position)."""
        with torch.no_grad():
            return {name: torch.softmax(t, dim=-1).tolist() for name, t in self.logits().items()}

    def log_softmax(self) -> dict[str, torch.Tensor]:
        return {name: torch.log_softmax(t, -1) for name, t in self.logits().items()}

    def log_probs(self, archs: Sequence[ArchConfig], log_softmax: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p(arch) of each of `archs`: depth, hidden, and the first `arch.depth` layer positions' heads and FFN.

        One gather per dimension for the whole batch (a few tensor ops, not a few per arch).
        """
        c, layers = self.choices, self.heads.shape[0]
        total = log_softmax["depth"][torch.tensor([c["depth"].index(a.depth) for a in archs])]
        total = total + log_softmax["hidden"][torch.tensor([c["hidden"].index(a.hidden) for a in archs])]
        mask = torch.tensor([[float(i < a.depth) for i in range(layers)] for a in archs])
        for name in ("heads", "ffn"):
            rows = [[c[name].index(v) for v in getattr(a, name)] + [0] * (layers - a.depth) for a in archs]
            table = log_softmax[name].unsqueeze(0).expand(len(archs), -1, -1)
            picked = table.gather(2, torch.tensor(rows).unsqueeze(2)).squeeze(2)
            total = total + (picked * mask).sum(1)
        return total

    @staticmethod
    def entropy(log_softmax: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The sum of every distribution's entropy (nats); the uniform policy has the largest."""
        return -sum((logp.exp() * logp).sum() for logp in log_softmax.values())

    def max_entropy(self) -> float:
        """The uniform policy's entropy: what `entropy` is measured against."""
        layers = self.heads.shape[0]
        c = self.choices
        return (
            math.log(len(c["depth"])) + math.log(len(c["hidden"])) + layers * math.log(len(c["heads"]) * len(c["ffn"]))
        )


def _tensor_lists(state: Mapping[int, Mapping[str, torch.Tensor]]) -> list[list[Any]]:
    """Adam's per-parameter state as JSON: [[index, {name: nested list}], ...]."""
    return [[int(i), {k: v.tolist() for k, v in entry.items()}] for i, entry in sorted(state.items())]


class RLController(Strategy):
    """REINFORCE over a factorized categorical policy with a moving-average baseline and an entropy bonus."""

    name = "rl"
    Config = RLConfig
    config: RLConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = FactorizedPolicy(self.space)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr)
        self.baseline: float | None = None  # moving average of the batch-mean normalised reward
        self.updates = 0
        self._last_update: dict[str, float] = {}
        self._cumulative: dict[str, list[list[float]]] | None = None  # the policy's CDFs until the next update

    def _schedule_over(self) -> bool:
        return len(self.evaluated) >= self.config.num_samples

    # ----- proposing ----------------------------------------------------------
    def _draw(self, cumulative: Sequence[float], choices: Sequence[int]) -> int:
        """A choice by inverse CDF with one `rng.random()` (what `rng.choices` does, without re-summing)."""
        return choices[bisect.bisect(cumulative, self.rng.random() * cumulative[-1], 0, len(cumulative) - 1)]

    def sample_policy(self) -> ArchConfig:
        """One arch drawn from the policy with `self.rng` (not yet repaired)."""
        if self._cumulative is None:
            with torch_threads(1):
                probs = self.policy.probabilities()
            self._cumulative = {
                name: [list(itertools.accumulate(row)) for row in (p if name in ("heads", "ffn") else [p])]
                for name, p in probs.items()
            }
        cum, c = self._cumulative, self.policy.choices
        depth = self._draw(cum["depth"][0], c["depth"])
        hidden = self._draw(cum["hidden"][0], c["hidden"])
        heads = tuple(self._draw(cum["heads"][i], c["heads"]) for i in range(depth))
        ffn = tuple(self._draw(cum["ffn"][i], c["ffn"]) for i in range(depth))
        return ArchConfig(depth, hidden, heads, ffn)

    def candidate(self) -> ArchConfig:
        """A policy sample, shrunk into the budget when `repair` is on (else `_propose` rejects and redraws it)."""
        arch = self.sample_policy()
        return self.repaired(arch) if self.config.repair else arch

    def ask(self, n: int | None = None) -> list[ArchConfig]:
        """Up to `n` (default `batch_size`) new feasible policy samples, never more than `num_samples` in all.

        A sample that cannot be made new and feasible within `max_tries` draws (a policy
        concentrated on archs already evaluated) is replaced by a random feasible arch.
        """
        remaining = self.config.num_samples - len(self.evaluated) - len(self._pending)
        k = min(n or self.config.batch_size, remaining)
        if k <= 0:
            return []
        out = []
        for _ in range(k):
            arch = self._propose(self.candidate, ORIGIN_POLICY)
            if arch is not None:
                out.append(arch)
        out.extend(self._random_batch(k - len(out)))
        return self._finish_ask(out)

    # ----- learning -----------------------------------------------------------
    def normalised_rewards(self, fitnesses: Sequence[float]) -> list[float]:
        """`fitnesses` made scale-free against every evaluation of the run so far (`reward_norm`)."""
        values = [e.fitness for e in self.evaluated.values()]
        if self.config.reward_norm == "rank":
            ordered = sorted(values)  # -inf (an invalid evaluation) ranks last
            n = 2 * len(ordered)
            return [(bisect.bisect_left(ordered, f) + bisect.bisect_right(ordered, f)) / n for f in fitnesses]
        finite = [v for v in values if math.isfinite(v)]
        std = statistics.pstdev(finite) if len(finite) > 1 else 0.0
        mean = statistics.fmean(finite) if finite else 0.0
        out = []
        for f in fitnesses:
            z = (f - mean) / std if math.isfinite(f) and std > 0 else (0.0 if math.isfinite(f) else -ZSCORE_CLIP)
            out.append(max(-ZSCORE_CLIP, min(ZSCORE_CLIP, z)))
        return out

    def tell(
        self,
        archs: Sequence[ArchConfig],
        fitnesses: Sequence[float],
        costs: Sequence[Costs] | None = None,
    ) -> None:
        """Record the scores, then one policy-gradient step on this batch."""
        for arch in archs:
            self.space.validate(arch)
        super().tell(archs, fitnesses, costs)
        if archs:
            with torch_threads(1):  # a few tiny tensor ops: one thread is many times faster on a shared CPU
                self.update(archs, self.normalised_rewards([self.evaluated[a].fitness for a in archs]))

    def update(self, archs: Sequence[ArchConfig], rewards: Sequence[float]) -> None:
        """One REINFORCE step: advantage = reward - moving-average baseline, plus the entropy bonus."""
        batch_mean = statistics.fmean(rewards)
        if self.baseline is None:
            self.baseline = batch_mean
        advantages = torch.tensor([r - self.baseline for r in rewards])
        self.baseline = self.config.baseline_decay * self.baseline + (1.0 - self.config.baseline_decay) * batch_mean
        log_softmax = self.policy.log_softmax()
        log_probs = self.policy.log_probs(archs, log_softmax)
        entropy = self.policy.entropy(log_softmax)
        loss = -(advantages * log_probs).mean() - self.config.entropy_weight * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        self._cumulative = None
        self._last_update = {
            "generation": float(self.generation - 1),
            "entropy": self.entropy(),
            "baseline": self.baseline,
            "mean_reward": batch_mean,
        }

    def entropy(self) -> float:
        """The policy's entropy now (nats, summed over its distributions)."""
        with torch.no_grad():
            return float(self.policy.entropy(self.policy.log_softmax()))

    def most_likely(self) -> ArchConfig:
        """The policy's mode (each dimension's most probable choice; the first on a tie), before any repair."""
        p, c = self.policy.probabilities(), self.policy.choices

        def best(probs: Sequence[float], choices: Sequence[int]) -> int:
            return choices[max(range(len(probs)), key=probs.__getitem__)]

        depth = best(p["depth"], c["depth"])
        heads = tuple(best(p["heads"][i], c["heads"]) for i in range(depth))
        return ArchConfig(
            depth, best(p["hidden"], c["hidden"]), heads, tuple(best(p["ffn"][i], c["ffn"]) for i in range(depth))
        )

    def extra_state(self) -> dict[str, Any]:
        """Where the policy stands (written into `search.json`): its entropy, against uniform's, and its mode."""
        entropy = self.entropy()
        return {
            "rl_policy": {
                "entropy": entropy,
                "entropy_share": entropy / self.policy.max_entropy(),
                "mode": self.most_likely().to_dict(),
                "updates": self.updates,
            }
        }

    def events(self, generation: int) -> list[StrategyEvent]:
        """The policy's entropy and baseline after the update on `generation`'s results."""
        last = self._last_update
        if not last or int(last["generation"]) != generation:
            return []
        share = last["entropy"] / self.policy.max_entropy()
        message = (
            f"rl gen {generation}: policy entropy {last['entropy']:.3f} nats ({share:.0%} of uniform), "
            f"baseline {last['baseline']:.3f}"
        )
        metrics = {"search/rl_entropy": last["entropy"], "search/rl_baseline": last["baseline"]}
        return [StrategyEvent(message, metrics)]

    # ----- state --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base state plus the logits, Adam's moments and step counts, the baseline and the update count."""
        return {
            **super().state_dict(),
            "policy": {name: t.detach().tolist() for name, t in self.policy.logits().items()},
            "adam": _tensor_lists(self.optimizer.state_dict()["state"]),
            "baseline": self.baseline,
            "updates": self.updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for name, t in self.policy.logits().items():
                saved = torch.tensor(state["policy"][name], dtype=t.dtype)
                if saved.shape != t.shape:
                    raise ValueError(
                        f"rl: saved {name} logits have shape {list(saved.shape)}, expected {list(t.shape)}"
                    )
                t.copy_(saved)
        optimizer_state = self.optimizer.state_dict()
        optimizer_state["state"] = {
            int(i): {k: torch.tensor(v, dtype=torch.float32) for k, v in entry.items()} for i, entry in state["adam"]
        }
        self.optimizer.load_state_dict(optimizer_state)
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.updates = int(state["updates"])
        self._cumulative = None
        self._last_update = {}
