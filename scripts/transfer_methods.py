"""The search methods of the transfer benchmark on one target task (used by bench_transfer.py).

Every method gets the same evaluation budget on the same task table, counts every
evaluation it spends (a warm start's anchors included), and is driven through the
`Strategy` ask/tell interface, except TPE, which is Optuna's own study.

- random: uniformly random feasible archs;
- evolution: the cold strategy and options chosen on the fold's source tasks
  (`tune_cold`: aging and AutoFormer evolution, sized to the budget);
- tpe: Optuna's TPE sampler, the budget as a constraint;
- proxy: the warm machinery ranked by a params proxy (no source task);
- target: the warm machinery ranked by a target-only model (no source task);
- incumbents: the tuned cold strategy whose first generation holds the source tasks' best
  feasible archs in this space (transfer of incumbents only, no predictor);
- warm: the warm start with the fold's meta-predictor and source records;
- warm-tpe: the product's `tpe` strategy with `warm_start` set to the fold's predictor: the
  feasible anchors, then the predictor's picks among random feasible archs and the most
  similar sources' incumbents, then TPE from those completed trials;
- tpe-off, bo-target: the product's `tpe` and `bo` with nothing transferred (`warm_start: off`,
  `surrogate: target`): what warm-tpe and bo would be without the source tasks;
- bo: the product's `bo` strategy (expected improvement) with the fold's meta-predictor as
  its surrogate, adapted on the target's evaluations: the predictor-only counterpart of warm;
- warm-shuffled: the warm start, predictor and seeds from sources whose fitness was shuffled
  within each task (the stress test: the guard must keep it near cold).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from metanas.bench.protocol import BenchTarget
from metanas.search.tpe import tpe_distributions, tpe_params
from metanas.space import ArchConfig

COLD = ("random", "evolution", "tpe", "proxy", "target", "tpe-off", "bo-target")
TRANSFER = ("incumbents", "warm", "warm-tpe", "bo")
STRESS = "warm-shuffled"
BASELINES = ("evolution", "tpe", "proxy", "target", "tpe-off", "bo-target")  # what warm start must beat
PRODUCT = {"warm-tpe": "tpe", "tpe-off": "tpe", "bo": "bo", "bo-target": "bo"}  # method -> product strategy


class Target(BenchTarget):
    """One target task under the benchmark's budget (`metanas.bench.protocol`), with its growing table."""

    def __init__(self, table: Any, budget_quantile: float, seq_len: int) -> None:
        quantile = BenchTarget.from_quantile(table.task.name, table.space, budget_quantile, seq_len)
        super().__init__(quantile.name, quantile.cost_model, quantile.budget, quantile.label)
        self.budget_quantile = budget_quantile
        self.table = table


@dataclass
class Sources:
    """The source tasks of one fold for one target: their records, shuffled copies and meta-predictors."""

    fold: str
    tasks: list[str]
    records: dict[str, list[Any]]
    predictors: Mapping[str, str]  # kind ("loo" | "shuffled") -> predictor file
    cold: dict[str, Any] = field(default_factory=dict)  # the tuned cold strategy: {"strategy", "options"}

    def flat(self, shuffled: bool = False) -> list[Any]:
        recs = shuffled_records(self.records) if shuffled else self.records
        return [r for rs in recs.values() for r in rs]


def shuffled_records(records: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """The same records with fitness (and metric) permuted within each task: sources that teach nothing."""
    out = {}
    for task, recs in records.items():
        order = list(range(len(recs)))
        random.Random(f"shuffle:{task}").shuffle(order)
        out[task] = [
            replace(r, fitness=recs[j].fitness, metric_value=recs[j].metric_value) for r, j in zip(recs, order)
        ]
    return out


def drive(strategy: Any, fitness: Callable[[ArchConfig], float], evals: int) -> dict[str, Any]:
    """Ask/tell until `evals` evaluations (the last generation cut there) or the strategy is done."""
    trace: list[float] = []
    origins: list[str] = []
    while len(trace) < evals and not strategy.done:
        archs = strategy.ask()[: evals - len(trace)]
        if not archs:
            break
        origins += [strategy.origin(a) for a in archs]
        values = [fitness(a) for a in archs]
        trace += values
        strategy.tell(archs, values)
    best = int(np.argmax(trace)) if trace else -1
    return {"trace": trace, "best_origin": origins[best] if trace else None}


def cold_strategy(t: Target, seed: int, evals: int, cold: Mapping[str, Any]) -> Any:
    """The tuned cold strategy (`aging` or `evolution`) with its chosen options, sized to `evals`."""
    from metanas.search import AgingEvolution, Evolution
    from metanas.search.configs import AgingEvolutionConfig, EvolutionConfig

    if cold["strategy"] == "aging":
        options = dict(cold["options"])
        population = min(options.pop("population_size"), max(2, evals // 2))
        sample = min(options.pop("sample_size"), population)
        config = AgingEvolutionConfig(population_size=population, sample_size=sample, num_samples=evals, **options)
        return AgingEvolution(t.space, t.feasible, seed, sampler=t.sampler, config=config)
    config = EvolutionConfig.for_budget(evals, **cold["options"])
    return Evolution(t.space, t.feasible, seed, sampler=t.sampler, config=config)


def run_random(t: Target, seed: int, evals: int) -> dict[str, Any]:
    from metanas.search import RandomSearch

    strategy = RandomSearch(t.space, t.feasible, seed, sampler=t.sampler, num_samples=evals, batch_size=evals)
    return drive(strategy, t.table.fitness, evals)


def run_cold(t: Target, seed: int, evals: int, cold: Mapping[str, Any]) -> dict[str, Any]:
    return drive(cold_strategy(t, seed, evals, cold), t.table.fitness, evals)


def _repair(t: Target, arch: ArchConfig, rng: random.Random) -> ArchConfig | None:
    """The first feasible arch on a chain of random one-step shrinks from `arch` (None: none fits)."""
    while arch is not None and not t.feasible(arch):
        arch = t.space.shrink(arch, rng)
    return arch


def run_tpe(
    t: Target, seed: int, evals: int, start: Sequence[tuple[ArchConfig, float]] = (), origin: str = "tpe"
) -> dict[str, Any]:
    """Optuna TPE over depth, hidden and per-layer heads/FFN (layers beyond the depth ignored).

    Feasibility-preserving, like the tuned evolution: an over-budget proposal is told as
    failed and repaired by random one-step shrinks; the repaired arch is evaluated and
    added to the study as a completed trial, so TPE models the feasible region instead of
    a flat penalty (which made it spend most trials outside the budget, and slowly).
    A repeated arch costs no evaluation. `start`: archs already evaluated (they count),
    added as completed trials before the first proposal.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = t.space
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    rng = random.Random(f"tpe-repair:{seed}")
    seen: dict[ArchConfig, float] = {}
    trace: list[float] = []
    distributions = tpe_distributions(space) if start else {}
    for arch, value in start[:evals]:
        if arch not in seen:
            seen[arch] = value
            trace.append(value)
            study.add_trial(
                optuna.trial.create_trial(params=tpe_params(space, arch), distributions=distributions, value=value)
            )
    starting = len(trace)
    trials = 0
    while len(trace) < evals and trials < 20 * evals:
        trial = study.ask()
        trials += 1
        depth = trial.suggest_categorical("depth", space.depth_choices)
        hidden = trial.suggest_categorical("hidden", space.hidden_choices)
        heads = [trial.suggest_categorical(f"heads_{i}", space.head_choices) for i in range(space.max_depth)]
        ffn = [trial.suggest_categorical(f"ffn_{i}", space.ffn_choices) for i in range(space.max_depth)]
        proposed = ArchConfig(depth, hidden, tuple(heads[:depth]), tuple(ffn[:depth]))
        arch = _repair(t, proposed, rng)
        if arch is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if arch not in seen:
            seen[arch] = t.table.fitness(arch)
            trace.append(seen[arch])
        if arch == proposed:
            study.tell(trial, seen[arch])
            continue
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        params = {**trial.params, "depth": arch.depth, "hidden": arch.hidden}
        params.update({f"heads_{i}": h for i, h in enumerate(arch.heads)})
        params.update({f"ffn_{i}": f for i, f in enumerate(arch.ffn)})
        study.add_trial(optuna.trial.create_trial(params=params, distributions=trial.distributions, value=seen[arch]))
    best = int(np.argmax(trace)) if trace else -1
    return {"trace": trace, "trials": trials, "best_origin": origin if best < 0 or best >= starting else "start"}


def source_incumbents(t: Target, sources: Sources) -> list[ArchConfig]:
    """The best feasible arch of every same-space source task."""
    signature = t.space.signature()
    incumbents: list[ArchConfig] = []
    for recs in sources.records.values():
        mine = [r for r in recs if r.space_signature == signature and t.feasible(r.arch)]
        if mine:
            best = max(mine, key=lambda r: r.fitness).arch
            if best not in incumbents:
                incumbents.append(best)
    return incumbents


def run_product(strategy_name: str, t: Target, seed: int, evals: int, sources: Sources | None) -> dict[str, Any]:
    """A product strategy (`tpe` or `bo`), with `warm_start` the fold's predictor, or with no source task.

    With `sources`: `tpe` is the warm-started TPE (the feasible anchors, the predictor's picks
    among random feasible archs and the most similar sources' incumbents, then TPE) and `bo`
    scores its candidates with the predictor (`surrogate: meta`) adapted on the target's
    evaluations. Without: `tpe` with `warm_start: off` and `bo` with `surrogate: target`,
    the same machinery with nothing transferred.
    """
    from metanas.search.bo import BayesOpt
    from metanas.search.tpe import OptunaSearch

    if strategy_name == "bo":
        cls, options = BayesOpt, {"surrogate": "meta" if sources is not None else "target"}
    else:
        cls, options = OptunaSearch, {}
    if sources is not None:
        options["warm_start"] = sources.predictors["loo"]
    strategy = cls(
        t.space, t.feasible, seed, sampler=t.sampler, num_samples=evals, task_meta=t.table.task_meta, **options
    )
    strategy.attach(t.table.task_meta, sources.flat() if sources is not None else [])
    return drive(strategy, t.table.fitness, evals)


def run_warm(
    t: Target, seed: int, evals: int, scorer: str, sources: Sources | None = None, shuffled: bool = False
) -> dict[str, Any]:
    """The warm machinery: `scorer` meta (with the fold's predictor and sources), proxy or target."""
    from metanas.search import WarmStartEvolution
    from metanas.search.configs import WarmStartConfig

    warm_start = "auto"
    if scorer == "meta":
        assert sources is not None
        warm_start = sources.predictors["shuffled" if shuffled else "loo"]
    shape = WarmStartConfig.for_budget(evals)
    strategy = WarmStartEvolution(
        t.space,
        t.feasible,
        seed,
        sampler=t.sampler,
        warm_start=warm_start,
        scorer=scorer,
        population_size=shape.population_size,
        generations=shape.generations + 2,  # the anchor round and a spare: the trace is cut at `evals`
        parents=shape.parents,
        task_meta=t.table.task_meta,
    )
    strategy.attach(t.table.task_meta, sources.flat(shuffled) if sources is not None and scorer == "meta" else [])
    result = drive(strategy, t.table.fitness, evals)
    result["guard"] = [e for e in strategy.transfer_log if e.get("event") == "guard"]
    result["final_mode"] = strategy.mode
    return result


def run_incumbents(t: Target, seed: int, evals: int, sources: Sources) -> dict[str, Any]:
    """The tuned cold strategy with the best feasible arch of every same-space source task in its first batch."""
    incumbents = source_incumbents(t, sources)
    strategy = cold_strategy(t, seed, evals, sources.cold)
    original_sample = strategy._sample
    queue = list(incumbents)

    def sample_incumbents_first() -> ArchConfig:
        while queue:
            arch = queue.pop(0)
            if strategy.is_new(arch):
                return arch
        return original_sample()

    strategy._sample = sample_incumbents_first  # the first random draws are the incumbents
    result = drive(strategy, t.table.fitness, evals)
    result["incumbents"] = len(incumbents)
    return result


def run_method(method: str, t: Target, seed: int, evals: int, sources: Sources | None) -> dict[str, Any]:
    """One run of `method` (see the module docstring)."""
    if method == "random":
        return run_random(t, seed, evals)
    if method == "evolution":
        assert sources is not None
        return run_cold(t, seed, evals, sources.cold)
    if method == "tpe":
        return run_tpe(t, seed, evals)
    if method in ("proxy", "target"):
        return run_warm(t, seed, evals, method)
    if method in PRODUCT:
        return run_product(PRODUCT[method], t, seed, evals, sources if method in TRANSFER else None)
    assert sources is not None
    if method == "incumbents":
        return run_incumbents(t, seed, evals, sources)
    if method == "warm":
        return run_warm(t, seed, evals, "meta", sources)
    if method == STRESS:
        return run_warm(t, seed, evals, "meta", sources, shuffled=True)
    raise ValueError(f"unknown method {method!r}; methods: {', '.join((*COLD, *TRANSFER, STRESS))}")
