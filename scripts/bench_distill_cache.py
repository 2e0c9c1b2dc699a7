"""Seconds per final-distillation step with and without the teacher cache, on the real MiniLM teacher.

    .venv/bin/python scripts/bench_distill_cache.py [--steps 40] [--batch-size 16] [--max-length 64]

`compress` distils the student and each baseline on the same seeded batches from the
same teacher (`metanas.training.distill`); the cache (`metanas.training.teacher_cache`)
keeps the teacher's outputs per example, so only the first model pays for the teacher.
Measured in one process, one thread, bf16 autocast as in the quickstart: a layer-drop
student (teacher layers 1, 3, 5) distilled without a cache, then twice through one
cache (the first fills it, the second is what every later model costs).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from transformers import AutoTokenizer

from metanas.config import DataConfig
from metanas.data.loading import load_texts
from metanas.data.tokens import Collator
from metanas.supernet.convert import load_teacher_model
from metanas.teachers import default_teacher_path
from metanas.training.distill import distill
from metanas.training.teacher_cache import TeacherCache


class Rows:
    """Tokenized examples indexed by a list of positions, as `distill` reads a Dataset."""

    def __init__(self, examples: list[dict[str, list[int]]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, indices: list[int]) -> dict[str, list]:
        picked = [self.examples[i] for i in indices]
        return {k: [ex[k] for ex in picked] for k in picked[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = load_teacher_model(path).eval()
    student = copy.deepcopy(teacher)
    student.encoder.layer = torch.nn.ModuleList([student.encoder.layer[i] for i in (1, 3, 5)])
    student.config.num_hidden_layers = 3
    texts = list(load_texts(DataConfig(source="builtin"))["text"])
    rows = Rows([dict(tokenizer(t, truncation=True, max_length=args.max_length)) for t in texts])
    collate = Collator(tokenizer)

    def timed(cache: TeacherCache | None) -> float:
        model = copy.deepcopy(student)
        start = time.perf_counter()
        distill(model, teacher, rows, collate, args.steps, 5e-4, args.batch_size, bf16=True, cache=cache)
        return (time.perf_counter() - start) / args.steps

    plain = timed(None)
    cache = TeacherCache(2**31)
    filling = timed(cache)
    cached = timed(cache)
    print(
        json.dumps(
            {
                "seconds_per_step": {
                    "no_cache": round(plain, 3),
                    "filling": round(filling, 3),
                    "cached": round(cached, 3),
                },
                "cached_vs_no_cache": round(cached / plain, 3),
                "cache": cache.stats(),
                "args": vars(args),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
