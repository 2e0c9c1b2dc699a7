"""Time subnets inside the supernet against the same archs exported as standalone models.

One run, interleaved repeats, so machine noise hits both sides alike. Prints the
supernet/standalone time ratio for forward and forward+backward per subnet
(target: <= 1.10 for forward+backward).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import metanas
from metanas.supernet.export import build_subnet_model
from metanas.teachers import default_teacher_path


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def middle_mean(xs: list[float]) -> float:
    """Mean of the middle 80% of sorted timings (HAT's protocol)."""
    xs = sorted(xs)
    k = len(xs) // 10
    return statistics.fmean(xs[k : len(xs) - k] or xs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", default=None, help="teacher dir or hub id (default: bundled MiniLM)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per side and mode")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sn = metanas.ElasticBert.from_teacher(args.teacher or default_teacher_path())
    space = sn.space
    rng = random.Random(args.seed)
    archs = {
        "largest": space.largest(),
        "uniform-half": space.uniform(
            max(space.depth_choices) // 2 or 1,
            space.hidden_choices[len(space.hidden_choices) // 2],
            space.head_choices[len(space.head_choices) // 2],
            space.ffn_choices[len(space.ffn_choices) // 2],
        ),
        "random-1": space.sample(rng),
        "random-2": space.sample(rng),
        "smallest": space.smallest(),
    }
    ids = torch.randint(1000, space.vocab_size, (args.batch, args.seq))
    mask = torch.ones_like(ids)
    print(f"batch {args.batch} x seq {args.seq}, threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(
        "| subnet | params | fwd supernet ms | fwd standalone ms | fwd ratio | "
        "fwd+bwd supernet ms | fwd+bwd standalone ms | fwd+bwd ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, arch in archs.items():
        model = build_subnet_model(sn, arch).train()
        sn.train()

        def sn_fwd(a=arch):
            with torch.no_grad():
                sn(ids, attention_mask=mask, arch=a)

        def st_fwd(m=model):
            with torch.no_grad():
                m(input_ids=ids, attention_mask=mask)

        def sn_bwd(a=arch):
            sn.zero_grad(set_to_none=True)
            sn(ids, attention_mask=mask, arch=a).last_hidden_state.float().pow(2).mean().backward()

        def st_bwd(m=model):
            m.zero_grad(set_to_none=True)
            m(input_ids=ids, attention_mask=mask).last_hidden_state.float().pow(2).mean().backward()

        for fn in (sn_fwd, st_fwd, sn_bwd, st_bwd):  # warm-up
            fn()
        t = {k: [] for k in ("sf", "tf", "sb", "tb")}
        for _ in range(args.rounds):
            t["sf"] += timed(sn_fwd, args.repeats)
            t["tf"] += timed(st_fwd, args.repeats)
            t["sb"] += timed(sn_bwd, args.repeats)
            t["tb"] += timed(st_bwd, args.repeats)
        m = {k: middle_mean(v) * 1e3 for k, v in t.items()}
        print(
            f"| {name} {arch.to_json()} | {space.params(arch) / 1e6:.1f}M | {m['sf']:.1f} | {m['tf']:.1f} | "
            f"{m['sf'] / m['tf']:.3f} | {m['sb']:.1f} | {m['tb']:.1f} | {m['sb'] / m['tb']:.3f} |"
        )


if __name__ == "__main__":
    main()
