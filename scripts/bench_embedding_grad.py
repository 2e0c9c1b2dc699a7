"""What the word embeddings cost a final-distillation step: the full table against the rows the data uses.

    .venv/bin/python scripts/bench_embedding_grad.py [--vocab 30522] [--used 11260] [--width 384] [--steps 30]

One embedding lookup of a 16 x 64 batch, its backward and a fused AdamW step, as in
`metanas.training.distill`, timed for a table of `--vocab` rows (MiniLM's) and for one of
`--used` rows (the quickstart's training data uses 11,260 distinct tokens;
`metanas.training.compact_vocab`). Median of the steps after the first five.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from metanas.training.schedule import adamw, param_groups


def step_ms(rows: int, width: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    table = torch.nn.Embedding(rows, width)
    optimizer = adamw(param_groups(table, 0.01), lr=1e-4)
    ids = torch.randint(0, rows, (16, 64))
    backward, total = [], []
    for _ in range(steps):
        start = time.perf_counter()
        table(ids).square().mean().backward()
        backward.append(time.perf_counter() - start)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total.append(time.perf_counter() - start)
    return {
        "backward_ms": round(1000 * statistics.median(backward[5:]), 2),
        "with_adamw_ms": round(1000 * statistics.median(total[5:]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--used", type=int, default=11260)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    out = {
        "full": step_ms(args.vocab, args.width, args.steps),
        "compact": step_ms(args.used, args.width, args.steps),
        "args": vars(args),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
