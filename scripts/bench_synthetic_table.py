"""A bench table for timing `metanas bench replay` without the suite's supernets (issue 13): replay speed.

The task suite's 128-wide space (all-MiniLM-L6-v2 cut to depth 6, hidden 128, 4 heads, FFN 512,
as `teachers.minilm-128` in metanas/tasks/suite.yaml), fitness a deterministic function of the
arch (`tests/synthetic.py`'s loss shape, negated). The table is filled the way the suite's is
(`--fill`): every arch the reference sample and each strategy x seed x 256-eval run asks for, so
the replay never misses.

    .venv/bin/python scripts/bench_synthetic_table.py OUT.jsonl.gz [--seeds 10] [--evals 256]
"""

import argparse
import math
import time
from types import SimpleNamespace

from metanas.bench.protocol import DEFAULT_BUDGET_QUANTILE, DEFAULT_REFERENCE, BenchTarget
from metanas.bench.replay import replay_run
from metanas.bench.tablefile import BenchTask, write_bench_table
from metanas.space import ArchConfig, SearchSpace

CUT = SimpleNamespace(
    model_type="bert",
    vocab_size=30522,
    hidden_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=512,
    max_position_embeddings=512,
    type_vocab_size=2,
)
META = {"objective": "kd", "higher_is_better": False, "seq_len": 64, "corpus_size": 1000}
FILL = [
    ("random", None),
    ("evolution", None),
    ("aging", None),
    ("nsga2", None),
    ("tpe", None),
    ("rl", None),
    ("bo", None),
    ("bo", {"surrogate": "target"}),
]


def loss(arch: ArchConfig) -> float:
    gain = 3.0 * math.log(arch.hidden)
    for i, (h, f) in enumerate(zip(arch.heads, arch.ffn)):
        gain += (1.0 - 0.1 * i) * math.log(h) + (0.5 + 0.1 * i) * math.log(f / 96)
    return 60.0 - gain


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--evals", type=int, default=256)
    args = p.parse_args()
    space = SearchSpace.from_teacher_config(CUT)
    target = BenchTarget.from_quantile("synthetic-128", space, DEFAULT_BUDGET_QUANTILE, META["seq_len"])
    rows: dict[ArchConfig, tuple[float, float]] = {}

    def live(arch: ArchConfig) -> float:
        rows.setdefault(arch, (-loss(arch), loss(arch)))
        return rows[arch][0]

    for a in target.reference(DEFAULT_REFERENCE):
        live(a)
    for name, options in FILL:
        started = time.perf_counter()
        for seed in range(args.seeds):
            replay_run(target, live, name, seed, args.evals, options, META)
        print(f"filled {name} {options or ''}: {time.perf_counter() - started:.1f} s, {len(rows)} rows", flush=True)
    info = {
        "task": "synthetic-128",
        "family": "kd",
        "metric_name": "synthetic_loss",
        "task_meta": META,
        "space": space.to_dict(),
    }
    print(write_bench_table(args.out, [BenchTask("synthetic-128", info, rows)], "scripts/bench_synthetic_table.py"))


if __name__ == "__main__":
    main()
