"""Every search strategy on the real MiniLM quickstart supernet: the same evaluation budget, several seeds.

    python scripts/bench_strategies.py --seeds 3 --evals 120

The trained supernet, latency model and search budget are the quickstart's (`--base`,
default `runs/quickstart`; its latency and train stages run when missing). The targets
are fixed before any run: 98% of the way from the worst to the best of `--reference`
random feasible archs. Every arch scored (reference and runs) is kept in
`--out/table.jsonl`, so an interrupted benchmark resumes and strategies share scores
(the wall time per strategy is its own work plus its new evaluations at the measured
seconds per evaluation). A differentiable search's relaxation is counted in seconds and
in equivalent evaluations beside its evaluations. Results: `--json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("random", "evolution", "aging", "nsga2", "tpe", "rl", "bo", "differentiable", "warm_evolution")


class CachedFitness:
    """Fitness of archs on the quickstart supernet, appended to a JSONL file as they are scored."""

    def __init__(self, evaluator: Any, path: Path) -> None:
        from metanas.space import ArchConfig

        self.evaluator, self.path = evaluator, path
        self.rows: dict[Any, float] = {}
        self.seconds: list[float] = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a torn last line
                    continue
                self.rows[ArchConfig.from_dict(row["arch"])] = float(row["fitness"])

    def __call__(self, arch: Any) -> float:
        from metanas.search.runner import score_arch

        if arch not in self.rows:
            started = time.perf_counter()
            _, fitness = score_arch(self.evaluator, arch)
            self.seconds.append(time.perf_counter() - started)
            self.rows[arch] = fitness
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"arch": arch.to_dict(), "fitness": fitness}) + "\n")
        return self.rows[arch]


def quickstart(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The quickstart run's evaluator, its target under the search budget, and its task metadata."""
    from metanas.bench.protocol import BenchTarget
    from metanas.config import load_recipe
    from metanas.meta.encoding import target_task_meta
    from metanas.pipeline.run import CompressRun

    recipe = load_recipe(args.recipe, ["logging.wandb=false"])
    run = CompressRun(recipe, args.base)
    run.run(stages=("latency", "train"))
    cost_model = run.cost_model(run.trained.supernet)
    target = BenchTarget("quickstart", cost_model, run.search_budget, "quickstart")
    meta = {"objective": recipe.objective.name, "corpus_size": len(run.bundle.train), "space": run.space.to_dict()}
    evaluator = run.evaluator()
    meta = target_task_meta(meta, evaluator.metric_name, evaluator.higher_is_better, cost_model.seq_len)
    return evaluator, target, meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.yaml")
    p.add_argument("--base", type=Path, default=ROOT / "runs" / "quickstart")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-strategies")
    p.add_argument("--strategies", type=lambda s: s.split(","), default=list(STRATEGIES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--evals", type=int, default=120, help="evaluations per run (the quickstart's 20 x 6)")
    p.add_argument("--reference", type=int, default=200, help="random feasible archs fixing the targets")
    p.add_argument("--options", type=json.loads, default=None, help="JSON: strategy -> options")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "benchmarks" / "strategies_minilm.json")
    args = p.parse_args(argv)
    import torch
    from tqdm.auto import tqdm

    from metanas._io import atomic_write_json
    from metanas.bench.replay import check_strategies, replay_run, summarize

    logging.basicConfig(level=logging.WARNING)
    check_strategies(args.strategies)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    evaluator, target, meta = quickstart(args)
    fitness = CachedFitness(evaluator, args.out / "table.jsonl")
    values = [fitness(a) for a in tqdm(target.reference(args.reference), desc="reference", unit="arch")]
    reference = {"f_min": min(values), "f_ref": max(values), "n": len(values)}
    results: dict[str, Any] = {}
    for name in args.strategies:
        runs = []
        for seed in tqdm(range(args.seeds), desc=name, unit="seed"):
            before = len(fitness.seconds)
            run = replay_run(
                target, fitness, name, seed, args.evals, (args.options or {}).get(name), meta, (), evaluator
            )
            run["new_evaluations"] = len(fitness.seconds) - before
            runs.append(run)
        results[name] = {**summarize(runs, reference, args.evals), "extra": [r["extra"] for r in runs]}
        results[name]["strategy_seconds"] = [round(r["strategy_seconds"], 2) for r in runs]
    per_eval = sum(fitness.seconds) / len(fitness.seconds) if fitness.seconds else None
    out = {
        "command": shlex.join(["python", "scripts/bench_strategies.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"seeds": args.seeds, "evals": args.evals, "reference": args.reference, "options": args.options},
        "budget": {k: v for k, v in target.budget.limits().items()},
        "reference": reference,
        "seconds_per_evaluation": per_eval,
        "strategies": results,
    }
    atomic_write_json(out, args.json, indent=1, strict=True)
    for name, r in results.items():
        hit = r["evals_to_0.98"]
        print(
            f"{name}: evals to 0.98 median {hit['median']:.0f} (success {hit['success']:.2f}), "
            f"final best {r['final_best']['median']:.3f}, strategy seconds {r['seconds']['strategy_median']:.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
