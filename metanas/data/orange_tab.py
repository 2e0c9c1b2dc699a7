"""A reader for Orange's ``.tab`` format, so the corpora shipped with Orange add-ons load without Orange.

The format is tab-separated text: row 1 holds the column names, row 2 their types
(``string``, ``discrete``/``d``, ``continuous``/``c``, ``time``, ... or a space-separated list
of discrete values), row 3 their flags (``class``, ``meta``, ``include=True``, ...), then one
row per instance. A value holding a tab or a line break is double-quoted, with ``""`` for a
quote inside it (csv quoting).

Where this reader differs from Orange's, on purpose: a quote opens a quoted value only as
the value's very first character (Orange also skips leading spaces first, which makes a
stray quote after a space, as in Orange's own Friends transcripts, swallow the next lines);
a row with the wrong number of fields is an error instead of being padded or cut; and the
flags are checked but not applied: every column is kept, as strings, and the caller
chooses the text and label columns.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from datasets import Dataset, Features, Value

_STRING_TYPES = frozenset({"s", "string", "text"})
_TYPE_NAMES = frozenset(
    {"s", "string", "text", "d", "discrete", "c", "continuous", "numeric", "t", "time", "w", "weight", "b", "basket"}
)
_DISCRETE_LIST = re.compile(r"^\s*\S+(\s\S+)+\s*$")
_FLAG = re.compile(r"^(class|c|ignore|i|meta|m|weight|w|basket|b|[^=\s]+=.*)$")
_FLAG_SEPARATOR = re.compile(r"(?<!\\) ")
# Orange's missing-value marker in non-string columns; an empty field is missing everywhere.
_UNKNOWN = "?"


def _check_types(path: Path, types: list[str], line: int) -> None:
    for column, value in enumerate(types, start=1):
        value = value.strip()
        if value and value not in _TYPE_NAMES and not _DISCRETE_LIST.match(value):
            raise ValueError(
                f"{path}: line {line} is not an Orange type row: field {column} is {value!r}, not one of "
                f"{', '.join(sorted(_TYPE_NAMES))} or a space-separated list of discrete values "
                "(a .tab file needs three header rows: names, types, flags)"
            )


def _check_flags(path: Path, flags: list[str], line: int) -> None:
    for column, value in enumerate(flags, start=1):
        for flag in _FLAG_SEPARATOR.split(value.strip()):
            if flag and not _FLAG.match(flag):
                raise ValueError(
                    f"{path}: line {line} is not an Orange flag row: field {column} has {flag!r}, not one of "
                    "class, meta, ignore, weight (or c, m, i, w) or key=value "
                    "(a .tab file needs three header rows: names, types, flags)"
                )


def _records(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """Each record with the line it starts on (a quoted value may span lines)."""
    with path.open(encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quotechar='"', doublequote=True, strict=True)
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise ValueError(f"{path}: line {start}: malformed quoting ({exc})") from exc
            yield start, record


def read_orange_tab_columns(path: Path, encoding: str = "utf-8-sig") -> dict[str, list[str | None]]:
    """The columns of a ``.tab`` file by header name, values stripped, missing values as None.

    Raises ValueError naming the file and line for missing header rows, a row with the wrong
    number of fields, duplicate or empty column names, or broken quoting.
    """
    try:
        records = _records(path, encoding)
        header = [next(records, None) for _ in range(3)]
        if header[2] is None:
            raise ValueError(f"{path}: an Orange .tab file needs three header rows (names, types, flags)")
        (_, names), (types_line, types), (flags_line, flags) = header
        names = [name.strip() for name in names]
        _check_types(path, types, types_line)
        if len(types) != len(names):
            raise ValueError(f"{path}: line {types_line} has {len(types)} types for {len(names)} column names")
        if len(flags) > len(names):
            raise ValueError(f"{path}: line {flags_line} has {len(flags)} flags for {len(names)} column names")
        _check_flags(path, flags, flags_line)
        if "" in names or len(set(names)) < len(names):
            raise ValueError(f"{path}: line 1: column names must be non-empty and distinct, got {names}")
        strings = [kind.strip() in _STRING_TYPES for kind in types]
        columns: dict[str, list[str | None]] = {name: [] for name in names}
        for line, record in records:
            if not any(field.strip() for field in record):
                continue  # blank rows are skipped, as Orange does
            if len(record) != len(names):
                raise ValueError(f"{path}: line {line} has {len(record)} fields, the header has {len(names)}")
            for name, is_string, value in zip(names, strings, record):
                value = value.strip()
                columns[name].append(None if not value or (value == _UNKNOWN and not is_string) else value)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not {encoding} text (byte {exc.start}: {exc.reason})") from exc
    return columns


def read_orange_tab(path: Path, encoding: str = "utf-8-sig") -> Dataset:
    """A ``.tab`` file as a Dataset of string columns named as in its header."""
    columns = read_orange_tab_columns(path, encoding)
    return Dataset.from_dict(columns, features=Features({name: Value("string") for name in columns}))
