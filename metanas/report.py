"""What the compress report measures about a model, and the report files (`report.json`, `report.md`).

Every model a user compares (teacher, student, baseline) is measured the same way:
size as the bytes of its fp32 safetensors weights, and quality on held-out
validation examples the search never used for fitness (latency is timed by
`metanas.cost.latency.measure_models_latency`; the report stage in
`metanas.pipeline.reporting` puts it together):

- `kd` / `contrastive`: sentence embeddings (mean-pooled last hidden states) of the
  model and of the teacher on the same texts; quality is the Spearman correlation of
  their pairwise cosine similarities (what retrieval and clustering depend on, and
  defined for any embedding width); the mean cosine between the two embeddings of
  each text is reported beside it when the widths agree;
- `mlm`: perplexity of the objective's trained MLM head on held-out masked tokens;
- `task`: accuracy of the objective's trained classifier.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save as safetensors_bytes
from scipy.stats import spearmanr
from torch import nn

from metanas._io import atomic_write_json, atomic_write_text
from metanas.objectives.base import Objective
from metanas.objectives.losses import mean_pool
from metanas.objectives.mlm import perplexity
from metanas.space import ArchConfig
from metanas.supernet.families import MODEL_INPUTS
from metanas.supernet.model import ElasticBert

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_FORMAT = "metanas.compress-report/1"
EMBEDDING_METRIC = "embedding_spearman"


# --------------------------------------------------------------------------- embeddings


def pairwise_similarities(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarities of every unordered pair of rows (upper triangle, flattened)."""
    x = nn.functional.normalize(embeddings.float(), dim=-1)
    sims = x @ x.T
    i, j = torch.triu_indices(len(x), len(x), 1)
    return sims[i, j]


@torch.inference_mode()
def embed(model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """Mean-pooled embeddings of a standalone HF encoder over `batches`, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for batch in batches:
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        hidden = model(**inputs).last_hidden_state
        out.append(mean_pool(hidden.float(), batch["attention_mask"]))
    model.train(was_training)
    return torch.cat(out)


def embedding_agreement(student: torch.Tensor, teacher: torch.Tensor) -> dict[str, float | None]:
    """Spearman of pairwise similarities (any widths) and mean cosine (equal widths only, else None)."""
    if len(student) < 3:
        raise ValueError(f"embedding agreement needs at least 3 held-out texts, got {len(student)}")
    rho = float(spearmanr(pairwise_similarities(student).numpy(), pairwise_similarities(teacher).numpy()).statistic)
    cosine = None
    if student.shape[-1] == teacher.shape[-1]:
        cosine = float(nn.functional.cosine_similarity(student.float(), teacher.float(), dim=-1).mean())
    return {EMBEDDING_METRIC: rho, "embedding_cosine": cosine}


# --------------------------------------------------------------------------- objective metrics


def objective_quality(
    objective: Objective, sn: ElasticBert, arch: ArchConfig, batches: list[dict[str, torch.Tensor]]
) -> tuple[str, float, bool]:
    """(metric name, value, higher is better) of the objective's head on `sn` at `arch`.

    MLM loss is reported as perplexity; other metrics as the objective defines them.
    """
    value = float(objective.evaluate(sn, arch, batches))
    if objective.metric_name == "mlm_loss":
        return "perplexity", perplexity(value), False
    return objective.metric_name, value, bool(objective.higher_is_better)


# --------------------------------------------------------------------------- sizes of standalone models


def weights_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as fp32 safetensors (the same serialization for every model)."""
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    return len(safetensors_bytes(state))


def dir_bytes(path: str | os.PathLike) -> int:
    """Total size of the files under `path` (what a user downloads)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- files


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference in (None, 0):
        return "-"
    return f"{100 * value / reference:.0f}%"


def _sources_line(sources: Mapping[str, Any] | None) -> str:
    if sources is None:
        return "The search learned from no previous task (no warm start)."
    tasks = ", ".join(f"`{t}` ({n})" for t, n in sorted(sources["tasks"].items())) or "none"
    return (
        f"Previous tasks the warm start learned from: {tasks}; {sources['records']} records, frozen in "
        f"`search/{sources['file']}` (digest `{sources['digest']}`)."
    )


_DOWNSTREAM_METRICS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("spearman", "Spearman"))


def _downstream_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """`report.eval` results: one row per model, per eval set its metrics (frozen embeddings, `metanas.downstream`)."""
    measured = [(name, m["downstream"]) for name, m in rows if m.get("downstream")]
    if not measured:
        return []
    first = measured[0][1]
    columns = [
        (ev, key, f"{ev} {label}") for ev, res in first.items() for key, label in _DOWNSTREAM_METRICS if key in res
    ]
    counts = ", ".join(
        f"`{ev}` {res.get('test_examples', res.get('pairs'))} "
        + (f"test examples of {res['examples']}, {res['classes']} classes" if "accuracy" in res else "pairs")
        for ev, res in first.items()
    )
    lines = [
        "",
        "## Downstream evaluation",
        "",
        "Frozen mean-pooled embeddings: a logistic-regression probe (classification) or the cosine's Spearman "
        f"correlation with the gold score (pairs), every model on the same examples ({counts}).",
        "",
        "| model | " + " | ".join(title for _, _, title in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, results in measured:
        cells = [_num(results.get(ev, {}).get(key), 4) for ev, key, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _model_rows(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(row name, entry) of every model in the report: teacher, student, the baselines, the int8 teacher."""
    t = report["teacher"]
    named = (
        ("student (searched)", "student"),
        ("uniform-shrink baseline", "uniform_baseline"),
        ("layer-drop baseline (every other layer)", "layer_drop"),
    )
    rows = [("teacher", t)] + [(name, report[key]) for name, key in named if report.get(key)]
    fmt = report.get("export_format", "torch")
    if fmt != "torch":
        rows = [(name if m is t else f"{name}, {fmt}", m) for name, m in rows]
    if report.get("int8_teacher"):
        rows.append(("teacher, onnx-int8 (quantized only)", report["int8_teacher"]))
    return rows


def _models_table(rows: list[tuple[str, Mapping[str, Any]]], metric: str) -> list[str]:
    t = rows[0][1]
    lines = [
        f"| model | params | % teacher | MFLOPs/token | latency ms | % teacher | size MB | {metric} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {_num(m['params'])} | {_ratio(m['params'], t['params'])} | "
            f"{m['flops_per_token'] / 1e6:.1f} | {_num(m['latency_ms'], 2)} | "
            f"{_ratio(m['latency_ms'], t['latency_ms'])} | {m['size_bytes'] / 1e6:.1f} | {_num(m['quality'], 4)} |"
        )
    return lines


def _budget_lines(report: Mapping[str, Any]) -> list[str]:
    """The verdict, then each limit against the re-measured student (latency: with the timing's own spread)."""
    verdict = report.get("budget_verdict", _num(report["within_budget"]))
    lines = ["", f"Within budget (re-measured exported student): **{verdict}**", ""]
    for key, check in report["budget_check"].items():
        line = f"- {key}: {_num(check['value'], 2)} <= {_num(check['limit'], 2)}: {_num(check['ok'])}"
        if "spread" in check:
            line += (
                f" ({100 * check['over_by']:+.1f}% against the limit; the timing rounds of this report differ by "
                f"{100 * check['spread']:.1f}%)"
            )
        lines.append(line)
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    """A human-readable `report.md` from the report dict (the JSON stays the source of truth)."""
    t, s = report["teacher"], report["student"]
    b = report.get("uniform_baseline")
    fmt = report.get("export_format", "torch")
    rows = _model_rows(report)
    lines = [
        f"# metanas compress report: {report['run_name']}",
        "",
        f"Teacher `{t['source']}` compressed under the budget {report['budget']['description']}; "
        f"objective `{report['objective']}`. Student exported to `{report['export_dir']}/` "
        f"(loads with `transformers.AutoModel`{', trust_remote_code=True' if not s.get('vanilla', True) else ''}).",
        "",
        *_models_table(rows, s["quality_metric"]),
    ]
    if fmt != "torch":
        lines += [
            "",
            f"Shipped as `{fmt}` (`{report['export_dir']}/{s.get('onnx_file', 'onnx/')}`), timed and scored "
            "as ONNX Runtime sessions; the teacher row is the torch model, and the budget's relative latency "
            f"is checked against the teacher in `{fmt}` ({_num(t.get('shipped_latency_ms'), 2)} ms).",
        ]
    lines += _budget_lines(report)
    if s.get("embedding_cosine") is not None:
        lines += ["", f"Mean cosine of student and teacher sentence embeddings: {s['embedding_cosine']:.4f}"]
    lines += _downstream_table(rows)
    held = report["held_out"]
    lines += [
        "",
        f"Quality measured on {held['examples']} held-out validation examples"
        + (
            " (overlapping the search's fitness examples: the validation split is small)."
            if held["overlap"]
            else ", none of them used by training or by the search."
        ),
        "",
        "## Search",
        "",
        f"Strategy `{report['search']['strategy']}` ({report['search']['warm_start']}); "
        f"{report['search']['num_evaluations']} evaluations; best {report['search']['metric_name']} "
        f"{_num(report['search']['best_metric'], 5)}.",
        "",
        _sources_line(report["search"].get("sources")),
        "",
        f"Student arch: `{json.dumps(s['arch'])}`",
        "",
    ]
    if b:
        lines += [
            f"Baseline arch (uniform fraction {b['fraction']:.3f} of every dimension): `{json.dumps(b['arch'])}`",
            "",
        ]
    checks = (report.get("latency_checks") or {}).get("student")
    if checks:
        lines += [
            f"Before export, {len(checks)} candidate(s), best search fitness first, were timed beside the teacher; "
            f"the first within the search's latency limit was exported"
            + (" (the search's best was over it when timed)." if len(checks) > 1 else "."),
            "",
        ]
    distill = report["distillation"]
    if distill["steps"]:
        budget = distill.get("seconds_budget")
        fitted = f" (as many as fit in {budget:g} s for the student)" if budget else ""
        lines += [f"Final distillation: {distill['steps']} steps{fitted} for the student and every baseline alike.", ""]
    plots = report["plots"]
    lines += [f"![Pareto front]({plots['pareto']})", "", f"![Search curve]({plots['curve']})", ""]
    lines += ["## Stage times", "", "Seconds per stage (the report stage itself not included).", ""]
    lines += ["| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in report["stage_seconds"].items()]
    recipe_yaml = yaml.safe_dump(report["recipe"], sort_keys=False).rstrip()
    lines += ["", "## Recipe", "", "```yaml", recipe_yaml, "```", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], run_dir: Path) -> tuple[Path, Path]:
    """`report.json` (machine-readable) and `report.md` (for people), each written atomically."""
    json_path, md_path = run_dir / REPORT_JSON, run_dir / REPORT_MD
    atomic_write_text(render_markdown(report), md_path)
    atomic_write_json(report, json_path, strict=True)
    return json_path, md_path
