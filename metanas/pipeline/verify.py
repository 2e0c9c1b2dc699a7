"""Before export: the candidates for each exported model, and a latency check of each beside the teacher.

The latency model chose the candidates; `verified` times them against the teacher
in interleaved rounds (the report's protocol), so a model error or a change of
machine load since the model was built cannot slip an over-budget arch through.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from metanas._io import read_json
from metanas.cost.latency import measure_models_latency
from metanas.cost.latency_predictor import LatencyPredictor
from metanas.pipeline.paths import LATENCY_DIR, MEASURED_FILE, PREDICTOR_FILE, SEARCH_DIR
from metanas.search.runner import STATE_FILE
from metanas.space import ArchConfig
from metanas.supernet.export import build_subnet_model
from metanas.supernet.onnx_export import as_format

if TYPE_CHECKING:
    from metanas.pipeline.run import CompressRun

logger = logging.getLogger(__name__)


def ranked_archs(run: CompressRun) -> Iterator[tuple[ArchConfig, None]]:
    """Every validly evaluated arch, best fitness first (the first is search.json's best)."""
    path = run.run_dir / SEARCH_DIR / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no search state at {str(path)!r}; run the search stage first")
    evaluations = read_json(path, "delete the search/ directory to search again")["evaluations"]
    seen: set[ArchConfig] = set()
    for e in sorted(evaluations, key=lambda e: -e["fitness"]):
        if not math.isfinite(e["fitness"]):
            break  # invalid evaluations (non-finite metric) sort last and are never exported
        arch = ArchConfig.from_dict(e["arch"])
        if arch not in seen:
            seen.add(arch)
            yield arch, None


def baseline_archs(run: CompressRun) -> Iterator[tuple[ArchConfig, float]]:
    """Uniform-shrink archs within the search's budget (by the latency model), largest first."""
    cost_model = run.cost_model(run.trained.supernet)
    absolute = cost_model.check_feasible(run.search_budget)
    return run.space.uniform_shrinks(lambda a: cost_model.feasible(a, absolute))


def layer_drop_archs(run: CompressRun) -> Iterator[tuple[ArchConfig, float]]:
    """The practitioner's baseline (DistilBERT): every other teacher layer at full width, ending at the last
    layer; fewer spread layers while that breaks the search's budget (by the latency model), deepest first."""
    space = run.space
    cost_model = run.cost_model(run.trained.supernet)
    absolute = cost_model.check_feasible(run.search_budget)
    top = space.largest()
    for depth in range(max(1, space.max_depth // 2), 0, -1):
        arch = ArchConfig(depth, top.hidden, top.heads[:depth], top.ffn[:depth], "spread")
        if cost_model.feasible(arch, absolute):
            yield space.canonical(arch), depth / space.max_depth


def teacher_timing(run: CompressRun) -> float:
    """The fastest timing of the teacher the latency stage made (inf without one).

    Load from other processes can slow the teacher more than a smaller candidate;
    a relative limit taken from the fastest teacher timing seen keeps the check
    valid for a quiet machine too.
    """
    lat_dir = run.run_dir / LATENCY_DIR
    largest = run.space.largest()
    if (lat_dir / PREDICTOR_FILE).is_file():
        measured = LatencyPredictor.load(lat_dir / PREDICTOR_FILE, run.space).measurements
        return min((ms for arch, ms, _ in measured if arch == largest), default=float("inf"))
    if (lat_dir / MEASURED_FILE).is_file():
        return float(json.loads((lat_dir / MEASURED_FILE).read_text()).get(largest.to_json(), float("inf")))
    return float("inf")


def verified(
    run: CompressRun, candidates: Iterator[tuple[ArchConfig, Any]]
) -> tuple[ArchConfig, Any, list[dict[str, Any]] | None]:
    """The first candidate whose latency, measured beside the teacher's, meets the search's latency limit.

    A relative limit uses the faster of this teacher timing and the latency stage's
    (`teacher_timing`). Up to `search.latency.verify` candidates are timed; when none
    passes, the one closest to the limit is used and the report says it is over.
    """
    lat = run.recipe.search.latency
    budget = run.search_budget
    if budget.latency_ms is None or lat.verify == 0:
        arch, extra = next(candidates)
        return arch, extra, None
    sn = run.trained.supernet
    fmt = run.recipe.export.format  # time what ships, as the latency model did

    def shipped(arch: ArchConfig) -> Any:
        return as_format(build_subnet_model(sn, arch), fmt, lat.threads)

    teacher = run.shipped_teacher
    reference = teacher_timing(run)
    checks: list[dict[str, Any]] = []
    tried: list[tuple[ArchConfig, Any]] = []
    for arch, extra in islice(candidates, lat.verify):
        ms = measure_models_latency(
            {"teacher": teacher, "candidate": shipped(arch)},
            run.space.vocab_size,
            run.budget.batch_size,
            run.budget.seq_len,
            lat.threads,
            run.recipe.report.latency_rounds,
            lat.warmup,
            lat.runs,
        )
        teacher_ms = min(ms["teacher"], reference)
        limit_ms = budget.absolute("latency_ms", teacher_ms)
        ok = ms["candidate"] <= limit_ms
        check = {"arch": arch.to_dict(), "ms": ms["candidate"], "teacher_ms": teacher_ms, "limit_ms": limit_ms}
        checks.append({**check, "ok": ok})
        if ok:
            return arch, extra, checks
        tried.append((arch, extra))
    closest = min(range(len(checks)), key=lambda i: checks[i]["ms"] / checks[i]["limit_ms"])
    logger.warning("none of %d candidates met the latency limit when timed; using the closest", len(checks))
    return tried[closest][0], tried[closest][1], checks
