"""Differentiable search: gradient descent on architecture logits over the trained supernet itself.

A DARTS/FBNet-style relaxation behind the ask/tell interface (the machinery is in
`metanas.search.relaxed`). The supernet's weights stay frozen: each `ask` is one round of
`steps_per_round` relaxation steps, cycling through the evaluator's fitness batches, on two terms:

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

Single-stage (weights and architecture together, TangleNAS-style) is `training.sampling: relaxed`:
the same logits are trained alongside the supernet's weights and saved with it, and this search
starts from them (`init: auto`) instead of from uniform logits.

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

from metanas.search.base import ORIGIN_RELAXED, Strategy, StrategyEvent
from metanas.search.configs import DifferentiableConfig
from metanas.search.relaxed import CONTEXT_SEED_OFFSET, Relaxation, penalised_costs, prepared_context
from metanas.space import ArchConfig, SearchSpace

if TYPE_CHECKING:
    from metanas.cost.budget import Budget
    from metanas.cost.model import CostModel
    from metanas.evaluate import Evaluator


class DifferentiableSearch(Strategy):
    """Relaxed architecture logits trained on the supernet; `top_k` discrete proposals per round."""

    name = "differentiable"
    Config = DifferentiableConfig
    config: DifferentiableConfig

    def __init__(self, space: SearchSpace, *args: Any, **kwargs: Any) -> None:
        super().__init__(space, *args, **kwargs)
        c = self.config
        self.relaxation = Relaxation(space, c, c.rounds * c.steps_per_round, self.seed)
        self.relax_seconds = 0.0
        self.round_seconds: list[float] = []
        self.started_from: str = "uniform"  # or "trained": the logits trained with the supernet (single-stage)
        self._evaluator: Evaluator | None = None
        self._contexts: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._round_event: tuple[int, StrategyEvent] | None = None

    # ----- the runner's hook -------------------------------------------------
    @property
    def wants_evaluator(self) -> bool:
        return True

    def attach_evaluator(self, evaluator: Evaluator, cost_model: CostModel, budget: Budget) -> None:
        """Keep the supernet, objective and batches, read the penalised costs' per-layer terms off the cost model
        (`budget` is made absolute if it is relative), and start from the logits trained with the supernet when
        `init` asks for them (a resumed search then loads its own state over them)."""
        sn = getattr(evaluator, "sn", None)
        if sn is None or not hasattr(sn, "encoder") or not hasattr(sn, "space"):
            raise ValueError(
                "differentiable: the evaluator holds no ElasticBert supernet (evaluator.sn); the differentiable "
                "strategy optimises on the supernet itself and cannot search a fitness table"
            )
        if sn.space.signature() != self.space.signature():
            raise ValueError("differentiable: the evaluator's supernet is over another search space than the search")
        limits = cost_model.check_feasible(budget).limits()
        keys = penalised_costs(cost_model, limits, self.config.cost, "differentiable (strategy option cost)")
        self.relaxation.penalize(cost_model, limits, keys)
        self._start_from(getattr(sn, "relaxation", None))
        self._evaluator = evaluator
        self._contexts = {}

    def _start_from(self, trained: Mapping[str, Any] | None) -> None:
        """Load the logits (and their Adam moments) of single-stage training when `init` is 'trained', or 'auto'
        and the supernet carries them."""
        init = self.config.init
        if init == "trained" and trained is None:
            raise ValueError(
                "differentiable: init='trained' but the supernet carries no trained architecture logits; train it "
                "with training.sampling: relaxed (single-stage), or set strategy option init to 'auto' or 'uniform'"
            )
        if init == "uniform" or trained is None:
            return
        if trained.get("space_signature") != self.space.signature():
            raise ValueError("differentiable: the supernet's trained logits are over another search space")
        self.relaxation.arch.load_state_dict(trained["state"])
        self.started_from = "trained"

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
        return self.relaxation.tau(step)

    def _batch(self, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Fitness batch `index` on the supernet's device and its objective context, prepared once."""
        if index not in self._contexts:
            ev = self._evaluator
            device = next(ev.sn.parameters()).device
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in ev.batches[index].items()}
            context = prepared_context(ev.objective, ev.sn, batch, self.seed * CONTEXT_SEED_OFFSET + index)
            self._contexts[index] = (batch, context)
        return self._contexts[index]

    def _relax_step(self) -> None:
        """Sample an arch (straight-through), its loss on the next fitness batch, one Adam step on the logits."""
        ev = self._evaluator
        index = self.relaxation.step % len(ev.batches)
        batch, context = self._batch(index)
        self.relaxation.run_step(ev.sn, ev.objective, batch, context, index)

    def _candidates(self) -> list[ArchConfig]:
        """The mode, then distinct draws of the distribution by decreasing probability (`max_tries` draws)."""
        draws = self.relaxation.arch.draw(self.config.max_tries, self.relaxation.generator)
        ranked = sorted(dict(draws).items(), key=lambda item: -item[1])  # stable: ties keep the draw order
        mode = self.relaxation.arch.mode()
        return [mode, *(arch for arch, _ in ranked if arch != mode)]

    def _proposals(self, n: int) -> list[ArchConfig]:
        """Up to `n` new feasible archs: the candidates repaired into the budget, then (when the distribution has
        collapsed onto archs already evaluated) repaired mutants of the mode; every draw bounded by `max_tries`."""
        mode = self.relaxation.arch.mode()
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
        return self.relaxation.expected_costs()

    def extra_state(self) -> dict[str, Any]:
        """The search's own cost (seconds, passes, equivalent evaluations) and where the relaxation stands."""
        batches = len(self._evaluator.batches) if self._evaluator is not None else None
        r = self.relaxation
        passes = r.step - r.skipped_steps
        return {
            "differentiable": {
                "started_from": self.started_from,
                "relaxation_steps": r.step,
                "skipped_steps": r.skipped_steps,
                "forward_backward_passes": passes,
                "batches_per_evaluation": batches,
                "equivalent_evaluations": passes / batches if batches else None,
                "relaxation_seconds": self.relax_seconds,
                "round_seconds": list(self.round_seconds),
                "tau": self.tau(),
                "mode": r.arch.mode().to_dict(),
                "expected_costs": self.expected_costs(),
            }
        }

    def describe(self) -> StrategyEvent:
        penalised = ", ".join(f"{t.name} <= {limit:,.6g}" for t, limit in self.relaxation.penalties) or "none"
        c = self.config
        message = (
            f"differentiable: {c.rounds} rounds of {c.steps_per_round} relaxation steps on the frozen supernet "
            f"from {'the logits trained with it' if self.started_from == 'trained' else 'uniform logits'} "
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
            f"differentiable round {self.generation}: {len(archs)} proposals after {self.relaxation.step} steps "
            f"({self.round_seconds[-1]:.2f} s), tau {self.tau():.3g}, mode {self.relaxation.arch.mode().to_json()}; "
            f"{shown}"
        )
        return StrategyEvent(message, metrics)

    def events(self, generation: int) -> list[StrategyEvent]:
        event = self._round_event
        return [event[1]] if event is not None and event[0] == generation else []

    # ----- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["relaxation"] = {
            **self.relaxation.state_dict(),
            "relax_seconds": self.relax_seconds,
            "round_seconds": list(self.round_seconds),
            "started_from": self.started_from,
        }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        r = state["relaxation"]
        self.relaxation.load_state_dict(dict(r))
        self.relax_seconds = float(r["relax_seconds"])
        self.round_seconds = [float(s) for s in r["round_seconds"]]
        self.started_from = str(r.get("started_from", "uniform"))
