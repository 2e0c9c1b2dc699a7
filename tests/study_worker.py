"""One worker process of a shared study, for the multi-worker tests (`test_workers.py`).

    python tests/study_worker.py URL STUDY RUN_DIR KIND [--strategy S] [--hang-at N] [--delay S]

KIND `synthetic`: the MiniLM space scored by `synthetic_loss` (plus `--delay` seconds per
evaluation); `tiny`: a tiny BERT supernet trained 8 steps in-process (deterministic),
scored on a fixed batch. `--hang-at N` blocks in this worker's N-th evaluation (to be
killed there). Also imported by the tests to run a worker in-process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import minilm_space, synthetic_evaluator, synthetic_loss  # noqa: E402

STUDY_OPTIONS = {
    "evolution": {"population_size": 6, "generations": 4, "parents": 3},
    "nsga2": {"population_size": 6, "generations": 4},
    "random": {"num_samples": 20, "batch_size": 5},
}
OBJECTIVES = {"nsga2": ("fitness", "non_embedding_params")}
BUDGETS = {"synthetic": {"non_embedding_params": "50%"}, "tiny": {"non_embedding_params": "60%", "seq_len": 24}}
HEARTBEAT, STALE = 0.3, 2.0


def _evaluator(kind: str, delay: float, hang_at: int) -> Any:
    if kind == "tiny":
        from synthetic import trained_tiny_evaluator

        ev = trained_tiny_evaluator(8)
        if hang_at:
            objective, calls = ev.objective, [0]
            original = objective.evaluate

            def evaluate(sn: Any, arch: Any, batches: Any) -> float:
                calls[0] += 1
                if calls[0] == hang_at:
                    time.sleep(600)
                return original(sn, arch, batches)

            objective.evaluate = evaluate
        return ev

    def loss(arch: Any) -> float:
        time.sleep(delay)
        return synthetic_loss(arch)

    return synthetic_evaluator(loss, hang_at=hang_at)


def run_worker(
    url: str,
    study: str,
    run_dir: str,
    kind: str = "synthetic",
    strategy: str = "evolution",
    hang_at: int = 0,
    delay: float = 0.0,
) -> Any:
    """Run one worker of `study` to its end; the `SearchResult`."""
    import torch

    from metanas.cost import CostModel
    from metanas.meta.history import HistoryStore
    from metanas.search.study import run_study

    torch.set_num_threads(1)
    evaluator = _evaluator(kind, delay, hang_at)
    space = evaluator.sn.space if kind == "tiny" else minilm_space()
    cost_model = CostModel(space, seq_len=24) if kind == "tiny" else CostModel(space)
    with HistoryStore(url) as history:
        return run_study(
            evaluator,
            space,
            cost_model,
            BUDGETS[kind],
            study,
            history,
            strategy_name=strategy,
            strategy_options=STUDY_OPTIONS[strategy],
            run_dir=run_dir,
            task_id=f"workers-{kind}",
            seed=5,
            objectives=OBJECTIVES.get(strategy, ("fitness",)),
            heartbeat_seconds=HEARTBEAT,
            stale_seconds=STALE,
        )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("study")
    p.add_argument("run_dir")
    p.add_argument("kind", choices=["synthetic", "tiny"])
    p.add_argument("--strategy", default="evolution")
    p.add_argument("--hang-at", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    a = p.parse_args()
    run_worker(a.url, a.study, a.run_dir, a.kind, a.strategy, a.hang_at, a.delay)


if __name__ == "__main__":
    main()
