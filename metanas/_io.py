"""Atomic writes: a reader (or a resumed run) never sees half a file or half a directory.

Every write goes to a temporary name in the target's own directory, is flushed and
fsync'ed, and is then renamed into place with `os.replace` (atomic on POSIX); the
directory entry is fsync'ed too, so a crash right after the rename keeps the new
file. Directories are built in a temporary sibling and renamed the same way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class NoSpaceLeft(OSError):
    """A write failed because the disk is full; what was there before is intact."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}")
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.strerror)


def _no_space(error: BaseException, directory: Path) -> bool:
    """Whether `error` (torch, safetensors and tokenizers wrap the OSError) came from a full disk."""
    seen: BaseException | None = error
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "no space left" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return shutil.disk_usage(directory).free < 1 << 20
    except OSError:
        return False


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """JSON from a file metanas wrote; a damaged one is a ValueError naming the file and `fix` (what to do)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is damaged (not valid JSON: {e}); {fix}") from None


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
    except Exception as e:
        if _no_space(e, out.parent):
            raise NoSpaceLeft(out) from e
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(out.parent)
    return out


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def finite_json(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None, so strict JSON parsers can read it."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def atomic_write_json(data: Any, path: str | os.PathLike, indent: int | None = 2, strict: bool = False) -> Path:
    """JSON with a trailing newline; `strict` writes non-finite floats as null (files that are shared)."""
    if strict:
        return atomic_write_text(json.dumps(finite_json(data), indent=indent, allow_nan=False) + "\n", path)
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
        try:
            yield tmp
        except Exception as e:
            if _no_space(e, out.parent):
                raise NoSpaceLeft(out) from e
            raise
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
