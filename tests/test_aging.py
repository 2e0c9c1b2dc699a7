"""Tests of the strong cold baselines: feasibility repair, aging evolution and budget sizing (offline, seeded).

Scores come from `synthetic_loss` over the MiniLM space, so every search runs in milliseconds.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable
from typing import Any

import pytest
from synthetic import MINILM, drive, minilm_space, synthetic_loss

from metanas.config import SearchSection
from metanas.cost import Budget, CostModel
from metanas.search import AgingEvolution, Evolution, RandomSearch, Strategy, make_strategy
from metanas.search.configs import AgingEvolutionConfig, EvolutionConfig, make_config
from metanas.space import ArchConfig, SearchSpace

SEEDS = range(6)


def fitness(arch: ArchConfig) -> float:
    return -synthetic_loss(arch)


def constrained(**limits: Any) -> tuple[SearchSpace, Callable[[ArchConfig], bool], Callable[[random.Random], Any]]:
    """The MiniLM space, its feasibility predicate under `limits`, and the runner's constraint-aware sampler."""
    space = minilm_space()
    cm = CostModel(space, seq_len=128)
    budget = cm.check_feasible(Budget(**limits))
    return space, lambda a: cm.feasible(a, budget), lambda r: cm.sample_feasible(r, budget, 200)


# --------------------------------------------------------------------------- shrink and repair


def test_shrink_moves_one_choice_down_and_respects_a_floor() -> None:
    space = minilm_space()
    rng = random.Random(0)
    arch, steps = space.largest(), 0
    while (smaller := space.shrink(arch, rng)) is not None:
        changed = [
            smaller.depth != arch.depth,
            smaller.hidden != arch.hidden,
            smaller.heads != arch.heads[: smaller.depth],
            smaller.ffn != arch.ffn[: smaller.depth],
        ]
        assert sum(changed) == 1 and space.params(smaller) < space.params(arch) and space.contains(smaller)
        arch, steps = smaller, steps + 1
    assert arch == space.smallest() and steps > 20
    # With a floor, only genes above it move, and the chain stops at (or below) the floor.
    floor = space.uniform(4, 288, 6, 768)
    arch = space.largest()
    while (smaller := space.shrink(arch, rng, floor)) is not None:
        arch = smaller
    assert arch == floor
    fixed = SearchSpace.from_teacher_config(MINILM, hidden_choices=(384,))
    assert all(fixed.shrink(fixed.largest(), r).hidden == 384 for r in range(30))  # hidden is not elastic


def test_repair_keeps_a_mutant_near_its_parent() -> None:
    space, feasible, sampler = constrained(non_embedding_params="30%")
    strategy = Evolution(space, feasible, 0, sampler=sampler)
    parent = next(space.uniform_shrinks(feasible))[0]  # the largest feasible uniform arch: a tight parent
    over = ArchConfig(parent.depth, parent.hidden, parent.heads, (1536,) * parent.depth)
    assert feasible(parent) and not feasible(over)
    fixed = strategy.repaired(over, parent)
    assert feasible(fixed) and fixed.depth == parent.depth and fixed.heads == parent.heads
    assert all(p <= f <= 1536 for p, f in zip(parent.ffn, fixed.ffn))  # only the grown genes came back down
    assert strategy.repaired(parent) == parent
    nothing_fits = Evolution(space, lambda a: False, 0)
    assert nothing_fits.repaired(over) == over  # the caller rejects and redraws it


def test_every_proposal_is_feasible_and_repair_cuts_the_rejections() -> None:
    measured: dict[tuple[str, bool], int] = {}
    for name in ("evolution", "aging"):
        for repair in (False, True):
            total = 0
            for seed in SEEDS:
                space, feasible, sampler = constrained(non_embedding_params="30%")
                config = {"evolution": EvolutionConfig, "aging": AgingEvolutionConfig}[name]
                options = config.for_budget(128, repair=repair).to_dict()
                strategy = make_strategy(name, space, feasible, seed, sampler=sampler, **options)
                asked = drive(strategy, fitness)
                assert all(feasible(a) for a in asked) and len(set(asked)) == len(asked)
                assert len(asked) == strategy.planned_evaluations()
                total += strategy.rejections
            measured[name, repair] = total
    print("rejections over", len(SEEDS), "seeds:", measured)
    assert measured["evolution", True] * 10 < measured["evolution", False]
    assert measured["aging", True] * 2 < measured["aging", False]


# --------------------------------------------------------------------------- aging evolution


def test_aging_beats_random_search_at_equal_evaluations() -> None:
    space, feasible, sampler = constrained(non_embedding_params="30%")
    best: dict[str, list[float]] = {"aging": [], "random": []}
    for seed in SEEDS:
        strategies: dict[str, Strategy] = {
            "aging": AgingEvolution(
                space, feasible, seed, sampler=sampler, config=AgingEvolutionConfig.for_budget(256)
            ),
            "random": RandomSearch(space, feasible, seed, num_samples=256, batch_size=16, sampler=sampler),
        }
        for name, strategy in strategies.items():
            asked = drive(strategy, fitness)
            assert len(asked) == len(set(asked)) == 256
            best[name].append(max(fitness(a) for a in asked))
    aging, rnd = statistics.mean(best["aging"]), statistics.mean(best["random"])
    print(f"mean best fitness over {len(SEEDS)} seeds: aging {aging:.3f}, random {rnd:.3f}")
    assert aging > rnd + 0.4, best
    assert sum(a > r for a, r in zip(best["aging"], best["random"])) >= 5


def test_aging_removes_the_oldest_member_however_fit() -> None:
    space = minilm_space()
    strategy = AgingEvolution(space, None, 0, population_size=3, sample_size=2, num_samples=10, batch_size=2)
    first = strategy.ask(10)
    assert len(first) == 3 and {strategy.origin(a) for a in first} == {"random"}  # only the first population
    strategy.tell(first, [100.0, 1.0, 2.0])  # the oldest is by far the best
    children = strategy.ask()
    assert len(children) == 2 and {strategy.origin(a) for a in children} == {"evolved"}
    assert not set(children) & set(first)
    strategy.tell(children, [0.0, 0.0])
    assert list(strategy.population) == [first[2], *children]
    assert strategy.top(1)[0].arch == first[0]  # still remembered, no longer a parent
    assert strategy.planned_evaluations() == 10
    while not strategy.done:
        archs = strategy.ask()
        strategy.tell(archs, [0.0] * len(archs))
    assert len(strategy.evaluated) == 10 and strategy.ask() == []


def test_aging_resumes_exactly_from_json_state() -> None:
    space, feasible, sampler = constrained(params="60%")

    def make() -> AgingEvolution:
        return AgingEvolution(space, feasible, 7, sampler=sampler, population_size=8, sample_size=3, num_samples=40)

    reference = drive(make(), fitness)
    interrupted = make()
    for _ in range(3):
        archs = interrupted.ask()
        interrupted.tell(archs, [fitness(a) for a in archs])
    pending = interrupted.ask()  # asked, not yet told when the search stops
    restored = make()
    restored.load_state_dict(json.loads(json.dumps(interrupted.state_dict())))
    assert restored.population == interrupted.population and restored.evaluated == interrupted.evaluated
    assert restored.rejections == interrupted.rejections
    restored.tell(pending, [fitness(a) for a in pending])
    interrupted.tell(pending, [fitness(a) for a in pending])
    assert restored.ask() == interrupted.ask()
    resumed = make()
    asked = []
    for _ in range(4):
        archs = resumed.ask()
        asked += archs
        resumed.tell(archs, [fitness(a) for a in archs])
    again = make()
    again.load_state_dict(json.loads(json.dumps(resumed.state_dict())))
    assert asked + drive(again, fitness) == reference
    with pytest.raises(ValueError, match="options"):
        other = AgingEvolution(space, feasible, 7, population_size=9, sample_size=3, num_samples=40)
        other.load_state_dict(resumed.state_dict())


def test_aging_exhausts_a_small_space_without_repeating() -> None:
    space = SearchSpace.from_teacher_config(
        MINILM, depth_choices=(1,), hidden_choices=(192, 384), head_choices=(6, 12), ffn_choices=(768, 1536)
    )
    strategy = AgingEvolution(space, None, 0, population_size=4, sample_size=2, num_samples=50, max_tries=50)
    asked = drive(strategy, fitness)
    assert len(asked) == len(set(asked)) == 8 and strategy.done


# --------------------------------------------------------------------------- options and sizing


def test_budget_sizing() -> None:
    assert EvolutionConfig.for_budget(1000) == EvolutionConfig(repair=True)  # AutoFormer's 50 x 20, top 10
    assert not EvolutionConfig().repair and AgingEvolutionConfig().repair  # evolution's runs stay as they were
    small = EvolutionConfig.for_budget(256, repair=False)
    assert (small.population_size, small.generations, small.parents, small.repair) == (25, 10, 5, False)
    for evaluations in (2, 7, 64, 100, 256, 999, 5000):
        config = EvolutionConfig.for_budget(evaluations)
        assert evaluations - config.generations < config.planned_evaluations() <= evaluations
        aging = AgingEvolutionConfig.for_budget(evaluations)
        assert aging.planned_evaluations() == evaluations and 2 <= aging.sample_size <= aging.population_size
    assert AgingEvolutionConfig.for_budget(256).population_size == 26
    with pytest.raises(ValueError, match="evaluations must be an integer >= 2"):
        EvolutionConfig.for_budget(1)


def test_aging_options_are_checked_with_clear_errors() -> None:
    space = minilm_space()
    assert isinstance(make_strategy("aging", space, sample_size=4), AgingEvolution)
    assert make_config("aging", {}).planned_evaluations() == 1000
    with pytest.raises(ValueError, match="unknown option.*'sample_sze'.*did you mean 'sample_size'.*num_samples"):
        make_strategy("aging", space, sample_sze=4)
    with pytest.raises(ValueError, match="sample_size must be <= population_size.*got 20 > 10"):
        AgingEvolutionConfig(population_size=10, sample_size=20)
    with pytest.raises(ValueError, match="population_size must be <= num_samples"):
        AgingEvolutionConfig(num_samples=20)
    with pytest.raises(ValueError, match="AgingEvolution: batch_size must be an integer >= 1, got 0"):
        AgingEvolutionConfig(batch_size=0)
    with pytest.raises(ValueError, match="repair must be true or false, got 'yes'"):
        make_strategy("evolution", space, repair="yes")
    with pytest.raises(ValueError, match="aging.*objective|multi-objective"):
        SearchSection(strategy="aging", objectives=["fitness", "params"])
    # The recipe validator accepts the new strategy and its options, and names them on a typo.
    assert SearchSection(strategy="aging", options={"sample_size": 5, "repair": False}).strategy == "aging"
    with pytest.raises(ValueError, match="options.sample_size"):
        SearchSection(strategy="aging", options={"sample_sise": 5})
