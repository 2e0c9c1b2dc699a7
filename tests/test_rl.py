"""Tests of the REINFORCE controller (`metanas.search.rl`): budget, determinism, exact resume, and that it learns.

Scores come from `synthetic_loss` over the MiniLM space, so every search runs in milliseconds.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from synthetic import MINILM, drive, minilm_space, synthetic_evaluator, synthetic_loss

from metanas.config import SearchSection
from metanas.cost import Budget, CostModel
from metanas.meta.history import HistoryStore
from metanas.search import RandomSearch, RLController, make_strategy
from metanas.search.configs import RLConfig, make_config
from metanas.search.runner import RESULT_FILE, STATE_FILE, run_search
from metanas.space import ArchConfig, SearchSpace
from metanas.tracking import Tracker, read_metrics

SEEDS = range(7)


def fitness(arch: ArchConfig) -> float:
    return -synthetic_loss(arch)


def constrained(**limits: Any) -> tuple[SearchSpace, Callable[[ArchConfig], bool], Callable[[random.Random], Any]]:
    """The MiniLM space, its feasibility predicate under `limits`, and the runner's constraint-aware sampler."""
    space = minilm_space()
    cm = CostModel(space, seq_len=128)
    budget = cm.check_feasible(Budget(**limits))
    return space, lambda a: cm.feasible(a, budget), lambda r: cm.sample_feasible(r, budget, 200)


def test_every_evaluated_arch_fits_the_budget_with_and_without_repair() -> None:
    rejections = {}
    for limits in ({"params": "40%"}, {"non_embedding_params": "25%"}):
        space, feasible, sampler = constrained(**limits)
        assert not feasible(space.largest())
        for repair in (True, False):
            strategy = RLController(space, feasible, 0, sampler=sampler, num_samples=120, repair=repair)
            asked = drive(strategy, fitness)
            assert len(asked) == len(set(asked)) == 120 == strategy.planned_evaluations()
            assert all(feasible(a) and space.contains(a) for a in asked)
            assert strategy.updates == strategy.generation == 24  # one update per told batch of 5
            rejections[next(iter(limits)), repair] = strategy.rejections
    print("rejections (budget, repair):", rejections)
    assert all(rejections[k, True] * 5 < rejections[k, False] for k in ("params", "non_embedding_params"))


def test_the_update_follows_the_advantage_of_the_evaluated_arch() -> None:
    space = minilm_space()
    strategy = RLController(space, None, 0, baseline_decay=0.0, entropy_weight=0.0)
    good, bad = space.largest(), space.smallest()
    before = strategy.policy.log_probs([good, bad], strategy.policy.log_softmax()).tolist()
    strategy.update([good, bad], [1.0, 0.0])  # first baseline: the batch mean, so advantages +0.5 and -0.5
    after = strategy.policy.log_probs([good, bad], strategy.policy.log_softmax()).tolist()
    assert after[0] > before[0] and after[1] < before[1]
    assert strategy.baseline == 0.5 and strategy.updates == 1
    # Only the layer positions the arch has are trained: the 5th and 6th layers' heads are untouched by a 2-layer arch.
    short = RLController(space, None, 0, entropy_weight=0.0)
    short.update([bad, space.uniform(2, 192, 12, 1536)], [0.0, 1.0])
    assert torch.equal(short.policy.heads[2:], torch.zeros_like(short.policy.heads[2:]))
    assert not torch.equal(short.policy.heads[:2], torch.zeros_like(short.policy.heads[:2]))


def test_same_seed_same_proposals_and_different_seed_different() -> None:
    space, feasible, sampler = constrained(non_embedding_params="40%")

    def run(seed: int) -> list[ArchConfig]:
        return drive(RLController(space, feasible, seed, sampler=sampler, num_samples=60), fitness)

    first = run(5)
    assert first == run(5) and len(first) == 60
    assert run(6)[:5] != first[:5]


def test_resumes_exactly_from_json_state() -> None:
    space, feasible, sampler = constrained(params="60%")

    def make() -> RLController:
        return RLController(space, feasible, 7, sampler=sampler, num_samples=60, batch_size=6)

    uninterrupted = make()
    reference = drive(uninterrupted, fitness)
    interrupted = make()
    for _ in range(3):
        archs = interrupted.ask()
        interrupted.tell(archs, [fitness(a) for a in archs])
    pending = interrupted.ask()  # asked, not yet told when the search stops
    restored = make()
    restored.load_state_dict(json.loads(json.dumps(interrupted.state_dict())))
    assert restored.evaluated == interrupted.evaluated and restored.baseline == interrupted.baseline
    for name, t in restored.policy.logits().items():
        assert torch.equal(t, interrupted.policy.logits()[name])  # float32 -> JSON -> float32 exactly
    for x in (restored, interrupted):
        x.tell(pending, [fitness(a) for a in pending])
    assert restored.ask() == interrupted.ask()
    assert json.dumps(restored.state_dict()) == json.dumps(interrupted.state_dict())  # Adam's moments too
    resumed = make()
    asked = []
    for _ in range(4):
        archs = resumed.ask()
        asked += archs
        resumed.tell(archs, [fitness(a) for a in archs])
    again = make()
    again.load_state_dict(json.loads(json.dumps(resumed.state_dict())))
    assert asked + drive(again, fitness) == reference
    assert json.dumps(again.state_dict()) == json.dumps(uninterrupted.state_dict())
    with pytest.raises(ValueError, match="options"):
        RLController(space, feasible, 7, num_samples=60, batch_size=6, lr=0.1).load_state_dict(resumed.state_dict())


def test_rl_beats_random_search_at_equal_evaluations() -> None:
    space, feasible, sampler = constrained(non_embedding_params="40%")
    best: dict[str, list[float]] = {"rl": [], "random": []}
    for seed in SEEDS:
        for name, strategy in (
            ("rl", RLController(space, feasible, seed, sampler=sampler, num_samples=300)),
            ("random", RandomSearch(space, feasible, seed, sampler=sampler, num_samples=300, batch_size=5)),
        ):
            asked = drive(strategy, fitness)
            assert len(asked) == len(set(asked)) == 300 and all(feasible(a) for a in asked)
            best[name].append(max(fitness(a) for a in asked))
    rl, rnd = statistics.median(best["rl"]), statistics.median(best["random"])
    print(f"median best fitness over {len(SEEDS)} seeds at 300 evaluations: rl {rl:.3f}, random {rnd:.3f}")
    assert rl > rnd + 0.5, best
    assert sum(r > b for r, b in zip(best["rl"], best["random"])) >= 6


def test_the_policy_entropy_falls_and_its_samples_improve() -> None:
    space, feasible, sampler = constrained(non_embedding_params="40%")
    strategy = RLController(space, feasible, 3, sampler=sampler, num_samples=300)
    assert strategy.entropy() == pytest.approx(strategy.policy.max_entropy(), rel=1e-6)  # uniform at the start
    entropies, scores = [strategy.entropy()], []
    while not strategy.done:
        archs = strategy.ask()
        scores += [fitness(a) for a in archs]
        strategy.tell(archs, [fitness(a) for a in archs])
        entropies.append(strategy.entropy())
    quarter = len(entropies) // 4
    first, last = statistics.fmean(scores[:50]), statistics.fmean(scores[-50:])
    print(
        f"entropy {entropies[0]:.2f} -> {entropies[-1]:.2f} nats; mean fitness, first/last 50: {first:.2f}/{last:.2f}"
    )
    assert statistics.fmean(entropies[-quarter:]) < statistics.fmean(entropies[quarter : 2 * quarter])
    assert entropies[-1] < 0.8 * entropies[0]
    assert last > first + 1.0
    (event,) = strategy.events(strategy.generation - 1)
    assert "entropy" in event.message and event.metrics["search/rl_entropy"] == entropies[-1]


def test_rewards_are_scale_free_and_invalid_scores_rank_last() -> None:
    space, feasible, sampler = constrained(non_embedding_params="40%")

    def run(scale: float, shift: float, **options: Any) -> list[ArchConfig]:
        strategy = RLController(space, feasible, 2, sampler=sampler, num_samples=40, **options)
        return drive(strategy, lambda a: scale * fitness(a) + shift)

    assert run(1.0, 0.0) == run(1000.0, -7.0)  # ranks ignore the loss scale exactly
    strategy = RLController(space, None, 0, reward_norm="zscore")
    archs = strategy.ask()
    strategy.tell(archs, [1.0, 2.0, 3.0, math.nan, 4.0])
    assert strategy.normalised_rewards([-math.inf, 2.5, 1e9]) == [-3.0, 0.0, 3.0]
    ranked = RLController(space, None, 0)
    ranked.tell(ranked.ask(), [1.0, 2.0, math.nan, 3.0, 4.0])
    assert ranked.normalised_rewards([-math.inf, 1.0, 4.0]) == [0.1, 0.3, 0.9]


def test_a_small_space_is_exhausted_without_repeating() -> None:
    space = SearchSpace.from_teacher_config(
        MINILM, depth_choices=(1,), hidden_choices=(192, 384), head_choices=(6, 12), ffn_choices=(768, 1536)
    )
    strategy = RLController(space, None, 0, num_samples=50, max_tries=50)
    asked = drive(strategy, fitness)
    assert len(asked) == len(set(asked)) == 8 and strategy.done and strategy.ask() == []


def test_options_are_checked_with_clear_errors() -> None:
    space = minilm_space()
    assert isinstance(make_strategy("rl", space, lr=0.1), RLController)
    defaults = make_config("rl", {})
    assert defaults == RLConfig() and defaults.planned_evaluations() == 1000
    assert (defaults.batch_size, defaults.lr, defaults.entropy_weight, defaults.baseline_decay) == (5, 0.2, 0.05, 0.5)
    allowed = "max_tries, num_samples, batch_size, lr, entropy_weight, baseline_decay, reward_norm, repair"
    with pytest.raises(ValueError, match=f"unknown option.*'learning_rate'.*allowed options: {allowed}"):
        make_strategy("rl", space, learning_rate=0.1)
    with pytest.raises(ValueError, match="did you mean 'entropy_weight'"):
        make_strategy("rl", space, entropy_wieght=0.1)
    with pytest.raises(ValueError, match="RLController: lr must be a finite number > 0, got 0"):
        RLConfig(lr=0)
    with pytest.raises(ValueError, match="entropy_weight must be a finite number >= 0, got -1"):
        RLConfig(entropy_weight=-1)
    with pytest.raises(ValueError, match=r"baseline_decay must be in \[0, 1\), got 1.0"):
        RLConfig(baseline_decay=1.0)
    with pytest.raises(ValueError, match="reward_norm must be one of rank, zscore, got 'raw'"):
        make_strategy("rl", space, reward_norm="raw")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        RLConfig(batch_size=0)
    with pytest.raises(ValueError, match="repair must be true or false, got 'yes'"):
        RLConfig(repair="yes")
    # The recipe validator accepts the strategy and its options, names them on a typo, and wants one objective.
    assert SearchSection(strategy="rl", options={"lr": 0.1, "reward_norm": "zscore"}).strategy == "rl"
    with pytest.raises(ValueError, match="options.lr"):
        SearchSection(strategy="rl", options={"lrr": 0.1})
    with pytest.raises(ValueError, match="multi-objective"):
        SearchSection(strategy="rl", objectives=["fitness", "params"])


def test_run_search_resumed_after_an_interrupt_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    space = minilm_space()
    options = {"num_samples": 40, "batch_size": 5}

    def search(run_dir: Path, store: HistoryStore, interrupt_at: int = 0, tracker: Tracker | None = None) -> Any:
        return run_search(
            synthetic_evaluator(synthetic_loss, interrupt_at=interrupt_at),
            space,
            CostModel(space),
            {"non_embedding_params": "40%"},
            "rl",
            options,
            run_dir,
            history=store,
            task_id="rl",
            seed=4,
            tracker=tracker,
        )

    ref_store = HistoryStore(tmp_path / "ref.db")
    with Tracker(tmp_path / "ref", use_wandb=False) as tracker:
        search(tmp_path / "ref", ref_store, tracker=tracker)
    entropy = [m["search/rl_entropy"] for m in read_metrics(tmp_path / "ref") if "search/rl_entropy" in m]
    assert len(entropy) == 8 and entropy[-1] < entropy[0]
    ref_state = json.loads((tmp_path / "ref" / STATE_FILE).read_text())

    store = HistoryStore(tmp_path / "run.db")
    with pytest.raises(KeyboardInterrupt):  # in the middle of generation 4
        search(tmp_path / "run", store, interrupt_at=23)
    partial = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert partial["strategy"]["generation"] == 4 and len(partial["evaluations"]) == 20
    result = search(tmp_path / "run", store)
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["evaluations"] == ref_state["evaluations"] and state["strategy"] == ref_state["strategy"]
    assert state["forward_evaluations"] == ref_state["forward_evaluations"] - 2  # 2 reused from the history
    key = [(r.arch, r.fitness, r.generation, r.origin) for r in store.records(task_id="rl")]
    assert key == [(r.arch, r.fitness, r.generation, r.origin) for r in ref_store.records(task_id="rl")]
    assert len(set(key)) == 40
    report = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert report["best"] == json.loads((tmp_path / "ref" / RESULT_FILE).read_text())["best"]
    assert result.best_costs["non_embedding_params"] <= report["budget"]["non_embedding_params"]
    policy = report["rl_policy"]  # where the policy ended: its entropy (below uniform's) and its mode
    assert policy == state["extra"]["rl_policy"] == ref_state["extra"]["rl_policy"]
    assert policy["updates"] == 8 and 0 < policy["entropy_share"] < 1 and policy["entropy"] == entropy[-1]
    assert space.contains(ArchConfig.from_dict(policy["mode"]))
