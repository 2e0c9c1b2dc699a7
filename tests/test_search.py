"""Tests of the search strategies and the search runner (offline, seeded).

Most tests score archs with a synthetic loss so they run in milliseconds; one
trains a tiny supernet in-process and searches it with the real `Evaluator`.
Run as a script, this module is the worker of the kill-and-resume test.
"""

from __future__ import annotations

import json
import math
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import child_env, wait_until
from synthetic import MINILM, drive, minilm_space, synthetic_evaluator, synthetic_loss, trained_tiny_evaluator

from metanas.cost import Budget, CostModel
from metanas.evaluate import Evaluator
from metanas.meta.history import HistoryStore
from metanas.search import (
    NSGA2,
    Evolution,
    RandomSearch,
    Strategy,
    crowding_distance,
    dominates,
    make_strategy,
    non_dominated_sort,
    pareto_front_indices,
)
from metanas.search.nsga2 import select_survivors
from metanas.search.runner import RESULT_FILE, STATE_FILE, run_search
from metanas.space import ArchConfig, SearchSpace
from metanas.tracking import Tracker, read_metrics

SEEDS = range(7)


def budgeted(space: SearchSpace, **limits: Any) -> tuple[CostModel, Budget]:
    cm = CostModel(space, seq_len=128)
    return cm, cm.check_feasible(Budget(**limits))


# --------------------------------------------------------------------------- strategies on a synthetic task


def test_evolution_beats_random_on_a_budgeted_synthetic_task() -> None:
    space = minilm_space()
    cm, budget = budgeted(space, non_embedding_params="40%")

    def feasible(arch: ArchConfig) -> bool:
        return cm.feasible(arch, budget)

    def sampler(rng: random.Random) -> ArchConfig:
        return cm.sample_feasible(rng, budget, 200)

    best = {"evolution": [], "random": []}
    for seed in SEEDS:
        strategies = {
            "evolution": Evolution(
                space, feasible, seed, population_size=20, generations=10, parents=5, sampler=sampler
            ),
            "random": RandomSearch(space, feasible, seed, num_samples=200, batch_size=20, sampler=sampler),
        }
        for name, strategy in strategies.items():
            asked = drive(strategy, lambda a: -synthetic_loss(a))
            assert len(asked) == len(set(asked)) == 200  # equal evaluation counts, no arch twice
            assert all(feasible(a) for a in asked)
            best[name].append(max(-synthetic_loss(a) for a in asked))
    evo, rnd = statistics.median(best["evolution"]), statistics.median(best["random"])
    assert evo > rnd + 0.5, (best, evo, rnd)
    assert sum(e > r for e, r in zip(best["evolution"], best["random"])) >= 6


def test_strategies_are_deterministic_and_resume_from_json_state() -> None:
    space = minilm_space()
    cm, budget = budgeted(space, params="60%")

    def feasible(arch: ArchConfig) -> bool:
        return cm.feasible(arch, budget)

    def make(name: str, seed: int) -> Strategy:
        options = {"random": {"num_samples": 60, "batch_size": 10}}.get(name, {"population_size": 10, "generations": 6})
        return make_strategy(name, space, feasible, seed, **options)

    for name in ("random", "evolution", "nsga2"):
        a, b = make(name, 5), make(name, 5)
        for _ in range(3):
            archs = a.ask()
            assert archs == b.ask() and all(a.origin(x) in ("random", "evolved") for x in archs)
            fit = [-synthetic_loss(x) for x in archs]
            costs = [cm.costs(x) for x in archs]
            a.tell(archs, fit, costs)
            b.tell(archs, fit, costs)
        restored = make(name, 5)
        restored.load_state_dict(json.loads(json.dumps(a.state_dict())))
        assert restored.generation == a.generation == 3 and restored.evaluated == a.evaluated
        assert restored.ask() == a.ask()
        assert make(name, 6).ask() != make(name, 5).ask()
        with pytest.raises(ValueError, match="options"):
            make(name, 6).load_state_dict(a.state_dict())


def test_dedup_and_bounded_sampling_exhaust_a_small_space() -> None:
    space = SearchSpace.from_teacher_config(
        MINILM, depth_choices=(1,), hidden_choices=(192, 384), head_choices=(6, 12), ffn_choices=(768, 1536)
    )
    assert space.size() == 8
    strategy = Evolution(space, None, 0, population_size=5, generations=10, parents=2, max_tries=50)
    asked = drive(strategy, lambda a: -synthetic_loss(a))
    assert sorted(map(ArchConfig.to_json, asked)) == sorted({a.to_json() for a in asked}) and len(asked) == 8
    assert strategy.done and strategy.generation == 2 and strategy.ask() == []
    # A predicate nothing satisfies ends the search at once instead of looping.
    none_fit = RandomSearch(space, lambda a: False, 0, num_samples=10, max_tries=20)
    assert none_fit.ask() == [] and none_fit.done


def test_make_strategy_checks_names_and_options() -> None:
    space = minilm_space()
    assert isinstance(make_strategy("nsga2", space, cost_key="latency_ms"), NSGA2)
    with pytest.raises(ValueError, match="unknown search strategy 'evo'"):
        make_strategy("evo", space)
    with pytest.raises(ValueError, match="unknown option.*'populaton_size'.*population_size"):
        make_strategy("evolution", space, populaton_size=10)
    with pytest.raises(ValueError, match="mutation_prob"):
        Evolution(space, mutation_prob=1.5)


# --------------------------------------------------------------------------- NSGA-II


def test_non_dominated_sort_and_crowding_on_hand_made_points() -> None:
    pts = [(0, 3), (1, 2), (2, 1), (3, 0), (1, 1), (0, 0), (2, 2)]
    assert dominates((2, 2), (1, 2)) and not dominates((1, 2), (1, 2)) and not dominates((0, 3), (3, 0))
    assert non_dominated_sort(pts) == [[0, 3, 6], [1, 2], [4], [5]]
    assert pareto_front_indices(pts) == [0, 3, 6] and pareto_front_indices([]) == []

    line = [(0.0, 4.0), (0.5, 3.5), (3.0, 1.0), (4.0, 0.0)]
    d = crowding_distance(line, [0, 1, 2, 3])
    assert d[0] == d[3] == math.inf
    assert d[1] == pytest.approx(3 / 4 + 3 / 4) and d[2] == pytest.approx(3.5 / 4 + 3.5 / 4)
    assert crowding_distance(line, [1, 2]) == [math.inf, math.inf]
    # Cutting the front keeps the extremes and then the most isolated point.
    assert sorted(select_survivors(line, 3)) == [0, 2, 3]
    assert sorted(select_survivors(pts, 5)) == [0, 1, 2, 3, 6]


def test_nsga2_front_is_non_dominated_and_covers_costs() -> None:
    space = minilm_space()
    cm, budget = budgeted(space, params="80%")
    strategy = NSGA2(space, lambda a: cm.feasible(a, budget), 1, cost_key="params", population_size=16, generations=6)
    drive(strategy, lambda a: -synthetic_loss(a), cm.costs)
    front = strategy.pareto_front()
    points = [(e.fitness, -e.costs["params"]) for e in front]
    assert len(front) >= 5
    assert not any(dominates(p, q) for p in points for q in points)
    assert [e.costs["params"] for e in front] == sorted(e.costs["params"] for e in front)
    assert [p[0] for p in points] == sorted(p[0] for p in points)  # cheaper means worse on a front
    # Every evaluated arch off the front is dominated by a front member.
    for e in strategy.evaluated.values():
        if e not in front:
            assert any(dominates(p, (e.fitness, -e.costs["params"])) for p in points)
    assert len(strategy.population) == 16
    with pytest.raises(ValueError, match="costs"):
        strategy.tell([space.smallest()], [0.0])


# --------------------------------------------------------------------------- the runner


def test_run_search_outputs_history_and_tracking(tmp_path: Path) -> None:
    space = minilm_space()
    cm = CostModel(space, seq_len=128)
    history = HistoryStore(tmp_path / "history.db")
    ev = synthetic_evaluator(synthetic_loss)

    def search(evaluator, **kw):
        options = {"population_size": 8, "generations": 3, "parents": 3}
        budget = {"non_embedding_params": "40%"}
        return run_search(
            evaluator, space, cm, budget, "evolution", options, tmp_path / "run", history=history,
            task_id="synthetic", seed=0, **kw,
        )  # fmt: skip

    with Tracker(tmp_path / "run", use_wandb=False) as tracker:
        result = search(ev, tracker=tracker, task_meta={"kind": "synthetic"})
    report = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    limit = report["budget"]["non_embedding_params"]
    assert result.num_evaluations == report["num_evaluations"] == 24 == ev.num_evaluations
    assert result.cost_key == report["cost_key"] == "non_embedding_params"
    assert report["best"]["arch"] == result.best_arch.to_dict() and report["best"]["fitness"] == result.best_fitness
    assert result.best_metric == synthetic_loss(result.best_arch) == -result.best_fitness
    assert result.best_costs["non_embedding_params"] <= limit
    assert [g["generation"] for g in report["generations"]] == [0, 1, 2]
    assert [g["best"] for g in report["generations"]] == sorted(g["best"] for g in report["generations"])
    assert report["generations"][-1]["best"] == result.best_fitness and report["evals_per_minute"] > 0
    front = report["pareto_front"]
    assert report["best"] in front and front == sorted(front, key=lambda e: e["costs"]["non_embedding_params"])

    rows = history.records(run_id=result.run_id)
    assert len(rows) == 24 and len({r.arch for r in rows}) == 24
    assert max(r.fitness for r in rows) == result.best_fitness
    assert {(r.generation, r.origin) for r in rows} == {(0, "random"), (1, "evolved"), (2, "evolved")}
    # the task as the search saw it: the caller's metadata, completed with the metric direction and seq_len
    meta = {"kind": "synthetic", "higher_is_better": False, "seq_len": 128}
    assert all(r.non_embedding_params <= limit and r.task_meta == meta for r in rows)
    assert [r["status"] for r in history.runs()] == ["finished"]
    for png in (result.pareto_plot, result.curve_plot):
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000

    logged = read_metrics(tmp_path / "run")
    assert [m["step"] for m in logged if "search/best_fitness" in m] == [0, 1, 2]
    table = next(m["search/archs"] for m in logged if "search/archs" in m)
    assert len(table["data"]) == 24 and table["columns"][:4] == ["generation", "origin", "fitness", "synthetic_loss"]
    assert any("search/pareto" in m for m in logged) and any("summary" in m for m in logged)

    # Running a finished search again evaluates nothing and records nothing.
    again = search(synthetic_evaluator(synthetic_loss))
    assert again.best_arch == result.best_arch and len(history.records(run_id=result.run_id)) == 24
    with pytest.raises(ValueError, match="different search.*options"):
        run_search(
            ev,
            space,
            cm,
            {"non_embedding_params": "40%"},
            "evolution",
            {"population_size": 9},
            tmp_path / "run",
            task_id="synthetic",
        )


SMALL_SCHEDULES = {
    "random": {"num_samples": 12, "batch_size": 4},
    "evolution": {"population_size": 4, "generations": 3, "parents": 2},
    "nsga2": {"population_size": 4, "generations": 3},
    "aging": {"population_size": 4, "sample_size": 2, "num_samples": 12, "batch_size": 4},
    "warm_evolution": {"population_size": 4, "generations": 3, "parents": 2, "scorer": "proxy"},
    "rl": {"num_samples": 12, "batch_size": 4},
    "tpe": {"num_samples": 12, "batch_size": 4},
    "bo": {"num_samples": 12, "batch_size": 4, "surrogate": "target", "pool_size": 50},
    "differentiable": {"rounds": 3, "steps_per_round": 2, "top_k": 4},
}
SLOW_STRATEGIES = ("differentiable", "tpe")  # a tiny supernet to train; Optuna's study file


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_STRATEGIES else n for n in sorted(SMALL_SCHEDULES)]
)
def test_every_strategy_runs_through_the_runner_into_the_history(name: str, tmp_path: Path) -> None:
    """Every registered strategy, driven by `run_search`: its evaluations recorded with valid origins, in budget."""
    from metanas.meta.history import ORIGINS
    from metanas.search.registry import STRATEGIES

    assert set(SMALL_SCHEDULES) == set(STRATEGIES)  # a new strategy gets a row here
    needs_supernet = STRATEGIES[name](minilm_space()).wants_evaluator
    ev = trained_tiny_evaluator(4) if needs_supernet else synthetic_evaluator(synthetic_loss)
    space = ev.sn.space if ev.sn is not None else minilm_space()
    cm = CostModel(space, seq_len=128)
    objectives = ("fitness", "params") if name == "nsga2" else ("fitness",)
    with HistoryStore(tmp_path / "history.db") as history:
        result = run_search(
            ev, space, cm, {"params": "60%"}, name, SMALL_SCHEDULES[name], tmp_path / "run", history=history,
            task_id="t", seed=0, objectives=objectives,
        )  # fmt: skip
        rows = history.records(run_id=result.run_id)
    extra = 7 if name == "warm_evolution" else 0  # the warm start also scores the 7 anchors within the budget
    assert len(rows) == result.num_evaluations == 12 + extra == len({r.arch for r in rows})
    assert {r.origin for r in rows} <= set(ORIGINS)
    limit = json.loads((tmp_path / "run" / RESULT_FILE).read_text())["budget"]["params"]
    assert all(r.params <= limit for r in rows)


def test_run_search_multi_objective(tmp_path: Path) -> None:
    space = minilm_space()
    cm = CostModel(space, seq_len=128)
    result = run_search(
        synthetic_evaluator(synthetic_loss),
        space,
        cm,
        Budget(params="70%"),
        "nsga2",
        {"population_size": 10, "generations": 3},
        tmp_path,
        seed=1,
        objectives=("fitness", "params"),
    )
    points = [(e["fitness"], -e["costs"]["params"]) for e in result.pareto_front]
    assert result.cost_key == "params" and len(points) >= 3 and result.num_evaluations == 30
    assert not any(dominates(p, q) for p in points for q in points)
    with pytest.raises(ValueError, match="needs strategy 'nsga2'"):
        run_search(
            synthetic_evaluator(synthetic_loss),
            space,
            cm,
            {},
            "evolution",
            None,
            tmp_path / "x",
            objectives=("fitness", "params"),
        )
    with pytest.raises(ValueError, match="needs two objectives"):
        run_search(synthetic_evaluator(synthetic_loss), space, cm, {}, "nsga2", None, tmp_path / "y")
    with pytest.raises(ValueError, match="no 'latency_ms'"):
        run_search(
            synthetic_evaluator(synthetic_loss),
            space,
            cm,
            {},
            "nsga2",
            None,
            tmp_path / "z",
            objectives=("fitness", "latency_ms"),
        )


def test_infeasible_budget_raises_before_any_evaluation(tmp_path: Path) -> None:
    space = minilm_space()
    ev = synthetic_evaluator(synthetic_loss)
    history = HistoryStore(tmp_path / "history.db")
    with pytest.raises(ValueError, match="infeasible budget: params"):
        run_search(
            ev, space, CostModel(space), {"params": 1_000_000}, "evolution", None, tmp_path / "run", history=history
        )
    assert ev.num_evaluations == 0 and ev.objective.calls == 0
    assert not (tmp_path / "run" / STATE_FILE).exists() and history.records() == [] and history.runs() == []


# --------------------------------------------------------------------------- kill and resume

RESUME_OPTIONS = {"population_size": 8, "generations": 5, "parents": 3}
RESUME_BUDGET = {"non_embedding_params": "50%"}


def resume_worker(run_dir: str, db: str, hang_at: int = 0) -> None:
    """One search process of the kill-and-resume test (also run in-process for the reference)."""
    space = minilm_space()
    run_search(
        synthetic_evaluator(synthetic_loss, hang_at=hang_at),
        space,
        CostModel(space),
        RESUME_BUDGET,
        "evolution",
        RESUME_OPTIONS,
        run_dir,
        history=HistoryStore(db),
        task_id="resume",
        seed=3,
    )


def spawn_worker(run_dir: Path, db: Path, hang_at: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, str(run_dir), str(db), str(hang_at)], env=child_env())


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    resume_worker(str(tmp_path / "ref"), str(tmp_path / "ref.db"))
    ref_state = json.loads((tmp_path / "ref" / STATE_FILE).read_text())
    ref_report = json.loads((tmp_path / "ref" / RESULT_FILE).read_text())
    ref_rows = HistoryStore(tmp_path / "ref.db").records(run_id=ref_state["run_id"])

    run_dir, db = tmp_path / "run", tmp_path / "run.db"
    # The worker blocks in its 11th evaluation: generation 0 (8 archs) is checkpointed and
    # 2 archs of generation 1 are already in the history when it is killed.
    proc = spawn_worker(run_dir, db, hang_at=11)
    try:
        state_path, deadline = run_dir / STATE_FILE, time.monotonic() + 90

        def checkpointed() -> bool:
            return state_path.exists() and bool(json.loads(state_path.read_text())["generations"])

        wait_until(checkpointed, proc, 90, "the worker checkpointed generation 0", interval=0.05)
        run_id = json.loads(state_path.read_text())["run_id"]
        store = HistoryStore(db)
        wait_until(
            lambda: len(store.records(run_id=run_id)) >= 10,
            proc,
            deadline - time.monotonic(),
            "the worker recorded 10 evaluations",
            interval=0.05,
        )
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_state = json.loads(state_path.read_text())
    assert len(killed_state["evaluations"]) == 8 and killed_state["strategy"]["generation"] == 1

    resumed = spawn_worker(run_dir, db)
    assert resumed.wait(timeout=120) == 0
    state = json.loads(state_path.read_text())
    report = json.loads((run_dir / RESULT_FILE).read_text())
    rows = HistoryStore(db).records(run_id=state["run_id"])
    assert state["run_id"] == killed_state["run_id"]
    assert report["best"] == ref_report["best"] and report["pareto_front"] == ref_report["pareto_front"]
    assert report["generations"] == ref_report["generations"] and report["num_evaluations"] == 40
    assert state["evaluations"] == ref_state["evaluations"]
    assert len(rows) == len(ref_rows) == 40 and len({r.arch for r in rows}) == 40  # none missing, none twice
    key = [(r.arch, r.fitness, r.generation, r.origin) for r in rows]
    assert key == [(r.arch, r.fitness, r.generation, r.origin) for r in ref_rows]
    # The 2 archs evaluated before the kill were reused from the history, not run again.
    assert state["forward_evaluations"] == 38 and ref_state["forward_evaluations"] == 40


# --------------------------------------------------------------------------- a trained tiny supernet


@pytest.fixture(scope="module")
def trained_evaluator() -> Evaluator:
    """A tiny BERT supernet after 40 sandwich steps of KD, scored on one fixed validation batch."""
    return trained_tiny_evaluator(40)


@pytest.mark.slow
def test_evolution_beats_random_on_a_trained_supernet(trained_evaluator: Evaluator) -> None:
    ev = trained_evaluator
    space = ev.sn.space
    cm = CostModel(space, seq_len=24)
    budget = cm.check_feasible(Budget(non_embedding_params="30%", seq_len=24))
    assert ev.fitness(space.largest()) > ev.fitness(space.smallest()) + 0.2

    def feasible(arch: ArchConfig) -> bool:
        return cm.feasible(arch, budget)

    def sampler(rng: random.Random) -> ArchConfig:
        return cm.sample_feasible(rng, budget, 200)

    best = {"evolution": [], "random": []}
    for seed in SEEDS:
        strategies = {
            "evolution": Evolution(space, feasible, seed, population_size=8, generations=8, parents=3, sampler=sampler),
            "random": RandomSearch(space, feasible, seed, num_samples=64, batch_size=8, sampler=sampler),
        }
        for name, strategy in strategies.items():
            asked = drive(strategy, ev.fitness)
            assert len(set(asked)) == len(asked) == 64 and all(cm.feasible(a, budget) for a in asked)
            best[name].append(max(ev.fitness(a) for a in asked))
    evo, rnd = statistics.median(best["evolution"]), statistics.median(best["random"])
    assert evo > rnd, (best, evo, rnd)
    assert sum(e >= r for e, r in zip(sorted(best["evolution"]), sorted(best["random"]))) >= 5
    assert ev.evals_per_minute > 300


if __name__ == "__main__":
    resume_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
