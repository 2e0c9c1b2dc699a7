"""Throughput of a shared study: evaluations per minute with 1, 2, 4 worker processes.

    python scripts/bench_workers.py [--workers 1,2,4] [--history URL] [--quick] [--out FILE.json]

A random BERT (default hidden 256, 4 layers, FFN 1024; the same weights in every
process, from a fixed seed) becomes a supernet, scored by the KD objective on fixed
random batches sized so one evaluation costs at least `--min-eval-ms` (measured
first, at one torch thread per worker). For each worker count, that many processes
run one evolution study (`--population` x `--generations` evaluations) on a fresh
SQLite file (or a fresh study name in `--history`, e.g. a PostgreSQL URL); the wall
time from start to the last worker's exit gives evaluations per minute and the ratio
to one worker. Each process pays its start-up (imports, building the supernet) inside
the wall time, as a real worker does. On a 2-core machine the ideal is 2x from 2
workers on; 4 workers on 2 cores can only add contention. `--quick` is a smoke run
(tiny model, 2 x 2 evaluations, 1 and 2 workers).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _model_setup(args: argparse.Namespace) -> tuple[Any, Any, list[dict[str, Any]]]:
    """The supernet, its KD objective and the fixed batches (deterministic: the same in every process)."""
    import torch
    from transformers import BertConfig, BertModel

    from metanas.objectives import build_objective
    from metanas.supernet.model import ElasticBert

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 32,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=max(64, args.seq),
    )
    sn = ElasticBert.from_teacher(BertModel(config).eval())
    objective = build_objective("kd", sn)
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(args.batches):
        ids = torch.randint(5, 1000, (args.batch, args.seq), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": ids * 0})
    return sn.eval(), objective, batches


def _worker(args: argparse.Namespace, url: str, study: str, run_dir: str) -> None:
    from metanas.cost import CostModel
    from metanas.evaluate import Evaluator
    from metanas.meta.history import HistoryStore
    from metanas.search.study import run_study

    sn, objective, batches = _model_setup(args)
    with HistoryStore(url) as history:
        run_study(
            Evaluator(sn, objective, batches),
            sn.space,
            CostModel(sn.space, seq_len=args.seq),
            {"non_embedding_params": "70%", "seq_len": args.seq},
            study,
            history,
            strategy_name="evolution",
            strategy_options={"population_size": args.population, "generations": args.generations, "parents": 2},
            run_dir=run_dir,
            task_id="bench-workers",
            seed=0,
            heartbeat_seconds=2.0,
            stale_seconds=30.0,
        )


def _eval_ms(args: argparse.Namespace) -> float:
    """Median milliseconds of one evaluation of the middle arch (after a warm-up)."""
    import statistics

    from metanas.evaluate import Evaluator

    sn, objective, batches = _model_setup(args)
    arch = sn.space.middle()
    objective.evaluate(sn, arch, batches)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        Evaluator(sn, objective, batches).metric(arch)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def _measure(args: argparse.Namespace, n: int, work: Path) -> dict[str, Any]:
    study = f"bench-{n}-{uuid.uuid4().hex[:6]}"
    url = args.history or str(work / f"{study}.db")
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(args, url, study, str(work / study / f"w{i}"))) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"a worker of {study} failed (exit codes {[p.exitcode for p in procs]})")
    evaluations = args.population * args.generations
    per_min = 60 * evaluations / wall
    return {"workers": n, "study": study, "evaluations": evaluations, "wall_s": wall, "per_min": per_min}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    p.add_argument("--history", default=None, help="SQLAlchemy URL (default: a fresh SQLite file per measurement)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--min-eval-ms", type=float, default=200.0)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 x 2 evaluations, 1 and 2 workers")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()
    if args.quick:
        args.hidden, args.layers, args.seq, args.batch, args.batches = 64, 2, 16, 2, 1
        args.population, args.generations, args.workers, args.min_eval_ms = 2, 2, [1, 2], 0.0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ms = _eval_ms(args)
    print(f"one evaluation: {ms:.0f} ms (middle arch, one thread)")
    if ms < args.min_eval_ms:
        raise SystemExit(f"an evaluation costs {ms:.0f} ms < --min-eval-ms {args.min_eval_ms:g}: raise --batch, --seq")
    rows = []
    with tempfile.TemporaryDirectory(prefix="metanas-bench-workers-") as tmp:
        for n in args.workers:
            rows.append(_measure(args, n, Path(tmp)))
            base = rows[0]["per_min"]
            r = rows[-1]
            print(f"{n} workers: {r['per_min']:.1f} evaluations/min ({r['wall_s']:.1f} s), {r['per_min'] / base:.2f}x")
    result = {"eval_ms": ms, "cpus": os.cpu_count(), "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    result["rows"] = rows
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
