"""Torch fp32 vs ONNX fp32 vs ONNX int8 of the MiniLM teacher: latency at batch 1 x 128 tokens, and int8 agreement.

    .venv/bin/python scripts/bench_onnx.py [--texts 64] [--threads 1]

Latency is the HAT mean (middle 80% of timed runs), best of interleaved rounds
(`measure_models_latency`); agreement is the mean cosine of mean-pooled embeddings
of ONNX int8 (and fp32) vs torch on builtin-corpus texts.
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import AutoModel, AutoTokenizer

from metanas.cost.latency import measure_models_latency
from metanas.data.corpus import builtin_corpus
from metanas.report import embed
from metanas.supernet.onnx_export import as_formats
from metanas.teachers import default_teacher_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    torch.manual_seed(0)
    path = default_teacher_path()
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    sessions = as_formats(model, ["onnx", "onnx-int8"], threads=args.threads)
    models = {"torch": model, **sessions}
    ms = measure_models_latency(models, tok.vocab_size, 1, 128, args.threads, args.rounds, 5, args.runs)
    texts = [t for t in builtin_corpus()["text"] if t.strip()][: args.texts]
    batches = [dict(tok(texts[i : i + 16], padding=True, truncation=True, max_length=128, return_tensors="pt"))
               for i in range(0, len(texts), 16)]  # fmt: skip
    ref = embed(model, batches)
    cos = {
        f: float(torch.nn.functional.cosine_similarity(embed(s, batches), ref, dim=-1).mean())
        for f, s in sessions.items()
    }
    print(
        json.dumps(
            {"latency_ms": ms, "mean_cosine_vs_torch": cos, "texts": len(texts), "threads": args.threads}, indent=2
        )
    )


if __name__ == "__main__":
    main()
