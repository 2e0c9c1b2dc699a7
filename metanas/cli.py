"""The `metanas` command: `compress` and one subcommand per stage.

Each subcommand is a `Command` in `COMMANDS`: a name, a function that adds its
arguments to an `argparse` parser, and a handler taking the parsed namespace; help
formatting and error handling are shared. Handlers import their heavy
dependencies themselves so `metanas --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metanas.config import Recipe

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """A subcommand: `add_arguments(parser)` declares its options, `run(args)` returns an exit code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- train-supernet


def _add_train_supernet(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="YAML recipe (teacher, data, objective, space, training, logging)")
    p.add_argument(
        "--run-dir", default=None, help="output directory; when unset: the recipe's run_dir, else runs/<recipe name>"
    )
    p.add_argument("--resume", action="store_true", help="continue exactly from RUN_DIR/checkpoint.pt")
    _add_overrides(p)


def _load(args: argparse.Namespace) -> Recipe:
    from metanas.config import load_recipe

    return load_recipe(args.recipe, list(args.overrides) + (["logging.wandb=false"] if args.no_wandb else []))


def _run_train_supernet(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from metanas.pipeline.paths import TEACHER_DIR
    from metanas.pipeline.tiny import write_tiny_teacher
    from metanas.training import TrainingInterrupted, train_supernet

    recipe = _load(args)
    run_dir = _run_dir(args, recipe, "--run-dir")
    if recipe.teacher.tiny:
        teacher = write_tiny_teacher(Path(run_dir).resolve() / TEACHER_DIR, seed=recipe.training.seed)
        recipe = replace(recipe, teacher=replace(recipe.teacher, path=str(teacher), tiny=False))
    try:
        result = train_supernet(recipe, run_dir, resume=args.resume)
    except TrainingInterrupted as e:
        again = _resume_command("train-supernet", args, "--run-dir", run_dir).replace(
            " --run-dir ", " --resume --run-dir ", 1
        )
        print(f"{e}; continue with: {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"trained supernet: {result.supernet_path}")
    print(f"summary: {result.summary_path}")
    return 0


# --------------------------------------------------------------------------- compress


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-wandb", action="store_true", help="log only to metrics.jsonl in the run dir (same as logging.wandb=false)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        default=[],
        help="recipe overrides, values parsed as YAML (e.g. training.steps=100 budget.latency_ms=40%%)",
    )


def _add_compress(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="YAML recipe (teacher, data, objective, space, training, budget, search, ...)")
    p.add_argument(
        "--out",
        default=None,
        help="run directory, resumed when it exists; when unset: the recipe's run_dir, else runs/<recipe name>",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan (stages, budget, space, cost) and exit")
    _add_overrides(p)


def _run_dir(args: argparse.Namespace, recipe: Recipe, flag: str) -> str:
    """The run directory: the flag, else the recipe's run_dir, else runs/<recipe name>; never empty."""
    given = getattr(args, flag.lstrip("-").replace("-", "_"))
    if given is not None and not given.strip():
        raise ValueError(f"{flag} must name a directory, got an empty string")
    return given or recipe.run_dir or str(Path("runs") / Path(args.recipe).stem)


def _verdict_line(report: dict) -> str:
    """'yes', 'NO', or how far over the latency limit the student is when that is within the timing's own spread."""
    verdict = report.get("budget_verdict", "yes" if report["within_budget"] else "no")
    if verdict != "within timing noise":
        return "yes" if verdict == "yes" else "NO"
    c = report["budget_check"]["latency_ms"]
    return (
        f"within timing noise ({100 * c['over_by']:.1f}% over the latency limit; this report's timing rounds differ "
        f"by {100 * c['spread']:.1f}%)"
    )


def _resume_command(command: str, args: argparse.Namespace, flag: str, run_dir: str, *extra: str) -> str:
    """The command that continues an interrupted run, with its overrides, quoted to paste into a shell."""
    words = ["metanas", command, args.recipe, flag, run_dir, *extra, *(["--no-wandb"] if args.no_wandb else [])]
    return shlex.join([*words, *args.overrides])


def _run_compress(args: argparse.Namespace) -> int:
    from metanas.pipeline import CompressInterrupted, compress, plan

    recipe = _load(args)
    run_dir = _run_dir(args, recipe, "--out")
    if args.dry_run:
        print(plan(recipe, run_dir))
        return 0
    try:
        result = compress(recipe, run_dir)
    except CompressInterrupted as e:
        print(f"{e}; resume with: {_resume_command('compress', args, '--out', run_dir)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    r = result.report
    t, s, b = r["teacher"], r["student"], r["uniform_baseline"]
    metric = s["quality_metric"]
    share = 100 * s["params"] / t["params"]
    print(f"student: {result.model_dir} ({s['params']:,} params, {share:.0f}% of the teacher's)")
    print(f"latency: {s['latency_ms']:.2f} ms vs teacher {t['latency_ms']:.2f} ms ({r['speedup']:.2f}x faster)")
    print(
        f"{metric}: student {s['quality']:.4f}, teacher {t['quality']:.4f}"
        + (f", uniform-shrink baseline {b['quality']:.4f}" if b else "")
    )
    print(f"within budget ({r['budget']['description']}): {_verdict_line(r)}")
    print(f"report: {result.report_path.with_suffix('.md')}")
    return 0


# --------------------------------------------------------------------------- search


def _add_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="YAML recipe (its budget and search sections are used)")
    p.add_argument("--run-dir", required=True, help="compress or train-supernet run directory with a trained supernet")
    p.add_argument(
        "--warm-start",
        default=None,
        help='"auto", "off" or a meta-predictor file; when unset: the recipe\'s search.warm_start',
    )
    _add_overrides(p)


def _run_search(args: argparse.Namespace) -> int:
    from metanas.pipeline import CompressInterrupted, search_only
    from metanas.pipeline.paths import SEARCH_DIR
    from metanas.search.runner import RESULT_FILE

    if args.warm_start is not None:
        args.overrides = [*args.overrides, f"search.warm_start={args.warm_start}"]
    recipe = _load(args)
    try:
        info = search_only(recipe, args.run_dir)
    except CompressInterrupted as e:
        print(f"{e}; resume with the same command", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"search: {info['strategy']} ({info['warm_start']}), {info['num_evaluations']} evaluations")
    print(f"best {info['metric_name']} {info['best_metric']:.5g}: {json.dumps(info['best_arch'])}")
    print(f"result: {Path(args.run_dir) / SEARCH_DIR / RESULT_FILE}")
    return 0


# --------------------------------------------------------------------------- export


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="compress or train-supernet run directory with a trained supernet")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--arch", default=None, help="the arch as JSON text or a JSON file")
    which.add_argument(
        "--from-search", action="store_true", help="the best arch of RUN_DIR/search/search.json (also without --arch)"
    )
    p.add_argument("--out", required=True, help="model directory to write (loads with transformers.AutoModel)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")


def _run_export(args: argparse.Namespace) -> int:
    from metanas.pipeline import export_arch
    from metanas.space import ArchConfig

    arch = None
    if args.arch is not None:
        text = args.arch
        if not args.arch.lstrip().startswith("{"):  # not JSON text: a file
            if not Path(args.arch).is_file():
                raise FileNotFoundError(f"--arch: file not found: {args.arch!r} (pass the arch as JSON text or a file)")
            text = Path(args.arch).read_text(encoding="utf-8")
        arch = ArchConfig.from_json(text)
    out = export_arch(args.run_dir, arch, args.out, args.overwrite)
    print(f"exported: {out}")
    return 0


# --------------------------------------------------------------------------- history


def _add_history(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    db_help = "SQLite path or SQLAlchemy URL; when unset: $METANAS_HISTORY, else ~/.cache/metanas/history.db"
    listing = sub.add_parser(
        "list",
        help="list the runs, and the shared studies with their workers, in the history",
        description="list the runs, and the shared studies with their workers (running, finished, stale)",
        formatter_class=fmt,
    )
    listing.add_argument("--db", default=None, help=db_help)
    export = sub.add_parser(
        "export",
        help="write evaluation records to .csv or .parquet",
        description="write evaluation records to .csv or .parquet",
        formatter_class=fmt,
    )
    export.add_argument("path", help="output file (.csv or .parquet)")
    export.add_argument("--db", default=None, help=db_help)
    export.add_argument("--run-id", default=None, help="only this run")
    export.add_argument("--task-id", default=None, help="only this task")


def _run_history(args: argparse.Namespace) -> int:
    from datetime import datetime

    from metanas.meta.history import HistoryStore

    with HistoryStore(args.db, create=False) as store:
        if args.action == "export":
            out = store.export(args.path, run_id=args.run_id, task_id=args.task_id)
            print(f"exported: {out}")
            return 0
        runs = store.runs()
        print(f"{store!r}: {len(runs)} runs")
        if runs:
            print(f"{'run_id':40s} {'task_id':28s} {'status':11s} {'evals':>6s} {'best':>10s}  created")
        for run in runs:
            best = "-" if run["best_fitness"] is None else f"{run['best_fitness']:.5g}"
            created = datetime.fromtimestamp(run["created"]).strftime("%Y-%m-%d %H:%M")
            print(
                f"{run['run_id']:40s} {run['task_id']:28s} {run['status'] or '-':11s} {run['n_records']:6d} "
                f"{best:>10s}  {created}"
            )
        _print_studies(store)
    return 0


def _print_studies(store: Any) -> None:
    """The shared studies and their workers (running, finished, failed, interrupted, or stale: silent too long)."""
    from metanas.meta.studies import list_studies

    for study in list_studies(store):
        t = study["trials"]
        print(
            f"study {study['study']} ({study['strategy']}, task {study['task_id']}): {study['status']}, generation "
            f"{study['generation']}; trials {t['done']} done, {t['running']} running, {t['waiting']} waiting, "
            f"{t['failed']} failed; {len(study['workers'])} workers"
        )
        for w in study["workers"]:
            print(f"  worker {w['worker']:40s} {w['status']:11s} {w['evaluations']:6d} evaluations  (pid {w['pid']})")


# --------------------------------------------------------------------------- meta-train


def _add_meta_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=None,
        help="history: SQLite path or SQLAlchemy URL; when unset: $METANAS_HISTORY, else ~/.cache/metanas/history.db",
    )
    p.add_argument("--tasks", nargs="*", default=None, help="task ids to train on; when unset: every task")
    p.add_argument("--val-tasks", nargs="*", default=None, help="task ids held out for model selection")
    p.add_argument("--val-fraction", type=float, default=0.25, help="share of tasks held out when --val-tasks is unset")
    p.add_argument(
        "--space",
        nargs="*",
        default=[],
        help="space.json files of compress runs, for records that do not carry their search space",
    )
    p.add_argument(
        "--epochs",
        type=int,
        nargs="*",
        default=None,
        help="training epochs to choose from on the held-out tasks; when unset: metanas.meta.metatrain's grid",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    p.add_argument("--out", required=True, help="predictor file to write (.safetensors)")


def _run_meta_train(args: argparse.Namespace) -> int:
    from metanas.meta.history import HistoryStore
    from metanas.meta.metatrain import meta_train, spaces_from_records

    out = Path(args.out)
    if out.is_dir() or args.out.endswith(("/", os.sep)) or out.suffix != ".safetensors":
        raise ValueError(f"--out must be a predictor file ending in .safetensors, got {args.out!r}")
    with HistoryStore(args.db, create=False) as store:
        records = store.records()
    spaces = spaces_from_records(records, args.space)
    usable = [r for r in records if r.space_signature in spaces]
    if not usable:
        raise ValueError(
            f"no usable records in the history ({len(records)} records; none in a known search space); "
            "search with `metanas compress` first, or pass --space RUN_DIR/space.json"
        )
    if len(usable) < len(records):
        print(f"skipping {len(records) - len(usable)} records of search spaces without a description (see --space)")
    val = args.val_tasks if args.val_tasks is not None else args.val_fraction
    grid = {"epochs_grid": tuple(args.epochs)} if args.epochs else {}
    predictor = meta_train(usable, spaces, tasks=args.tasks, val_tasks=val, seed=args.seed, out_path=args.out, **grid)
    card = predictor.card
    print(
        f"meta-trained on {len(card['tasks'])} tasks ({len(usable)} records); held-out Kendall tau "
        f"{card['val_kendall_tau']} (params proxy {card['val_kendall_tau_params_proxy']})"
    )
    print(f"predictor: {args.out}")
    return 0


# --------------------------------------------------------------------------- bench


def _add_bench(p: argparse.ArgumentParser) -> None:
    from metanas.bench.protocol import DEFAULT_BUDGET_QUANTILE, DEFAULT_REFERENCE

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="the tasks of a table file, their rows and spaces (checksums verified)")
    info.add_argument("table", help="benchmark table file (scripts/build_bench_table.py writes one)")
    replay = sub.add_parser(
        "replay",
        help="replay strategies x seeds on tasks of a table file, without a supernet",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    replay.add_argument("table", help="benchmark table file")
    replay.add_argument("--tasks", type=_comma_list, default=None, help="comma-separated tasks (default: all)")
    replay.add_argument(
        "--strategies", type=_comma_list, default=["random", "evolution"], help="comma-separated strategy names"
    )
    replay.add_argument("--seeds", type=int, default=10)
    replay.add_argument("--evals", type=int, default=256, help="evaluations per run (equal for every strategy)")
    replay.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_QUANTILE, help="non-embedding params limit: this quantile"
    )
    replay.add_argument("--reference", type=int, default=DEFAULT_REFERENCE, help="random feasible archs fixing targets")
    replay.add_argument(
        "--options", type=json.loads, default=None, help='JSON: strategy -> options, e.g. \'{"rl": {"lr": 0.05}}\''
    )
    replay.add_argument(
        "--live", default=None, help="the task suite's cache (scripts/build_suite.py): evaluate archs the table lacks"
    )
    replay.add_argument("--suite", default=None, help="the task suite YAML of --live (default: the shipped one)")
    replay.add_argument(
        "--jobs", type=int, default=1, help="runs replayed at once, one process each (a table only: not with --live)"
    )
    replay.add_argument("--json", default=None, help="write the result (per task and overall) here")
    replay.add_argument("--traces", action="store_true", help="with --json: keep every run's fitness trace too")


def _comma_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _run_bench(args: argparse.Namespace) -> int:
    if args.action == "info":
        from metanas.bench.tablefile import load_bench_table

        for name, task in sorted(load_bench_table(args.table).items()):
            print(f"{name}: {len(task.rows)} archs, {task.info['metric_name']}, space {task.space.signature()[:12]}")
        return 0
    from metanas._io import atomic_write_json
    from metanas.bench.run import LiveTables, format_overall, run_bench

    live = LiveTables(args.live, args.suite) if args.live else None
    result = run_bench(
        args.table,
        args.tasks,
        args.strategies,
        args.seeds,
        args.evals,
        args.budget,
        args.reference,
        args.options,
        live,
        args.jobs,
    )
    print(format_overall(result))
    print(f"{len(result['tasks'])} tasks x {args.seeds} seeds in {result['seconds']:.1f} s")
    if args.json:
        if not args.traces:
            for task in result["tasks"].values():
                task.pop("runs")
        atomic_write_json(result, args.json, indent=1, strict=True)
        print(f"result: {args.json}")
    return 0


COMMANDS: list[Command] = [
    Command(
        "compress",
        "compress a teacher to a budget: train a supernet, search, export, distil, report (resumable)",
        _add_compress,
        _run_compress,
    ),
    Command(
        "train-supernet",
        "train a weight-sharing supernet from a teacher (sandwich/uniform sampling, resumable)",
        _add_train_supernet,
        _run_train_supernet,
    ),
    Command("search", "search a trained supernet under the recipe's budget (resumable)", _add_search, _run_search),
    Command("export", "export one subnet of a trained supernet as a standalone HF model", _add_export, _run_export),
    Command("history", "list or export the evaluation history", _add_history, _run_history),
    Command(
        "meta-train", "meta-train the warm-start predictor on the evaluation history", _add_meta_train, _run_meta_train
    ),
    Command(
        "bench", "replay search strategies on published fitness tables (no supernet needed)", _add_bench, _run_bench
    ),
]


# --------------------------------------------------------------------------- entry point


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command (default: `COMMANDS`); options show defaults."""
    from metanas import __version__

    parser = argparse.ArgumentParser(
        prog="metanas",
        description="Compress BERT-like transformers to a budget by weight-sharing neural architecture search.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"metanas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also: METANAS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS if commands is None else commands:
        p = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        command.add_arguments(p)
        p.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `metanas`; any error is one `error:` line and exit 2 (`--debug` shows the traceback)."""
    parser = build_parser()
    # argparse cannot place `key=value` overrides after options once the recipe positional is
    # consumed, so leftovers that look like overrides join the command's override list.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    debug = args.debug or os.environ.get("METANAS_DEBUG", "") not in ("", "0")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            raise
        print(f"\nerror: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR


def _one_line(e: BaseException) -> str:
    """The error as one line: bad input says what to fix; anything else is named, with how to see more."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, (ValueError, OSError)):
        return text
    return f"{type(e).__name__}: {text} (an unexpected error; run with --debug or METANAS_DEBUG=1 for the traceback)"
