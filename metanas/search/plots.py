"""Search plots: fitness vs cost with the Pareto front, and the fitness curve per generation.

Drawn on `matplotlib.figure.Figure` with the Agg canvas directly, so no GUI backend
is touched and the global pyplot state of a caller (e.g. a notebook) is left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COST_LABELS = {
    "params": "parameters (M)",
    "non_embedding_params": "non-embedding parameters (M)",
    "flops": "FLOPs per token (M)",
    "latency_ms": "latency (ms)",
}
_SCALE = {"params": 1e-6, "non_embedding_params": 1e-6, "flops": 1e-6, "latency_ms": 1.0}


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_pareto(
    costs: Sequence[float],
    fitnesses: Sequence[float],
    front: Sequence[int],
    path: str | os.PathLike,
    *,
    cost_key: str = "params",
    metric_label: str = "fitness",
    budget: float | None = None,
    best: int | None = None,
) -> Path:
    """Scatter of every evaluated arch, the front (indices into the inputs) as a step line,
    the budget as a vertical line, and the chosen arch (`best`) marked."""
    scale = _SCALE.get(cost_key, 1.0)
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    ax.scatter([c * scale for c in costs], fitnesses, s=12, alpha=0.45, color="tab:blue", label="evaluated")
    ordered = sorted(front, key=lambda i: costs[i])
    ax.step(
        [costs[i] * scale for i in ordered],
        [fitnesses[i] for i in ordered],
        where="post",
        color="tab:red",
        marker="o",
        markersize=4,
        label="Pareto front",
    )
    if budget is not None:
        ax.axvline(budget * scale, color="black", linestyle="--", linewidth=1, label="budget")
    if best is not None:
        ax.scatter(
            [costs[best] * scale],
            [fitnesses[best]],
            s=120,
            marker="*",
            color="gold",
            edgecolor="black",
            zorder=5,
            label="best",
        )
    ax.set_xlabel(COST_LABELS.get(cost_key, cost_key))
    ax.set_ylabel(metric_label)
    ax.set_title("search: fitness vs cost")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def plot_curve(stats: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, metric_label: str = "fitness") -> Path:
    """Best-so-far and per-generation median fitness against the generation number."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    gens = [s["generation"] for s in stats]

    def finite(key: str) -> list[float]:  # a generation of invalid evaluations only is a gap, not -inf
        return [s[key] if math.isfinite(s[key]) else math.nan for s in stats]

    ax.plot(gens, finite("best"), marker="o", color="tab:red", label="best so far")
    ax.plot(gens, finite("median"), marker=".", color="tab:blue", label="generation median")
    ax.set_xlabel("generation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric_label)
    ax.set_title("search progress")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)
