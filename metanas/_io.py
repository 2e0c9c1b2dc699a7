"""Atomic writes: a reader (or a resumed run) never sees half a file or half a directory.

Every write goes to a temporary name in the target's own directory, is flushed and
fsync'ed, and is then renamed into place with `os.replace` (atomic on POSIX); the
directory entry is fsync'ed too, so a crash right after the rename keeps the new
file. Directories are built in a temporary sibling and renamed the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _fsync_dir(path: Path) -> None:
    """Persist a rename: fsync the directory that holds the entry (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], binary: bool = True) -> Path:
    """Call `write(file)` on a temporary sibling of `path`, fsync it and rename it onto `path`."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(out.parent)
    return out


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(data: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """JSON with a trailing newline."""
    return atomic_write_text(json.dumps(data, indent=indent) + "\n", path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling of `path`; on success it replaces `path`, on failure it is removed.

    An existing `path` is an error unless `overwrite`; it is then swapped out only
    once the new directory is complete.
    """
    out = Path(path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
        _fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
