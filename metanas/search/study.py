"""One search, many workers: a shared study in the history database.

`run_study` is one worker of a study. Any number of them, started with the same
recipe (space, budget, strategy, seed), the same study name and the same history URL
(PostgreSQL for several machines, SQLite for one), run one search with one global
evaluation budget (the strategy's schedule):

- the strategy's state lives in the database (`metanas.meta.studies`): whoever creates
  the study asks for generation 0; each generation's archs are claimed one at a time
  (no arch is evaluated by two workers); the worker that finds a generation complete
  tells the strategy its results in proposal order and asks for the next generation,
  in one transaction with the study's row locked, so the search is the same function
  of the seed and the results whether 1 or N workers ran it;
- a result and its `evaluations` row are written in one transaction, and only while
  the claim is still the worker's; a worker that dies leaves a claim whose heartbeat
  goes stale, which the next worker looking for work claims again (once);
- every worker, once the study is finished, writes the same `search.json` (best arch,
  Pareto front, per-generation stats; only the timing fields differ) into its own run
  directory.

Only strategies that are synchronous by generation run as a study (`STUDY_STRATEGIES`).
Aging evolution proposes each child from the population as it is at that moment, and
the warm start re-fits its predictor between rounds on whatever has been evaluated, so
with several workers their proposals would depend on timing: they are refused with the
allowed names. A worker waits (polling) while the last archs of a generation are being
evaluated elsewhere, so a generation costs as long as its slowest evaluation.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metanas.cost.budget import Budget
from metanas.cost.model import CostModel
from metanas.meta.encoding import target_task_meta
from metanas.meta.history import EvalRecord
from metanas.meta.studies import Proposal, StudyStore, Trial
from metanas.search.base import Strategy
from metanas.search.configs import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_STALE_SECONDS,
    check_study_strategy,
    check_study_timing,
)
from metanas.search.runner import (
    SearchResult,
    _build_strategy,
    _generation_stats,
    _log_to_tracker,
    _write_outputs,
    score_arch,
)
from metanas.space import ArchConfig, SearchSpace

if TYPE_CHECKING:
    from metanas.evaluate import Evaluator
    from metanas.meta.history import HistoryStore
    from metanas.tracking import Tracker

logger = logging.getLogger(__name__)


class _Heartbeat(threading.Thread):
    """Beats for the worker (and its current claim) every `every` seconds until stopped."""

    def __init__(self, store: StudyStore, worker: str, every: float) -> None:
        super().__init__(name=f"metanas-heartbeat-{worker}", daemon=True)
        self.store, self.worker, self.every = store, worker, every
        self.trial_id: int | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            try:
                self.store.heartbeat(self.worker, self.trial_id)
            except Exception as e:  # a missed beat is not fatal; enough of them release the claim
                logger.warning("study heartbeat failed: %s", e)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


@dataclass
class _Search:
    """What every worker of a study holds: the strategy object (its state reloaded from the database) and the task."""

    strategy: Strategy
    evaluator: Evaluator
    cost_model: CostModel
    study: str
    task_id: str
    task_meta: dict[str, Any]
    signature: str

    def proposals(self) -> list[Proposal]:
        """The strategy's next generation (none when its schedule is over or it runs dry)."""
        if self.strategy.done:
            return []
        return [(a.to_json(), self.strategy.origin(a)) for a in self.strategy.ask()]

    def first(self) -> tuple[dict[str, Any], list[Proposal]]:
        proposals = self.proposals()
        return {"strategy": self.strategy.state_dict(), "generations": []}, proposals

    def step(self, state: dict[str, Any], trials: list[Trial]) -> tuple[dict[str, Any], list[Proposal]]:
        """Tell the strategy the last generation's results in proposal order, and ask for the next one."""
        generation = max(t.generation for t in trials)
        last = [t for t in trials if t.generation == generation]
        archs = [ArchConfig.from_json(t.arch) for t in last]
        fitnesses = [float(t.fitness) for t in last]
        costs = [t.costs if t.costs is not None else self.cost_model.costs(a) for t, a in zip(last, archs)]
        self.strategy.load_state_dict(state["strategy"])
        self.strategy.tell(archs, fitnesses, costs)
        stats = _generation_stats(generation, fitnesses, [self.evaluation(t) for t in trials])
        logger.info("study %s: generation %d closed, best %.5g", self.study, generation, stats["best"])
        proposals = self.proposals()
        return {"strategy": self.strategy.state_dict(), "generations": [*state["generations"], stats]}, proposals

    def evaluation(self, t: Trial) -> dict[str, Any]:
        """A trial as the runner's evaluations list holds it (a failed trial: -inf and the worst metric)."""
        arch = ArchConfig.from_json(t.arch)
        worst = -math.inf if self.evaluator.higher_is_better else math.inf
        return {
            "arch": arch.to_dict(),
            "fitness": float(t.fitness) if t.fitness is not None else -math.inf,
            "metric": float(t.metric) if t.metric is not None else worst,
            "costs": t.costs if t.costs is not None else self.cost_model.costs(arch),
            "origin": t.origin,
            "generation": t.generation,
        }

    def evaluate(self, trial: Trial) -> tuple[dict[str, Any], EvalRecord]:
        """Costs and fitness of a claimed arch, and its history record (a non-finite metric: fitness -inf)."""
        arch = ArchConfig.from_json(trial.arch)
        costs = self.cost_model.costs(arch)
        started = time.perf_counter()
        metric, fitness = score_arch(self.evaluator, arch)
        seconds = time.perf_counter() - started
        record = EvalRecord(
            run_id=self.study,
            task_id=self.task_id,
            task_meta=self.task_meta,
            space_signature=self.signature,
            arch=arch,
            fitness=fitness,
            metric_name=self.evaluator.metric_name,
            metric_value=metric,
            origin=trial.origin,
            generation=trial.generation,
            timestamp=time.time(),
            **costs,
        )
        return {"fitness": fitness, "metric": metric, "costs": costs, "seconds": seconds}, record


def _work(store: StudyStore, search: _Search, worker: str, beat: _Heartbeat, stale_seconds: float) -> int:
    """Claim, evaluate and complete trials until the study is finished; the number this worker completed."""
    done, poll = 0, min(1.0, beat.every)
    while True:
        row = store.row()
        if row["status"] == "finished":
            return done
        generation = row["generation"]
        trial = store.claim(worker, generation, stale_seconds)
        if trial is None:
            if not store.advance(generation, search.step):
                time.sleep(poll)  # the generation's last archs are being evaluated elsewhere
            continue
        if trial.status != "running":  # a twice-stale claim, now failed: look again
            continue
        beat.trial_id = trial.id
        try:
            result, record = search.evaluate(trial)
            if store.complete(trial, worker, result, record):
                done += 1
            else:
                logger.warning(
                    "study %s: the claim on %s was released meanwhile; result dropped", store.study, trial.arch
                )
        finally:
            beat.trial_id = None


def run_study(
    evaluator: Evaluator,
    space: SearchSpace,
    cost_model: CostModel,
    budget: Budget | Mapping[str, Any],
    study: str,
    history: HistoryStore,
    strategy_name: str = "evolution",
    strategy_options: Mapping[str, Any] | None = None,
    run_dir: str | os.PathLike = "search",
    task_id: str = "default",
    seed: int = 0,
    tracker: Tracker | None = None,
    objectives: Sequence[str] = ("fitness",),
    task_meta: Mapping[str, Any] | None = None,
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    stale_seconds: float = DEFAULT_STALE_SECONDS,
) -> SearchResult:
    """Work on `study` in `history` until its search is finished, then write `search.json` into `run_dir`.

    Arguments as `run_search`; the study is created by its first worker and joined by the
    others (a study made with another config is refused, nothing written). Its evaluations
    are recorded in the history under run id `study`.
    """
    check_study_strategy(strategy_name)
    check_study_timing(heartbeat_seconds, stale_seconds)
    budget = budget if isinstance(budget, Budget) else Budget.from_dict(budget)
    strategy, budget, cost_key = _build_strategy(
        strategy_name, strategy_options, space, cost_model, budget, objectives, seed
    )
    meta = target_task_meta(task_meta, evaluator.metric_name, evaluator.higher_is_better, cost_model.seq_len)
    strategy.attach(meta, [], run_dir=Path(run_dir))
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
    search = _Search(strategy, evaluator, cost_model, study, task_id, meta, space.signature())
    store = StudyStore(history, study)
    if store.open(task_id, strategy_name, config, stale_seconds, search.first):
        logger.info("study %s created (%d evaluations planned)", study, strategy.planned_evaluations())
    history.start_run(study, task_id, strategy_name, config)
    worker = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    store.register_worker(worker, socket.gethostname(), os.getpid())
    beat = _Heartbeat(store, worker, heartbeat_seconds)
    beat.start()
    try:
        done = _work(store, search, worker, beat, stale_seconds)
    except BaseException as e:
        beat.stop()
        store.finish_worker(worker, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
        raise
    beat.stop()
    store.finish_worker(worker, "finished")
    history.finish_run(study, "finished")
    logger.info("study %s finished; this worker (%s) evaluated %d archs", study, worker, done)
    return _outputs(store, search, Path(run_dir), config, cost_key, budget, objectives, tracker)


def _outputs(
    store: StudyStore,
    search: _Search,
    run_dir: Path,
    config: dict[str, Any],
    cost_key: str,
    budget: Budget,
    objectives: Sequence[str],
    tracker: Tracker | None,
) -> SearchResult:
    """search.json and the plots from the study's trials, the same whichever worker writes them."""
    row, trials = store.row(), store.trials()
    evaluations = [search.evaluation(t) for t in trials]
    if not evaluations:
        raise RuntimeError(f"study {store.study!r} evaluated no arch: the strategy found no feasible candidate")
    state = {
        "run_id": store.study,
        "config": config,
        "generations": row["state"]["generations"],
        "forward_evaluations": sum(t.status == "done" for t in trials),
        "eval_seconds": sum(t.seconds or 0.0 for t in trials),
        "sources": None,
        "extra": {"study": store.study},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    result = _write_outputs(state, evaluations, run_dir, cost_key, budget, search.evaluator, objectives)
    if tracker is not None:
        _log_to_tracker(tracker, result, evaluations, len(state["generations"]))
    return result
