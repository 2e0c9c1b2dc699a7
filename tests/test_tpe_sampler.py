"""`CachedTPESampler` proposes exactly what Optuna's TPESampler does, and splits the study once per trial.

Studies over the `tpe` strategy's encoding of the MiniLM space (14 categorical parameters),
driven like the strategy drives them: a fresh sampler per trial seeded by the trial's
number, some trials failed, some left running across later trials (the constant liar sees
them), some completed trials added without being asked (repaired and already-seen archs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import pytest
from synthetic import drive, minilm_space, synthetic_loss

from metanas.cost import Budget, CostModel
from metanas.search import tpe_sampler
from metanas.search.configs import TPEConfig
from metanas.search.tpe import OptunaSearch, arch_from_params, tpe_distributions
from metanas.search.tpe_sampler import CachedTPESampler, TrialValueCache, cached_tpe_supported

SPACE = minilm_space()
DISTRIBUTIONS = tpe_distributions(SPACE)

pytestmark = pytest.mark.skipif(not cached_tpe_supported(), reason=f"Optuna {optuna.__version__} is not 5.x")


def score(params: dict[str, Any]) -> float:
    return -synthetic_loss(arch_from_params(params, SPACE))


def drive_study(make: Callable[[int], Any], trials: int = 70) -> list[dict[str, Any]]:
    """Ask `trials` trials, each with `make(number)`'s sampler; every 5th fails, trials are told in batches of 4
    (the rest of a batch running meanwhile), every 3rd told trial is followed by an added completed copy."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    asked, running = [], []
    for number in range(trials):
        study.sampler = make(len(study.get_trials(deepcopy=False)))
        trial = study.ask(DISTRIBUTIONS)
        asked.append(dict(trial.params))
        if number % 5 == 4:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        running.append(trial)
        if len(running) == 4:
            for i, t in enumerate(running):
                study.tell(t, score(t.params))
                if i % 3 == 0:
                    copy = optuna.trial.create_trial(
                        params=t.params, distributions=DISTRIBUTIONS, value=score(t.params)
                    )
                    study.add_trial(copy)
            running = []
    return asked


@pytest.mark.parametrize("multivariate", [False, True])
@pytest.mark.parametrize("constant_liar", [True, False])
def test_the_cached_sampler_draws_what_optunas_tpe_draws(multivariate: bool, constant_liar: bool) -> None:
    options = {"n_startup_trials": 6, "multivariate": multivariate, "constant_liar": constant_liar}
    cache = TrialValueCache()

    def cached(number: int) -> Any:
        return CachedTPESampler(seed=1000 + number, distributions=DISTRIBUTIONS, cache=cache, **options)

    def stock(number: int) -> Any:
        return optuna.samplers.TPESampler(seed=1000 + number, **options)

    ours, theirs = drive_study(cached), drive_study(stock)
    assert ours == theirs
    assert len({tuple(p.values()) for p in ours}) > 30  # the study is sampled, not stuck on a few archs
    assert cache.rows and all(row is not None and len(row) == len(DISTRIBUTIONS) for row in cache.rows.values())


def test_the_cached_sampler_splits_the_study_once_per_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    split = tpe_sampler._tpe._split_trials
    monkeypatch.setattr(tpe_sampler._tpe, "_split_trials", lambda *a: calls.append(1) or split(*a))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask(DISTRIBUTIONS)
        study.tell(trial, score(trial.params))
    study.sampler = CachedTPESampler(
        seed=0, n_startup_trials=10, multivariate=False, distributions=DISTRIBUTIONS, cache=TrialValueCache()
    )
    study.ask(DISTRIBUTIONS)
    assert len(DISTRIBUTIONS) == 14 and len(calls) == 1
    calls.clear()
    study.sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=10, multivariate=False)
    study.ask(DISTRIBUTIONS)
    assert len(calls) == 14  # Optuna's own: one split of the whole study per parameter


def test_the_tpe_strategy_proposes_the_same_with_the_stock_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tight budget: repaired proposals and already-seen archs make the study twice the evaluations."""
    cm = CostModel(SPACE, seq_len=128)
    budget = cm.check_feasible(Budget(non_embedding_params="30%"))

    def run() -> tuple[list[Any], int]:
        config = TPEConfig(num_samples=60, batch_size=6)
        strategy = OptunaSearch(
            SPACE,
            lambda a: cm.feasible(a, budget),
            3,
            sampler=lambda r: cm.sample_feasible(r, budget, 200),
            config=config,
        )
        asked = drive(strategy, lambda a: -synthetic_loss(a))
        return asked, len(strategy.study.get_trials(deepcopy=False))

    cached, n_trials = run()
    monkeypatch.setattr(tpe_sampler, "cached_tpe_supported", lambda: False)
    assert run() == (cached, n_trials)
    assert len(cached) == 60 and n_trials > 90 and len(set(cached)) == 60


def test_one_cache_serves_one_study_at_a_time() -> None:
    """A cache handed to a sampler of a new study forgets the old study's trials (same numbers, other values)."""
    cache = TrialValueCache()
    runs = [
        drive_study(
            lambda n, s=seed: CachedTPESampler(
                seed=s + n, multivariate=False, distributions=DISTRIBUTIONS, cache=cache
            ),
            30,
        )
        for seed in (5, 6)
    ]
    stock = [
        drive_study(lambda n, s=seed: optuna.samplers.TPESampler(seed=s + n, multivariate=False), 30) for seed in (5, 6)
    ]
    assert runs == stock and runs[0] != runs[1]
