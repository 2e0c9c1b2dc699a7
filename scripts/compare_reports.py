"""Compare two compress reports field by field: what a refactor must not change.

    python scripts/compare_reports.py RUN_A/report.json RUN_B/report.json

Prints every field present in one report but not the other, and every value that
differs. Timings (latency, speedup, stage seconds) move with the machine's load and
are listed apart; exit status 1 when anything else differs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

TIMING_KEYS = ("latency_ms", "speedup", "stage_seconds", "ms", "teacher_ms", "limit_ms")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def is_timing(key: str) -> bool:
    return any(part.split("[")[0] in TIMING_KEYS for part in key.split("."))


def same(a: Any, b: Any, rel: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rel", type=float, default=1e-6, help="relative tolerance for floats")
    p.add_argument("--ignore", nargs="*", default=[], help="key prefixes to skip (e.g. paths)")
    args = p.parse_args()
    a = flatten(json.load(open(args.a, encoding="utf-8")))
    b = flatten(json.load(open(args.b, encoding="utf-8")))
    only = sorted(a.keys() ^ b.keys())
    changed, timings = [], []
    for key in sorted(a.keys() & b.keys()):
        if any(key.startswith(prefix) for prefix in args.ignore) or same(a[key], b[key], args.rel):
            continue
        (timings if is_timing(key) else changed).append(key)
    for key in only:
        print(f"only in {'A' if key in a else 'B'}: {key}")
    for key in changed:
        print(f"differs: {key}: {a[key]!r} -> {b[key]!r}")
    print(
        f"{len(a.keys() & b.keys())} shared fields; {len(only)} in one report only; {len(changed)} differ; "
        f"{len(timings)} timings differ (not compared)"
    )
    return 1 if only or changed else 0


if __name__ == "__main__":
    sys.exit(main())
