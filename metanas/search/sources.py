"""The previous tasks' evaluations a warm-started search learns from, frozen into its run directory.

The history keeps growing (other runs write to it, even during this search), so a
search reads the records it learns from once, at its start, and keeps them in
`search/sources.json` with a digest. A resumed search, or one started anew from a
copy of that file, sees exactly the same sources: same recipe plus same recorded
sources gives the same result, whatever the history holds by then.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metanas._io import atomic_write_json
from metanas.meta.history import EvalRecord, HistoryStore

SOURCES_FILE = "sources.json"
SOURCES_FORMAT = "metanas.search-sources/1"


@dataclass(frozen=True)
class FrozenSources:
    """The records a search uses, and the digest of their content."""

    records: list[EvalRecord]
    digest: str

    def summary(self) -> dict[str, Any]:
        """What the search's outputs and the report say about the sources."""
        tasks = Counter(r.task_id for r in self.records)
        return {"file": SOURCES_FILE, "digest": self.digest, "records": len(self.records), "tasks": dict(tasks)}


def _digest(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def frozen_sources(run_dir: Path, history: HistoryStore | None, space_signature: str, task_id: str) -> FrozenSources:
    """The sources recorded in `run_dir`, or, at a search's start, the history's other tasks in this space, recorded."""
    path = run_dir / SOURCES_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data["records"]
            records = [EvalRecord.from_row(row) for row in rows]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{str(path)!r} is damaged ({type(e).__name__}: {e}); delete the search directory to search again"
            ) from None
        if data.get("format") != SOURCES_FORMAT or data.get("digest") != _digest(rows):
            raise ValueError(f"{str(path)!r} is not an intact metanas sources file (format or digest mismatch)")
        return FrozenSources(records, data["digest"])
    records = []
    if history is not None:
        records = [r for r in history.records(space_signature=space_signature) if r.task_id != task_id]
    rows = [{**r.to_row(), "id": r.id} for r in records]
    digest = _digest(rows)
    atomic_write_json({"format": SOURCES_FORMAT, "digest": digest, "records": rows}, path, indent=None)
    return FrozenSources(records, digest)
