"""Transfer benchmark: does the meta-predictor's warm start find good subnets with fewer evaluations?

Leave-one-task-out over the builtin task family of scripts/build_predictor.py (whose
cache, i.e. teacher, supernets and fitness tables, this script reuses and extends):
for each held-out task, a predictor is meta-trained on the other tasks' tables
(anchors + uniformly random archs, anchor-subset augmentation, the epochs and weight
decay the shipped predictor's model selection chose), and every method searches the
held-out task under a budget (non-embedding params <= --budget of the largest arch)
for --evals evaluations, over --seeds seeds:

- random: uniformly random feasible archs (the table's random archs that fit the
  budget, in a seeded order: sampling without replacement from an iid uniform sample);
- evolution: cold `Evolution`;
- seeded: `Evolution` whose first population holds the best feasible arch of every
  source task (transferred incumbents only: no anchors, no predictor);
- tpe: Optuna's TPE sampler (depth, hidden and per-layer heads/FFN as categorical
  parameters, layers beyond the depth ignored, the budget as a constraint; infeasible
  or repeated proposals cost no evaluation);
- warm: `WarmStartEvolution` with the leave-one-out predictor and the sources' records;
- warm-shuffled (stress test): the same, but the predictor was meta-trained on, and the
  seeds come from, source tables whose fitness was shuffled within each task.

Every fitness comes from the held-out task's table; archs not in it are evaluated on
its trained supernet and appended (lazily, cached on disk), so every method's every
evaluation is a real subnet evaluation. Runs are cached in <cache>/bench/runs.jsonl,
so an interrupted benchmark resumes.

Evaluations to target: per task, fitness is normalized to the table's feasible range,
norm(f) = (f - f_min) / (f_max - f_min) over every feasible arch tabulated for that
task (random, anchors and all archs any run visited), which is sign-agnostic (fitness
is a negated loss for KD/MLM/contrastive, accuracy for classification). The target is
99% of the best normalized fitness found by any method in any run on that task:
norm >= 0.99 * norm(best). A run that never reaches it counts as --evals + 1
(censored; medians that are censored are lower bounds and marked so).

Kendall tau study: on the held-out task's first 500 tabulated random archs (whole
space), the leave-one-out predictor (task embedded by all anchors, adapted on N extra
random target samples plus the anchors) against a target-only model on the same
data, and the params proxy, for N in --tau-ns, averaged over --tau-draws draws.

    .venv/bin/python scripts/build_predictor.py      # first: teacher, supernets, tables
    .venv/bin/python scripts/bench_transfer.py --jobs 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import build_predictor as bp  # the sibling script (scripts/ is on sys.path): task family, tables
import numpy as np

from metanas.space import ArchConfig, SearchSpace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("random", "evolution", "seeded", "tpe", "warm")
STRESS = "warm-shuffled"
TARGET_FRACTION = 0.99
DEFAULT_JSON = ROOT / "docs" / "benchmarks" / "transfer.json"
DEFAULT_PNG = ROOT / "docs" / "benchmarks" / "transfer_curves.png"


# --------------------------------------------------------------------------- setting


class Setting:
    """Everything one held-out task's runs need: its table, the budget, the sources' records and predictors."""

    def __init__(self, args: argparse.Namespace, task: str) -> None:
        from metanas.cost import Budget, CostModel

        self.args = args
        self.task = task
        self.tables = {
            t.name: bp.TaskTable(t, args.cache, args.val_docs_task if t.labels else args.val_docs)
            for t in bp.TASKS
            if t.name in args.tasks
        }
        self.table = self.tables[task]
        self.space: SearchSpace = self.table.space
        self.cost_model = CostModel(self.space, seq_len=bp.MAX_LENGTH)
        self.budget = self.cost_model.check_feasible(
            Budget(non_embedding_params=f"{100 * args.budget:g}%", seq_len=bp.MAX_LENGTH)
        )
        self.anchors, self.randoms = bp.table_archs(self.space, args.random)
        self.sources = [s for s in self.tables if s != task]
        self.source_records = {s: bp.table_records(self.tables[s], self.anchors, self.randoms) for s in self.sources}
        self.shuffled_records = {s: shuffled(recs, s) for s, recs in self.source_records.items()}

    def feasible(self, arch: ArchConfig) -> bool:
        return self.cost_model.feasible(arch, self.budget)

    def sampler(self, rng: random.Random) -> ArchConfig:
        return self.cost_model.sample_feasible(rng, self.budget, 200)

    def predictor(self, kind: str) -> Path:
        """The leave-one-out predictor (`kind` "loo" or "shuffled"), meta-trained now unless cached."""
        from metanas.meta.metatrain import anchor_subset_variants, meta_train

        card = json.loads((self.args.predictor_card).read_text(encoding="utf-8"))
        path = self.args.cache / "bench" / "predictors" / f"{self.task}-{kind}.safetensors"
        if not path.is_file():
            records = self.source_records if kind == "loo" else self.shuffled_records
            variants = anchor_subset_variants(records, self.anchors, self.space, bp.AUGMENT_FRACTIONS)
            path.parent.mkdir(parents=True, exist_ok=True)
            meta_train(
                variants,
                [self.space],
                val_tasks=0.0,
                seed=0,
                out_path=path,
                epochs_grid=(int(card["epochs"]),),
                weight_decay_grid=(float(card["weight_decay"]),),
            )
        return path


def shuffled(records: Sequence[Any], task: str) -> list[Any]:
    """The same records with fitness (and metric) permuted within the task: sources that teach nothing."""
    from dataclasses import replace

    order = list(range(len(records)))
    random.Random(f"shuffle:{task}").shuffle(order)
    return [
        replace(r, fitness=records[j].fitness, metric_value=records[j].metric_value) for r, j in zip(records, order)
    ]


# --------------------------------------------------------------------------- methods


def drive(strategy: Any, fitness: Callable[[ArchConfig], float], evals: int) -> list[float]:
    """Ask/tell until `evals` evaluations (the last generation is cut there) or the strategy is done."""
    trace: list[float] = []
    while len(trace) < evals and not strategy.done:
        archs = strategy.ask()
        if not archs:
            break
        values = [fitness(a) for a in archs]
        trace.extend(values)
        strategy.tell(archs, values)
    return trace[:evals]


def run_random(s: Setting, seed: int) -> dict[str, Any]:
    from metanas.search import RandomSearch

    pool = [a for a in s.randoms if s.feasible(a)]
    random.Random(seed).shuffle(pool)
    trace = [s.table.fitness(a) for a in pool[: s.args.evals]]
    if len(trace) < s.args.evals:  # more evaluations than tabulated feasible archs: fresh uniform samples
        extra = RandomSearch(
            s.space,
            lambda a: s.feasible(a) and a not in pool,
            seed,
            sampler=s.sampler,
            num_samples=s.args.evals - len(trace),
        )
        trace += drive(extra, s.table.fitness, s.args.evals - len(trace))
    return {"trace": trace}


def evolution_options(s: Setting) -> dict[str, Any]:
    return {
        "population_size": s.args.population,
        "generations": math.ceil(s.args.evals / s.args.population) + 1,
        "parents": s.args.parents,
    }


def run_evolution(s: Setting, seed: int) -> dict[str, Any]:
    from metanas.search import Evolution

    strategy = Evolution(s.space, s.feasible, seed, sampler=s.sampler, **evolution_options(s))
    return {"trace": drive(strategy, s.table.fitness, s.args.evals)}


def run_seeded(s: Setting, seed: int) -> dict[str, Any]:
    """Evolution whose first generation holds the best feasible arch of each source task, then random archs."""
    from metanas.search import Evolution

    incumbents = []
    for recs in s.source_records.values():
        best = max((r for r in recs if s.feasible(r.arch)), key=lambda r: r.fitness)
        if best.arch not in incumbents:
            incumbents.append(best.arch)

    class SeededEvolution(Evolution):
        def ask(self, n: int | None = None) -> list[ArchConfig]:
            if self.evaluated:
                return super().ask(n)
            n = n or self.population_size
            seeds = [a for a in incumbents if self.is_new(a)][:n]
            for a in seeds:
                self._pending[a] = "seed"
            return self._finish_ask(seeds + self._random_batch(n - len(seeds)))

    strategy = SeededEvolution(s.space, s.feasible, seed, sampler=s.sampler, **evolution_options(s))
    return {"trace": drive(strategy, s.table.fitness, s.args.evals)}


def run_tpe(s: Setting, seed: int) -> dict[str, Any]:
    """Optuna TPE over categorical depth/hidden/per-layer heads and FFN; the budget is a constraint."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, limit = s.space, s.budget.limits()["non_embedding_params"]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    seen: dict[ArchConfig, float] = {}
    trace: list[float] = []
    trials = 0
    while len(trace) < s.args.evals and trials < 50 * s.args.evals:
        trial = study.ask()
        trials += 1
        depth = trial.suggest_categorical("depth", space.depth_choices)
        hidden = trial.suggest_categorical("hidden", space.hidden_choices)
        heads = [trial.suggest_categorical(f"heads_{i}", space.head_choices) for i in range(space.max_depth)]
        ffn = [trial.suggest_categorical(f"ffn_{i}", space.ffn_choices) for i in range(space.max_depth)]
        arch = ArchConfig(depth, hidden, tuple(heads[:depth]), tuple(ffn[:depth]))
        trial.set_constraint("budget", space.params(arch, embeddings=False) / limit - 1.0)
        if not s.feasible(arch):
            if trace:
                study.tell(trial, min(trace))
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if arch not in seen:
            seen[arch] = s.table.fitness(arch)
            trace.append(seen[arch])
        study.tell(trial, seen[arch])
    return {"trace": trace, "trials": trials}


def run_warm(s: Setting, seed: int, shuffle: bool = False) -> dict[str, Any]:
    from metanas.search import WarmStartEvolution

    strategy = WarmStartEvolution(
        s.space,
        s.feasible,
        seed,
        sampler=s.sampler,
        warm_start=str(s.predictor("shuffled" if shuffle else "loo")),
        task_meta=s.table.task_meta,
        **evolution_options(s),
    )
    records = s.shuffled_records if shuffle else s.source_records
    strategy.add_sources([r for recs in records.values() for r in recs])
    trace = drive(strategy, s.table.fitness, s.args.evals)
    guard = [e for e in strategy.transfer_log if e["event"] == "guard"]
    return {"trace": trace, "guard": guard, "final_mode": strategy.mode}


RUNNERS: dict[str, Callable[[Setting, int], dict[str, Any]]] = {
    "random": run_random,
    "evolution": run_evolution,
    "seeded": run_seeded,
    "tpe": run_tpe,
    "warm": run_warm,
    STRESS: lambda s, seed: run_warm(s, seed, shuffle=True),
}


# --------------------------------------------------------------------------- Kendall tau study


def tau_study(s: Setting) -> dict[str, dict[int, float]]:
    """Tau on 500 random archs of the held-out task: adapted meta-predictor vs target-only vs params proxy."""
    from metanas.meta.choice import load_warm_predictor
    from metanas.meta.encoding import target_embedding
    from metanas.meta.predictor import params_proxy
    from metanas.search.warm.guard import kendall

    base = load_warm_predictor(s.predictor("loo"))
    test = s.randoms[: s.args.tau_archs]
    pool = s.randoms[s.args.tau_archs :]
    y_test = [s.table.fitness(a) for a in test]
    x_test = base.encode_archs(s.space, test)
    anchor_fit = {a: s.table.fitness(a) for a in s.anchors}
    emb = target_embedding(s.anchors, anchor_fit, s.table.task_meta)
    out: dict[str, dict[int, list[float]]] = {"meta": {}, "target_only": {}, "params_proxy": {}}
    proxy_tau = kendall(params_proxy(s.space, test), y_test)
    for draw in range(s.args.tau_draws):
        order = random.Random(f"tau:{s.task}:{draw}").sample(pool, len(pool))
        for n in s.args.tau_ns:
            train = s.anchors + order[:n]
            x, y = base.encode_archs(s.space, train), np.array([s.table.fitness(a) for a in train])
            meta = base.adapt(x, np.tile(emb, (len(train), 1)), y, seed=draw)
            mean, _ = meta.predict(x_test, np.tile(emb, (len(test), 1)))
            target = base.target_only().fit(x, y, seed=draw)
            out["meta"].setdefault(n, []).append(kendall(mean, y_test))
            out["target_only"].setdefault(n, []).append(kendall(target.predict(x_test)[0], y_test))
            out["params_proxy"].setdefault(n, []).append(proxy_tau)
    return {m: {n: float(np.mean(v)) for n, v in by_n.items()} for m, by_n in out.items()}


# --------------------------------------------------------------------------- one held-out task


def run_key(args: argparse.Namespace) -> str:
    """What makes cached runs comparable: the search settings (not the seed count or output paths)."""
    keys = ("budget", "evals", "population", "parents", "random", "val_docs", "val_docs_task", "tasks")
    blob = json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_runs(path: Path, key: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    runs = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r["key"] == key:
                runs[(r["task"], r["method"], r["seed"])] = r
    return runs


def bench_task(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """Every method and seed on one held-out task, then the tau study; cached runs are reused."""
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = Setting(args, task)
    key = run_key(args)
    runs_path = args.cache / "bench" / f"runs-{task}.jsonl"
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    runs = load_runs(runs_path, key)
    methods = [*METHODS, STRESS]
    for method in methods:
        for seed in range(args.seeds):
            if (task, method, seed) in runs:
                continue
            t0 = time.perf_counter()
            result = RUNNERS[method](s, seed)
            row = {
                "key": key,
                "task": task,
                "method": method,
                "seed": seed,
                "seconds": time.perf_counter() - t0,
                **result,
            }
            runs[(task, method, seed)] = row
            with open(runs_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"[{task}] {method} seed {seed}: best {max(result['trace']):.4f} in {row['seconds']:.1f}s "
                f"({s.table.new_evaluations} new evaluations so far)",
                flush=True,
            )
    tau_path = args.cache / "bench" / f"tau-{task}-{key}-{args.tau_archs}-{args.tau_draws}.json"
    if tau_path.is_file():
        tau = {m: {int(n): v for n, v in by_n.items()} for m, by_n in json.loads(tau_path.read_text()).items()}
    else:
        tau = tau_study(s)
        tau_path.write_text(json.dumps(tau))
    feasible = [f for a, (f, _) in s.table.rows.items() if s.feasible(a)]
    return {
        "task": task,
        "runs": [runs[(task, m, seed)] for m in methods for seed in range(args.seeds)],
        "tau": tau,
        "f_min": min(feasible),
        "f_max": max(feasible),
        "table_size": len(s.table.rows),
        "anchors": len(s.anchors),
    }


# --------------------------------------------------------------------------- analysis


def best_so_far(trace: Sequence[float], evals: int) -> np.ndarray:
    """Best fitness after 1..evals evaluations (a run that stopped early keeps its last best)."""
    best = np.maximum.accumulate(np.asarray(trace, dtype=float))
    return np.concatenate([best, np.full(evals - len(best), best[-1])])


def evals_to_target(results: list[dict[str, Any]], fraction: float, evals: int) -> dict[str, dict[str, list[int]]]:
    """Per task and method, the evaluations each run needed to reach `fraction` of the task's best (evals+1: never).

    On each task's normalized scale (f - f_min) / (f_max - f_min) over its feasible
    tabulated archs, the target is `fraction` x the normalized best any run found.
    """
    out: dict[str, dict[str, list[int]]] = {}
    for res in results:
        f_min = res["f_min"]
        best_any = max(max(r["trace"]) for r in res["runs"])
        target = f_min + fraction * (best_any - f_min)
        by_method: dict[str, list[int]] = {}
        for r in res["runs"]:
            hit = np.nonzero(best_so_far(r["trace"], evals) >= target)[0]
            by_method.setdefault(r["method"], []).append(int(hit[0]) + 1 if hit.size else evals + 1)
        out[res["task"]] = by_method
    return out


def summarize(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    from scipy.stats import wilcoxon

    methods = [*METHODS, STRESS]

    def ert(values: list[int]) -> float | None:
        """Expected running time (COCO): evaluations spent by all runs (a failed run spent all of them) per success."""
        v = np.asarray(values)
        hits = int((v <= args.evals).sum())
        return float(np.minimum(v, args.evals).sum() / hits) if hits else None

    def stats(values: list[int]) -> dict[str, Any]:
        v = np.asarray(values, dtype=float)
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        return {
            "median": float(med),
            "iqr": [float(q1), float(q3)],
            "reached": int((v <= args.evals).sum()),
            "runs": int(v.size),
            "median_censored": bool(med > args.evals),
            "ert": ert(values),
        }

    def pooled(by_task: dict[str, dict[str, list[int]]], method: str) -> list[int]:
        return [n for task in by_task.values() for n in task[method]]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a / b

    def speedup(by_task: dict[str, dict[str, list[int]]], base: str) -> dict[str, Any]:
        """How many times fewer evaluations warm start needs than `base`: ERT ratio (censoring-aware), medians."""
        base_st, warm_st = stats(pooled(by_task, base)), stats(pooled(by_task, "warm"))
        both_censored = base_st["median_censored"] and warm_st["median_censored"]
        return {
            "ert_ratio": ratio(base_st["ert"], warm_st["ert"]),
            "ratio_of_medians": None if both_censored else base_st["median"] / warm_st["median"],
            "ratio_of_medians_is_lower_bound": base_st["median_censored"] and not both_censored,
            "per_task_ert_ratio": {t: ratio(ert(m[base]), ert(m["warm"])) for t, m in by_task.items()},
        }

    def paired_p(a: list[int], b: list[int], alternative: str) -> float:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(wilcoxon(x, y, alternative=alternative).pvalue) if np.any(x != y) else 1.0

    main = evals_to_target(results, TARGET_FRACTION, args.evals)
    e2t = {m: pooled(main, m) for m in methods}
    by_fraction = {f: evals_to_target(results, f, args.evals) for f in args.fractions}
    curves: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    fallbacks: list[int | None] = []
    for res in results:
        for r in res["runs"]:
            curves[r["method"]].append(
                (best_so_far(r["trace"], args.evals) - res["f_min"]) / (res["f_max"] - res["f_min"])
            )
            if r["method"] == STRESS:
                fallback = [g["generation"] for g in r["guard"] if g["decision"].startswith("fallback:")]
                fallbacks.append(fallback[0] if fallback else None)
    per_task = {
        res["task"]: {
            "target_normalized": TARGET_FRACTION
            * (max(max(r["trace"]) for r in res["runs"]) - res["f_min"])
            / (res["f_max"] - res["f_min"]),
            "median_evals_to_target": {m: float(np.median(v)) for m, v in main[res["task"]].items()},
            "reached": {m: int((np.asarray(v) <= args.evals).sum()) for m, v in main[res["task"]].items()},
            "table_archs": res["table_size"],
            "search_seconds": round(sum(r["seconds"] for r in res["runs"]), 1),
        }
        for res in results
    }
    reached_fallback = [g for g in fallbacks if g is not None]
    tau = {
        m: {str(n): float(np.mean([r["tau"][m][n] for r in results])) for n in args.tau_ns}
        for m in ("meta", "target_only", "params_proxy")
    }
    return {
        "command": " ".join(["scripts/bench_transfer.py", *sys.argv[1:]]),
        "tasks": [r["task"] for r in results],
        "seeds": args.seeds,
        "evals_per_run": args.evals,
        "budget": f"non_embedding_params <= {100 * args.budget:g}% of the largest arch",
        "target": f"normalized fitness >= {TARGET_FRACTION} x the best normalized fitness any run found on the task; "
        "normalized = (f - f_min) / (f_max - f_min) over the task's feasible tabulated archs; "
        f"runs that never reach it count as {args.evals + 1}; ert = expected running time (COCO): evaluations "
        "spent by all runs, a run that misses the target having spent all, divided by the runs that reached it",
        "evals_to_target": {m: stats(v) for m, v in e2t.items()},
        "evals_to_target_runs": e2t,
        "speedup_vs_cold": speedup(main, "evolution"),
        "speedup_vs_tpe": speedup(main, "tpe"),
        "wilcoxon_p_warm_vs_cold": paired_p(e2t["warm"], e2t["evolution"], "less"),
        "other_fractions": {
            str(f): {
                "evals_to_target": {m: stats(pooled(by_task, m)) for m in methods},
                "speedup_vs_cold": speedup(by_task, "evolution"),
                "speedup_vs_tpe": speedup(by_task, "tpe"),
                "wilcoxon_p_warm_vs_cold": paired_p(pooled(by_task, "warm"), pooled(by_task, "evolution"), "less"),
            }
            for f, by_task in by_fraction.items()
        },
        "final_normalized_best": {
            m: {"median": float(np.median([c[-1] for c in cs])), "mean": float(np.mean([c[-1] for c in cs]))}
            for m, cs in curves.items()
        },
        "tau_archs": args.tau_archs,
        "kendall_tau": tau,
        "kendall_tau_note": f"{args.tau_archs} random archs of the held-out task; N extra random target samples "
        f"on top of the {results[0]['anchors']} anchors (both models see the same data); mean over tasks and draws",
        "stress_shuffled": {
            "evals_to_target": stats(e2t[STRESS]),
            "cold_evals_to_target": stats(e2t["evolution"]),
            "median_paired_difference_vs_cold": float(
                np.median(np.asarray(e2t[STRESS], dtype=float) - np.asarray(e2t["evolution"], dtype=float))
            ),
            "wilcoxon_p_shuffled_worse_than_cold": paired_p(e2t[STRESS], e2t["evolution"], "greater"),
            "final_normalized_best_median": float(np.median([c[-1] for c in curves[STRESS]])),
            "cold_final_normalized_best_median": float(np.median([c[-1] for c in curves["evolution"]])),
            "runs_with_fallback": len(reached_fallback),
            "runs": len(fallbacks),
            "median_fallback_generation": float(np.median(reached_fallback)) if reached_fallback else None,
        },
        "per_task": per_task,
        "curves": {m: np.mean(np.stack(c), axis=0).round(4).tolist() for m, c in curves.items()},
        "search_seconds": round(sum(r["seconds"] for res in results for r in res["runs"]), 1),
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    """Anytime best-so-far curves (left) and the fraction of runs that reached the target by each count (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ecdf) = plt.subplots(1, 2, figsize=(12, 4.8))
    for method, curve in summary["curves"].items():
        style = "--" if method == STRESS else "-"
        width = 2.4 if method == "warm" else 1.4
        ax.plot(np.arange(1, len(curve) + 1), curve, style, lw=width, label=method)
    target = np.mean([t["target_normalized"] for t in summary["per_task"].values()])
    ax.axhline(target, color="gray", lw=0.8, ls=":", label=f"mean target ({target:.3f})")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best-so-far normalized fitness (mean)")
    ax.set_title(f"Leave-one-task-out, {len(summary['tasks'])} tasks x {summary['seeds']} seeds")
    ax.set_ylim(max(0.0, min(min(c) for c in summary["curves"].values())), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    evals = summary["evals_per_run"]
    for method, runs in summary["evals_to_target_runs"].items():
        hits = np.asarray(runs)
        reached = [(hits <= n).mean() for n in range(1, evals + 1)]
        style = "--" if method == STRESS else "-"
        ecdf.step(
            np.arange(1, evals + 1), reached, style, where="post", lw=2.4 if method == "warm" else 1.4, label=method
        )
    ecdf.set_xlabel("evaluations")
    ecdf.set_ylabel(f"fraction of runs at the {TARGET_FRACTION:.0%} target")
    ecdf.set_title("Runs that reached the target (all tasks x seeds)")
    ecdf.grid(alpha=0.3)
    ecdf.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(summary: dict[str, Any]) -> str:
    """The benchmark tables as Markdown (for docs/benchmarks.md)."""

    def cell(st: dict[str, Any]) -> str:
        med = f"{'>' if st['median_censored'] else ''}{st['median']:g}"
        return f"{med} ({st['iqr'][0]:g}-{st['iqr'][1]:g}), {st['reached']}/{st['runs']}"

    fractions = sorted(summary["other_fractions"])
    head = " | ".join(f"evals to {float(f):.0%}: median (IQR), reached" for f in fractions)
    lines = [
        f"| method | evals to {TARGET_FRACTION:.0%}: median (IQR), reached | ERT to {TARGET_FRACTION:.0%} | {head} "
        "| final normalized best (median) |",
        "|---|---:|---:|" + "---:|" * len(fractions) + "---:|",
    ]
    for m, st in summary["evals_to_target"].items():
        others = " | ".join(cell(summary["other_fractions"][f]["evals_to_target"][m]) for f in fractions)
        ert = "-" if st["ert"] is None else f"{st['ert']:.0f}"
        lines.append(f"| {m} | {cell(st)} | {ert} | {others} | {summary['final_normalized_best'][m]['median']:.4f} |")
    ns = list(summary["kendall_tau"]["meta"])
    lines += [
        "",
        f"| Kendall tau ({summary['tau_archs']} random archs) | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---|" + "---:|" * len(ns),
    ]
    for m, by_n in summary["kendall_tau"].items():
        lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in by_n.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=bp.DEFAULT_CACHE, help="build_predictor's work directory")
    p.add_argument(
        "--predictor-card",
        type=Path,
        default=bp.DEFAULT_OUT / bp.CARD_NAME,
        help="card of the shipped predictor (its selected epochs and weight decay are reused)",
    )
    p.add_argument("--tasks", nargs="+", default=[t.name for t in bp.TASKS], help="the task family (held out in turn)")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--evals", type=int, default=64, help="evaluations per search (equal for every method)")
    p.add_argument("--budget", type=float, default=0.3, help="non-embedding params limit, fraction of the largest")
    p.add_argument("--population", type=int, default=12, help="evolution population (all evolutionary methods)")
    p.add_argument("--parents", type=int, default=4)
    p.add_argument("--random", type=int, default=600, help="random archs per table (as built)")
    p.add_argument("--val-docs", type=int, default=16, help="as built")
    p.add_argument("--val-docs-task", type=int, default=64, help="as built")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.95, 0.98], help="extra targets reported")
    p.add_argument("--tau-archs", type=int, default=500)
    p.add_argument("--tau-ns", type=int, nargs="+", default=[0, 8, 16, 32, 64])
    p.add_argument("--tau-draws", type=int, default=2, help="random draws of the N target samples")
    p.add_argument("--jobs", type=int, default=1, help="held-out tasks run in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--png", type=Path, default=DEFAULT_PNG)
    args = p.parse_args()
    args.cache = args.cache.expanduser()
    for t in args.tasks:
        bp.task_by_name(t)
    if not all((args.cache / "supernets" / t / "supernet.pt").is_file() for t in args.tasks):
        raise SystemExit(f"no trained supernets in {args.cache}; run scripts/build_predictor.py first")
    for spec in bp.TASKS:  # write each table's metadata once, before workers read it
        if spec.name in args.tasks:
            _ = bp.TaskTable(spec, args.cache, args.val_docs_task if spec.labels else args.val_docs).info
    if args.jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(bench_task, [args] * len(args.tasks), args.tasks))
    else:
        results = [bench_task(args, t) for t in args.tasks]
    summary = summarize(results, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plot(summary, args.png)
    print(markdown(summary))
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("speedup_vs_cold", "speedup_vs_tpe", "wilcoxon_p_warm_vs_cold", "stress_shuffled")
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
