"""Hidden-size rewiring on the real all-MiniLM-L6-v2: which importance measure keeps narrow subnets closest.

Importance is measured on builtin-corpus *training* documents, fidelity on *validation*
documents. For each hidden width (all layers, heads and FFN kept), in one run:

- relative error ||h_sub - h_teacher[kept channels]||^2 / ||h_teacher[kept]||^2 of the last
  hidden state over real tokens (weights inherited, untrained);
- embedding Spearman: of the pairwise cosine similarities of mean-pooled embeddings,
  subnet vs teacher (the report's quality metric; any widths).

Measures: none (prefix of the teacher's own channel order), "activation" (Minitron: mean
|LayerNorm output|) and "gradient" (|sum g*w| for a denoising loss); heads and FFN are
rewired in every row except "none". Writes the figure to --figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from scipy.stats import spearmanr
from transformers import AutoTokenizer

import metanas
from metanas.data.calibration import builtin_batch
from metanas.report import mean_pool, pairwise_similarities
from metanas.supernet.rewire import rewire
from metanas.teachers import default_teacher_path

MEASURES = ("none", "heads+FFN only", "activation", "gradient")


def fidelity(sn, arch, batch, ref: torch.Tensor, order: list[int]) -> dict[str, float]:
    with torch.inference_mode():
        out = sn(**batch, arch=arch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    kept = ref[..., order[: arch.hidden]]
    rel = float(((out - kept) ** 2 * m).sum() / (kept**2 * m).sum())
    mask = batch["attention_mask"]
    sims_sub = pairwise_similarities(mean_pool(out, mask)).numpy()
    sims_ref = pairwise_similarities(mean_pool(ref, mask)).numpy()
    return {"rel_error": rel, "embedding_spearman": float(spearmanr(sims_sub, sims_ref).statistic)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=None, help="teacher dir or hub id (default: the bundled MiniLM)")
    p.add_argument("--calibration-docs", type=int, default=64)
    p.add_argument("--eval-docs", type=int, default=128)
    p.add_argument("--widths", default="192,240,288,336,384")
    p.add_argument("--figure", default="docs/benchmarks/hidden_rewire.png")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    args = p.parse_args()
    torch.manual_seed(0)
    teacher = args.teacher or default_teacher_path()
    tok = AutoTokenizer.from_pretrained(teacher)
    widths = [int(w) for w in args.widths.split(",")]
    overrides = {"hidden_choices": widths}
    calib = builtin_batch(tok, n=args.calibration_docs, split="train")
    batch = builtin_batch(tok, n=args.eval_docs, split="validation")
    results: dict[str, dict[int, dict[str, float]]] = {}
    drift = {}
    for measure in MEASURES:
        sn = metanas.ElasticBert.from_teacher(teacher, space_overrides=overrides)
        largest = sn.space.largest()
        with torch.inference_mode():
            ref = sn(**batch, arch=largest).last_hidden_state
        if measure != "none":
            rewire(sn, calib, None if measure == "heads+FFN only" else measure)
        order = sn.hidden_order or list(range(largest.hidden))
        with torch.inference_mode():
            drift[measure] = float((sn(**batch, arch=largest).last_hidden_state - ref[..., order]).abs().max())
        results[measure] = {
            w: fidelity(sn, sn.space.uniform(largest.depth, w, largest.heads[0], largest.ffn[0]), batch, ref, order)
            for w in widths
        }
    print(f"teacher all-MiniLM-L6-v2; calibration {args.calibration_docs} train docs, eval {args.eval_docs} validation")
    print(
        "largest arch max |rewired - teacher (channels reordered)|: "
        + ", ".join(f"{k} {v:.1e}" for k, v in drift.items())
    )
    print(
        "| hidden | "
        + " | ".join(f"rel. error {m}" for m in MEASURES)
        + " | "
        + " | ".join(f"Spearman {m}" for m in MEASURES)
        + " |"
    )
    print("|---" * (1 + 2 * len(MEASURES)) + "|")
    for w in widths:
        errs = " | ".join(f"{results[m][w]['rel_error']:.3f}" for m in MEASURES)
        rhos = " | ".join(f"{results[m][w]['embedding_spearman']:.3f}" for m in MEASURES)
        print(f"| {w} | {errs} | {rhos} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"drift": drift, "results": results}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in MEASURES:
        axes[0].plot(widths, [results[m][w]["rel_error"] for w in widths], marker="o", label=m)
        axes[1].plot(widths, [results[m][w]["embedding_spearman"] for w in widths], marker="o", label=m)
    axes[0].set(xlabel="hidden size", ylabel="relative error of last hidden state", yscale="log")
    axes[1].set(xlabel="hidden size", ylabel="embedding Spearman vs teacher")
    axes[1].legend()
    fig.suptitle("all-MiniLM-L6-v2, inherited weights: hidden channel importance orders")
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
