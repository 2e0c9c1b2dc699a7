"""Generate the published benchmark table (`metanas bench`) from the task suite's cache.

The table holds every built task and every arch its table has scored: the anchors and random archs
of `scripts/build_suite.py`, the reference samples and every arch the benchmark runs
visited. `--fill` first replays strategies x seeds live on the trained supernets, so a
later replay of those strategies and seeds from the file alone never misses (it takes
seconds, with no supernet). The file is not committed (about 3 MB per 100k rows);
this script regenerates it, and the same cache gives the same file byte for byte.

    .venv/bin/python scripts/build_bench_table.py --tasks kd-docstrings \\
        --fill random,evolution,aging,nsga2,rl,tpe,bo --seeds 10 --evals 256
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("METANAS_BENCH_CACHE", "~/.cache/metanas/suite")).expanduser()
DEFAULT_OUT = ROOT / "bench" / "metanas-bench.jsonl.gz"


def write_from_cache(cache: Path, suite_path: Path | None, names: list[str] | None, out: Path, command: str) -> int:
    """Write the tables of the built tasks (all built ones by default) to `out`; returns the row count."""
    from metanas.bench.tablefile import BenchTask, write_bench_table
    from metanas.tasks import load_suite
    from metanas.tasks.table import TaskTable

    suite = load_suite(suite_path)
    tasks = []
    for spec in suite.select(names):
        table = TaskTable(suite, spec, cache)
        if not table.info_path.is_file():
            if names:
                raise ValueError(f"task {spec.name!r} is not built in {cache}; run scripts/build_suite.py first")
            continue
        tasks.append(BenchTask(spec.name, dict(table.info), dict(table.rows)))
    if not tasks:
        raise ValueError(f"no built task in {cache}; run scripts/build_suite.py first")
    write_bench_table(out, tasks, generated_by=command)
    return sum(len(t.rows) for t in tasks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="build_suite.py's work directory")
    p.add_argument("--suite", type=Path, default=None, help="a task suite YAML (default: the shipped one)")
    p.add_argument(
        "--tasks", type=lambda s: s.split(","), default=None, help="tasks --fill replays on (default: all built)"
    )
    p.add_argument("--fill", type=lambda s: s.split(","), default=[], help="strategies to replay live first")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--evals", type=int, default=256)
    p.add_argument("--budget", type=float, default=0.25, help="non-embedding params limit: this quantile")
    p.add_argument("--reference", type=int, default=1000)
    p.add_argument("--options", type=json.loads, default=None, help="JSON: strategy -> options")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    import torch

    from metanas.bench.run import LiveTables, format_overall, run_bench

    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "scripts/build_bench_table.py", *(sys.argv[1:] if argv is None else argv)])
    write_from_cache(args.cache, args.suite, None, args.out, command)
    if args.fill:
        live = LiveTables(args.cache, args.suite)
        result = run_bench(
            args.out, args.tasks, args.fill, args.seeds, args.evals, args.budget, args.reference, args.options, live
        )
        print(format_overall(result))
    rows = write_from_cache(args.cache, args.suite, None, args.out, command)
    print(f"{args.out}: {rows} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
