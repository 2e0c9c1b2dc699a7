"""Throughput of supernet training against plain HF training of the same model.

All runs use the same KD objective (MiniLMv2 last-layer relations against the frozen
teacher), the same packed batches (no padding) and AdamW, and time whole steps:
teacher forward + student forward/backward + optimizer step. Compared:

- the largest arch as a standalone HF `BertModel` built from the teacher's config;
- single-subnet steps of the supernet for the smallest, middle and largest arch;
- one sandwich step (largest + smallest + N random subnets, as `train-supernet` runs it).

tokens/s counts data tokens per step. FLOP/s is `space.flops(arch, seq) x tokens x 3`
(forward + backward of the students; the teacher's forward is not counted), and MFU
divides it by the fp32 matmul peak measured here with a large `torch.mm`. Rounds are
interleaved so machine noise hits every run alike; the reported time per step is the
median of the timed steps (robust to load spikes on a shared machine).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from metanas.data import builtin_corpus
from metanas.objectives import KDObjective, make_teacher, relation_loss
from metanas.space import ArchConfig
from metanas.supernet.model import ElasticBert
from metanas.teachers import default_teacher_path
from metanas.training.schedule import param_groups, step_archs

HF_RUN = "HF model (largest, standalone)"


def matmul_peak(n: int = 2048, repeats: int = 8) -> float:
    """Best fp32 FLOP/s of an n x n x n torch.mm: the denominator of MFU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def packed_batches(tokenizer, count: int, batch: int, seq: int) -> list[dict[str, torch.Tensor]]:
    """Builtin-corpus text packed into full [CLS] ... [SEP] rows of `seq` tokens (no padding)."""
    need = count * batch * (seq - 2)
    ids: list[int] = []
    for text in builtin_corpus()["text"]:
        ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        if len(ids) >= need:
            break
    body = torch.tensor(ids[:need]).view(count, batch, seq - 2)
    cls = torch.full((count, batch, 1), tokenizer.cls_token_id)
    sep = torch.full((count, batch, 1), tokenizer.sep_token_id)
    rows = torch.cat([cls, body, sep], dim=-1)
    return [{"input_ids": r, "attention_mask": torch.ones_like(r), "token_type_ids": torch.zeros_like(r)} for r in rows]


def hf_step_fn(model: PreTrainedModel, objective: KDObjective, sn: ElasticBert) -> Callable[[dict], None]:
    """One KD step of a standalone HF model: its last layer's Q/K/V come from forward hooks."""
    attn = model.encoder.layer[-1].attention.self
    captured: dict[str, torch.Tensor] = {}
    for name in ("query", "key", "value"):
        getattr(attn, name).register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5)

    def step(batch: dict) -> None:
        context = objective.prepare(sn, batch)
        model(**batch)
        qkv = (captured["query"], captured["key"], captured["value"])
        relation_loss(qkv, context["teacher_qkv"], batch["attention_mask"], objective.relation_heads).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def supernet_step_fn(sn: ElasticBert, objective: KDObjective, archs: list[ArchConfig]) -> Callable[[dict], None]:
    """One supernet step: teacher forward once, then forward/backward of every arch, one update."""
    optimizer = torch.optim.AdamW(param_groups(sn, 0.01), lr=1e-5)

    def step(batch: dict) -> None:
        context = objective.prepare(sn, batch)
        for arch in archs:
            loss, _ = objective.loss(sn, batch, arch, context)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", default=None, help="teacher dir or hub id; unset: the bundled all-MiniLM-L6-v2")
    p.add_argument("--batch", type=int, default=8, help="sequences per step")
    p.add_argument("--seq", type=int, default=128, help="tokens per sequence (packed, no padding)")
    p.add_argument("--steps", type=int, default=1, help="timed steps per run and round")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds (one warm-up step per run first)")
    p.add_argument("--num-random", type=int, default=2, help="random subnets in the sandwich step")
    p.add_argument("--threads", type=int, default=None, help="torch threads; unset: torch's choice")
    p.add_argument("--seed", type=int, default=0, help="seed for dropout and the random subnets")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    teacher_path = args.teacher or default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    sn = ElasticBert.from_teacher(teacher_path).train()
    space = sn.space
    objective = KDObjective(make_teacher(sn))
    hf = AutoModel.from_config(sn.config).train()
    hf.load_state_dict(sn.state_dict())  # same names, so the standalone model starts as the teacher

    sandwich = [a for _, a in step_archs(space, "sandwich", args.seed, 0, args.num_random)]
    runs: dict[str, tuple[Callable[[dict], None], list[ArchConfig]]] = {
        HF_RUN: (hf_step_fn(hf, objective, sn), [space.largest()]),
        "supernet largest": (supernet_step_fn(sn, objective, [space.largest()]), [space.largest()]),
        "supernet middle": (supernet_step_fn(sn, objective, [space.middle()]), [space.middle()]),
        "supernet smallest": (supernet_step_fn(sn, objective, [space.smallest()]), [space.smallest()]),
        f"supernet sandwich (L+S+{args.num_random}R)": (supernet_step_fn(sn, objective, sandwich), sandwich),
    }
    batches = packed_batches(tokenizer, args.rounds * args.steps + 1, args.batch, args.seq)
    tokens = args.batch * args.seq
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step, _ in runs.values():
        step(batches[0])  # warm-up
    for r in range(args.rounds):
        order = list(runs)
        random.Random(args.seed + r).shuffle(order)
        for name in order:
            step = runs[name][0]
            for i in range(args.steps):
                t0 = time.perf_counter()
                step(batches[1 + r * args.steps + i])
                times[name].append(time.perf_counter() - t0)
    peak = matmul_peak()

    base_tps = tokens / statistics.median(times[HF_RUN])
    print(
        f"\nteacher: {teacher_path}\nbatch {args.batch} x seq {args.seq}  "
        f"torch threads {torch.get_num_threads()}  fp32 matmul peak {peak / 1e9:.1f} GFLOP/s\n"
    )
    print("| run | archs (depth/hidden/heads/ffn) | s/step | tokens/s | vs HF largest | GFLOP/s | MFU |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, (_, archs) in runs.items():
        sec = statistics.median(times[name])
        flop = sum(space.flops(a, args.seq) for a in archs) * tokens * 3
        desc = " + ".join(f"{a.depth}/{a.hidden}/{max(a.heads)}/{max(a.ffn)}" for a in archs)
        print(
            f"| {name} | {desc} | {sec:.3f} | {tokens / sec:,.0f} | {tokens / sec / base_tps:.2f} | "
            f"{flop / sec / 1e9:.1f} | {flop / sec / peak:.1%} |"
        )
    print(
        "\nheads/ffn show each arch's largest layer; tokens/s counts data tokens (a sandwich step trains "
        "several subnets on the same tokens)."
    )


if __name__ == "__main__":
    main()
