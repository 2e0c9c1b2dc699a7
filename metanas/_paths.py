"""Telling a local path from a Hugging Face hub id, one rule for teachers and data sources."""

from __future__ import annotations

import re
from pathlib import PurePath

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
