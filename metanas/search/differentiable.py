"""Differentiable search: gradient descent on architecture logits over the trained supernet itself.

A DARTS/FBNet-style relaxation behind the ask/tell interface (the machinery is in
`metanas.search.relaxed`). The supernet's weights stay frozen (no single-stage training of
weights here): each `ask` is one round of `steps_per_round` relaxation steps, cycling through the
evaluator's fitness batches, on two terms:

    the objective's loss of a straight-through Gumbel sample of the arch, and
    the penalty  sum over penalised costs of relu(E[cost] / (cost_target * limit) - 1)

where E[cost] is the exact expected cost of the relaxed distribution, which drives it into the
budget. Each term's gradient is normalised by its own Adam moments and the step is
arch_lr * (loss direction + cost_weight * penalty direction): the balance does not depend on the
loss's unit, and a strong push into the budget at the start (the uniform distribution is often over
it) does not leave the loss's gradient scaled down afterwards. A relaxed optimum can rank archs
differently from their real fitness (collapse, rank disorder), so the temperature is annealed and
every round ends by proposing the `top_k` most probable distinct archs (the mode first), each
repaired into the budget, for the runner to score with inherited weights: the best by real fitness
wins, as for every strategy.

The search's own cost is kept apart from the runner's evaluations: the seconds spent relaxing and
the relaxation's forward+backward passes, also in equivalent evaluations (passes / batches per
evaluation), are in `extra_state()` and so in `search.json`. The state (logits, Adam moments, the
torch generator, the step, the baselines) is JSON, so a resumed search proposes exactly what the
uninterrupted one would have.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from metanas.cost.latency_predictor import LatencyPredictor
from metanas.search.base import ORIGIN_RELAXED, Strategy, StrategyEvent
from metanas.search.configs import DifferentiableConfig
from metanas.search.relaxed import ArchLogits, CostTerms, frozen_eval, gated, generator_from_json, generator_to_json
from metanas.space import ArchConfig, SearchSpace

if TYPE_CHECKING:
    from metanas.cost.budget import Budget
    from metanas.cost.model import CostModel
    from metanas.evaluate import Evaluator

BASELINE_DECAY = 0.9  # of the per-batch moving-average loss the depth/hidden score-function term subtracts
COST_KEYS = {
    "params": "params",
    "non_embedding_params": "non_embedding_params",
    "flops": "flops",
    "latency": "latency_ms",
}
CONTEXT_SEED_OFFSET = 7919  # per-batch seeds of an objective's own RNG while its context is prepared


def _latency_is_linear(cost_model: CostModel) -> bool:
    """Whether the cost model's latency comes from a (linear, cheap) LatencyPredictor, not a measurement."""
    source = getattr(cost_model, "_latency", None)
    return isinstance(getattr(source, "__self__", source), LatencyPredictor)


class DifferentiableSearch(Strategy):
    """Relaxed architecture logits trained on the supernet; `top_k` discrete proposals per round."""

    name = "differentiable"
    Config = DifferentiableConfig
    config: DifferentiableConfig

    def __init__(self, space: SearchSpace, *args: Any, **kwargs: Any) -> None:
        super().__init__(space, *args, **kwargs)
        self.relax = ArchLogits(space)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.step = 0  # relaxation steps done (the temperature schedule's clock)
        self.baselines: dict[int, float] = {}  # batch index -> moving-average loss
        self.relax_seconds = 0.0
        self.round_seconds: list[float] = []
        self.skipped_steps = 0  # steps whose loss was not finite (no update)
        self._evaluator: Evaluator | None = None
        self._penalties: list[tuple[CostTerms, float]] = []
        self._contexts: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._round_event: tuple[int, StrategyEvent] | None = None

    # ----- the runner's hook -------------------------------------------------
    @property
    def wants_evaluator(self) -> bool:
        return True

    def attach_evaluator(self, evaluator: Evaluator, cost_model: CostModel, budget: Budget) -> None:
        """Keep the supernet, objective and batches, and read the penalised costs' per-layer terms off the cost
        model (`budget` is made absolute if it is relative)."""
        sn = getattr(evaluator, "sn", None)
        if sn is None or not hasattr(sn, "encoder") or not hasattr(sn, "space"):
            raise ValueError(
                "differentiable: the evaluator holds no ElasticBert supernet (evaluator.sn); the differentiable "
                "strategy optimises on the supernet itself and cannot search a fitness table"
            )
        if sn.space.signature() != self.space.signature():
            raise ValueError("differentiable: the evaluator's supernet is over another search space than the search")
        limits = cost_model.check_feasible(budget).limits()
        if self.config.cost == "auto":
            keys = list(limits)
        else:
            keys = [COST_KEYS[self.config.cost]]
            if keys[0] not in limits:
                limited = ", ".join(limits) or "nothing"
                raise ValueError(
                    f"differentiable: cost={self.config.cost!r} but the budget does not limit {keys[0]} (it limits "
                    f"{limited}); set strategy option cost to 'auto' or to a cost the budget limits"
                )
        if "latency_ms" in keys and not _latency_is_linear(cost_model):
            raise ValueError(
                "differentiable: a latency penalty needs the cost model's latency predictor (a LatencyPredictor: "
                "linear in per-layer features); a measured latency cannot be relaxed. Use a latency predictor, or "
                "set strategy option cost to 'flops' or 'params' with a budget on it"
            )
        self._penalties = [
            (CostTerms(self.space, lambda a, k=key: cost_model.costs(a)[k], key), float(limits[key])) for key in keys
        ]
        self._evaluator = evaluator
        self._contexts = {}

    # ----- ask/tell ------------------------------------------------------------
    def _schedule_over(self) -> bool:
        return self.generation >= self.config.rounds

    def ask(self, n: int | None = None) -> list[ArchConfig]:
        """One round: `steps_per_round` relaxation steps, then up to `n` (default `top_k`) new feasible archs."""
        if self._evaluator is None:
            raise RuntimeError(
                "the differentiable strategy needs the supernet: call attach_evaluator(evaluator, cost_model, budget) "
                "first (run_search does); it optimises on the supernet itself, so it cannot replay on a fitness table"
            )
        if self._schedule_over():
            return []
        started = time.perf_counter()
        for _ in range(self.config.steps_per_round):
            self._relax_step()
        self.relax_seconds += time.perf_counter() - started
        archs = self._proposals(n or self.config.top_k)
        self.round_seconds.append(time.perf_counter() - started)
        self._round_event = (self.generation, self._describe_round(archs))
        return self._finish_ask(archs)

    # ----- relaxation ----------------------------------------------------------
    def tau(self, step: int | None = None) -> float:
        """The Gumbel-softmax temperature at `step`: geometric from tau_start to tau_end over all steps."""
        c = self.config
        total = c.rounds * c.steps_per_round
        at = min(self.step if step is None else step, total - 1)
        return c.tau_start * (c.tau_end / c.tau_start) ** (at / (total - 1)) if total > 1 else c.tau_start

    def _batch(self, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Fitness batch `index` on the supernet's device and its objective context, prepared once.

        An objective with its own RNG (MLM masking) prepares it from a seeded state that is put back after,
        so the context does not depend on what ran before and the objective's training stream is untouched.
        """
        if index not in self._contexts:
            ev = self._evaluator
            device = next(ev.sn.parameters()).device
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in ev.batches[index].items()}
            objective = ev.objective
            saved = objective.get_rng_state() if hasattr(objective, "set_rng_state") else None
            if saved is not None:
                seed = self.seed * CONTEXT_SEED_OFFSET + index
                objective.set_rng_state(torch.Generator().manual_seed(seed).get_state())
            try:
                with torch.no_grad():
                    context = objective.prepare(ev.sn, batch)
            finally:
                if saved is not None:
                    objective.set_rng_state(saved)
            self._contexts[index] = (batch, context)
        return self._contexts[index]

    def _penalty(self) -> torch.Tensor:
        probs = self.relax.probabilities()
        total = torch.zeros((), dtype=torch.float64)
        for terms, limit in self._penalties:
            ratio = terms.expected(probs) / (self.config.cost_target * limit)
            total = total + torch.relu(ratio - 1)
        return total

    def _relax_step(self) -> None:
        """Sample an arch (straight-through), its loss on the next fitness batch, one Adam step on the logits."""
        ev = self._evaluator
        sample = self.relax.sample(self.generator, self.tau())
        index = self.step % len(ev.batches)
        batch, context = self._batch(index)
        self.step += 1
        with frozen_eval(ev.sn, ev.objective):
            with gated(ev.sn, sample):
                loss, _ = ev.objective.loss(ev.sn, batch, sample.hull, context)
            value = float(loss.detach())
            if not torch.isfinite(loss.detach()):
                self.skipped_steps += 1
                return
            baseline = self.baselines.get(index, value)
            surrogate = loss.double() + (value - baseline) * self.relax.score_log_prob(sample)
            grads = {"loss": self._grads(surrogate), "cost": self._grads(self._penalty())}
        self.relax.adam_step(grads, self.config.arch_lr, self.config.cost_weight)
        self.baselines[index] = BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * value

    def _grads(self, value: torch.Tensor) -> dict[str, torch.Tensor]:
        """d value / d logits, zeros for logits it does not depend on."""
        logits = self.relax.logits
        if not value.requires_grad:
            return {k: torch.zeros_like(t) for k, t in logits.items()}
        grads = torch.autograd.grad(value, list(logits.values()), allow_unused=True)
        return {k: torch.zeros_like(t) if g is None else g for (k, t), g in zip(logits.items(), grads)}

    def _candidates(self) -> list[ArchConfig]:
        """The mode, then distinct draws of the distribution by decreasing probability (`max_tries` draws)."""
        draws = self.relax.draw(self.config.max_tries, self.generator)
        ranked = sorted(dict(draws).items(), key=lambda item: -item[1])  # stable: ties keep the draw order
        mode = self.relax.mode()
        return [mode, *(arch for arch, _ in ranked if arch != mode)]

    def _proposals(self, n: int) -> list[ArchConfig]:
        """Up to `n` new feasible archs: the candidates repaired into the budget, then (when the distribution has
        collapsed onto archs already evaluated) repaired mutants of the mode; every draw bounded by `max_tries`."""
        mode = self.relax.mode()
        queue = iter(self._candidates())

        def make() -> ArchConfig:
            arch = next(queue, None)
            return self.repaired(self.space.mutate(mode, self.rng) if arch is None else arch)

        out = []
        for _ in range(n):
            arch = self._propose(make, ORIGIN_RELAXED)
            if arch is None:
                break
            out.append(arch)
        return out

    # ----- reporting -------------------------------------------------------------
    def expected_costs(self) -> dict[str, dict[str, float]]:
        """Each penalised cost's expectation under the relaxed distribution, its limit, and the mode's cost."""
        with torch.no_grad():
            probs = self.relax.probabilities()
            mode = self.relax.mode()
            return {
                terms.name: {"expected": float(terms.expected(probs)), "limit": limit, "mode": terms.of(mode)}
                for terms, limit in self._penalties
            }

    def extra_state(self) -> dict[str, Any]:
        """The search's own cost (seconds, passes, equivalent evaluations) and where the relaxation stands."""
        batches = len(self._evaluator.batches) if self._evaluator is not None else None
        passes = self.step - self.skipped_steps
        return {
            "differentiable": {
                "relaxation_steps": self.step,
                "skipped_steps": self.skipped_steps,
                "forward_backward_passes": passes,
                "batches_per_evaluation": batches,
                "equivalent_evaluations": passes / batches if batches else None,
                "relaxation_seconds": self.relax_seconds,
                "round_seconds": list(self.round_seconds),
                "tau": self.tau(),
                "mode": self.relax.mode().to_dict(),
                "expected_costs": self.expected_costs(),
            }
        }

    def describe(self) -> StrategyEvent:
        penalised = ", ".join(f"{t.name} <= {limit:,.6g}" for t, limit in self._penalties) or "none"
        c = self.config
        message = (
            f"differentiable: {c.rounds} rounds of {c.steps_per_round} relaxation steps on the frozen supernet "
            f"(tau {c.tau_start:g} -> {c.tau_end:g}), {c.top_k} proposals a round; cost penalty on {penalised}"
        )
        return StrategyEvent(message, {"differentiable/planned_steps": c.rounds * c.steps_per_round})

    def _describe_round(self, archs: list[ArchConfig]) -> StrategyEvent:
        costs = self.expected_costs()
        metrics: dict[str, Any] = {
            "differentiable/tau": self.tau(),
            "differentiable/round_seconds": self.round_seconds[-1],
        }
        metrics.update({f"differentiable/expected_{k}": v["expected"] for k, v in costs.items()})
        shown = ", ".join(f"E[{k}] {v['expected']:,.6g} (limit {v['limit']:,.6g})" for k, v in costs.items())
        message = (
            f"differentiable round {self.generation}: {len(archs)} proposals after {self.step} steps "
            f"({self.round_seconds[-1]:.2f} s), tau {self.tau():.3g}, mode {self.relax.mode().to_json()}; {shown}"
        )
        return StrategyEvent(message, metrics)

    def events(self, generation: int) -> list[StrategyEvent]:
        event = self._round_event
        return [event[1]] if event is not None and event[0] == generation else []

    # ----- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["relaxation"] = {
            **self.relax.state_dict(),
            "generator": generator_to_json(self.generator),
            "step": self.step,
            "baselines": [[i, b] for i, b in sorted(self.baselines.items())],
            "relax_seconds": self.relax_seconds,
            "round_seconds": list(self.round_seconds),
            "skipped_steps": self.skipped_steps,
        }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        r = state["relaxation"]
        self.relax.load_state_dict(dict(r))
        self.generator.set_state(generator_from_json(r["generator"]))
        self.step = int(r["step"])
        self.baselines = {int(i): float(b) for i, b in r["baselines"]}
        self.relax_seconds = float(r["relax_seconds"])
        self.round_seconds = [float(s) for s in r["round_seconds"]]
        self.skipped_steps = int(r["skipped_steps"])
