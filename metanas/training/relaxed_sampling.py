"""`training.sampling: relaxed`: single-stage search, the architecture learned while the weights train.

TangleNAS-style (Sukthanker et al. 2024): architecture logits (`metanas.search.relaxed`) are trained
alongside the supernet's weights instead of after them. Every training step trains the sandwich's
largest and smallest subnets and `num_random` subnets *drawn from the logits*, so the weights are
trained most where the search is heading; after the weight update, one relaxation step on a
validation batch moves the logits towards a lower objective loss and into the budget (the penalty
of the differentiable search, on the recipe's `budget`). The temperature anneals over the training
steps. The logits are saved with the trained supernet, and the `differentiable` search starts from
them (`init: auto`); every other strategy searches the supernet as usual.

The draws of step k come from a generator seeded with (seed, k), and the logits are the same on
every rank (their gradients are averaged), so every rank trains the same subnets and a resumed run
reaches the same weights and logits as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from metanas.cost.budget import Budget
from metanas.cost.model import CostModel
from metanas.search.configs import DifferentiableConfig
from metanas.search.relaxed import CONTEXT_SEED_OFFSET, GradReducer, Relaxation, penalised_costs, prepared_context
from metanas.space import ArchConfig, SearchSpace

RELAXATION_OPTIONS = ("arch_lr", "tau_start", "tau_end", "cost", "cost_weight", "cost_target")
DRAW_SEED_OFFSET = 104729  # the step's draw generator: seed * offset + step
WHO = "training.sampling=relaxed"


def check_relaxed_recipe(recipe: Any) -> None:
    """The recipe's relaxed-training settings, checked before any data or model is built."""
    t = recipe.training
    if t.relaxation and t.sampling != "relaxed":
        raise ValueError("training.relaxation is set but training.sampling is not 'relaxed'; remove it or set both")
    if t.sampling == "relaxed":
        relaxation_settings(t.relaxation)
        if not recipe.budget.to_budget().limits():
            raise ValueError(
                f"{WHO} drives the architecture into the budget, but the budget limits nothing; "
                "set budget.params, budget.non_embedding_params, budget.flops or budget.latency_ms"
            )


def mean_over_ranks(
    world: int, device: torch.device, grads: dict[str, dict[str, torch.Tensor]]
) -> dict[str, dict[str, torch.Tensor]]:
    """The architecture gradients averaged over the `world` ranks, so every rank keeps the same logits."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for source, tensors in grads.items():
        out[source] = {}
        for k, g in tensors.items():
            g = g.to(device).clone()
            torch.distributed.all_reduce(g)
            out[source][k] = (g / world).cpu()
    return out


def relaxation_settings(options: Mapping[str, Any]) -> DifferentiableConfig:
    """`training.relaxation` validated as the differentiable search's options of the same names."""
    unknown = sorted(set(options) - set(RELAXATION_OPTIONS))
    if unknown:
        raise ValueError(
            f"training.relaxation: unknown option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(RELAXATION_OPTIONS)}"
        )
    try:
        return DifferentiableConfig(**options)
    except ValueError as e:
        raise ValueError(f"training.relaxation: {str(e).removeprefix('Differentiable: ')}") from None


class RelaxedSampling:
    """The subnets of each training step and the logits' update after it (see the module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        options: Mapping[str, Any],
        cost_model: CostModel,
        budget: Budget,
        steps: int,
        num_random: int,
        seed: int,
    ) -> None:
        self.space, self.num_random, self.seed = space, num_random, seed
        settings = relaxation_settings(options)
        try:
            limits = cost_model.check_feasible(budget).limits()
        except ValueError as e:
            no_latency = budget.latency_ms is not None and not cost_model.has_latency
            hint = " (metanas compress fits the latency predictor before training; train-supernet alone relaxes "
            hint += "params and FLOPs only)"
            raise ValueError(f"{WHO}: {e}{hint if no_latency else ''}") from None
        keys = penalised_costs(cost_model, limits, settings.cost, f"{WHO} (training.relaxation.cost)")
        self.relaxation = Relaxation(space, settings, steps, seed)
        self.relaxation.penalize(cost_model, limits, keys)

    @classmethod
    def for_recipe(
        cls, recipe: Any, space: SearchSpace, cost_model: CostModel | None, val_batches: list[Any]
    ) -> RelaxedSampling | None:
        """The recipe's relaxed sampling (None unless `training.sampling: relaxed`); costs from `cost_model`,
        default params and FLOPs by formula."""
        t = recipe.training
        if t.sampling != "relaxed":
            return None
        if not val_batches:
            raise ValueError(f"{WHO} trains the architecture on validation batches, and there are none")
        budget = recipe.budget.to_budget()
        costs = cost_model or CostModel(space, budget.seq_len, budget.batch_size)
        return cls(space, t.relaxation, costs, budget, t.steps, t.num_random, t.seed)

    def archs(self, step: int) -> list[tuple[str, ArchConfig]]:
        """Largest, smallest, then `num_random` draws of the current logits; a pure function of (seed, step, logits)."""
        g = torch.Generator().manual_seed(self.seed * DRAW_SEED_OFFSET + step)
        drawn = self.relaxation.arch.draw(self.num_random, g) if self.num_random else []
        draws = [("relaxed", arch) for arch, _ in drawn]
        return [("largest", self.space.largest()), ("smallest", self.space.smallest()), *draws]

    def update(
        self,
        sn: Any,
        objective: Any,
        batches: list[dict[str, torch.Tensor]],
        device: torch.device,
        autocast: Callable[[], Any],
        reduce: GradReducer | None = None,
    ) -> float | None:
        """One relaxation step on the next validation batch (its context prepared now: the weights moved);
        returns the sampled arch's loss, None when it was not finite (no update)."""
        r = self.relaxation
        index = r.step % len(batches)
        batch = {k: v.to(device) for k, v in batches[index].items()}
        with autocast():
            context = prepared_context(objective, sn, batch, self.seed * CONTEXT_SEED_OFFSET + index)
            return r.run_step(sn, objective, batch, context, index, reduce)

    def summary(self) -> dict[str, Any]:
        """Where the logits stand: the mode, the expected costs against their limits, the temperature."""
        r = self.relaxation
        return {
            "mode": r.arch.mode().to_dict(),
            "expected_costs": r.expected_costs(),
            "tau": r.tau(),
            "relaxation_steps": r.step,
            "skipped_steps": r.skipped_steps,
        }

    def saved(self) -> dict[str, Any]:
        """What the trained supernet carries for the differentiable search to start from."""
        return {"space_signature": self.space.signature(), "state": self.relaxation.state_dict(), **self.summary()}
