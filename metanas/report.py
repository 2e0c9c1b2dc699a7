"""Side-by-side evaluation of teacher, student and baseline, and the compress report files.

Everything a user compares is measured the same way for every model, in one
process: parameters and FLOPs by formula, latency by timing the standalone models
(HAT protocol, rounds interleaved so load from other processes hits all models
alike), size as the bytes of the fp32 safetensors weights, and quality on held-out
validation examples the search never used for fitness:

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
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from scipy.stats import spearmanr
from torch import nn

from metanas.cost import measure_latency
from metanas.space import ArchConfig

if TYPE_CHECKING:
    from metanas.objectives.base import Objective
    from metanas.supernet.model import ElasticBert

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_FORMAT = "metanas.compress-report/1"
EMBEDDING_METRIC = "embedding_spearman"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# --------------------------------------------------------------------------- embeddings


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: the mean of the real tokens' hidden states (sentence-transformers pooling)."""
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


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


def load_subnet_weights(sn: ElasticBert, arch: ArchConfig, model: nn.Module) -> None:
    """Write a standalone model's weights into the prefix slices `arch` uses in `sn` (the inverse of export).

    Lets an objective's trained head (MLM decoder, classifier) score a model whose
    weights changed after export (final distillation) through the supernet forward,
    which computes the same function as the exported model.
    """
    sn.space.validate(arch)
    ours = dict(sn.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in ours:
                raise ValueError(f"the model has a parameter {name} that the supernet lacks")
            ours[name][tuple(slice(0, n) for n in p.shape)].copy_(p.detach())


def objective_quality(
    objective: Objective, sn: ElasticBert, arch: ArchConfig, batches: list[dict[str, torch.Tensor]]
) -> tuple[str, float, bool]:
    """(metric name, value, higher is better) of the objective's head on `sn` at `arch`.

    MLM loss is reported as perplexity; other metrics as the objective defines them.
    """
    from metanas.objectives import perplexity

    value = float(objective.evaluate(sn, arch, batches))
    if objective.metric_name == "mlm_loss":
        return "perplexity", perplexity(value), False
    return objective.metric_name, value, bool(objective.higher_is_better)


# --------------------------------------------------------------------------- costs of standalone models


def weights_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as fp32 safetensors (the same serialization for every model)."""
    from safetensors.torch import save

    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    return len(save(state))


def dir_bytes(path: str | os.PathLike) -> int:
    """Total size of the files under `path` (what a user downloads)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure_models_latency(
    models: Mapping[str, nn.Module],
    vocab_size: int,
    batch_size: int,
    seq_len: int,
    threads: int | None = None,
    rounds: int = 3,
    warmup: int = 10,
    runs: int = 50,
    seed: int = 0,
) -> dict[str, float]:
    """Latency (ms) of each model: HAT mean of the middle 80%, best of `rounds` interleaved rounds.

    Every model sees the same seeded random ids; rounds alternate the models (and
    which one goes first), so a burst of load from another process is shared rather
    than landing on one model.
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen)
    mask = torch.ones_like(ids)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    best = {name: math.inf for name in models}
    try:
        with torch.inference_mode(), tqdm(total=rounds * len(models), desc="latency", unit="model") as bar:
            names = list(models)
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:  # each model takes its turn first
                    model = models[name]
                    model.eval()
                    stats = measure_latency(lambda m=model: m(input_ids=ids, attention_mask=mask), warmup, runs)
                    best[name] = min(best[name], stats.mean_ms)
                    bar.update()
    finally:
        torch.set_num_threads(previous)
    return best


# --------------------------------------------------------------------------- files


def write_json_atomic(data: Any, path: Path) -> None:
    """Temp file + rename, so a reader (or a resumed run) never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


def render_markdown(report: Mapping[str, Any]) -> str:
    """A human-readable `report.md` from the report dict (the JSON stays the source of truth)."""
    t, s = report["teacher"], report["student"]
    b = report.get("uniform_baseline")
    metric = s["quality_metric"]
    rows = [("teacher", t), ("student (searched)", s)] + ([("uniform-shrink baseline", b)] if b else [])
    lines = [
        f"# metanas compress report: {report['run_name']}",
        "",
        f"Teacher `{t['source']}` compressed under the budget {report['budget']['description']}; "
        f"objective `{report['objective']}`. Student exported to `{report['export_dir']}/` "
        f"(loads with `transformers.AutoModel`{', trust_remote_code=True' if not s.get('vanilla', True) else ''}).",
        "",
        f"| model | params | % teacher | MFLOPs/token | latency ms | % teacher | size MB | {metric} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {_num(m['params'])} | {_ratio(m['params'], t['params'])} | "
            f"{m['flops_per_token'] / 1e6:.1f} | {_num(m['latency_ms'], 2)} | "
            f"{_ratio(m['latency_ms'], t['latency_ms'])} | {m['size_bytes'] / 1e6:.1f} | {_num(m['quality'], 4)} |"
        )
    lines += ["", f"Within budget (re-measured exported student): **{_num(report['within_budget'])}**", ""]
    for key, check in report["budget_check"].items():
        lines.append(f"- {key}: {_num(check['value'], 2)} <= {_num(check['limit'], 2)}: {_num(check['ok'])}")
    if s.get("embedding_cosine") is not None:
        lines += ["", f"Mean cosine of student and teacher sentence embeddings: {s['embedding_cosine']:.4f}"]
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
        lines += [f"Final distillation: {distill['steps']} steps for the student and the baseline alike.", ""]
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
    tmp = md_path.with_name(f".{md_path.name}.tmp-{os.getpid()}")
    tmp.write_text(render_markdown(report), encoding="utf-8")
    os.replace(tmp, md_path)
    write_json_atomic(report, json_path)
    return json_path, md_path
