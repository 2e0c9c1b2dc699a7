"""A throwaway PostgreSQL server for the tests: `initdb` into a temp dir, `pg_ctl start` on a private port.

The server listens on 127.0.0.1 at a free port (password login, scram-sha-256) and
on a unix socket inside its own directory (no login needed there); it runs with
fsync off and is stopped (`pg_ctl stop -m immediate`) and deleted at the end.
initdb refuses to run as root, so as root the server runs as the `postgres` user
(the Debian package creates it), else as `nobody`, through `setpriv`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD = "metanas", "metanas-test"
_SEARCH_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for d in _SEARCH_DIRS:
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    return None


def _run_as() -> list[str]:
    """The command prefix that runs the server as a non-root user (empty when we are not root)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", name, "--"]
    raise RuntimeError("running as root with no 'postgres' or 'nobody' user (or setpriv/runuser) to run initdb as")


def _owner() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
            return user.pw_uid, user.pw_gid
        except KeyError:
            continue
    raise RuntimeError("no non-root user to own the PostgreSQL data directory")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running test server: `url(db)` is a SQLAlchemy URL; `create_database()` makes a fresh database."""

    root: Path
    port: int

    def url(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.root), port=self.port, user=USER, dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres_server() -> Iterator[Server]:
    """Start a private PostgreSQL server for the block; stop and delete it after."""
    bindir = find_binaries()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    prefix = _run_as()
    root = Path(tempfile.mkdtemp(prefix="metanas-pg-"))
    uid, gid = _owner()
    os.chown(root, uid, gid)
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    os.chown(pwfile, uid, gid)
    data, port = root / "data", _free_port()
    env = {**os.environ, "HOME": str(root), "LC_ALL": "C"}
    try:
        init = [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(pwfile)]
        init += ["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale"]
        subprocess.run(init, check=True, capture_output=True, env=env, cwd=root)
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        start = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w"]
        subprocess.run([*start, "-o", options, "start"], check=True, capture_output=True, env=env, cwd=root)
        try:
            yield Server(root, port)
        finally:
            stop = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run(stop, capture_output=True, env=env, cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
