"""How much importance rewiring helps narrow subnets keep the teacher's function.

Importance is measured on builtin-corpus *training* documents; fidelity is measured
on *validation* documents. Prints, for half-width subnets, the relative error of the
last hidden state and the cosine of mean-pooled embeddings against the teacher,
before and after rewiring, in one run.
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoTokenizer

import metanas
from metanas.data.calibration import builtin_batch
from metanas.supernet.rewire import rewire
from metanas.teachers import default_teacher_path


def fidelity(sn, arch, batch, ref) -> tuple[float, float]:
    with torch.inference_mode():
        out = sn(**batch, arch=arch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    rel = float(((out - ref) ** 2 * m).sum() / (ref**2 * m).sum())
    cos = torch.nn.functional.cosine_similarity((out * m).sum(1) / m.sum(1), (ref * m).sum(1) / m.sum(1)).mean()
    return rel, float(cos)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", default=None, help="teacher dir or hub id (default: bundled MiniLM)")
    p.add_argument("--calibration-docs", type=int, default=64)
    p.add_argument("--eval-docs", type=int, default=128)
    args = p.parse_args()
    teacher = args.teacher or default_teacher_path()
    tok = AutoTokenizer.from_pretrained(teacher)
    sn = metanas.ElasticBert.from_teacher(teacher)
    space = sn.space
    calib = builtin_batch(tok, n=args.calibration_docs, split="train")
    batch = builtin_batch(tok, n=args.eval_docs, split="validation")
    largest = space.largest()
    with torch.inference_mode():
        ref = sn(**batch, arch=largest).last_hidden_state
    d, h = largest.depth, largest.hidden
    heads, ffn = space.head_choices, space.ffn_choices
    half_heads = min(heads, key=lambda x: abs(x - max(heads) / 2))
    half_ffn = min(ffn, key=lambda x: abs(x - max(ffn) / 2))
    archs = {
        "half heads + half FFN": space.uniform(d, h, half_heads, half_ffn),
        "half heads": space.uniform(d, h, half_heads, max(ffn)),
        "half FFN": space.uniform(d, h, max(heads), half_ffn),
        "smallest heads + FFN": space.uniform(d, h, min(heads), min(ffn)),
    }
    before = {k: fidelity(sn, a, batch, ref) for k, a in archs.items()}
    rewire(sn, calib)
    with torch.inference_mode():
        drift = (sn(**batch, arch=largest).last_hidden_state - ref).abs().max().item()
    after = {k: fidelity(sn, a, batch, ref) for k, a in archs.items()}
    print(f"teacher {teacher}; calibration {args.calibration_docs} train docs, eval {args.eval_docs} validation docs")
    print(f"largest arch max |after - before| rewiring: {drift:.2e}")
    print("| subnet (full depth and hidden) | rel. error before | rel. error after | cosine before | cosine after |")
    print("|---|---|---|---|---|")
    for k in archs:
        (rb, cb), (ra, ca) = before[k], after[k]
        print(f"| {k} | {rb:.3f} | {ra:.3f} | {cb:.3f} | {ca:.3f} |")


if __name__ == "__main__":
    main()
