"""Attention forward + backward on CPU: PyTorch's fused flash kernel against the plain math one, by length.

    .venv/bin/python scripts/bench_attention_kernels.py [--tokens 1024] [--lengths 32 64 128 256 512] [--json OUT]

Each length runs a batch of `--tokens` tokens in all (batch = tokens / length) through
`scaled_dot_product_attention` with a padding mask, as the final distillation's student
does (12 heads of 32, bf16 by default), and times forward + backward with each kernel
forced by `torch.nn.attention.sdpa_kernel`, interleaved, median of `--repeats`. This is
what sets `metanas.training.distill.MATH_ATTENTION_MAX_TOKENS`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}


def time_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, kernel: SDPBackend) -> float:
    """Seconds of one forward + backward of masked attention on `kernel`."""
    started = time.perf_counter()
    with sdpa_kernel(kernel):
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per batch (16 x 64 in the quickstart)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--fp32", action="store_true", help="float32 instead of bf16")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    rows = []
    for length in args.lengths:
        batch = max(1, args.tokens // length)
        shape = (batch, args.heads, length, args.head_dim)
        q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=True) for _ in "qkv")
        mask = torch.zeros(batch, 1, 1, length, dtype=dtype)
        mask[0, ..., length // 2 :] = torch.finfo(dtype).min  # one padded row, as in a real batch
        times: dict[str, list[float]] = {name: [] for name in KERNELS}
        for repeat in range(args.repeats + 2):
            for name, kernel in KERNELS.items():
                seconds = time_step(q, k, v, mask, kernel)
                if repeat >= 2:  # the first two build kernels
                    times[name].append(seconds)
        medians = {f"{name}_ms": round(statistics.median(t) * 1e3, 2) for name, t in times.items()}
        row = {"length": length, "batch": batch, **medians}
        row["math_speedup"] = round(row["flash_ms"] / row["math_ms"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        out = {"dtype": str(dtype), "threads": torch.get_num_threads(), "tokens": args.tokens, "rows": rows}
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
