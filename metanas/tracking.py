"""Experiment tracking: a local JSONL log always, plus Weights & Biases when enabled.

W&B runs offline automatically when no API key is configured, so nothing fails
without network; the JSONL file in the run directory is the record that always
exists and that tests and later stages read back.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from metanas._io import atomic_write_text

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_id.txt"
DEFAULT_WANDB_HOST = "https://api.wandb.ai"


def wandb_api_key_configured() -> bool:
    """True when W&B could authenticate: WANDB_API_KEY or a netrc entry for the W&B host.

    Reads only the environment and the netrc file (no network, no wandb import), so
    it is cheap enough to call before every run.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", DEFAULT_WANDB_HOST)).netloc
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), "_netrc" if os.name == "nt" else ".netrc")
    try:
        creds = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def wandb_mode() -> str | None:
    """The mode to pass to `wandb.init`: None defers to an explicit WANDB_MODE or to online."""
    if os.environ.get("WANDB_MODE") or wandb_api_key_configured():
        return None
    return "offline"


def _jsonable(value: Any) -> Any:
    """Plain JSON values for tensors, numpy scalars and paths; NaN/inf become strings."""
    if hasattr(value, "tolist") and callable(value.tolist):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class Tracker:
    """Logs metrics to `run_dir/metrics.jsonl` and, when enabled, to a W&B run.

    Only the main process of a multi-process run writes anything; on other ranks
    every method is a no-op, so callers need no rank checks. Use as a context
    manager so the W&B run is finished even when training raises.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        config: Mapping[str, Any] | None = None,
        use_wandb: bool = True,
        project: str = "metanas",
        name: str | None = None,
        tags: Sequence[str] = (),
        is_main: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self._file = None
        self._wandb_run = None
        if not is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        if use_wandb:
            try:
                self._wandb_run = self._start_wandb(config, project, name, tags)
            except BaseException:
                self.finish()
                raise

    def _start_wandb(
        self, config: Mapping[str, Any] | None, project: str, name: str | None, tags: Sequence[str]
    ) -> Any:
        import wandb

        # A resumed run keeps logging into the same W&B run.
        id_file = self.run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        atomic_write_text(run_id, id_file)
        return wandb.init(
            project=project,
            name=name,
            tags=list(tags) or None,
            config=dict(config) if config else None,
            dir=str(self.run_dir),
            id=run_id,
            resume="allow",
            mode=wandb_mode(),
        )

    @property
    def wandb_run(self) -> Any:
        """The underlying `wandb` run, or None when W&B is off or this is not the main process."""
        return self._wandb_run

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(_jsonable(record)) + "\n")
        self._file.flush()

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record `metrics` at `step` (one JSONL line, flushed at once)."""
        if not self.is_main:
            return
        self._write({"step": step, "time": time.time(), **metrics})
        if self._wandb_run is not None:
            self._wandb_run.log({k: _jsonable(v) for k, v in metrics.items()}, step=step)

    def log_table(self, key: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], step: int) -> None:
        """Record a small table (e.g. per-subnet results) as `{key: {columns, data}}`."""
        if not self.is_main:
            return
        data = [list(r) for r in rows]
        self._write({"step": step, "time": time.time(), key: {"columns": list(columns), "data": data}})
        if self._wandb_run is not None:
            import wandb

            self._wandb_run.log({key: wandb.Table(columns=list(columns), data=_jsonable(data))}, step=step)

    def log_image(self, key: str, path: str | os.PathLike, step: int) -> None:
        """Record an image file (a plot written by a report); JSONL keeps its path."""
        if not self.is_main:
            return
        self._write({"step": step, "time": time.time(), key: str(path)})
        if self._wandb_run is not None:
            import wandb

            self._wandb_run.log({key: wandb.Image(str(path))}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final values of the run (W&B summary; a `summary` line in the JSONL)."""
        if not self.is_main:
            return
        self._write({"time": time.time(), "summary": dict(values)})
        if self._wandb_run is not None:
            self._wandb_run.summary.update({k: _jsonable(v) for k, v in values.items()})

    def finish(self, exit_code: int = 0) -> None:
        """Close the JSONL file and finish the W&B run; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._wandb_run is not None:
            self._wandb_run.finish(exit_code=exit_code)
            self._wandb_run = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of `run_dir/metrics.jsonl`, in order (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
