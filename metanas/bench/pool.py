"""Replay runs in parallel processes: a table replay is single-threaded Python, so one run per core.

Each worker receives the task's table, target and sources once (its initializer) and then
replays whole (strategy, seed) runs; the results come back in the order asked, so a
summary does not depend on how many processes made it. A run's trace is the same in a
worker as in the calling process: a strategy's randomness is seeded by its seed alone, and
the torch work inside strategies runs on one thread either way (`torch_threads(1)`). Workers
are spawned, not forked: the parent has imported torch, whose thread pools do not survive a fork.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any

from metanas.bench.protocol import BenchTarget
from metanas.bench.replay import replay_run
from metanas.bench.tablefile import BenchTask

Job = tuple[str, int]  # (strategy, seed)
_WORKER: dict[str, Any] = {}


def _init_worker(task: BenchTask, target: BenchTarget, sources: Sequence[Any]) -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    torch.set_num_threads(1)  # one process per core; the strategies' own torch work is pinned to 1 thread anyway
    _WORKER.update(task=task, target=target, sources=list(sources))


def _replay(
    name: str, seed: int, evals: int, options: Mapping[str, Any] | None, task_meta: Mapping[str, Any]
) -> dict[str, Any]:
    w = _WORKER
    return replay_run(w["target"], w["task"].fitness, name, seed, evals, options, task_meta, w["sources"])


def replay_parallel(
    task: BenchTask,
    target: BenchTarget,
    jobs: Sequence[Job],
    evals: int,
    options: Mapping[str, Mapping[str, Any]],
    sources: Sequence[Any],
    processes: int,
    progress: Callable[[Job], None] | None = None,
) -> list[dict[str, Any]]:
    """`replay_run` of every (strategy, seed) in `jobs` on `task`'s table, `processes` at a time; results in
    `jobs` order. `progress(job)` runs as each finishes. The first failing run's error is raised, the rest
    cancelled."""
    if processes < 1:
        raise ValueError(f"jobs must be >= 1, got {processes}")
    meta = task.info["task_meta"]
    context = multiprocessing.get_context("spawn")
    results: dict[Job, dict[str, Any]] = {}
    pool = ProcessPoolExecutor(
        min(processes, len(jobs)) or 1, mp_context=context, initializer=_init_worker, initargs=(task, target, sources)
    )
    try:
        futures: dict[Future, Job] = {
            pool.submit(_replay, name, seed, evals, options.get(name), meta): (name, seed) for name, seed in jobs
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(futures[future])
    except BaseException:  # a failing run or Ctrl-C: stop the runs in progress too, not only the queued ones
        for worker in list(getattr(pool, "_processes", {}).values()):
            worker.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [results[job] for job in jobs]
