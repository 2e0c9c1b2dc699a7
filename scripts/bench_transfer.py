"""Transfer benchmark: does a meta-predictor trained on other tasks make a search on a new task cheaper?

Runs on the task suite built by scripts/build_suite.py (metanas/tasks/suite.yaml):
trained supernets and their fitness tables, extended lazily: an arch a method
proposes that is not tabulated is evaluated on the task's supernet and appended,
so every fitness is a real subnet evaluation (cached by task, arch and table format).

Folds (each held-out group gets a predictor meta-trained on its sources only, with
model selection on a seeded quarter of those sources: nested, never on the targets):
- leave-one-family-out (primary): targets the --source-teacher tasks of one family,
  sources that teacher's tasks of every other family;
- leave-one-corpus-out: the same with corpora;
- leave-one-teacher-out: targets the --target-teacher tasks (the real MiniLM-384 space),
  sources every --source-teacher task (another space: no incumbent can be copied).

Methods at equal evaluation counts (anchors count): random, evolution (tuned on the
sources: aging or AutoFormer evolution), tpe, proxy, target, incumbents, warm, warm-tpe,
bo, and the warm-shuffled stress test (see transfer_methods.py). The warm-start settings are the
library defaults, fixed before any fold ran. Targets are fixed in advance per task
from a reference sample of uniformly random feasible archs (transfer_stats.py), and
the statistics take the task as the unit.

Kendall tau: on --tau-archs held-out random archs per target, the fold's predictor
adapted on the anchors plus N random target samples, against a target-only model on
the same data and the params and FLOPs proxies.

    .venv/bin/python scripts/build_suite.py --jobs 2 --no-predictor   # first
    .venv/bin/python scripts/bench_transfer.py --jobs 2
    .venv/bin/python scripts/bench_transfer.py --quick                # a smoke run (CI)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import transfer_methods as tm  # siblings: scripts/ is on sys.path
import transfer_stats as ts

from metanas.tasks import load_suite
from metanas.tasks.table import suite_tables, table_archs, table_records

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "benchmarks" / "transfer.json"
DEFAULT_PNG = ROOT / "docs" / "benchmarks" / "transfer_curves.png"
FOLDS = ("leave-one-family-out", "leave-one-corpus-out", "leave-one-teacher-out")
FRACTIONS = (0.9, 0.95, 0.98, 0.99, 1.0)
PRIMARY = 0.98
AUGMENT_FRACTIONS = (0.25, 0.4, 0.6)
CODE_VERSION = 1  # bump when every method's behaviour changes: cached runs are then recomputed
METHOD_VERSIONS = {"warm-tpe": 2}  # a method whose behaviour changed alone: only its runs are recomputed
PREDICTOR_VERSION = 2  # bump when fold predictors or tuning change: groups are then prepared again
COLD_GRID = (
    {"strategy": "aging", "options": {"population_size": 16, "sample_size": 4}},
    {"strategy": "aging", "options": {"population_size": 32, "sample_size": 8}},
    {"strategy": "aging", "options": {"population_size": 64, "sample_size": 16}},
    {"strategy": "evolution", "options": {}},
)


# --------------------------------------------------------------------------- folds


def fold_groups(args: argparse.Namespace, suite: Any) -> list[dict[str, Any]]:
    """Every (fold, held-out group): its target tasks and source tasks, among the built tasks."""
    main = [t for t in suite.select(args.tasks) if t.teacher == args.source_teacher]
    other = [t for t in suite.select(args.tasks) if t.teacher == args.target_teacher]
    groups = []
    for fold, key in (("leave-one-family-out", "family"), ("leave-one-corpus-out", "corpus_name")):
        for value in sorted({getattr(t, key) for t in main}):
            targets = [t.name for t in main if getattr(t, key) == value]
            sources = [t.name for t in main if getattr(t, key) != value]
            if targets and len(sources) >= 2:
                groups.append({"fold": fold, "group": value, "targets": targets, "sources": sources})
    if other and len(main) >= 2:
        groups.append(
            {
                "fold": "leave-one-teacher-out",
                "group": args.target_teacher,
                "targets": [t.name for t in other],
                "sources": [t.name for t in main],
            }
        )
    return [g for g in groups if g["fold"] in args.folds]


def group_key(group: dict[str, Any]) -> str:
    blob = json.dumps([group["fold"], group["group"], sorted(group["sources"])])
    return f"{group['fold']}-{group['group']}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def settings_key(args: argparse.Namespace) -> str:
    """What makes cached runs comparable: budget, evaluations, reference size and the code version."""
    blob = json.dumps([args.budget, args.evals, args.random, args.reference, CODE_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def source_records(tables: dict[str, Any], names: list[str], n_random: int) -> dict[str, list[Any]]:
    out = {}
    for name in names:
        table = tables[name]
        anchors, randoms = table_archs(table.space, n_random)
        out[name] = table_records(table, anchors, "anchor") + table_records(table, randoms, "random")
    return out


# --------------------------------------------------------------------------- per group: predictors, tuning


def train_group_predictor(args: argparse.Namespace, tables: dict[str, Any], group: dict[str, Any], kind: str) -> Path:
    """The group's meta-predictor on its sources (`kind` loo) or their shuffled copies (`kind` shuffled)."""
    from metanas.meta.metatrain import anchor_subset_variants, meta_train, variant_task

    options = hashlib.sha256(json.dumps(args.meta_options, sort_keys=True).encode()).hexdigest()[:6]
    name = f"{group_key(group)}-{kind}-{args.random}-{options}-v{PREDICTOR_VERSION}.safetensors"
    path = args.cache / "bench" / "predictors" / name
    if path.is_file():
        return path
    records = source_records(tables, group["sources"], args.random)
    if kind == "shuffled":
        records = tm.shuffled_records(records)
    variants: dict[str, list[Any]] = {}
    spaces = {}
    for name, recs in records.items():
        space = tables[name].space
        spaces[space.signature()] = space
        anchors, _ = table_archs(space, args.random)
        variants.update(anchor_subset_variants({name: recs}, anchors, space, AUGMENT_FRACTIONS))
    # Model selection holds out a seeded quarter of the source *tasks*, every variant of each, so no
    # task is on both sides of the selection split (the targets are never seen at all).
    sources = sorted(records)
    held = random.Random(f"val:{group_key(group)}").sample(sources, max(1, len(sources) // 4))
    val = [v for v in variants if variant_task(v) in held]
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_train(variants, spaces, val_tasks=val, seed=0, out_path=path, **args.meta_options)
    return path


def tune_cold(args: argparse.Namespace, tables: dict[str, Any], group: dict[str, Any]) -> dict[str, Any]:
    """The cold strategy of COLD_GRID with the best mean anytime curve on a few of the group's sources."""
    rng = random.Random(f"tune:{group_key(group)}")
    tune_tasks = rng.sample(group["sources"], min(args.tune_tasks, len(group["sources"])))
    references = {name: reference_of(args, tables[name]) for name in tune_tasks}  # once, not per grid point
    scores = []
    for cold in args.cold_grid:
        values = []
        for name in tune_tasks:
            target, ref = references[name]
            for seed in range(args.tune_seeds):
                run = cached_run(
                    args,
                    target,
                    "evolution",
                    1000 + seed,
                    cold_key(cold),
                    lambda s, c=cold, t=target: tm.run_cold(t, s, args.evals, c),
                )
                curve = ts.normalized(ts.best_so_far(run["trace"], args.evals), ref["f_min"], ref["f_ref"])
                values.append(float(np.mean(curve)))
        scores.append({"cold": cold, "score": float(np.mean(values))})
    best = max(scores, key=lambda s: s["score"])
    return {"chosen": best["cold"], "grid": scores, "tune_tasks": tune_tasks}


def cold_key(cold: dict[str, Any]) -> str:
    return json.dumps(cold, sort_keys=True)


def prepare_group(args: argparse.Namespace, group: dict[str, Any]) -> dict[str, Any]:
    """Predictors and cold tuning of one group, cached in `<cache>/bench/groups/`."""
    setup_worker(args)
    path = args.cache / "bench" / "groups" / f"{group_key(group)}-{settings_key(args)}-v{PREDICTOR_VERSION}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    tables = suite_tables(load_suite(), args.cache, sorted(set(group["sources"]) | set(group["targets"])))
    out = {
        **group,
        "predictors": {kind: str(train_group_predictor(args, tables, group, kind)) for kind in ("loo", "shuffled")},
        "tuning": tune_cold(args, tables, group),
    }
    from metanas.meta.predictor import MetaPredictor

    card = MetaPredictor.load(out["predictors"]["loo"]).card
    out["predictor_card"] = {k: card.get(k) for k in ("tasks", "val_tasks", "val_kendall_tau", "epochs")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return out


# --------------------------------------------------------------------------- runs


def reference_of(args: argparse.Namespace, table: Any) -> tuple[tm.Target, dict[str, float]]:
    """The task under the budget and its reference range (tabulated now if needed)."""
    target = tm.Target(table, args.budget, args.seq_len)
    archs = target.reference(args.reference)
    table.tabulate(archs, f"reference {table.task.name}")
    values = [table.fitness(a) for a in archs]
    return target, {"f_min": float(min(values)), "f_ref": float(max(values)), "n": len(values)}


def runs_path(args: argparse.Namespace, task: str) -> Path:
    return args.cache / "bench" / "runs" / f"{task}-{settings_key(args)}.jsonl"


def cached_run(args: argparse.Namespace, target: tm.Target, method: str, seed: int, variant: str, run: Any) -> dict:
    """One run, from `runs/<task>.jsonl` when there; else run now and append it."""
    path = runs_path(args, target.name)
    key = [method, seed, variant, *([METHOD_VERSIONS[method]] if method in METHOD_VERSIONS else [])]
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row["key"] == key:
                return row
    started = time.perf_counter()
    result = run(seed)
    row = {"key": key, "method": method, "seed": seed, "seconds": round(time.perf_counter() - started, 2), **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row


def bench_target(args: argparse.Namespace, group: dict[str, Any], task: str) -> dict[str, Any]:
    """Every method and seed on one target of one group, and the tau study."""
    setup_worker(args)
    tables = suite_tables(load_suite(), args.cache, sorted(set(group["sources"]) | {task}))
    target, ref = reference_of(args, tables[task])
    sources = tm.Sources(
        group["fold"],
        group["sources"],
        source_records(tables, group["sources"], args.random),
        group["predictors"],
        group["tuning"]["chosen"],
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    for method in args.methods:
        variant = "-"
        if method == "evolution":
            variant = cold_key(sources.cold)
        elif method in (*tm.TRANSFER, tm.STRESS):
            variant = f"{group_key(group)}-v{PREDICTOR_VERSION}"
        for seed in range(args.seeds):
            row = cached_run(
                args,
                target,
                method,
                seed,
                variant,
                lambda s, m=method: tm.run_method(m, target, s, args.evals, sources),
            )
            runs.setdefault(method, []).append(row)
        best = [max(r["trace"]) for r in runs[method]]
        print(f"[{group['fold']}/{task}] {method}: median best {np.median(best):.4f}", flush=True)
    return {
        "fold": group["fold"],
        "group": group["group"],
        "task": task,
        "reference": ref,
        "runs": runs,
        "tau": tau_study(args, target, sources),
        "table_size": len(tables[task].rows),
    }


def tau_study(args: argparse.Namespace, t: tm.Target, sources: tm.Sources) -> dict[str, dict[str, float]]:
    """Tau on held-out random archs: adapted fold predictor vs target-only vs params and FLOPs proxies."""
    from metanas.meta.choice import load_warm_predictor
    from metanas.meta.encoding import target_embedding
    from metanas.meta.predictor import params_proxy
    from metanas.search.warm.guard import kendall

    base = load_warm_predictor(sources.predictors["loo"])
    anchors, randoms = table_archs(t.space, args.random)
    test, pool = randoms[: args.tau_archs], randoms[args.tau_archs :]
    y_test = [t.table.fitness(a) for a in test]
    x_test = base.encode_archs(t.space, test)
    emb = target_embedding(anchors, {a: t.table.fitness(a) for a in anchors}, t.table.task_meta)
    flops = [t.cost_model.costs(a)["flops"] for a in test]
    out: dict[str, dict[int, list[float]]] = {"meta": {}, "target_only": {}, "params_proxy": {}, "flops_proxy": {}}
    for draw in range(args.tau_draws):
        order = random.Random(f"tau:{t.name}:{draw}").sample(pool, len(pool))
        for n in args.tau_ns:
            train = anchors + order[:n]
            x, y = base.encode_archs(t.space, train), np.array([t.table.fitness(a) for a in train])
            meta = base.adapt(x, np.tile(emb, (len(train), 1)), y, seed=draw)
            mean, _ = meta.predict(x_test, np.tile(emb, (len(test), 1)))
            target_model = base.target_only().fit(x, y, seed=draw)
            out["meta"].setdefault(n, []).append(kendall(mean, y_test))
            out["target_only"].setdefault(n, []).append(kendall(target_model.predict(x_test)[0], y_test))
            out["params_proxy"].setdefault(n, []).append(kendall(params_proxy(t.space, test), y_test))
            out["flops_proxy"].setdefault(n, []).append(kendall(flops, y_test))
    return {m: {str(n): float(np.mean(v)) for n, v in by_n.items()} for m, by_n in out.items()}


# --------------------------------------------------------------------------- analysis


def similarity_matrix(args: argparse.Namespace, tables: dict[str, Any]) -> dict[str, Any]:
    """Spearman correlation of two tasks' fitness over the random archs they share (same space only)."""
    from scipy.stats import spearmanr

    names = sorted(tables)
    matrix = []
    for a in names:
        row = []
        for b in names:
            ta, tb = tables[a], tables[b]
            if ta.space.signature() != tb.space.signature():
                row.append(None)
                continue
            _, randoms = table_archs(ta.space, args.random)
            common = [x for x in randoms if x in ta.rows and x in tb.rows]
            rho = spearmanr([ta.rows[x][0] for x in common], [tb.rows[x][0] for x in common]).statistic
            row.append(None if len(common) < 3 or np.isnan(rho) else round(float(rho), 3))
        matrix.append(row)
    return {"tasks": names, "matrix": matrix}


def summarize(args: argparse.Namespace, groups: list[dict], results: list[dict], tables: dict) -> dict[str, Any]:
    folds: dict[str, Any] = {}
    for fold in dict.fromkeys(g["fold"] for g in groups):
        mine = [r for r in results if r["fold"] == fold]
        by_task = {r["task"]: r["runs"] for r in mine}
        refs = {r["task"]: r["reference"] for r in mine}
        entry = ts.summarize_fold(by_task, refs, args.evals, args.fractions, "warm", tm.BASELINES)
        for method in [m for m in ("warm-tpe", "bo") if m in args.methods]:  # the same comparisons for the others
            other = ts.summarize_fold(by_task, refs, args.evals, args.fractions, method, tm.BASELINES)
            for fraction, target in entry["targets"].items():
                theirs = other["targets"][fraction]
                target.setdefault("other_transfer", {})[method] = {k: theirs[k] for k in ("speedup_vs", "p_task_level")}
        entry["groups"] = [
            {k: g[k] for k in ("group", "targets", "sources", "tuning", "predictor_card")}
            for g in groups
            if g["fold"] == fold
        ]
        entry["curves"] = {
            m: np.median(
                np.vstack([ts.curve(r["runs"][m], r["reference"], args.evals) for r in mine if m in r["runs"]]), axis=0
            )
            .round(4)
            .tolist()
            for m in args.methods
        }
        entry["copied_incumbent_wins"] = {
            m: float(np.mean([run["best_origin"] == "seed" for r in mine for run in r["runs"].get(m, [])] or [0]))
            for m in ("warm", tm.STRESS)
        }
        folds[fold] = entry
    tau = {
        fold: {
            m: {
                n: float(np.mean([r["tau"][m][n] for r in results if r["fold"] == fold])) for n in map(str, args.tau_ns)
            }
            for m in ("meta", "target_only", "params_proxy", "flops_proxy")
        }
        for fold in folds
    }
    stress = {
        fold: {
            f"{PRIMARY:g}": {
                m: folds[fold]["targets"][f"{PRIMARY:g}"]["evals_to_target"].get(m)
                for m in ("warm", tm.STRESS, "evolution", "random")
            },
            "fallbacks": int(
                sum(
                    any(e.get("decision") != "keep" for e in run.get("guard", []))
                    for r in results
                    if r["fold"] == fold
                    for run in r["runs"].get(tm.STRESS, [])
                )
            ),
            "runs": int(sum(len(r["runs"].get(tm.STRESS, [])) for r in results if r["fold"] == fold)),
        }
        for fold in folds
    }
    return {
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("cache", "json", "png", "cold_grid")
        },
        "command": "python scripts/bench_transfer.py " + " ".join(sys.argv[1:]),
        "folds": folds,
        "kendall_tau": tau,
        "kendall_tau_per_task": {f"{r['fold']}/{r['task']}": r["tau"] for r in results},
        "stress_shuffled": stress,
        "similarity_matrix": similarity_matrix(args, tables),
        "search_seconds": round(sum(run["seconds"] for r in results for rs in r["runs"].values() for run in rs), 1),
    }


def setup_worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def parallel(args: argparse.Namespace, fn: Any, items: list[tuple]) -> list[Any]:
    if args.jobs <= 1:
        return [fn(args, *item) for item in items]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, [args] * len(items), *zip(*items)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=None, help="build_suite.py's work directory")
    p.add_argument("--suite", type=Path, default=None, help="a task suite YAML (default: the shipped one)")
    p.add_argument("--tasks", type=lambda s: s.split(","), default=None, help="comma-separated task names")
    p.add_argument("--source-teacher", default="minilm-128")
    p.add_argument("--target-teacher", default="minilm-384")
    p.add_argument("--folds", type=lambda s: s.split(","), default=list(FOLDS), help="comma-separated folds to run")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--evals", type=int, default=256, help="evaluations per search (equal for every method)")
    p.add_argument(
        "--budget", type=float, default=0.25, help="non-embedding params limit: this quantile of random archs' params"
    )
    p.add_argument("--random", type=int, default=1000, help="random archs per table (as built)")
    p.add_argument("--reference", type=int, default=1000, help="random feasible archs fixing each task's targets")
    p.add_argument("--tau-archs", type=int, default=500)
    p.add_argument("--tau-ns", type=int, nargs="+", default=[0, 8, 16, 32, 64])
    p.add_argument("--tau-draws", type=int, default=2)
    p.add_argument("--tune-tasks", type=int, default=3, help="source tasks the cold baseline is tuned on")
    p.add_argument("--tune-seeds", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1, help="parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--quick", action="store_true", help="a smoke run: few evaluations, seeds and archs")
    p.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help="the summary; this run's folds replace the same folds in it"
    )
    p.add_argument("--png", type=Path, default=DEFAULT_PNG)
    args = p.parse_args(argv)
    args.cold_grid = COLD_GRID
    # The fold predictors' selection grid, fixed in advance (the shipped predictor's selection chose 100 epochs
    # and weight decay 1e-2 of the library's 3 x 2 grid); smaller, because each fold trains two predictors.
    args.meta_options = {"epochs_grid": (100, 200), "weight_decay_grid": (1e-2,)}
    unknown = sorted(set(args.folds) - set(FOLDS))
    if unknown:
        p.error(f"unknown fold(s) {', '.join(unknown)}; folds: {', '.join(FOLDS)}")
    if args.quick:
        args.seeds, args.evals, args.reference, args.tau_archs = 2, 24, 30, 20
        args.tau_ns, args.tau_draws, args.tune_tasks, args.tune_seeds = [0, 8], 1, 1, 1
        args.cold_grid = COLD_GRID[:1] + COLD_GRID[-1:]
        args.meta_options = {"epochs_grid": (20,), "weight_decay_grid": (1e-4,)}
    args.fractions = list(FRACTIONS)
    args.methods = [*tm.COLD, *tm.TRANSFER, tm.STRESS]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import os

    args = parse_args(argv)
    default_cache = os.environ.get("METANAS_BENCH_CACHE", "~/.cache/metanas/suite")
    args.cache = Path(args.cache or default_cache).expanduser()
    if args.suite is not None:
        os.environ["METANAS_TASK_SUITE"] = str(args.suite)
    suite = load_suite()
    args.seq_len = suite.seq_len
    tables = suite_tables(suite, args.cache, args.tasks)
    missing = [n for n, t in tables.items() if not (t.run_dir / "supernet.pt").is_file()]
    if missing:
        raise SystemExit(f"tasks not built in {args.cache}: {', '.join(missing)}; run scripts/build_suite.py first")
    for table in tables.values():  # write each table's metadata once, before workers read it
        _ = table.info
    started = time.perf_counter()
    groups = fold_groups(args, suite)
    if not groups:
        raise SystemExit("no fold has targets and >= 2 sources among the built tasks")
    groups = parallel(args, prepare_group, [(g,) for g in groups])
    results = parallel(args, bench_target, [(g, t) for g in groups for t in g["targets"]])
    summary = summarize(args, groups, results, suite_tables(suite, args.cache, args.tasks))
    summary["wall_minutes"] = round((time.perf_counter() - started) / 60, 1)
    import transfer_report

    from metanas._io import atomic_write_json

    previous = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else None
    atomic_write_json(transfer_report.merge(previous, summary), args.json, indent=1)  # other folds' results kept

    transfer_report.plot(summary, args.png)
    print(transfer_report.markdown(summary))
    return summary


if __name__ == "__main__":
    main()
