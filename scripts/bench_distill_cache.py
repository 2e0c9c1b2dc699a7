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
from metanas.data.tokens import Collator, tokenize_dataset
from metanas.space import ArchConfig
from metanas.supernet.convert import load_teacher_model
from metanas.supernet.export import build_subnet_model
from metanas.supernet.model import ElasticBert
from metanas.teachers import default_teacher_path
from metanas.training.distill import distill
from metanas.training.teacher_cache import TeacherCache


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
    sn = ElasticBert.from_teacher(teacher)
    top = sn.space.largest()
    student = build_subnet_model(sn, ArchConfig(3, top.hidden, top.heads[:3], top.ffn[:3], "spread"))  # layers 1, 3, 5
    rows = tokenize_dataset(load_texts(DataConfig(source="builtin")), tokenizer, args.max_length)
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
