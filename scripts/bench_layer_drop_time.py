"""The practitioner's layer drop given the whole wall time of a compress run.

    .venv/bin/python scripts/bench_layer_drop_time.py RUN_DIR --out DIR [--seconds S | --steps N]

DistilBERT-style: keep spread teacher layers at full width (the layer-drop arch that
RUN_DIR's report used, taken from the original teacher's weights, no supernet), then
distil it with the quickstart's final distillation (`metanas.training.distill`, the same
data, learning rate, batch, bf16 and layer loss) for as long as RUN_DIR's latency, train and search
stages plus its student's distillation took together (`--seconds`, default read from
RUN_DIR), or for `--steps`. The model is saved to `--out` for `scripts/bench_agreement.py`.
The step count for a time is measured, not assumed, as `compress` measures it: 20 probe steps
give the model's cost a step and per padded token, and the teacher's per uncached example,
for a first plan (`metanas.training.pace`; the warmup's length needs a total up front); from the end
of its warmup the distillation plans again from its own latest steps (`TimeBudget`).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from metanas.config import load_recipe
from metanas.data.tokens import Collator, build_datasets
from metanas.space import ArchConfig
from metanas.supernet.convert import load_teacher_model
from metanas.supernet.export import build_subnet_model
from metanas.supernet.model import ElasticBert
from metanas.teachers import default_teacher_path
from metanas.training.distill import batch_schedule, distill, example_lengths
from metanas.training.pace import DistillPace, TimeBudget
from metanas.training.teacher_cache import TeacherCache

PROBE_STEPS = 20
MOST_STEPS = 20_000  # a time budget alone sets the steps here (compress also caps them at export.distill_steps)


def run_seconds(run_dir: Path) -> float:
    """Latency + train + search stages and the student's final distillation (with the teacher's pass before it) of
    a finished compress run."""
    stages = json.loads((run_dir / "stages.json").read_text())["stages"]
    before_export = sum(stages[s]["seconds"] for s in ("latency", "train", "search"))
    student = stages["export"]["parts"]["student"]["distill"]
    if "seconds" not in student:
        raise SystemExit(f"{run_dir}: its final distillation has no recorded seconds (an older run); pass --seconds")
    return before_export + student.get("teacher_prefill_seconds", 0.0) + student["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    recipe = load_recipe(args.run_dir / "compress.yaml")
    if recipe.threads is not None:  # as the run distilled (null: torch's default, every core)
        torch.set_num_threads(recipe.threads)
    e = recipe.export
    layer_drop = json.loads((args.run_dir / "layer_drop" / "metanas_arch.json").read_text())["arch"]
    path = default_teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = load_teacher_model(path).eval()
    sn = ElasticBert.from_teacher(teacher)  # the teacher's own weights: no supernet training
    arch = ArchConfig.from_dict(layer_drop)
    keep = sn.space.layer_indices(arch)
    student = build_subnet_model(sn, arch)
    bundle = build_datasets(recipe.data, tokenizer, teacher_config=teacher.config)
    collate = Collator(tokenizer)
    cache = TeacherCache.for_students(e.distill_cache_mb * 2**20, [arch.hidden], teacher.config.hidden_size)

    def run(model: torch.nn.Module, steps: int, budget: TimeBudget | None = None) -> dict:
        return distill(
            model, teacher, bundle.train, collate, steps, e.distill_lr, e.distill_batch_size, e.distill_bf16,
            seed=recipe.training.seed, cache=cache, dropout=e.distill_dropout, teacher_layers=keep,
            layer_weight=e.distill_layer_weight, budget=budget,
        )  # fmt: skip

    steps, seconds, budget = args.steps, args.seconds, None
    if steps is None:
        seconds = seconds if seconds is not None else run_seconds(args.run_dir)
        probe = run(copy.deepcopy(student), PROBE_STEPS)
        pace = DistillPace.from_probe(probe)
        lengths = example_lengths(bundle.train)
        schedule = batch_schedule(lengths, e.distill_batch_size, MOST_STEPS, recipe.training.seed)
        steps = pace.steps_in(seconds, schedule, lengths, cache)
        budget = TimeBudget(seconds, MOST_STEPS, pace.teacher_s_per_example)
        print(f"budget {seconds:.0f} s: {steps} steps planned ({pace}), planned again as it runs", flush=True)
    start = time.perf_counter()
    info = run(student, steps, budget)
    took, steps = time.perf_counter() - start, info["steps"]
    args.out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    summary = {"layers": list(keep), "steps": steps, "seconds": round(took, 1), "budget_seconds": seconds}
    summary["final_loss"] = info["final_loss"]
    (args.out / "layer_drop_time.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
