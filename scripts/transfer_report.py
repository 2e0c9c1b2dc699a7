"""The transfer benchmark's curves (PNG) and tables (Markdown), from its summary JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PRIMARY = "0.98"


def plot(summary: dict[str, Any], path: Path) -> None:
    """Median normalized best-so-far per method, one panel per fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = summary["folds"]
    fig, axes = plt.subplots(1, len(folds), figsize=(6 * len(folds), 4.6), squeeze=False)
    for ax, (fold, entry) in zip(axes[0], folds.items()):
        for method, curve in entry["curves"].items():
            style = "--" if method.endswith("shuffled") else "-"
            ax.plot(np.arange(1, len(curve) + 1), curve, style, lw=2.4 if method == "warm" else 1.3, label=method)
        ax.axhline(float(PRIMARY), color="gray", lw=0.8, ls=":", label=f"{float(PRIMARY):.0%} target")
        ax.set_title(f"{fold}: {len(entry['tasks'])} target tasks")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best-so-far, normalized to the reference (median over tasks)")
        low = min(min(c) for c in entry["curves"].values())
        ax.set_ylim(max(0.0, low), 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def fold_table(fold: str, entry: dict[str, Any], evals: int) -> list[str]:
    """Per-task medians first, then the across-task summary, at the primary target."""
    target = entry["targets"][PRIMARY]
    methods = list(target["evals_to_target"])
    lines = [
        f"#### {fold}: evaluations to the {float(PRIMARY):.0%} target (median over seeds; {evals + 1} = never)",
        "",
    ]
    lines += ["| task | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for task, medians in target["per_task_median"].items():
        lines.append(f"| {task} | " + " | ".join(_fmt(medians.get(m)) for m in methods) + " |")
    summary = target["evals_to_target"]
    lines.append(
        "| **median over tasks [95% CI]** | "
        + " | ".join(
            f"{_fmt(summary[m]['median'])} [{_fmt(summary[m]['interval'][0])}, {_fmt(summary[m]['interval'][1])}]"
            for m in methods
        )
        + " |"
    )
    lines += [
        "",
        "| warm vs | speedup (geomean over tasks) [95% CI] | task-level p (Wilcoxon, one-sided) |",
        "|---|---:|---:|",
    ]
    for b, s in target["speedup_vs"].items():
        lines.append(
            f"| {b} | {s['geomean']:.2f}x [{s['interval'][0]:.2f}, {s['interval'][1]:.2f}] | "
            f"{_fmt(target['p_task_level'].get(b))} |"
        )
    for method, other in target.get("other_transfer", {}).items():
        lines += ["", f"| {method} vs | speedup (geomean over tasks) [95% CI] | task-level p (Wilcoxon, one-sided) |"]
        lines.append("|---|---:|---:|")
        for b, s in other["speedup_vs"].items():
            lines.append(
                f"| {b} | {s['geomean']:.2f}x [{s['interval'][0]:.2f}, {s['interval'][1]:.2f}] | "
                f"{_fmt(other['p_task_level'].get(b))} |"
            )
    lines.append(f"\nStrongest non-transfer baseline: {target.get('best_baseline')}.")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    evals = summary["settings"]["evals"]
    lines: list[str] = []
    for fold, entry in summary["folds"].items():
        lines += fold_table(fold, entry, evals) + [""]
    for fold, by_method in summary["kendall_tau"].items():
        ns = list(next(iter(by_method.values())))
        lines += [f"#### Kendall tau, {fold} (mean over targets)", ""]
        lines += ["| model | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
        for m, by_n in by_method.items():
            lines.append(f"| {m} | " + " | ".join(f"{v:.3f}" for v in by_n.values()) + " |")
        lines.append("")
    lines += ["#### Stress test (sources with shuffled fitness)", ""]
    for fold, s in summary["stress_shuffled"].items():
        cells = ", ".join(f"{m} {_fmt((v or {}).get('median'))}" for m, v in s[PRIMARY].items())
        lines.append(
            f"- {fold}: median evaluations to target: {cells}; guard fell back in {s['fallbacks']}/{s['runs']} runs"
        )
    return "\n".join(lines)
