"""An exclusive lock on a run directory, so two processes never run stages into the same one.

The lock is `RUN_DIR/.metanas.lock`, held with `flock` for as long as the process
runs and holding the owner's pid, host, start time and command. The kernel drops a
`flock` when its process dies, so a lock file left by a killed run is recognised as
stale (it is reported and taken over); a live owner makes the second process refuse
in one line that names it. `flock` is local to a machine: on network filesystems that do
not pass it on, two hosts sharing one run directory are not kept apart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

LOCK_FILE = ".metanas.lock"


class RunDirLocked(ValueError):
    """Another live process holds the run directory."""


def _describe(owner: dict[str, object]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner.get("started", 0))))
    return f"pid {owner.get('pid')} on host {owner.get('host')} (started {started}: {owner.get('command')})"


def _read(fd: int) -> dict[str, object]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError:
        data = {"pid": "?", "host": "?", "command": text[:200]}
    return data if isinstance(data, dict) else {}


class RunLock:
    """`with RunLock(run_dir):` holds `run_dir` for this process; raises `RunDirLocked` if another holds it."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def _acquire_once(self) -> int | None:
        """The locked descriptor of the current lock file, or None when the file was replaced meanwhile."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            raise RunDirLocked(
                f"{str(self.run_dir)!r} is in use by {_describe(owner)}; wait for it to finish or stop it "
                "(a second run needs another --out)"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous owner removed the file between our open and our lock
            os.close(fd)
            return None
        return fd

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = None
        while fd is None:
            fd = self._acquire_once()
        previous = _read(fd)
        if previous:
            logger.warning("taking over a stale lock of %s: that process is gone", _describe(previous))
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(owner).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
