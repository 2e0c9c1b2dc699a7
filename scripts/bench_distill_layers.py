"""The final distillation's layer loss: one student of a compress run, distilled at several layer weights.

    .venv/bin/python scripts/bench_distill_layers.py RUN_DIR [--steps 300] [--weights 0 3 10 30] [--json OUT]

Takes RUN_DIR's searched student (the arch its export stage recorded), cut from RUN_DIR's
trained supernet as export cuts it, and distils a fresh copy per weight with the run's own
final-distillation settings (`metanas.training.distill`: data, learning rate, batch, bf16,
no dropout, the same seeded batches) for `--steps` steps; `export.distill_layer_weight` is
the only thing that changes. Each copy is scored as the report scores it: the Spearman of
its pairwise embedding similarities against the teacher's on the report's held-out examples.
One process, models one after another, so the seconds compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from transformers import AutoModel

from metanas.config import load_recipe
from metanas.data import batches_of
from metanas.pipeline.run import CompressRun
from metanas.report import embed, embedding_agreement
from metanas.space import ArchConfig
from metanas.supernet.convert import load_teacher_model
from metanas.supernet.export import write_model_dir
from metanas.training.distill import distill
from metanas.training.teacher_cache import TeacherCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 3.0, 10.0, 30.0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    recipe = load_recipe(args.run_dir / "compress.yaml")
    run = CompressRun(recipe, args.run_dir)
    e = recipe.export
    stages = json.loads((args.run_dir / "stages.json").read_text())["stages"]
    arch = ArchConfig.from_dict(stages["export"]["parts"]["student"]["arch"])
    teacher = load_teacher_model(run.teacher.path)
    _, report_range, _ = run.heldout
    batches = batches_of(run.bundle.validation, report_range, recipe.report.batch_size, run.collate)
    reference = embed(teacher, batches)
    results = []
    for weight in args.weights:
        with tempfile.TemporaryDirectory() as tmp:
            write_model_dir(run.trained.supernet, arch, Path(tmp), tokenizer=run.tokenizer)
            model = AutoModel.from_pretrained(tmp, trust_remote_code=True)
        started = time.perf_counter()
        info = distill(
            model, teacher, run.bundle.train, run.collate, args.steps, e.distill_lr, e.distill_batch_size,
            e.distill_bf16, seed=recipe.training.seed, cache=TeacherCache(e.distill_cache_mb * 2**20),
            dropout=e.distill_dropout, teacher_layers=run.space.layer_indices(arch), layer_weight=weight,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        agreement = embedding_agreement(embed(model, batches), reference)
        results.append({
            "layer_weight": weight,
            "steps": args.steps,
            "embedding_spearman": round(agreement["embedding_spearman"], 4),
            "embedding_cosine": round(agreement["embedding_cosine"], 4),
            "seconds": round(seconds, 1),
            "median_step_s": round(statistics.median(h["seconds"] for h in info["history"]), 4),
        })  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    out = {"arch": arch.to_dict(), "results": results}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
