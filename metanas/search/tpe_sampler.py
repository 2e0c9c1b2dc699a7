"""Optuna's TPESampler without its per-parameter rescans: the same draws, a fraction of the time.

Independent TPE (`multivariate: false`, the default) samples each parameter on its own, and
Optuna's `TPESampler._sample` rescans the whole study for every one of them: it splits
every trial into good and bad (a sort, plus a constraint look-up per trial) and converts
every trial's value to its internal form, for each parameter (14 in a 6-layer space). With
repaired and already-seen proposals a 256-evaluation search holds several hundred trials,
so this O(parameters x trials) Python per proposal is nearly all of a table replay.

`CachedTPESampler` is that sampler with two caches, and nothing else changed: the split is
computed once per trial (every parameter of one trial sees the same study: nothing else
finishes while a trial is sampled in metanas's single-threaded ask), and a finished trial's
internal values are converted once per study (a finished trial's parameters never change).
The Parzen estimators, the random draws and their order are Optuna's own, so it proposes
exactly what `TPESampler` does (the tests compare them trial by trial). It mirrors the
internals of Optuna 5's `_sample`; `cached_tpe_supported` checks they are there, and the
`tpe` strategy falls back to the stock sampler where they are not.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.samplers import TPESampler
from optuna.samplers._tpe import sampler as _tpe
from optuna.trial import TrialState


class TrialValueCache:
    """Finished trials' internal values (in the study's parameter order; None: the trial lacks one) by trial
    number, for one study: used with another, it starts again empty."""

    def __init__(self) -> None:
        self._storage: Any = None  # held, so that `is` cannot match a new storage at a recycled address
        self._study_id: int | None = None
        self.rows: dict[int, tuple[Any, ...] | None] = {}

    def for_study(self, study: Any) -> dict[int, tuple[Any, ...] | None]:
        if self._storage is not study._storage or self._study_id != study._study_id:
            self._storage, self._study_id, self.rows = study._storage, study._study_id, {}
        return self.rows


@functools.cache
def cached_tpe_supported() -> bool:
    """True when this Optuna's TPE internals are the ones `CachedTPESampler` mirrors (Optuna 5's)."""
    try:
        split = list(inspect.signature(_tpe._split_trials).parameters)
    except (AttributeError, TypeError, ValueError):
        return False
    needed = ("_sample", "_get_internal_repr", "_get_params", "_build_parzen_estimator", "_compute_acquisition_func")
    return (
        optuna.__version__.split(".")[0] == "5"
        and split == ["study", "trials", "n_below"]
        and all(hasattr(TPESampler, name) for name in needed)
        and hasattr(_tpe, "default_gamma")
    )


class CachedTPESampler(TPESampler):
    """`TPESampler` that splits the study once per trial and converts each finished trial's values once.

    `distributions`: the study's parameters, every trial's (the `tpe` strategy's encoding); `cache`:
    the conversion cache, shared by the samplers a caller builds for one study (one per trial).
    The split is the stock sampler's for multi-objective studies.
    """

    def __init__(self, *, distributions: Mapping[str, Any], cache: TrialValueCache, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._distributions = dict(distributions)
        self._names = tuple(self._distributions)
        self._cache = cache
        self._split_key: tuple[Any, ...] | None = None
        self._split: tuple[list[Any], list[Any]] = ([], [])
        self._split_rows: dict[int, list[tuple[Any, ...]] | None] = {}

    def _trial_key(self, study: Any, trial: Any) -> tuple[Any, ...]:
        """Which study and trial is being sampled, and how many trials the study holds."""
        return (id(study._storage), study._study_id, trial.number, study._storage.get_n_trials(study._study_id))

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        """Optuna's, except that a trial past the startup check (its split made) is not checked again."""
        if not self._warn_independent_sampling and self._split_key == self._trial_key(study, trial):
            return self._sample(study, trial, {param_name: param_distribution})[param_name]
        return super().sample_independent(study, trial, param_name, param_distribution)

    def _sample(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        """Optuna's `_sample` with the good/bad split of the study computed once per trial."""
        if study._is_multi_objective():
            return super()._sample(study, trial, search_space)
        key = self._trial_key(study, trial)
        if key != self._split_key:
            if self._constant_liar:
                states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            else:
                states = (TrialState.COMPLETE, TrialState.PRUNED)
            trials = study._get_trials(deepcopy=False, states=states, use_cache=not self._constant_liar)
            if self._constant_liar:
                trials = [t for t in trials if t.number != trial.number]
            if self._gamma is None:
                self._gamma = _tpe.default_gamma
            n = sum(t.state != TrialState.RUNNING for t in trials)
            self._split = _tpe._split_trials(study, trials, self._gamma(n))
            self._split_key = key
            self._split_rows = {id(part): self._internal_rows(part, study) for part in self._split}
        below, above = self._split
        mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above, handle_below=False)
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret

    def _internal_rows(self, trials: list[Any], study: Any) -> list[tuple[Any, ...]] | None:
        """Every trial's internal values, in order (a finished trial's from the cache); None when one lacks a
        parameter. A running trial (the constant liar's) is converted afresh: its values may yet be shared."""
        cached = self._cache.for_study(study)
        out = []
        for t in trials:
            finished = t.state.is_finished()
            row = cached.get(t.number) if finished else None
            if row is None and not (finished and t.number in cached):
                params = self._get_params(t, study)
                row = None
                if all(name in params for name in self._names):
                    row = tuple(self._distributions[name].to_internal_repr(params[name]) for name in self._names)
                if finished:
                    cached[t.number] = row
            if row is None:
                return None
            out.append(row)
        return out

    def _get_internal_repr(self, trials: list[Any], search_space: dict[str, Any], study: Any) -> dict[str, Any]:
        """Optuna's conversion, read from the cache for this trial's split of the study."""
        rows = self._split_rows.get(id(trials)) if any(trials is part for part in self._split) else None
        if rows is None or not all(self._known(name, d) for name, d in search_space.items()):
            return super()._get_internal_repr(trials, search_space, study)
        columns = [self._names.index(name) for name in search_space]
        return {name: np.asarray([row[i] for row in rows]) for name, i in zip(search_space, columns)}

    def _known(self, name: str, distribution: Any) -> bool:
        """`name` is a parameter the cache converted, with this distribution."""
        mine = self._distributions.get(name)
        return mine is distribution or mine == distribution
