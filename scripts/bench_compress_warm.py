"""The product path of warm start: `metanas compress` with `warm_start: auto` against `off`
and against the proxy-guided scorer, on one trained supernet, several search seeds.

    python scripts/bench_compress_warm.py --recipe recipes/quickstart.yaml --seeds 5 --jobs 2

Steps:

1. the base run (`--base`, default `runs/quickstart`): its `latency` and `train` stages, run
   when missing, so every arm searches the same supernet with the same latency model;
2. per mode and seed, a run directory under `--out` holding a copy of those two stages and
   its own history store (so `auto` sees no user history and uses the shipped predictor),
   with `search.seed` set; the search stage, then export (final distillation) and report
   for the first `--export-seeds` seeds;
3. per run: the best search fitness within the first `--evals` evaluations (the recipe's
   population x generations; the warm arms also spend their anchors, so their last
   evaluations are cut off here) and at the end, and the exported student's quality;
   per mode the median, and a Mann-Whitney test of `auto` against each other mode.

Results go to `--json` (default `docs/benchmarks/compress_warm.json`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sqlite3
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "auto": ["search.warm_start=auto"],
    "off": ["search.warm_start=off"],
    "proxy": ["search.warm_start=auto", "search.options.scorer=proxy"],
}
BASE_STAGES = ("latency", "train")
COPIED = ("latency", "train", "compress.yaml", "space.json")


def quiet_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "datasets", "transformers", "metanas.training", "accelerate", "metanas.cost"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def overrides(args: argparse.Namespace, mode: str, seed: int, run_dir: Path) -> list[str]:
    return [*args.set, "logging.wandb=false", f"search.seed={seed}", f"search.history={run_dir / 'history.db'}"] + (
        MODES[mode]
    )


def prepare_base(args: argparse.Namespace) -> None:
    """The shared latency model and trained supernet (resumed or reused when present)."""
    from metanas.config import load_recipe
    from metanas.pipeline.run import CompressRun

    recipe = load_recipe(args.recipe, [*args.set, "logging.wandb=false"])
    CompressRun(recipe, args.base).run(stages=BASE_STAGES)


def seed_run_dir(base: Path, run_dir: Path) -> None:
    """A new run dir holding the base's latency and train stages, recorded as done."""
    if (run_dir / "stages.json").is_file():
        return
    tmp = run_dir.with_name(run_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in COPIED:
        src = base / name
        if src.is_dir():
            shutil.copytree(src, tmp / name)
        else:
            shutil.copy2(src, tmp / name)
    log = json.loads((base / "stages.json").read_text(encoding="utf-8"))
    log["stages"] = {k: v for k, v in log["stages"].items() if k in BASE_STAGES}
    (tmp / "stages.json").write_text(json.dumps(log, indent=1), encoding="utf-8")
    os.replace(tmp, run_dir)


def best_within(db: Path, evals: int) -> float:
    """Best fitness among the first `evals` evaluations of the run's history (fitness: higher is better)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT fitness FROM evaluations ORDER BY id LIMIT ?", (evals,)).fetchall()
    return max(r[0] for r in rows)


def run_one(args: argparse.Namespace, mode: str, seed: int) -> dict[str, Any]:
    """One arm: search, and export + report when this seed is exported."""
    import torch

    from metanas.config import load_recipe
    from metanas.pipeline.run import STAGE_NAMES, CompressRun

    quiet_logging()
    torch.set_num_threads(1)
    run_dir = args.out / f"{mode}-s{seed}"
    seed_run_dir(args.base, run_dir)
    recipe = load_recipe(args.recipe, overrides(args, mode, seed, run_dir))
    export = seed < args.export_seeds
    started = time.perf_counter()
    CompressRun(recipe, run_dir).run(stages=STAGE_NAMES if export else ("latency", "train", "search"))
    search = json.loads((run_dir / "search" / "search.json").read_text(encoding="utf-8"))
    events = [e for e in search.get("transfer", []) if e.get("event") == "warm_start"]
    row: dict[str, Any] = {
        "mode": mode,
        "seed": seed,
        "strategy": search["strategy"],
        "evaluations": search["num_evaluations"],
        "best_fitness_at_evals": best_within(run_dir / "history.db", args.evals),
        "best_fitness_final": search["best"]["fitness"],
        "best_arch": search["best"]["arch"],
        "best_origin": search["best"].get("origin"),
        "warm_start": events[0]["message"] if events else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if export:
        report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
        s, b = report["student"], report["uniform_baseline"]
        row.update(
            {
                "quality_metric": s["quality_metric"],
                "quality_higher_is_better": s["higher_is_better"],
                "student_quality": s["quality"],
                "student_latency_ms": s["latency_ms"],
                "within_budget": report["within_budget"],
                "uniform_quality": b["quality"] if b else None,
            }
        )
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode the median and range of each figure; auto against each other mode by Mann-Whitney."""
    from scipy.stats import mannwhitneyu

    keys = ("best_fitness_at_evals", "best_fitness_final", "student_quality")
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in MODES}
    out: dict[str, Any] = {"per_mode": {}, "auto_vs": {}}
    for mode, rs in by_mode.items():
        out["per_mode"][mode] = {
            k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
            for k in keys
            if (v := [r[k] for r in rs if r.get(k) is not None])
        }
    for other in ("off", "proxy"):
        out["auto_vs"][other] = {}
        for k in keys:
            a = [r[k] for r in by_mode["auto"] if r.get(k) is not None]
            b = [r[k] for r in by_mode[other] if r.get(k) is not None]
            if len(a) >= 2 and len(b) >= 2:
                higher = k != "student_quality" or by_mode["auto"][0].get("quality_higher_is_better", True)
                test = mannwhitneyu(a, b, alternative="greater" if higher else "less")
                side = "greater" if higher else "less"
                out["auto_vs"][other][k] = {"p_one_sided": float(test.pvalue), "auto_better_is": side}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "quickstart.yaml"))
    p.add_argument("--base", type=Path, default=ROOT / "runs" / "quickstart", help="run dir with latency + train")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-compress-warm")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--export-seeds", type=int, default=5, help="seeds whose student is exported and distilled")
    p.add_argument("--evals", type=int, default=120, help="evaluations compared (population x generations)")
    p.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
    p.add_argument("--set", nargs="*", default=[], help="recipe overrides for every run (key.sub=value)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks" / "compress_warm.json")
    args = p.parse_args(argv)
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        p.error(f"unknown mode(s) {', '.join(unknown)}; modes: {', '.join(MODES)}")
    quiet_logging()
    started = time.perf_counter()
    prepare_base(args)
    jobs = [(m, s) for s in range(args.seeds) for m in args.modes]
    rows = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, args, m, s): (m, s) for m, s in jobs}
        for future in as_completed(futures):
            rows.append(future.result())
            r = rows[-1]
            logging.info(
                "%s seed %d: best %.4f at %d evals, %.4f final, student %s (%.0fs)",
                r["mode"], r["seed"], r["best_fitness_at_evals"], args.evals, r["best_fitness_final"],
                r.get("student_quality"), r["seconds"],
            )  # fmt: skip
    rows.sort(key=lambda r: (list(MODES).index(r["mode"]), r["seed"]))
    result = {
        "command": "python scripts/bench_compress_warm.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "recipe": os.path.relpath(args.recipe, ROOT),
        "evals_compared": args.evals,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "runs": rows,
        **summarise(rows),
    }
    from metanas._io import atomic_write_text

    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(result, indent=1) + "\n", args.json)
    print(json.dumps(result["per_mode"], indent=1))
    print(json.dumps(result["auto_vs"], indent=1))


if __name__ == "__main__":
    main()
