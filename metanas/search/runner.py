"""Drive a search strategy: evaluate, record, checkpoint, resume, report.

One generation is: `ask`, evaluate every proposed arch (its costs from the cost
model, its fitness from the evaluator), `tell`. Every evaluation is written to the
history store as soon as it is made, and the whole search state is written
atomically to `run_dir/search_state.json` after each completed generation. A
restarted run loads that state, so the strategy proposes exactly what the
interrupted run was evaluating; archs the history already holds for this run are
reused from it instead of being evaluated and recorded again, so the history ends
with neither gaps nor duplicates.

Outputs in `run_dir`: `search.json` (best arch, Pareto front, per-generation
stats, speed), `pareto.png` and `curve.png`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from metanas._io import atomic_write_json, read_json
from metanas.cost.budget import BUDGET_KEYS, Budget
from metanas.cost.model import CostModel
from metanas.meta.encoding import target_task_meta
from metanas.meta.history import EvalRecord
from metanas.search.base import Strategy, StrategyEvent
from metanas.search.configs import check_objectives
from metanas.search.nsga2 import pareto_front_indices
from metanas.search.plots import plot_curve, plot_pareto
from metanas.search.registry import STRATEGIES, make_strategy
from metanas.search.sources import frozen_sources
from metanas.space import ArchConfig, SearchSpace

if TYPE_CHECKING:
    from metanas.evaluate import Evaluator
    from metanas.meta.history import HistoryStore
    from metanas.tracking import Tracker

logger = logging.getLogger(__name__)

STATE_FILE = "search_state.json"
RESULT_FILE = "search.json"
PARETO_PLOT = "pareto.png"
CURVE_PLOT = "curve.png"
STATE_FORMAT = "metanas.search-state/1"
RESULT_FORMAT = "metanas.search/1"
SAMPLER_TRIES = 200  # rejection draws per constraint-aware sample before shrinking a draw to fit
# With no explicit cost objective, the front and plots use the budget's tightest-to-deploy limit.
COST_PREFERENCE = ("latency_ms", "flops", "non_embedding_params", "params")


def score_arch(evaluator: Any, arch: ArchConfig) -> tuple[float, float]:
    """(metric, fitness) of `arch`; a non-finite metric is an invalid evaluation: fitness -inf, worst metric."""
    metric = evaluator.metric(arch)
    fitness = evaluator.to_fitness(metric)
    if not math.isfinite(fitness):
        return (-math.inf if evaluator.higher_is_better else math.inf), -math.inf
    return metric, fitness


@dataclass
class SearchResult:
    """What a finished search found, and where its outputs are."""

    run_dir: Path
    run_id: str
    best_arch: ArchConfig
    best_fitness: float
    best_metric: float
    best_costs: dict[str, float]
    metric_name: str
    cost_key: str
    pareto_front: list[dict[str, Any]]
    generations: list[dict[str, Any]]
    num_evaluations: int
    evals_per_minute: float
    result_path: Path
    pareto_plot: Path
    curve_plot: Path
    sources: dict[str, Any] | None = None  # summary of the previous tasks' records a warm start learned from
    warm_start: str | None = None  # the strategy's own line on how it started (e.g. which predictor it used)


def choose_cost_key(objectives: Sequence[str], budget: Budget) -> str:
    """The cost of the Pareto front: the second objective, else the budget's first limit in
    `COST_PREFERENCE`, else params."""
    if len(objectives) == 2:
        return objectives[1]
    limits = budget.limits()
    return next((k for k in COST_PREFERENCE if k in limits), "params")


def _generation_stats(generation: int, fitnesses: list[float], evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    finite = [f for f in fitnesses if math.isfinite(f)] or [-math.inf]
    best = max(evaluations, key=lambda e: e["fitness"])
    return {
        "generation": generation,
        "evaluations": len(fitnesses),
        "total_evaluations": len(evaluations),
        "best": best["fitness"],
        "best_metric": best["metric"],
        "generation_best": max(fitnesses),
        "median": statistics.median(finite),
        "mean": statistics.fmean(finite),
    }


class _Recorder:
    """Scores archs for one run: costs and fitness, each evaluation written to the history at once.

    Archs the history already holds for this run (an interrupted generation) are
    reused from it, never evaluated or recorded twice.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        cost_model: CostModel,
        history: HistoryStore | None,
        run_id: str,
        task_id: str,
        task_meta: Mapping[str, Any],
        signature: str,
    ) -> None:
        self.evaluator, self.cost_model, self.history = evaluator, cost_model, history
        self.run_id, self.task_id, self.task_meta, self.signature = run_id, task_id, dict(task_meta), signature
        self.recorded: dict[ArchConfig, EvalRecord] = {}
        if history is not None and history.evaluated_archs(run_id):
            self.recorded = {r.arch: r for r in history.records(run_id=run_id)}

    def __call__(self, arch: ArchConfig, generation: int, origin: str) -> dict[str, Any]:
        """Costs and fitness of `arch`. A non-finite metric is an invalid evaluation: fitness -inf, recorded with
        the worst metric value (never best, and the history's columns stay numbers)."""
        costs = self.cost_model.costs(arch)
        previous = self.recorded.get(arch)
        if previous is not None:
            metric, fitness = float(previous.metric_value), float(previous.fitness)
        else:
            metric, fitness = score_arch(self.evaluator, arch)
            if self.history is not None:
                record = EvalRecord(
                    run_id=self.run_id,
                    task_id=self.task_id,
                    task_meta=self.task_meta,
                    space_signature=self.signature,
                    arch=arch,
                    fitness=fitness,
                    metric_name=self.evaluator.metric_name,
                    metric_value=metric,
                    origin=origin,
                    generation=generation,
                    timestamp=time.time(),
                    **costs,
                )
                self.history.add_records([record])
        return {
            "arch": arch.to_dict(),
            "fitness": fitness,
            "metric": metric,
            "costs": costs,
            "origin": origin,
            "generation": generation,
        }


def _load_state(state_path: Path, config: dict[str, Any], run_id: str | None, strategy: Strategy) -> dict[str, Any]:
    """The saved state of this search (its strategy restored), or a new one written at once."""
    run_dir = state_path.parent
    if not state_path.is_file():
        state = {
            "format": STATE_FORMAT,
            "run_id": run_id or f"{run_dir.resolve().name}-{uuid.uuid4().hex[:8]}",
            "config": config,
            "strategy": strategy.state_dict(),
            "extra": strategy.extra_state(),
            "evaluations": [],
            "generations": [],
            "forward_evaluations": 0,
            "eval_seconds": 0.0,
        }
        atomic_write_json(state, state_path, indent=1)
        return state
    state = read_json(state_path, f"delete {str(run_dir)!r} to search again")
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{str(state_path)!r} is not a metanas search state")
    if state["config"] != config:
        changed = sorted(k for k in config if state["config"].get(k) != config[k])
        raise ValueError(
            f"{str(run_dir)!r} holds a different search (differs in: {', '.join(changed)}); "
            "use another run_dir to start a new search"
        )
    if run_id is not None and run_id != state["run_id"]:
        raise ValueError(f"{str(run_dir)!r} belongs to run {state['run_id']!r}, not {run_id!r}")
    strategy.load_state_dict(state["strategy"])
    logger.info("resuming search %s after generation %d", state["run_id"], strategy.generation)
    return state


def _log_event(event: StrategyEvent, tracker: Tracker | None, step: int) -> None:
    logger.log(logging.WARNING if event.warning else logging.INFO, "%s", event.message)
    if tracker is not None and event.metrics:
        tracker.log(event.metrics, step=step)


def _run_generation(
    strategy: Strategy, evaluate: _Recorder, state: dict[str, Any], state_path: Path, tracker: Tracker | None
) -> bool:
    """Ask, evaluate, tell and checkpoint one generation; False when the strategy proposed nothing."""
    generation = strategy.generation
    archs = strategy.ask()
    if not archs:
        return False
    origins = [strategy.origin(a) for a in archs]
    evaluator = evaluate.evaluator
    count0, seconds0 = evaluator.num_evaluations, evaluator.eval_seconds
    progress = tqdm(archs, desc=f"search gen {generation}", unit="arch", leave=False, dynamic_ncols=True)
    batch = [evaluate(arch, generation, origin) for arch, origin in zip(progress, origins)]
    progress.close()
    strategy.tell(archs, [e["fitness"] for e in batch], [e["costs"] for e in batch])
    evaluations = state["evaluations"]
    evaluations.extend(batch)
    state["forward_evaluations"] += evaluator.num_evaluations - count0
    state["eval_seconds"] += evaluator.eval_seconds - seconds0
    stats = _generation_stats(generation, [e["fitness"] for e in batch], evaluations)
    state["generations"].append(stats)
    state["strategy"] = strategy.state_dict()
    state["extra"] = strategy.extra_state()
    for event in strategy.events(generation):
        _log_event(event, tracker, generation)
    atomic_write_json(state, state_path, indent=1)
    logger.info(
        "search gen %d: best %.5g, median %.5g (%d evaluations)",
        generation,
        stats["best"],
        stats["median"],
        len(evaluations),
    )
    if tracker is not None:
        tracker.log(
            {
                "search/best_fitness": stats["best"],
                "search/best_metric": stats["best_metric"],
                "search/median_fitness": stats["median"],
                "search/mean_fitness": stats["mean"],
                "search/num_evaluations": len(evaluations),
                "search/evals_per_minute": _per_minute(state),
            },
            step=generation,
        )
    return True


def _build_strategy(
    name: str,
    options: Mapping[str, Any] | None,
    space: SearchSpace,
    cost_model: CostModel,
    budget: Budget,
    objectives: Sequence[str],
    seed: int,
) -> tuple[Strategy, Budget, str]:
    """The strategy over the feasible archs of `budget` (made absolute), and the cost of the Pareto front."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}")
    check_objectives(objectives, name, BUDGET_KEYS)
    budget = cost_model.check_feasible(budget)
    cost_key = choose_cost_key(objectives, budget)
    options = dict(options or {})
    if "cost_key" in STRATEGIES[name].Config.option_names():
        if options.setdefault("cost_key", cost_key) != cost_key:
            raise ValueError(f"strategy option cost_key={options['cost_key']!r} contradicts objectives {objectives}")
    if cost_key not in cost_model.costs(space.smallest()):
        raise ValueError(f"the cost model gives no {cost_key!r} (a latency objective needs a latency source)")

    def sampler(rng: random.Random) -> ArchConfig:
        return cost_model.sample_feasible(rng, budget, SAMPLER_TRIES)

    feasible = functools.partial(cost_model.feasible, budget=budget)
    return make_strategy(name, space, feasible, seed, sampler=sampler, **options), budget, cost_key


def run_search(
    evaluator: Evaluator,
    space: SearchSpace,
    cost_model: CostModel,
    budget: Budget | Mapping[str, Any],
    strategy_name: str = "evolution",
    strategy_options: Mapping[str, Any] | None = None,
    run_dir: str | os.PathLike = "search",
    history: HistoryStore | None = None,
    task_id: str = "default",
    seed: int = 0,
    tracker: Tracker | None = None,
    objectives: Sequence[str] = ("fitness",),
    task_meta: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> SearchResult:
    """Search `space` for the best subnet within `budget`, resuming from `run_dir` when it holds a state.

    `objectives`: ('fitness',) for one best arch, or ('fitness', 'latency_ms' | 'params' | ...) for a
    trade-off (with strategy 'nsga2'). An infeasible budget raises before any evaluation. `run_id`
    names the run in the history store (default: made up once and kept in the state file). `task_meta`
    is completed with the objective, metric direction and seq_len and recorded with every evaluation.
    """
    budget = budget if isinstance(budget, Budget) else Budget.from_dict(budget)
    strategy, budget, cost_key = _build_strategy(
        strategy_name, strategy_options, space, cost_model, budget, objectives, seed
    )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = target_task_meta(task_meta, evaluator.metric_name, evaluator.higher_is_better, cost_model.seq_len)
    sources = frozen_sources(run_dir, history, space.signature(), task_id) if strategy.wants_sources else None
    strategy.attach(meta, sources.records if sources is not None else [], run_dir=run_dir)
    if strategy.wants_evaluator:
        strategy.attach_evaluator(evaluator, cost_model, budget)
    config = {
        "strategy": strategy_name,
        "options": strategy.options(),
        "objectives": list(objectives),
        "cost_key": cost_key,
        "budget": asdict(budget),
        "space_signature": space.signature(),
        "metric_name": evaluator.metric_name,
        "task_id": task_id,
    }
    state_path = run_dir / STATE_FILE
    state = _load_state(state_path, config, run_id, strategy)
    state["sources"] = None if sources is None else sources.summary()
    run_id = state["run_id"]
    if history is not None:
        history.start_run(run_id, task_id, strategy_name, config)
    evaluate = _Recorder(evaluator, cost_model, history, run_id, task_id, meta, space.signature())
    start = strategy.describe()
    if start is not None:
        _log_event(start, tracker, strategy.generation)
    try:
        while not strategy.done and _run_generation(strategy, evaluate, state, state_path, tracker):
            pass
    except BaseException as e:
        if history is not None:
            history.finish_run(run_id, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    evaluations = state["evaluations"]
    if not evaluations:
        raise RuntimeError("the search evaluated no arch: the strategy found no feasible candidate")
    result = _write_outputs(state, evaluations, run_dir, cost_key, budget, evaluator, objectives)
    result.warm_start = None if start is None else start.message
    if tracker is not None:
        _log_to_tracker(tracker, result, evaluations, strategy.generation)
    if history is not None:
        history.finish_run(run_id, "finished")
    return result


def _per_minute(state: Mapping[str, Any]) -> float:
    seconds = state["eval_seconds"]
    return 60.0 * state["forward_evaluations"] / seconds if seconds > 0 else 0.0


def _write_outputs(
    state: dict[str, Any],
    evaluations: list[dict[str, Any]],
    run_dir: Path,
    cost_key: str,
    budget: Budget,
    evaluator: Evaluator,
    objectives: Sequence[str],
) -> SearchResult:
    """search.json and both plots, from the full list of evaluations (invalid ones are never best nor on the front)."""
    valid = [i for i, e in enumerate(evaluations) if math.isfinite(e["fitness"])]
    if not valid:
        raise ValueError(
            f"all {len(evaluations)} evaluations of the search were invalid (non-finite {evaluator.metric_name}): "
            "the trained supernet's outputs are not finite; train it again with a lower training.lr"
        )
    best_i = max(valid, key=lambda i: evaluations[i]["fitness"])
    best = evaluations[best_i]
    costs = [e["costs"][cost_key] for e in evaluations]
    fitnesses = [e["fitness"] for e in evaluations]
    points = [(fitnesses[i], -costs[i]) for i in valid]
    front_i = sorted((valid[j] for j in pareto_front_indices(points)), key=lambda i: costs[i])
    front = [evaluations[i] for i in front_i]
    limit = budget.limits().get(cost_key)
    label = f"fitness ({'' if evaluator.higher_is_better else '-'}{evaluator.metric_name})"
    at = {i: j for j, i in enumerate(valid)}  # the plots show valid evaluations only
    pareto_plot = plot_pareto(
        [costs[i] for i in valid],
        [fitnesses[i] for i in valid],
        [at[i] for i in front_i],
        run_dir / PARETO_PLOT,
        cost_key=cost_key,
        metric_label=label,
        budget=limit,
        best=at[best_i],
    )
    curve_plot = plot_curve(state["generations"], run_dir / CURVE_PLOT, metric_label=label)
    per_minute = _per_minute(state)
    report = {
        "format": RESULT_FORMAT,
        "run_id": state["run_id"],
        **state["config"],
        "objectives": list(objectives),
        "higher_is_better": evaluator.higher_is_better,
        "budget": asdict(budget),
        "best": best,
        "pareto_front": front,
        "generations": state["generations"],
        "num_evaluations": len(evaluations),
        "forward_evaluations": state["forward_evaluations"],
        "eval_seconds": state["eval_seconds"],
        "evals_per_minute": per_minute,
        "plots": {"pareto": PARETO_PLOT, "curve": CURVE_PLOT},
    }
    report["sources"] = state.get("sources")  # the previous tasks' records the search learned from, if any
    report.update(state.get("extra", {}))  # e.g. the warm start's decisions (predictor, guard verdicts)
    result_path = run_dir / RESULT_FILE
    atomic_write_json(report, result_path, indent=1, strict=True)
    return SearchResult(
        run_dir=run_dir,
        run_id=state["run_id"],
        best_arch=ArchConfig.from_dict(best["arch"]),
        best_fitness=best["fitness"],
        best_metric=best["metric"],
        best_costs=best["costs"],
        metric_name=evaluator.metric_name,
        cost_key=cost_key,
        pareto_front=front,
        generations=state["generations"],
        num_evaluations=len(evaluations),
        evals_per_minute=per_minute,
        result_path=result_path,
        pareto_plot=pareto_plot,
        curve_plot=curve_plot,
        sources=state.get("sources"),
    )


def _log_to_tracker(tracker: Tracker, result: SearchResult, evaluations: list[dict[str, Any]], step: int) -> None:
    """The table of evaluated archs, both plots and the headline numbers."""
    cost_keys = [k for k in BUDGET_KEYS if k in evaluations[0]["costs"]]
    columns = ["generation", "origin", "fitness", result.metric_name, *cost_keys, "depth", "hidden", "arch"]
    rows = [
        [
            e["generation"],
            e["origin"],
            e["fitness"],
            e["metric"],
            *(e["costs"][k] for k in cost_keys),
            e["arch"]["depth"],
            e["arch"]["hidden"],
            json.dumps(e["arch"], separators=(",", ":")),
        ]
        for e in evaluations
    ]
    tracker.log_table("search/archs", columns, rows, step=step)
    tracker.log_image("search/pareto", result.pareto_plot, step=step)
    tracker.log_image("search/curve", result.curve_plot, step=step)
    tracker.summary(
        {
            "search/best_fitness": result.best_fitness,
            f"search/best_{result.metric_name}": result.best_metric,
            "search/best_arch": result.best_arch.to_json(),
            **{f"search/best_{k}": v for k, v in result.best_costs.items()},
            "search/num_evaluations": result.num_evaluations,
            "search/evals_per_minute": result.evals_per_minute,
            "search/pareto_size": len(result.pareto_front),
        }
    )
