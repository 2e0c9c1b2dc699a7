"""What another arch would have given: distil it as a finished compress run distilled its student.

    .venv/bin/python scripts/bench_distill_arch.py RUN_DIR --arch '{"depth": 4, ...}' --out DIR

The arch is cut from RUN_DIR's trained supernet and distilled by the export stage's own
path (`metanas.pipeline.stages.export_distilled`: the probe, the teacher's pass and the
time budget of `export.distill_seconds`, planned again as it runs), then scored as the
report scores the student: Spearman of its in-batch embedding similarities against the
teacher's on the run's held-out report examples, and its latency timed beside the
teacher (the report's protocol, on the torch models: compare `torch`-format runs). Both
RUN_DIR's student and this arch are scored, so archs are compared on one machine, one
run apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoModel

from metanas.config import load_recipe
from metanas.cost.latency import measure_models_latency
from metanas.data.tokens import batches_of
from metanas.pipeline.paths import MODEL_DIR
from metanas.pipeline.run import CompressRun
from metanas.pipeline.stages import export_distilled
from metanas.report import EMBEDDING_METRIC, embed, embedding_agreement
from metanas.space import ArchConfig
from metanas.supernet.convert import load_teacher_model
from metanas.training.teacher_cache import TeacherCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--arch", required=True, help="the arch as JSON (metanas_arch.json's 'arch')")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    recipe = load_recipe(args.run_dir / "compress.yaml")
    run = CompressRun(recipe, args.run_dir)
    arch = ArchConfig.from_dict(json.loads(args.arch))
    run.space.validate(arch)
    teacher = load_teacher_model(run.teacher.path).eval()
    cache = TeacherCache.for_students(recipe.export.distill_cache_mb * 2**20, [arch.hidden], teacher.config.hidden_size)
    record = export_distilled(run, "student", arch, args.out, teacher, cache, None)
    models = {"teacher": teacher}
    for name, path in (("run", args.run_dir / MODEL_DIR), ("arch", args.out)):
        models[name] = AutoModel.from_pretrained(str(path), trust_remote_code=True).eval()
    _, report_range, _ = run.heldout
    batches = batches_of(run.bundle.validation, report_range, recipe.report.batch_size, run.collate)
    reference = embed(teacher, batches)
    quality = {k: embedding_agreement(embed(m, batches), reference)[EMBEDDING_METRIC] for k, m in models.items()}
    lat = recipe.search.latency
    ms = measure_models_latency(models, run.space.vocab_size, recipe.budget.batch_size, recipe.budget.seq_len,
                                lat.threads, recipe.report.latency_rounds, lat.warmup, lat.runs)  # fmt: skip
    d = record["distill"]
    summary = {
        "arch": arch.to_dict(),
        "steps": d["steps"],
        "seconds": d["seconds"],
        "teacher_prefill_seconds": d["teacher_prefill_seconds"],
        EMBEDDING_METRIC: {k: round(v, 4) for k, v in quality.items()},
        "latency_ms": {k: round(v, 2) for k, v in ms.items()},
        "latency_fraction": {k: round(v / ms["teacher"], 3) for k, v in ms.items()},
    }
    (args.out / "distill_arch.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
