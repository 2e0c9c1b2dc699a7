"""The `metanas` command: one subcommand per stage.

Each subcommand is a `Command`: a name, a function that adds its arguments to an
`argparse` parser, and a handler taking the parsed namespace. Adding a stage
(`export`, `search`, `compress`, `meta-train`, `history`) means appending one
`Command` to `COMMANDS`; help formatting and error handling are shared. Handlers
import their heavy dependencies themselves so `metanas --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    p.add_argument(
        "--no-wandb", action="store_true", help="log only to RUN_DIR/metrics.jsonl (same as logging.wandb=false)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        default=[],
        help="recipe overrides, values parsed as YAML (e.g. training.steps=100 objective.name=mlm)",
    )


def _run_train_supernet(args: argparse.Namespace) -> int:
    from metanas.config import load_recipe
    from metanas.train import TrainingInterrupted, train_supernet

    overrides = list(args.overrides) + (["logging.wandb=false"] if args.no_wandb else [])
    recipe = load_recipe(args.recipe, overrides)
    run_dir = args.run_dir or recipe.run_dir or str(Path("runs") / Path(args.recipe).stem)
    try:
        result = train_supernet(recipe, run_dir, resume=args.resume)
    except TrainingInterrupted as e:
        print(f"{e}; continue with: metanas train-supernet {args.recipe} --run-dir {run_dir} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"trained supernet: {result.supernet_path}")
    print(f"summary: {result.summary_path}")
    return 0


COMMANDS: list[Command] = [
    Command(
        "train-supernet",
        "train a weight-sharing supernet from a teacher (sandwich/uniform sampling, resumable)",
        _add_train_supernet,
        _run_train_supernet,
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
    """Run `metanas`; bad input (ValueError, FileNotFoundError) is one `error:` line and exit 2."""
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
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
