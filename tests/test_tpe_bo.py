"""Strategies `tpe` (Optuna's samplers) and `bo` (Bayesian optimisation with an ensemble surrogate), offline, seeded.

Scores come from `synthetic_loss` (or, for the meta-predictor, a synthetic task family
whose per-layer weighting depends on a task latent) over the MiniLM space, so every
search runs in well under a second per hundred evaluations; the meta-predictor is
meta-trained in-process with a tiny epoch grid.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from synthetic import drive, minilm_space, synthetic_evaluator, synthetic_loss

from metanas.cost import Budget, CostModel
from metanas.meta.anchors import anchor_archs
from metanas.meta.choice import PREDICTOR_ENV_VAR
from metanas.meta.history import EvalRecord
from metanas.meta.metatrain import meta_train
from metanas.search import RandomSearch, Strategy, make_strategy
from metanas.search.bo import BayesOpt, expected_improvement
from metanas.search.configs import BOConfig, TPEConfig, make_config
from metanas.search.registry import resolve_strategy
from metanas.search.runner import RESULT_FILE, STATE_FILE, run_search
from metanas.search.tpe import OPTUNA_FILE, OptunaSearch, arch_from_params
from metanas.space import ArchConfig

SPACE = minilm_space()
SEEDS = range(5)
BUDGET = {"non_embedding_params": "40%"}
LATENTS = {"src0": (0.8, -0.6), "src1": (0.6, -0.9), "src2": (-0.7, 0.8), "src3": (0.9, -0.3)}
TARGET = (0.7, -0.5)
BO_FAST = {"pool_size": 150, "mutants": 10, "target_epochs": 40, "adapt_steps": 10, "initial_random": 4}
TASK_META = {"objective": "kd", "higher_is_better": True, "seq_len": 128}


def fitness(arch: ArchConfig) -> float:
    return -synthetic_loss(arch)


def constrained(**limits: Any) -> tuple[CostModel, Callable[[ArchConfig], bool], Callable[[random.Random], ArchConfig]]:
    """The cost model, feasibility predicate and the runner's constraint-aware sampler under `limits`."""
    cm = CostModel(SPACE, seq_len=128)
    budget = cm.check_feasible(Budget(**(limits or BUDGET)))
    return cm, lambda a: cm.feasible(a, budget), lambda r: cm.sample_feasible(r, budget, 200)


def tpe(seed: int, limits: dict[str, Any] | None = None, **options: Any) -> OptunaSearch:
    _, feasible, sampler = constrained(**(limits or BUDGET))
    config = TPEConfig(**{"num_samples": 24, "batch_size": 6, "multivariate": True, **options})
    return OptunaSearch(SPACE, feasible, seed, sampler=sampler, config=config)


def bo(seed: int, limits: dict[str, Any] | None = None, **options: Any) -> BayesOpt:
    _, feasible, sampler = constrained(**(limits or BUDGET))
    options = {"surrogate": "target", "num_samples": 30, "batch_size": 6, **BO_FAST, **options}
    return BayesOpt(SPACE, feasible, seed, sampler=sampler, task_meta=TASK_META, **options)


def family_fitness(arch: ArchConfig, z: tuple[float, float]) -> float:
    """Bigger is better with diminishing returns; z moves head and FFN value between lower and upper layers."""
    gain = 3.0 * math.log(arch.hidden)
    for i, (h, f) in enumerate(zip(arch.heads, arch.ffn)):
        t = i / max(1, SPACE.max_depth - 1)
        gain += (1.0 + z[0] * (0.5 - t)) * math.log(h) + (0.8 + z[1] * (t - 0.5)) * math.log(f / 96)
    return gain - 60.0


def target_fitness(arch: ArchConfig) -> float:
    return family_fitness(arch, TARGET)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A meta-predictor trained on 4 source tasks (anchors + 24 random archs each) for 40 epochs."""
    cm, anchors = CostModel(SPACE), anchor_archs(SPACE)
    records = {}
    for t, (task, z) in enumerate(LATENTS.items()):
        rng = random.Random(t)
        archs = anchors + [SPACE.sample(rng) for _ in range(24)]
        records[task] = [
            EvalRecord(
                run_id=f"run-{task}",
                task_id=task,
                space_signature=SPACE.signature(),
                arch=a,
                fitness=family_fitness(a, z),
                metric_name="kd_loss",
                metric_value=-family_fitness(a, z),
                origin="anchor" if i < len(anchors) else "random",
                task_meta={"objective": "kd"},
                **cm.costs(a),
            )  # fmt: skip
            for i, a in enumerate(archs)
        ]
    path = tmp_path_factory.mktemp("predictor") / "meta.safetensors"
    meta_train(records, [SPACE], val_tasks=0.0, epochs_grid=(40,), weight_decay_grid=(1e-4,), out_path=path)
    return path


def resume_matches(make: Callable[[], Strategy], score: Callable[[ArchConfig], float], rounds: int = 2) -> None:
    """A snapshot taken between an ask and its tell, loaded through JSON, proposes and ends like the original."""
    a = make()
    for _ in range(rounds):
        archs = a.ask()
        a.tell(archs, [score(x) for x in archs])
    pending = a.ask()
    b = make()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.evaluated == a.evaluated and b.generation == a.generation == rounds
    for s in (a, b):
        s.tell(pending, [score(x) for x in pending])
    assert drive(b, score) == drive(a, score) and list(b.evaluated.values()) == list(a.evaluated.values())


# --------------------------------------------------------------------------- tpe


def test_tpe_repairs_into_the_budget_and_records_repaired_trials() -> None:
    _, feasible, _ = constrained(non_embedding_params="30%")
    strategy = tpe(0, {"non_embedding_params": "30%"}, num_samples=48)
    asked, origins = [], set()
    while not strategy.done and (archs := strategy.ask()):
        asked += archs
        origins |= {strategy.origin(a) for a in archs}
        strategy.tell(archs, [fitness(a) for a in archs])
    assert len(asked) == len(set(asked)) == 48 == strategy.planned_evaluations() and all(map(feasible, asked))
    assert origins == {"sampled"} and strategy.ask() == [] and not strategy._waiting
    trials = strategy.study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    repaired = [t for t in trials if t.user_attrs.get("repaired")]
    assert repaired and all(t.state == optuna.trial.TrialState.FAIL for t in repaired)
    assert all(not feasible(arch_from_params(t.params)) for t in repaired)  # the raw proposal broke the budget
    assert all(feasible(ArchConfig.from_json(t.user_attrs["arch"])) for t in repaired)  # what was evaluated fits
    # Every evaluation is a completed trial with its arch's parameters and its fitness (duplicates too).
    told = {arch_from_params(t.params): t.value for t in complete}
    assert set(told) == set(asked) and all(told[a] == pytest.approx(fitness(a)) for a in asked)
    assert len(complete) >= len(asked) and all(t.state.is_finished() for t in trials)  # none left running


@pytest.mark.parametrize(
    "sampler", ["tpe", "tpe-no-liar", "nsga2", pytest.param("gp", marks=pytest.mark.slow), "random"]
)
def test_tpe_samplers_are_deterministic_and_resume_exactly(sampler: str) -> None:
    options = {"optuna_sampler": sampler.removesuffix("-no-liar"), "n_startup_trials": 6, "population_size": 8}
    if sampler == "tpe-no-liar":
        options["constant_liar"] = False
        assert drive(tpe(3, **options), fitness) != drive(tpe(3, n_startup_trials=6), fitness)
    if sampler == "gp":
        options.update(num_samples=12, batch_size=4)
    first = drive(tpe(3, **options), fitness)
    assert first == drive(tpe(3, **options), fitness) and len(first) == options.get("num_samples", 24)
    assert first != drive(tpe(4, **options), fitness)
    resume_matches(lambda: tpe(3, **options), fitness)


def beats_random(make: Callable[[int], Strategy], evaluations: int) -> dict[str, list[float]]:
    """Best fitness per seed of `make(seed)` and of random search, both spending `evaluations`, all feasible."""
    _, feasible, sampler = constrained()
    best: dict[str, list[float]] = {"strategy": [], "random": []}
    for seed in SEEDS:
        rnd = RandomSearch(SPACE, feasible, seed, num_samples=evaluations, batch_size=10, sampler=sampler)
        for name, strategy in (("strategy", make(seed)), ("random", rnd)):
            asked = drive(strategy, fitness)
            assert len(asked) == len(set(asked)) == evaluations and all(map(feasible, asked))
            best[name].append(max(map(fitness, asked)))
    medians = {name: round(statistics.median(values), 3) for name, values in best.items()}
    print(f"median best fitness over {len(SEEDS)} seeds at {evaluations} evaluations: {medians}")
    return best


@pytest.mark.slow
def test_tpe_beats_random_search_at_equal_evaluations() -> None:
    best = beats_random(lambda seed: tpe(seed, num_samples=80, batch_size=10, multivariate=False), 80)
    assert statistics.median(best["strategy"]) > statistics.median(best["random"]) + 0.5, best
    assert sum(t > r for t, r in zip(best["strategy"], best["random"])) >= 4


def search(run_dir: Path, strategy: str, options: dict[str, Any], interrupt_at: int = 0, **kw: Any) -> Any:
    evaluator = synthetic_evaluator(synthetic_loss, interrupt_at=interrupt_at)
    cm = CostModel(SPACE)
    return run_search(evaluator, SPACE, cm, BUDGET, strategy, options, run_dir, task_id="t", seed=2, **kw)


def interrupted_then_resumed(tmp_path: Path, strategy: str, options: dict[str, Any], at: int) -> dict[str, Any]:
    """The state of a search stopped by Ctrl-C in its `at`-th evaluation and resumed, next to an uninterrupted one."""
    search(tmp_path / "ref", strategy, options)
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "run", strategy, options, interrupt_at=at)
    search(tmp_path / "run", strategy, options)
    ref, run = (json.loads((tmp_path / d / STATE_FILE).read_text()) for d in ("ref", "run"))
    assert run["evaluations"] == ref["evaluations"] and run["strategy"]["evaluated"] == ref["strategy"]["evaluated"]
    return {"ref": ref, "run": run}


@pytest.mark.slow
def test_tpe_through_run_search_writes_an_optuna_study_and_resumes_exactly(tmp_path: Path) -> None:
    options = {"num_samples": 18, "batch_size": 6, "multivariate": True}
    states = interrupted_then_resumed(tmp_path, "tpe", options, at=9)  # in the 2nd generation
    assert len(states["ref"]["evaluations"]) == 18
    studies = {}
    for name in ("ref", "run"):
        report = json.loads((tmp_path / name / RESULT_FILE).read_text())
        assert report["optuna"]["study_name"] == name and (tmp_path / name / OPTUNA_FILE).is_file()
        studies[name] = optuna.load_study(study_name=name, storage=report["optuna"]["storage"]).get_trials()
    ref, run = studies["ref"], studies["run"]
    assert [(t.params, t.state, t.values) for t in run] == [(t.params, t.state, t.values) for t in ref]
    evaluated = {ArchConfig.from_dict(e["arch"]): e["fitness"] for e in states["ref"]["evaluations"]}
    complete = {arch_from_params(t.params): t.value for t in ref if t.state == optuna.trial.TrialState.COMPLETE}
    assert complete == pytest.approx(evaluated)


@pytest.mark.slow
def test_tpe_resume_trims_a_mirror_that_ran_ahead_of_the_checkpoint(tmp_path: Path) -> None:
    a = tpe(1)
    a.attach({}, [], tmp_path)
    for _ in range(2):
        archs = a.ask()
        a.tell(archs, [fitness(x) for x in archs])
    checkpoint = json.loads(json.dumps(a.state_dict()))
    archs = a.ask()
    a.tell(archs, [fitness(x) for x in archs])  # the mirror now holds a generation the checkpoint lacks
    storage = f"sqlite:///{tmp_path.resolve() / OPTUNA_FILE}"
    assert len(optuna.load_study(study_name=tmp_path.name, storage=storage).trials) > len(
        checkpoint["optuna"]["trials"]
    )
    b = tpe(1)
    b.attach({}, [], tmp_path)
    b.load_state_dict(checkpoint)
    mirrored = optuna.load_study(study_name=tmp_path.name, storage=storage).trials
    assert [t.params for t in mirrored] == [t.params for t in b.study.trials] and len(mirrored) == len(
        checkpoint["optuna"]["trials"]
    )


def test_tpe_options_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"optuna_sampler must be one of tpe, nsga2, gp, random, got 'cmaes'"):
        make_config("tpe", {"optuna_sampler": "cmaes"})
    with pytest.raises(ValueError, match=r"unknown option.*'optuna_samplr'.*did you mean 'optuna_sampler'"):
        make_strategy("tpe", SPACE, optuna_samplr="tpe")
    with pytest.raises(ValueError, match=r"multivariate must be true or false"):
        TPEConfig(multivariate="yes")
    with pytest.raises(ValueError, match=r"constant_liar must be true or false"):
        TPEConfig(constant_liar=1)
    assert TPEConfig.objective_counts == (1,)
    monkeypatch.delattr(optuna.samplers, "GPSampler")
    with pytest.raises(ValueError, match=r"optuna_sampler 'gp' needs optuna.samplers.GPSampler.*tpe, nsga2 or random"):
        make_strategy("tpe", SPACE, optuna_sampler="gp")


# --------------------------------------------------------------------------- bo


def test_expected_improvement_numbers() -> None:
    ei = expected_improvement(np.array([1.0, 1.0, 2.0, 0.0, 0.5]), np.array([1.0, 0.0, 0.0, 0.0, 2.0]), 1.0)
    assert ei[0] == pytest.approx(1 / math.sqrt(2 * math.pi))  # at the incumbent: sigma * phi(0)
    assert list(ei[1:4]) == [0.0, 1.0, 0.0]  # no uncertainty: the plain improvement
    assert ei[4] > ei[0]  # a lower mean, but unsure enough to be worth more
    assert expected_improvement(np.array([1.0]), np.array([1.0]), 1.0, xi=0.5)[0] < ei[0]


def test_bo_starts_with_the_feasible_anchors_and_keeps_the_budget() -> None:
    _, feasible, _ = constrained(non_embedding_params="30%")
    strategy = bo(0, {"non_embedding_params": "30%"}, num_samples=44)
    asked, origins = [], []
    while not strategy.done and (archs := strategy.ask()):
        asked += archs
        origins += [strategy.origin(a) for a in archs]
        strategy.tell(archs, [fitness(a) for a in archs])
    anchors = [a for a in anchor_archs(SPACE) if feasible(a)]
    assert len(asked) == len(set(asked)) == 44 and all(map(feasible, asked))
    assert asked[: len(anchors)] == anchors and origins[: len(anchors)] == ["anchor"] * len(anchors)
    assert origins[len(anchors) : len(anchors) + 4] == ["random"] * 4 and set(origins[len(anchors) + 4 :]) == {
        "predicted"
    }
    assert strategy.surrogate == "target" and strategy.describe().message.startswith("bo surrogate=target")


@pytest.mark.slow
def test_bo_beats_random_search_at_equal_evaluations() -> None:
    best = beats_random(lambda seed: bo(seed, num_samples=60, batch_size=10), 60)
    assert statistics.median(best["strategy"]) > statistics.median(best["random"]) + 1.0, best
    assert sum(b > r for b, r in zip(best["strategy"], best["random"])) >= 4


@pytest.mark.parametrize("surrogate", ["target", "meta"])
def test_bo_is_deterministic_and_resumes_exactly(surrogate: str, predictor: Path) -> None:
    options = {"surrogate": surrogate, "warm_start": str(predictor) if surrogate == "meta" else "auto"}
    first = drive(bo(5, **options), target_fitness)
    assert first == drive(bo(5, **options), target_fitness) and len(first) == 30
    assert first != drive(bo(6, **options), target_fitness)
    resume_matches(lambda: bo(5, **options), target_fitness)


def test_bo_keeps_one_pool_featurizes_each_arch_once_and_chains_its_adaptations(
    monkeypatch: pytest.MonkeyPatch, predictor: Path
) -> None:
    import metanas.search.bo as bo_module

    featurized: list[ArchConfig] = []
    real = bo_module.arch_feature_matrix

    def counting(space: Any, archs: Any, *args: Any) -> np.ndarray:
        featurized.extend(archs)
        return real(space, archs, *args)

    monkeypatch.setattr(bo_module, "arch_feature_matrix", counting)
    strategy = bo(3, surrogate="meta", warm_start=str(predictor), num_samples=34, adapt_steps=7, readapt_steps=3)
    _, feasible, _ = constrained()
    drive(strategy, target_fitness)
    assert len(featurized) == len(set(featurized))  # every candidate scored in several rounds, featurized once
    pool = strategy._pool
    assert pool and len(pool) <= BO_FAST["pool_size"] and all(map(feasible, pool))
    assert bo(3, surrogate="meta", warm_start=str(predictor))._pool_archs() == pool  # its own stream: redrawn alike
    # One adaptation per EI round, each on more evaluations than the last: the initial design, then 6 more a round.
    seen = [n for n, _ in strategy._adaptations]
    assert len(strategy.evaluated) == 34 and seen == list(range(seen[0], 34, 6)) and len(seen) >= 3

    # The chain by hand: the first adaptation from the file with adapt_steps, each later one from the last.
    evaluations = list(strategy.evaluated.values())
    model = strategy.base
    for i, (n, seed) in enumerate(strategy._adaptations):
        rows = evaluations[:n]
        x = strategy._features([e.arch for e in rows])
        x_task = np.tile(strategy._task_embedding(n), (n, 1))
        model = model.adapt(x, x_task, [e.fitness for e in rows], 7 if i == 0 else 3, 2e-3, seed)
    probe = strategy._features(pool[:20])
    x_probe = np.tile(strategy._task_embedding(len(evaluations)), (20, 1))
    np.testing.assert_array_equal(model.predict(probe, x_probe)[0], strategy._adapted.predict(probe, x_probe)[0])


def test_bo_refuses_a_state_saved_before_its_surrogate_was_chained(predictor: Path) -> None:
    strategy = bo(0, surrogate="meta", warm_start=str(predictor), num_samples=20)
    drive(strategy, target_fitness)
    state = json.loads(json.dumps(strategy.state_dict()))
    del state["bo"]["adaptations"]
    with pytest.raises(ValueError, match="earlier metanas.*cannot resume exactly"):
        bo(0, surrogate="meta", warm_start=str(predictor), num_samples=20).load_state_dict(state)


def test_bo_with_the_meta_predictor_finds_good_archs_early(predictor: Path) -> None:
    _, feasible, sampler = constrained()
    best: dict[str, list[float]] = {"meta": [], "random": []}
    for seed in SEEDS:
        meta = bo(seed, surrogate="meta", warm_start=str(predictor), num_samples=40)
        assert meta.surrogate == "meta" and meta.describe().message.startswith("warm start from")
        best["meta"].append(max(map(target_fitness, drive(meta, target_fitness))))
        rnd = RandomSearch(SPACE, feasible, seed, num_samples=40, batch_size=8, sampler=sampler)
        best["random"].append(max(map(target_fitness, drive(rnd, target_fitness))))
    print(
        "median best over", len(SEEDS), "seeds at 40 evaluations:", {k: statistics.median(v) for k, v in best.items()}
    )
    assert statistics.median(best["meta"]) > statistics.median(best["random"]) + 1.0, best


def test_bo_through_run_search_resumes_exactly(tmp_path: Path, predictor: Path) -> None:
    options = {"num_samples": 34, "batch_size": 6, "warm_start": str(predictor), **BO_FAST}
    states = interrupted_then_resumed(tmp_path, "bo", options, at=26)  # in the 2nd EI round
    origins = [e["origin"] for e in states["ref"]["evaluations"]]
    assert origins[0] == "anchor" and origins[-1] == "predicted" and len(origins) == 34
    report = json.loads((tmp_path / "ref" / RESULT_FILE).read_text())
    assert report["bo"]["surrogate"] == "meta" and report["bo"]["predictor"] == str(predictor)


def test_bo_options_and_fallbacks(tmp_path: Path, predictor: Path) -> None:
    with pytest.raises(ValueError, match=r"surrogate must be one of meta, target, got 'gp'"):
        make_config("bo", {"surrogate": "gp"})
    with pytest.raises(ValueError, match=r"surrogate='target' uses no predictor file.*got 'off'"):
        BOConfig(surrogate="target", warm_start="off")
    with pytest.raises(ValueError, match=r"xi must be a finite number >= 0"):
        BOConfig(xi=-1)
    cold = bo(0, surrogate="meta", warm_start="off")
    assert cold.surrogate == "target" and "no meta-predictor" in cold.describe().message and not cold.wants_sources
    warm = bo(0, surrogate="meta", warm_start=str(predictor))
    archs = warm.ask()
    warm.tell(archs, [target_fitness(a) for a in archs])
    with pytest.raises(ValueError, match="predictor sha256"):
        bo(0, surrogate="meta", warm_start="off").load_state_dict(json.loads(json.dumps(warm.state_dict())))


def test_a_recipe_warm_start_reaches_bo_and_only_strategies_that_have_one() -> None:
    from metanas.search.registry import resolve_strategy

    bo = resolve_strategy("bo", {"batch_size": 5}, "off")
    assert bo.options == {"batch_size": 5, "warm_start": "off"} and bo.warm_start is not None
    assert not bo.warm_start.active
    rl = resolve_strategy("rl", {}, "auto")
    assert rl.options == {} and rl.warm_start is None and "no warm start" in rl.message


# --------------------------------------------------------------------------- tpe warm-started (transfer)

WARM_FAST = {"num_samples": 30, "batch_size": 6, "warm_pool": 300}


def warm_tpe(seed: int, predictor: Path | str, limits: dict[str, Any] | None = None, **options: Any) -> OptunaSearch:
    return tpe(seed, limits, **{**WARM_FAST, "warm_start": str(predictor), **options})


def rounds_of(strategy: Strategy, score: Callable[[ArchConfig], float]) -> list[list[tuple[ArchConfig, str]]]:
    """Drive `strategy` to the end; every ask's archs with their origins."""
    out = []
    while not strategy.done and (archs := strategy.ask()):
        out.append([(a, strategy.origin(a)) for a in archs])
        strategy.tell(archs, [score(a) for a in archs])
    return out


def source_records(tasks: list[str]) -> list[EvalRecord]:
    """Previous searches of the family under the test budget: anchors, 16 random archs and the 6 best of 400."""
    cm, anchors = CostModel(SPACE), anchor_archs(SPACE)
    _, _, sampler = constrained()
    out = []
    for t, task in enumerate(tasks):
        z, rng = LATENTS[task], random.Random(100 + t)
        searched = sorted({sampler(rng) for _ in range(400)}, key=lambda a: -family_fitness(a, z))[:6]
        archs = anchors + [SPACE.sample(rng) for _ in range(16)] + searched
        out += [
            EvalRecord(
                run_id=f"run-{task}",
                task_id=task,
                space_signature=SPACE.signature(),
                arch=a,
                fitness=family_fitness(a, z),
                metric_name="kd_loss",
                metric_value=-family_fitness(a, z),
                origin="anchor" if i < len(anchors) else "evolved",
                task_meta={"objective": "kd"},
                **cm.costs(a),
            )  # fmt: skip
            for i, a in enumerate(archs)
        ]
    return out


def test_warm_tpe_proposes_the_anchors_then_better_predicted_picks_then_tpe(predictor: Path) -> None:
    _, feasible, sampler = constrained()
    anchors = [a for a in anchor_archs(SPACE) if feasible(a)]
    rng = random.Random(99)
    random_mean = statistics.mean(target_fitness(sampler(rng)) for _ in range(2000))
    pick_means = []
    for seed in SEEDS:
        strategy = warm_tpe(seed, predictor)
        rounds = rounds_of(strategy, target_fitness)
        asked = [a for r in rounds for a, _ in r]
        assert len(asked) == len(set(asked)) == 30 and all(map(feasible, asked))
        assert rounds[0] == [(a, "anchor") for a in anchors]  # the first round: every feasible anchor, in order
        picks = rounds[1]
        assert [o for _, o in picks] == ["predicted"] * 8 and not set(anchors) & {a for a, _ in picks}
        assert {o for r in rounds[2:] for _, o in r} == {"sampled"} and strategy.warm.stage == "sampler"
        assert [
            (ArchConfig.from_dict(p["arch"]), p["origin"]) for p in strategy.extra_state()["tpe_warm"]["picks"]
        ] == picks
        pick_means.append(statistics.mean(target_fitness(a) for a, _ in picks))
        # Anchors and picks joined the study as completed trials before the sampler's first trial.
        first = strategy.study.get_trials()[: len(anchors) + 8]
        assert [arch_from_params(t.params) for t in first] == asked[: len(anchors) + 8]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in first)
    print(f"picks' mean fitness per seed {[round(m, 2) for m in pick_means]}, random feasible {random_mean:.2f}")
    assert min(pick_means) > random_mean + 5.0


def test_warm_tpe_keeps_a_tight_budget_and_starts_cold_without_a_predictor(
    predictor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tight = {"non_embedding_params": "30%"}
    _, feasible, _ = constrained(**tight)
    asked = drive(warm_tpe(1, predictor, tight, num_samples=40), target_fitness)
    assert len(asked) == len(set(asked)) == 40 and all(map(feasible, asked))
    # No predictor (off, or auto with none usable): the cold tpe, the same proposals for the same seed.
    monkeypatch.setenv(PREDICTOR_ENV_VAR, str(tmp_path / "missing.safetensors"))
    cold = [
        tpe(2, **WARM_FAST),
        tpe(2, **{**WARM_FAST, "warm_start": "off"}),
        tpe(2, **{**WARM_FAST, "warm_start": "auto"}),
    ]
    for strategy in cold:
        assert not strategy.warm.active and "cold, no transfer start" in strategy.describe().message
        assert strategy.describe().metrics["search/tpe_warm_start"] is False
    runs = [drive(s, target_fitness) for s in cold]
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 30
    assert cold[2].wants_sources and not cold[1].wants_sources  # auto asks for sources, off does not
    assert runs[0] != drive(warm_tpe(2, predictor), target_fitness)


def test_warm_tpe_resumes_exactly_after_the_anchors_and_later(predictor: Path) -> None:
    a = warm_tpe(3, predictor)
    anchors = a.ask()
    a.tell(anchors, [target_fitness(x) for x in anchors])
    b = warm_tpe(3, predictor)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # picks not chosen yet: the resumed search chooses them
    assert b.warm.stage == "anchors" and not b.warm.picks
    assert drive(b, target_fitness) == drive(a, target_fitness) and b.warm.picks == a.warm.picks
    assert list(b.evaluated.values()) == list(a.evaluated.values())
    resume_matches(lambda: warm_tpe(3, predictor), target_fitness, rounds=1)  # between the picks' ask and tell
    resume_matches(lambda: warm_tpe(3, predictor), target_fitness, rounds=3)  # in the sampler's rounds


def test_warm_tpe_auto_takes_the_default_predictor_and_similar_tasks_incumbents(
    predictor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PREDICTOR_ENV_VAR, str(predictor))
    sources = source_records(["src0", "src2"])  # fewer tasks than auto trains on: the default predictor
    strategy = warm_tpe(0, "auto")
    assert strategy.wants_sources
    strategy.attach(TASK_META, sources, tmp_path)
    assert strategy.warm.active and "similar source tasks' incumbents" in strategy.describe().message
    rounds = rounds_of(strategy, target_fitness)
    seeded = [a for a, o in rounds[1] if o == "seed"]
    assert seeded and set(seeded) <= {r.arch for r in sources} and len(rounds[1]) == 8
    resumed = warm_tpe(0, "auto")
    resumed.attach(TASK_META, sources, tmp_path)
    state = json.loads(json.dumps(strategy.state_dict()))
    resumed.load_state_dict(state)
    assert resumed.warm.picks == strategy.warm.picks
    # A state saved with one predictor is refused by a search that resolves to another (here: none).
    monkeypatch.setenv(PREDICTOR_ENV_VAR, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="predictor sha256"):
        warm_tpe(0, "auto").load_state_dict(state)
    # Recipes pass their warm_start (default auto) to tpe; make_strategy("tpe") stays cold.
    recipe = resolve_strategy("tpe", {"batch_size": 5}, "auto")
    assert recipe.options == {"batch_size": 5, "warm_start": "auto"}
    assert make_strategy("tpe", SPACE).config.warm_start == "off" and not make_strategy("tpe", SPACE).warm.active


def test_warm_tpe_options_and_a_bad_predictor_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tpe: warm_start must be 'off', 'auto' or a usable predictor file"):
        tpe(0, warm_start=str(tmp_path / "nope.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"not a predictor")
    with pytest.raises(ValueError, match=r"tpe: warm_start must be .*bad.safetensors.*damaged"):
        tpe(0, warm_start=str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"TPE: warm_start must be 'off', 'auto' or a predictor file, got ''"):
        TPEConfig(warm_start="")
    with pytest.raises(ValueError, match=r"warm_picks must be an integer >= 0"):
        make_config("tpe", {"warm_picks": -1})
    with pytest.raises(ValueError, match=r"warm_pool must be an integer >= 1"):
        make_config("tpe", {"warm_pool": 0})
    assert (TPEConfig().warm_start, TPEConfig().warm_picks, TPEConfig().warm_pool) == ("off", 8, 2000)


def test_warm_tpe_finds_good_archs_sooner_than_cold_tpe(predictor: Path) -> None:
    best: dict[str, list[float]] = {"warm": [], "cold": []}
    for seed in SEEDS:
        for name, strategy in (
            ("warm", warm_tpe(seed, predictor, num_samples=16)),
            ("cold", tpe(seed, num_samples=16)),
        ):
            best[name].append(max(map(target_fitness, drive(strategy, target_fitness))))
    medians = {k: round(statistics.median(v), 3) for k, v in best.items()}
    print(f"median best over {len(SEEDS)} seeds at 16 evaluations: {medians}")
    assert medians["warm"] > medians["cold"] + 1.0 and sum(w > c for w, c in zip(best["warm"], best["cold"])) >= 4


def test_warm_tpe_through_run_search_writes_the_study_and_resumes_exactly(tmp_path: Path, predictor: Path) -> None:
    options = {"num_samples": 24, "batch_size": 6, "warm_pool": 300, "warm_start": str(predictor)}
    states = interrupted_then_resumed(tmp_path, "tpe", options, at=12)  # in the picks' round
    origins = [e["origin"] for e in states["ref"]["evaluations"]]
    n_anchors = origins.count("anchor")
    assert origins == ["anchor"] * n_anchors + ["predicted"] * 8 + ["sampled"] * (24 - 8 - n_anchors)
    report = json.loads((tmp_path / "ref" / RESULT_FILE).read_text())
    assert report["tpe_warm"]["active"] and report["tpe_warm"]["predictor"] == str(predictor)
    assert len(report["tpe_warm"]["picks"]) == 8 and (tmp_path / "ref" / OPTUNA_FILE).is_file()
    trials = optuna.load_study(study_name="ref", storage=report["optuna"]["storage"]).get_trials()
    complete = {arch_from_params(t.params): t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert complete == pytest.approx(
        {ArchConfig.from_dict(e["arch"]): e["fitness"] for e in states["ref"]["evaluations"]}
    )
