"""The transfer benchmark's curves (PNG) and tables (Markdown), from its summary JSON; merging runs by fold.

.venv/bin/python scripts/transfer_report.py OUT.json RUN.json [RUN.json ...]   # later runs' folds win
"""

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
    colors = plt.get_cmap("tab20").colors  # a colour per method: the default cycle repeats after ten
    for ax, (fold, entry) in zip(axes[0], folds.items()):
        for i, (method, curve) in enumerate(entry["curves"].items()):
            style = "--" if method.endswith("shuffled") else "-"
            width = 2.4 if method == "warm" else 1.3
            ax.plot(np.arange(1, len(curve) + 1), curve, style, color=colors[i % 20], lw=width, label=method)
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


PER_FOLD = (  # the merged file's entries keyed by fold
    "settings",
    "commands",
    "folds",
    "kendall_tau",
    "kendall_tau_per_task",
    "stress_shuffled",
    "search_seconds",
    "wall_minutes",
)


def by_fold(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary in the merged layout: every entry keyed by fold (one run's summary is converted)."""
    if "commands" in summary:
        return summary
    folds = list(summary["folds"])
    one = {k: {f: summary[k] for f in folds} for k in ("settings", "search_seconds", "wall_minutes") if k in summary}
    per_task: dict[str, dict[str, Any]] = {f: {} for f in folds}
    for key, tau in summary["kendall_tau_per_task"].items():
        fold, task = key.split("/", 1)
        per_task[fold][task] = tau
    return {
        **one,
        "commands": {f: summary["command"] for f in folds},
        "folds": summary["folds"],
        "kendall_tau": summary["kendall_tau"],
        "kendall_tau_per_task": per_task,
        "stress_shuffled": summary["stress_shuffled"],
        "similarity_matrix": summary["similarity_matrix"],
    }


def merge(previous: dict[str, Any] | None, summary: dict[str, Any]) -> dict[str, Any]:
    """`summary`'s folds over `previous`'s: a run of some folds keeps the other folds' results.

    The similarity matrix is the one over more tasks, the later one on a tie (the suite's
    tables do not change between runs of the same build). A fold is replaced whole, even
    by a run over fewer of its tasks.
    """
    new = by_fold(summary)
    if not previous:
        return new
    old = by_fold(previous)
    out = {k: {**old.get(k, {}), **new.get(k, {})} for k in PER_FOLD}
    older, newer = old["similarity_matrix"], new["similarity_matrix"]
    out["similarity_matrix"] = older if len(older["tasks"]) > len(newer["tasks"]) else newer
    return out


def main(argv: list[str] | None = None) -> None:
    """Merge transfer summaries, in order, into one file (kept by fold, later runs winning)."""
    import argparse
    import json

    from metanas._io import atomic_write_json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("runs", type=Path, nargs="+", help="summary JSONs of bench_transfer.py runs (or merged ones)")
    args = p.parse_args(argv)
    merged: dict[str, Any] | None = None
    for path in args.runs:
        merged = merge(merged, json.loads(path.read_text(encoding="utf-8")))
    atomic_write_json(merged, args.out, indent=1)
    print(f"{args.out}: folds {', '.join(merged['folds'])}")


if __name__ == "__main__":
    main()
