"""Torch fp32 vs ONNX fp32 vs ONNX int8 of the MiniLM teacher: latency at batch 1 x 128 tokens, and agreement.

    .venv/bin/python scripts/bench_onnx.py [--texts 256] [--threads 1] [--json OUT.json]

Latency is the HAT mean (middle 80% of timed runs), best of interleaved rounds
(`measure_models_latency`). Agreement with the torch model, on the validation split of
the builtin docstrings and of the prose passages (64 word pieces, as the quickstart):
the report's embedding Spearman (of pairwise cosine similarities) and the mean cosine of
mean-pooled embeddings. Two int8 files: the shipped one (`export.format: onnx-int8`,
one weight scale per output channel) and onnxruntime's default of one scale per tensor,
the setting metanas shipped before.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from bench_agreement import texts_of
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModel, AutoTokenizer

from metanas.cost.latency import measure_models_latency
from metanas.report import EMBEDDING_METRIC, embed, embedding_agreement
from metanas.supernet.onnx_export import INT8_FILE, ONNX_DIR, ONNX_FILE, OnnxEncoder, export_onnx
from metanas.teachers import default_teacher_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    path = default_teacher_path()
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, tmp, "onnx-int8")
        onnx_dir = Path(tmp) / ONNX_DIR
        per_tensor = onnx_dir / "model_qint8_per_tensor.onnx"
        quantize_dynamic(str(onnx_dir / ONNX_FILE), str(per_tensor), weight_type=QuantType.QInt8)
        sessions = {
            "onnx": OnnxEncoder(onnx_dir / ONNX_FILE, args.threads),
            "onnx-int8 (per channel, shipped)": OnnxEncoder(onnx_dir / INT8_FILE, args.threads),
            "onnx-int8 (per tensor)": OnnxEncoder(per_tensor, args.threads),
        }
        ms = measure_models_latency(
            {"torch": model, **sessions}, tok.vocab_size, 1, 128, args.threads, args.rounds, 5, args.runs
        )
        agreement: dict[str, dict[str, float]] = {name: {} for name in sessions}
        for kind in ("docstrings", "prose"):
            texts = list(texts_of(kind, args.texts)["text"])
            batches = [dict(tok(texts[i : i + 16], padding=True, truncation=True, max_length=64, return_tensors="pt"))
                       for i in range(0, len(texts), 16)]  # fmt: skip
            ref = embed(model, batches)
            for name, session in sessions.items():
                a = embedding_agreement(embed(session, batches), ref)
                agreement[name][f"{kind}_spearman"] = round(a[EMBEDDING_METRIC], 4)
                agreement[name][f"{kind}_cosine"] = round(a["embedding_cosine"], 4)
    result = {
        "latency_ms": {k: round(v, 2) for k, v in ms.items()},
        "agreement_vs_torch": agreement,
        "texts": args.texts,
        "threads": args.threads,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
