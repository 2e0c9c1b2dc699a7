"""Optuna's samplers as a metanas strategy (strategy `tpe`): TPE, NSGA-II, GP or random over the space.

The encoding is the benchmark's (`scripts/transfer_methods.py`): one categorical
parameter each for depth and hidden and for the heads and FFN width of every layer
position; positions beyond the depth are suggested but ignored. Every trial suggests
every parameter, so the search space never changes and the samplers need no
conditional handling.

The budget is a constraint: an over-budget proposal is repaired (`Strategy.repaired`)
and the repaired arch is what is evaluated; the raw proposal is told FAIL and the
repaired arch joins the study as a completed trial with its own parameters (and the raw
trial's system attributes, e.g. its NSGA-II generation), so the sampler models the
feasible region instead of a flat penalty. A proposal already evaluated is told its
known value without costing an evaluation; one still outstanding waits for its value.
Both count as tries, bounded by `max_tries` per proposal, after which a random feasible
arch is proposed (and added to the study when told).

Transfer (`warm_start`, `metanas.search.tpe_warm`): with a meta-predictor, the feasible
anchors and then the predictor's `warm_picks` come before the sampler, which then starts
from them as completed trials; without one, `tpe` is the cold search, unchanged.

Exact resume: the sampler is rebuilt before every trial with a seed derived from the
search seed and the trial's number, so no sampler RNG lives in memory, and the study the
samplers read is in memory, rebuilt on `load_state_dict` from the JSON state (every
trial, the study's system attributes, and the trials still waiting for a value). With a
run directory the study is mirrored, finished trials in order, into an Optuna RDB file
(`optuna.db`, `sqlite:///...`) that `optuna-dashboard` opens; a resume trims the mirror
back to the checkpoint when an interrupted generation had written more.

Speed: sampler `tpe` is Optuna's TPESampler with its per-parameter rescans of the study
cached (`metanas.search.tpe_sampler`): the same draws, so studies and resumes are unchanged.
"""

from __future__ import annotations

import datetime
import math
import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metanas._threads import torch_threads
from metanas.search.base import ORIGIN_RANDOM, ORIGIN_SAMPLED, Costs, Strategy, StrategyEvent
from metanas.search.configs import TPEConfig
from metanas.search.tpe_warm import TPEWarmStart
from metanas.space import ArchConfig, SearchSpace

if TYPE_CHECKING:
    import optuna

    from metanas.meta.history import EvalRecord

OPTUNA_FILE = "optuna.db"
DEFAULT_STUDY_NAME = "metanas"
_STATE_KEY = "optuna"


def import_optuna() -> Any:
    """Optuna, its per-trial logging silenced; an ImportError says how to install it."""
    try:
        import optuna
    except ImportError as e:
        raise ImportError(
            "search strategy 'tpe' needs Optuna: pip install 'metanas[optuna]' (or pip install 'optuna>=4')"
        ) from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tpe_distributions(space: SearchSpace) -> dict[str, Any]:
    """One categorical distribution per gene: depth, hidden, and heads/FFN of every layer position."""
    dist = import_optuna().distributions.CategoricalDistribution
    out = {"depth": dist(list(space.depth_choices)), "hidden": dist(list(space.hidden_choices))}
    for i in range(space.max_depth):
        out[f"heads_{i}"] = dist(list(space.head_choices))
        out[f"ffn_{i}"] = dist(list(space.ffn_choices))
    if len(space.layer_selection_choices) > 1:  # only then, so studies of other spaces keep their parameters
        out["layer_selection"] = dist(list(space.layer_selection_choices))
    return out


def tpe_params(space: SearchSpace, arch: ArchConfig, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`arch` as trial parameters; positions beyond its depth keep `base`'s values, else repeat its last layer."""
    params: dict[str, Any] = {"depth": arch.depth, "hidden": arch.hidden}
    for i in range(space.max_depth):
        last = min(i, arch.depth - 1)
        inside = i < arch.depth
        params[f"heads_{i}"] = arch.heads[last] if inside or base is None else base[f"heads_{i}"]
        params[f"ffn_{i}"] = arch.ffn[last] if inside or base is None else base[f"ffn_{i}"]
    if len(space.layer_selection_choices) > 1:
        params["layer_selection"] = arch.layer_selection
    return params


def arch_from_params(params: Mapping[str, Any], space: SearchSpace | None = None) -> ArchConfig:
    """The arch a trial's parameters describe (layer positions beyond the depth ignored), canonical in `space`."""
    depth = int(params["depth"])
    heads = tuple(int(params[f"heads_{i}"]) for i in range(depth))
    ffn = tuple(int(params[f"ffn_{i}"]) for i in range(depth))
    arch = ArchConfig(depth, int(params["hidden"]), heads, ffn, params.get("layer_selection", "first"))
    return space.canonical(arch) if space is not None else arch


class OptunaSearch(Strategy):
    """An Optuna sampler proposing feasible, new archs; the study holds every proposal, repaired ones included."""

    name = "tpe"
    Config = TPEConfig
    config: TPEConfig

    def __init__(self, *args: Any, task_meta: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """`task_meta`: the target's objective, higher_is_better, seq_len (the runner's `attach` fills it)."""
        super().__init__(*args, **kwargs)
        self.task_meta = dict(task_meta or {})
        self._optuna = import_optuna()
        from metanas.search.tpe_sampler import TrialValueCache  # imports Optuna: after the check that it is there

        if self.config.optuna_sampler == "gp" and not hasattr(self._optuna.samplers, "GPSampler"):
            raise ValueError(
                f"tpe: optuna_sampler 'gp' needs optuna.samplers.GPSampler, which Optuna "
                f"{self._optuna.__version__} lacks; upgrade Optuna or use optuna_sampler tpe, nsga2 or random"
            )
        self.distributions = tpe_distributions(self.space)
        self.study = self._new_study()
        self._tpe_cache = TrialValueCache()  # the TPE samplers' converted trial values, for the study they sample
        self.storage_url: str | None = None
        self.study_name = DEFAULT_STUDY_NAME
        self._mirror: optuna.Study | None = None
        # Arch -> what gets its value when it is told: {"number": a running trial} or {"params": a trial to add}.
        self._waiting: dict[ArchConfig, list[dict[str, Any]]] = {}
        c = self.config
        self.warm = TPEWarmStart(self.space, c.warm_start, c.warm_picks, c.warm_pool)

    def _new_study(self) -> optuna.Study:
        return self._optuna.create_study(direction="maximize")

    def _schedule_over(self) -> bool:
        return len(self.evaluated) >= self.config.num_samples

    # ----- the runner's hooks ------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {**super().options(), "task_meta": self.task_meta}

    @property
    def wants_sources(self) -> bool:
        """The transfer start seeds from previous tasks' incumbents (and `auto` may train its predictor on them)."""
        return self.config.warm_start != "off"

    def attach(self, task_meta: Mapping[str, Any], sources: Sequence[EvalRecord], run_dir: Path | None = None) -> None:
        """Take the task's metadata (unless given); pick the transfer start's predictor and sources (`auto`: on the
        sources, kept in `run_dir` for an exact resume); with a run directory, mirror the study into
        `run_dir/optuna.db` (study named after the directory)."""
        if not self.task_meta:
            self.task_meta = dict(task_meta)
        self.warm.attach(sources, run_dir)
        if run_dir is None:
            return
        run_dir = Path(run_dir).resolve()
        self.storage_url = f"sqlite:///{run_dir / OPTUNA_FILE}"
        self.study_name = run_dir.name or DEFAULT_STUDY_NAME
        self._mirror = None  # opened by the first sync: after `load_state_dict` on a resume

    def describe(self) -> StrategyEvent:
        where = f"; Optuna study {self.study_name!r} in {self.storage_url}" if self.storage_url else ""
        sampler = self.config.optuna_sampler
        message = f"tpe: Optuna {self._optuna.__version__} sampler {sampler}, {self.warm.message}{where}"
        return StrategyEvent(message, {"search/optuna_sampler": sampler, "search/tpe_warm_start": self.warm.active})

    def extra_state(self) -> dict[str, Any]:
        return {
            "optuna": {
                "sampler": self.config.optuna_sampler,
                "storage": self.storage_url,
                "study_name": self.study_name,
            },
            "tpe_warm": self.warm.report(),
        }

    # ----- proposals -------------------------------------------------------------
    def ask(self, n: int | None = None) -> list[ArchConfig]:
        """Up to `n` new feasible archs: the transfer start's queued ones (default: its whole round), then the
        sampler's (default `batch_size`), topped up at random if it runs dry."""
        c = self.config
        remaining = c.num_samples - len(self.evaluated) - len(self._pending)
        if remaining <= 0:
            return []
        queued = self.warm.round(self, self.task_meta)
        k = min(n or len(queued) or c.batch_size, remaining)
        out = []
        for arch, origin in queued[:k]:
            self._pending[arch] = origin
            out.append(arch)
        self.warm.taken(len(out))
        for _ in range(k - len(out)):
            arch = self._next_proposal()
            if arch is None:
                arch = self._propose(self._sample, ORIGIN_RANDOM)
                if arch is None:
                    break
                self._waiting.setdefault(arch, []).append({"params": tpe_params(self.space, arch)})
            out.append(arch)
        return self._finish_ask(out)

    def _sampler(self, number: int) -> Any:
        """The configured sampler, seeded for trial `number` alone: a resumed study draws what the original did."""
        from metanas.search.tpe_sampler import CachedTPESampler, cached_tpe_supported

        c, samplers = self.config, self._optuna.samplers
        seed = random.Random(f"tpe:{self.seed}:{number}").getrandbits(31)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
            if c.optuna_sampler == "tpe":
                options = {
                    "seed": seed,
                    "n_startup_trials": c.n_startup_trials,
                    "multivariate": c.multivariate,
                    "constant_liar": c.constant_liar,
                }
                if cached_tpe_supported():  # the same draws as TPESampler's, without its per-parameter rescans
                    return CachedTPESampler(distributions=self.distributions, cache=self._tpe_cache, **options)
                return samplers.TPESampler(**options)
            if c.optuna_sampler == "nsga2":
                return samplers.NSGAIISampler(seed=seed, population_size=c.population_size)
            if c.optuna_sampler == "gp":
                return samplers.GPSampler(seed=seed, n_startup_trials=c.n_startup_trials)
            return samplers.RandomSampler(seed=seed)

    def _ask_trial(self) -> Any:
        self.study.sampler = self._sampler(len(self.study.get_trials(deepcopy=False)))
        with torch_threads(1 if self.config.optuna_sampler == "gp" else None):  # the GP's fit: bit-identical
            return self.study.ask(self.distributions)

    def _next_proposal(self) -> ArchConfig | None:
        """Ask trials until one gives a new feasible arch (registered as pending), at most `max_tries`.

        An over-budget proposal is repaired; the raw trial fails and the repaired arch's trial is added
        once its value is known. A seen arch is told (or waits for) its value and counts as a rejection.
        """
        fail = self._optuna.trial.TrialState.FAIL
        for _ in range(self.config.max_tries):
            trial = self._ask_trial()
            proposed = arch_from_params(trial.params, self.space)
            arch = self.repaired(proposed)
            if not self.feasible(arch):
                self.study.tell(trial, state=fail)
                self.rejections += 1
                continue
            trial.set_user_attr("arch", arch.to_json())
            waiter: dict[str, Any] = {"number": trial.number}
            if arch != proposed:
                attrs = self.study.get_trials(deepcopy=False)[trial.number].system_attrs  # e.g. its NSGA-II generation
                waiter = {"params": tpe_params(self.space, arch, trial.params), "system_attrs": dict(attrs)}
                trial.set_user_attr("repaired", True)
                self.study.tell(trial, state=fail)
            if arch in self.evaluated:
                self._complete(waiter, arch, self.evaluated[arch].fitness)
                self.rejections += 1
                continue
            self._waiting.setdefault(arch, []).append(waiter)
            if arch in self._pending:
                self.rejections += 1
                continue
            self._pending[arch] = ORIGIN_RANDOM if self.config.optuna_sampler == "random" else ORIGIN_SAMPLED
            return arch
        return None

    # ----- results -------------------------------------------------------------
    def tell(
        self,
        archs: Sequence[ArchConfig],
        fitnesses: Sequence[float],
        costs: Sequence[Costs] | None = None,
    ) -> None:
        """Record the scores and give every trial waiting on these archs its value (an arch told unasked joins
        the study too); then mirror the finished trials."""
        super().tell(archs, fitnesses, costs)
        for arch in archs:
            for waiter in self._waiting.pop(arch, None) or [{"params": tpe_params(self.space, arch)}]:
                self._complete(waiter, arch, self.evaluated[arch].fitness)
        self._sync_mirror()

    def _complete(self, waiter: Mapping[str, Any], arch: ArchConfig, fitness: float) -> None:
        """Finish a running trial, or add a completed one; a non-finite fitness is a failed trial."""
        optuna = self._optuna
        finite = math.isfinite(fitness)
        state = optuna.trial.TrialState.COMPLETE if finite else optuna.trial.TrialState.FAIL
        if "number" in waiter:
            self.study.tell(int(waiter["number"]), fitness if finite else None, state=state)
            return
        trial = optuna.trial.create_trial(
            params=dict(waiter["params"]),
            distributions=self.distributions,
            value=fitness if finite else None,
            state=state,
            user_attrs={"arch": arch.to_json()},
            system_attrs=dict(waiter.get("system_attrs", {})),
        )
        self.study.add_trial(trial)

    # ----- the mirror in the run directory ------------------------------------------
    def _sync_mirror(self) -> None:
        """Copy the finished trials (the prefix of the study up to its first running one) into the RDB study;
        one holding trials this study does not (an interrupted generation, an older search) is made anew."""
        if self.storage_url is None:
            return
        optuna = self._optuna
        if self._mirror is None:
            self._mirror = optuna.create_study(
                storage=self.storage_url, study_name=self.study_name, direction="maximize", load_if_exists=True
            )
        trials = self.study.get_trials(deepcopy=False)
        done = next((i for i, t in enumerate(trials) if not t.state.is_finished()), len(trials))
        have = self._mirror.get_trials(deepcopy=False)
        if len(have) > done or any(a.params != b.params or a.state != b.state for a, b in zip(have, trials)):
            optuna.delete_study(study_name=self.study_name, storage=self.storage_url)
            self._mirror = optuna.create_study(
                storage=self.storage_url, study_name=self.study_name, direction="maximize"
            )
            have = []
        if not have:
            self._mirror.set_user_attr("metanas", {"strategy": self.name, **self.options()})
        self._mirror.add_trials(trials[len(have) : done])

    # ----- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base state plus every trial of the study, its system attributes and the waiting trials."""
        names = list(self.distributions)
        trials = []
        for t in self.study.get_trials(deepcopy=False):
            trials.append(
                {
                    "params": [t.params[k] for k in names],
                    "state": t.state.name,
                    "values": t.values,
                    "system_attrs": t.system_attrs,
                    "user_attrs": t.user_attrs,
                    "start": _iso(t.datetime_start),
                    "complete": _iso(t.datetime_complete),
                }
            )
        storage = self.study._storage  # no public getter for a study's system attributes
        return {
            **super().state_dict(),
            _STATE_KEY: {
                "trials": trials,
                "study_system_attrs": storage.get_study_system_attrs(self.study._study_id),
                "waiting": [[a.to_dict(), waiters] for a, waiters in self._waiting.items()],
            },
            "tpe_warm": self.warm.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot: the in-memory study is rebuilt trial by trial, then the mirror is brought in line.
        Refuses a snapshot whose transfer start used another predictor file."""
        self.warm.load_state_dict(state["tpe_warm"])
        super().load_state_dict(state)
        optuna, saved = self._optuna, state[_STATE_KEY]
        names = list(self.distributions)
        self.study = self._new_study()
        frozen = []
        for number, t in enumerate(saved["trials"]):
            frozen.append(
                optuna.trial.FrozenTrial(
                    number=number,
                    state=optuna.trial.TrialState[t["state"]],
                    value=None,
                    values=t["values"],
                    datetime_start=_from_iso(t["start"]),
                    datetime_complete=_from_iso(t["complete"]),
                    params=dict(zip(names, t["params"])),
                    distributions=self.distributions,
                    user_attrs=dict(t["user_attrs"]),
                    system_attrs=dict(t["system_attrs"]),
                    intermediate_values={},
                    trial_id=number,
                )
            )
        self.study.add_trials(frozen)
        storage = self.study._storage
        for key, value in saved["study_system_attrs"].items():
            storage.set_study_system_attr(self.study._study_id, key, value)
        self._waiting = {ArchConfig.from_dict(a): [dict(w) for w in waiters] for a, waiters in saved["waiting"]}
        self._sync_mirror()


def _iso(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_iso(text: str | None) -> datetime.datetime | None:
    return None if text is None else datetime.datetime.fromisoformat(text)
