"""`metanas compress`: teacher -> supernet -> search under a budget -> standalone student -> report.

Stages, each writing into the run directory and recorded in `stages.json` (written
atomically) only once its outputs are complete:

1. `latency`: the latency model the search needs (a `LatencyPredictor` fitted on
   measured archs, or per-candidate measurements), and the latency budget's
   feasibility, checked before any training (skipped without a latency budget);
2. `train`: convert and rewire the teacher, train the supernet (`train/`, resumed
   inside the stage from its checkpoint);
3. `search`: the search under the budget (`search/`, resumed from its state),
   warm-started by the meta-predictor when one is available;
4. `export`: the best arch and the uniform-shrink baseline as standalone models
   (`model/`, `baseline/`), each optionally distilled further from the teacher;
5. `report`: teacher, student and baseline measured side by side (`report.json`,
   `report.md`, plots).

A stage record carries a fingerprint of the recipe keys it depends on. Rerunning
`compress` on the same directory skips completed stages with matching
fingerprints; a changed recipe is refused for a stage already started (naming the
keys), except that `export.overwrite=true` redoes every stage after training.
Ctrl-C stops cleanly: completed stages are kept, the interrupted one resumes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import shutil
import string
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from metanas.config import Recipe
from metanas.cost import Budget, CostModel, LatencyPredictor
from metanas.space import ArchConfig, SearchSpace

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

    from metanas.evaluate import Evaluator
    from metanas.tracking import Tracker
    from metanas.train import TrainedSupernet

logger = logging.getLogger(__name__)

STAGES = ("latency", "train", "search", "export", "report")
STAGES_FILE = "stages.json"
STAGES_FORMAT = "metanas.compress-stages/1"
RECIPE_FILE = "compress.yaml"
SPACE_FILE = "space.json"
TEACHER_DIR = "teacher"
LATENCY_DIR = "latency"
PREDICTOR_FILE = "predictor.json"
MEASURED_FILE = "measured.json"
TRAIN_DIR = "train"
SEARCH_DIR = "search"
MODEL_DIR = "model"
BASELINE_DIR = "baseline"
# The recipe keys each stage's outputs depend on, and the stages whose outputs it consumes.
STAGE_KEYS = {
    "latency": ("teacher", "space", "budget", "search.latency"),
    "train": ("teacher", "data", "objective", "space", "training"),
    "search": ("budget", "search"),
    "export": ("export",),
    "report": ("report",),
}
STAGE_DEPS = {"latency": (), "train": (), "search": ("latency", "train"), "export": ("search",), "report": ("export",)}
# Settings that change where or how results are recorded, not what they are.
UNFINGERPRINTED = ("search.history", "export.overwrite")
EMBEDDING_OBJECTIVES = ("kd", "contrastive")
ROLE_PARTS = (("student", "student"), ("uniform_baseline", "baseline"))  # report role -> export part


class CompressInterrupted(KeyboardInterrupt):
    """Ctrl-C during a stage; completed stages are kept and the run resumes where it stopped."""

    def __init__(self, stage: str, run_dir: Path) -> None:
        super().__init__(f"interrupted during stage {stage!r}; completed stages are kept in {run_dir}")
        self.stage = stage
        self.run_dir = run_dir


# --------------------------------------------------------------------------- the tiny teacher

TINY_DIMS = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
TINY_WORDS = 600  # most frequent builtin-corpus words added to the character-level WordPiece vocabulary
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary: special tokens, characters, `##` suffix characters and frequent corpus words.

    Built from the builtin corpus, so it needs no download and no model package, and
    tokenizes that corpus into mostly whole words.
    """
    from metanas.data import builtin_corpus

    counts = collections.Counter(w for text in builtin_corpus()["text"] for w in re.findall(r"[a-z]{2,}", text.lower()))
    words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TINY_WORDS]]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    suffixes = ["##" + c for c in string.ascii_lowercase + string.digits]
    return list(dict.fromkeys([*SPECIAL_TOKENS, *chars, *suffixes, *words]))


def tiny_teacher_config(vocab_size: int) -> PretrainedConfig:
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, **TINY_DIMS)


def write_tiny_teacher(out_dir: Path, seed: int = 0) -> Path:
    """A random tiny BERT (hidden 32, 3 layers) and its tokenizer in `out_dir`, written atomically.

    Deterministic for a seed, so an existing directory is reused as is.
    """
    from transformers import BertModel, BertTokenizerFast

    if (out_dir / "config.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        vocab = tiny_vocab()
        (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        # from_pretrained: transformers 5 ignores a vocab_file= given to the constructor.
        tokenizer = BertTokenizerFast.from_pretrained(str(tmp))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertModel(tiny_teacher_config(len(vocab)))
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------- teacher resolution


@dataclass
class TeacherInfo:
    """The teacher as the plan and the stages see it; `config` is None when it could not be resolved."""

    source: str  # what the user named (a path, a hub id, "tiny")
    path: str | None  # what to load (None for a tiny teacher before the run dir exists)
    config: PretrainedConfig | None
    problem: str | None = None  # why the config is unknown (dry run without network)


def _is_hub_id(source: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source)) and not source.startswith(".")


def resolve_teacher(recipe: Recipe, run_dir: Path | None, allow_unresolved: bool = False) -> TeacherInfo:
    """Load and check the teacher's config (no weights).

    A missing local path or an unsupported model type is an error. With
    `allow_unresolved` (dry runs), a hub id whose config cannot be fetched (no
    network) gives a TeacherInfo without config and the reason.
    """
    from metanas.supernet.convert import TeacherLoadError, load_teacher_config

    t = recipe.teacher
    if t.tiny:
        path = str((run_dir / TEACHER_DIR).resolve()) if run_dir is not None else None
        config = tiny_teacher_config(len(tiny_vocab()))
        return TeacherInfo("tiny (random BERT written into the run directory)", path, config)
    source = t.resolved_path()
    try:
        config = load_teacher_config(source)
    except TeacherLoadError as e:
        if not allow_unresolved or Path(source).expanduser().exists() or not _is_hub_id(source):
            raise
        return TeacherInfo(source, source, None, str(e))
    return TeacherInfo(source, source, config)


# --------------------------------------------------------------------------- stage bookkeeping


def dependents(stage: str) -> list[str]:
    """The stages that consume `stage`'s outputs, directly or through others, in stage order."""
    out: list[str] = []
    for other in STAGES:
        if any(d == stage or d in out for d in STAGE_DEPS[other]):
            out.append(other)
    return out


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _drop(data: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part, {})
    if isinstance(node, dict):
        node.pop(last, None)


def stage_inputs(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """Per stage, the recipe values its outputs depend on (dotted key -> value)."""
    data = recipe.to_dict()
    for key in UNFINGERPRINTED:
        _drop(data, key)
    return {stage: {k: _get(data, k) for k in keys} for stage, keys in STAGE_KEYS.items()}


def stage_fingerprints(recipe: Recipe) -> dict[str, str]:
    """A digest per stage of its own inputs and those of the stages it consumes."""
    inputs = stage_inputs(recipe)
    out: dict[str, str] = {}
    for stage in STAGES:
        payload = {"inputs": inputs[stage], "deps": [out[d] for d in STAGE_DEPS[stage]]}
        out[stage] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return out


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    from metanas.train import recipe_changes

    return recipe_changes(dict(old), dict(new))


class StageLog:
    """`stages.json`: per stage its fingerprint, inputs, whether it finished, its seconds and summary.

    A stage is recorded as started (done: false) before it writes anything and as
    done only after its outputs are complete, so a crash never leaves a stage that
    looks finished.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"format": STAGES_FORMAT, "stages": {}, "next_step": 0}
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != STAGES_FORMAT:
                raise ValueError(f"{str(path)!r} is not a metanas compress stage log")
            self.data = data

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.data["stages"]

    def done(self, stage: str) -> bool:
        return bool(self.stages.get(stage, {}).get("done"))

    def info(self, stage: str) -> dict[str, Any]:
        return self.stages.get(stage, {}).get("info", {})

    def save(self) -> None:
        from metanas.report import write_json_atomic

        write_json_atomic(self.data, self.path)

    def start(self, stage: str, fingerprint: str, inputs: Mapping[str, Any]) -> None:
        record = self.stages.setdefault(stage, {})
        record.update(fingerprint=fingerprint, inputs=dict(inputs), done=False)
        self.save()

    def finish(self, stage: str, seconds: float, info: Mapping[str, Any]) -> None:
        record = self.stages[stage]
        record.update(done=True, seconds=record.get("seconds", 0.0) + seconds, info=dict(info))
        self.save()

    def forget(self, stages: Sequence[str]) -> None:
        for stage in stages:
            self.stages.pop(stage, None)
        self.save()


# --------------------------------------------------------------------------- tracker sections


class StageTracker:
    """A view of the compress run's tracker for one stage: its steps continue after the previous stage's.

    W&B needs increasing steps within a run; with an offset per stage, one run holds
    every stage, each under its own key prefix (`train/`, `search/`, `export/`, `report/`).
    """

    def __init__(self, tracker: Tracker, base: int) -> None:
        self.tracker = tracker
        self.base = base
        self.last = base

    def _step(self, step: int) -> int:
        self.last = max(self.last, self.base + step)
        return self.base + step

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        self.tracker.log(metrics, step=self._step(step))

    def log_table(self, key: str, columns: Sequence[str], rows: Any, step: int) -> None:
        self.tracker.log_table(key, columns, rows, step=self._step(step))

    def log_image(self, key: str, path: str | os.PathLike, step: int) -> None:
        self.tracker.log_image(key, path, step=self._step(step))

    def summary(self, values: Mapping[str, Any]) -> None:
        self.tracker.summary(values)


# --------------------------------------------------------------------------- latency by measurement


class MeasuredLatency:
    """arch -> ms measured on the exported-equivalent model, each arch once, kept in a JSON file.

    The file makes a resumed search see exactly the numbers the interrupted one saw.
    """

    def __init__(self, sn: Any, path: Path, batch_size: int, seq_len: int, threads: int | None, warmup: int, runs: int):
        self.sn, self.path = sn, path
        self.settings = (batch_size, seq_len, threads, warmup, runs)
        self.cache: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def __call__(self, arch: ArchConfig) -> float:
        from metanas.cost import measure_arch_latency
        from metanas.report import write_json_atomic

        key = arch.to_json()
        if key not in self.cache:
            batch_size, seq_len, threads, warmup, runs = self.settings
            stats = measure_arch_latency(self.sn, arch, batch_size, seq_len, threads, warmup=warmup, runs=runs)
            self.cache[key] = stats.mean_ms
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.cache, self.path)
        return self.cache[key]


# --------------------------------------------------------------------------- uniform shrink


def uniform_arch_at(space: SearchSpace, fraction: float) -> ArchConfig:
    """Every dimension at the largest choice <= `fraction` of its maximum (its smallest choice at least)."""

    def pick(choices: tuple[int, ...]) -> int:
        fitting = [c for c in choices if c <= fraction * max(choices) + 1e-9]
        return max(fitting) if fitting else min(choices)

    return space.uniform(
        pick(space.depth_choices), pick(space.hidden_choices), pick(space.head_choices), pick(space.ffn_choices)
    )


def uniform_shrink_candidates(
    space: SearchSpace, feasible: Callable[[ArchConfig], bool]
) -> Iterator[tuple[ArchConfig, float]]:
    """Uniformly shrunk archs (depth and every width scaled by one fraction) within budget, largest first.

    Candidate fractions are the ratios at which some dimension changes choice; costs
    grow with the fraction, so the first feasible one is the largest.
    """
    dims = (space.depth_choices, space.hidden_choices, space.head_choices, space.ffn_choices)
    seen: set[ArchConfig] = set()
    for fraction in sorted({c / max(choices) for choices in dims for c in choices}, reverse=True):
        arch = uniform_arch_at(space, fraction)
        if arch not in seen and feasible(arch):
            seen.add(arch)
            yield arch, fraction


def uniform_shrink_arch(space: SearchSpace, feasible: Callable[[ArchConfig], bool]) -> tuple[ArchConfig, float]:
    """The baseline: the largest arch scaling depth and every width by one common fraction, within budget."""
    for arch, fraction in uniform_shrink_candidates(space, feasible):
        return arch, fraction
    raise ValueError("no uniformly shrunk arch meets the budget (not even the smallest)")


# --------------------------------------------------------------------------- final distillation


class _QKVCapture:
    """Forward hooks on the last layer's query/key/value projections of an HF BERT-like encoder."""

    def __init__(self, model: nn.Module) -> None:
        attention = model.encoder.layer[-1].attention.self
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [
            getattr(attention, name).register_forward_hook(self._hook(name)) for name in ("query", "key", "value")
        ]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: torch.Tensor) -> None:
            self.out[name] = output

        return hook

    def triple(self) -> list[torch.Tensor]:
        return [self.out[n].float() for n in ("query", "key", "value")]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def distillation_loss(
    s_hidden: torch.Tensor,
    t_hidden: torch.Tensor,
    s_qkv: list[torch.Tensor],
    t_qkv: list[torch.Tensor],
    mask: torch.Tensor,
    relation_heads: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Last-layer relations + in-batch embedding similarities, plus hidden states when the widths agree.

    - relations: MiniLMv2 Q-Q/K-K/V-V KL (any widths);
    - similarities: MSE between the student's and teacher's in-batch cosine
      similarity matrices of mean-pooled embeddings (any widths; what retrieval uses);
    - same width only: token hidden-state MSE and 1 - cosine of the sentence
      embeddings, so the exported model's own outputs align with the teacher's
      (no projection head that the exported model would lack).
    """
    from metanas.objectives import relation_loss
    from metanas.report import mean_pool

    parts: dict[str, torch.Tensor] = {"relation": relation_loss(s_qkv, t_qkv, mask, relation_heads)}
    es, et = mean_pool(s_hidden, mask), mean_pool(t_hidden, mask)
    ns, nt = torch.nn.functional.normalize(es, dim=-1), torch.nn.functional.normalize(et, dim=-1)
    parts["similarity"] = ((ns @ ns.T - nt @ nt.T) ** 2).mean()
    if s_hidden.shape[-1] == t_hidden.shape[-1]:
        m = mask.to(s_hidden.dtype)
        parts["hidden"] = (((s_hidden - t_hidden) ** 2).mean(-1) * m).sum() / m.sum().clamp_min(1)
        parts["cosine"] = 1 - (ns * nt).sum(-1).mean()
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def distill(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    rows: Any,
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    steps: int,
    lr: float,
    batch_size: int,
    bf16: bool = False,
    seed: int = 0,
    desc: str = "distill",
) -> dict[str, Any]:
    """Distil a standalone `student` from `teacher` for `steps` AdamW steps on `rows` (tokenized examples).

    Batches are drawn by a seeded RNG, so the student and the baseline see the same
    data in the same order; linear warmup over 10% of the steps, then linear decay.
    """
    from tqdm.auto import tqdm

    from metanas.train import lr_multiplier, param_groups

    if len(rows) < batch_size:
        raise ValueError(f"final distillation: {len(rows)} training examples, fewer than one batch of {batch_size}")
    rng = random.Random(f"metanas-distill:{seed}")
    torch.manual_seed(seed)
    student.train()
    teacher.eval()
    optimizer = torch.optim.AdamW(param_groups(student, 0.01), lr=lr)
    warmup = max(1, int(0.1 * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, warmup=warmup, total=steps, schedule="linear")
    )
    heads = teacher.config.num_attention_heads
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=bf16)
    s_cap, t_cap = _QKVCapture(student), _QKVCapture(teacher)
    history: list[dict[str, float]] = []
    try:
        for _ in tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0):
            picked = rows[rng.sample(range(len(rows)), batch_size)]
            batch = collate([{k: picked[k][i] for k in picked} for i in range(batch_size)])
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            mask = batch["attention_mask"].bool()
            with torch.no_grad(), autocast:
                t_hidden = teacher(**inputs).last_hidden_state.float()
            t_qkv = t_cap.triple()
            with autocast:
                s_hidden = student(**inputs).last_hidden_state.float()
            loss, parts = distillation_loss(s_hidden, t_hidden, s_cap.triple(), t_qkv, mask, heads)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            history.append({"loss": float(loss.detach()), **parts})
    finally:
        s_cap.close()
        t_cap.close()
    student.eval()
    window = history[-max(1, steps // 10) :]
    return {
        "steps": steps,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": sum(h["loss"] for h in window) / len(window) if window else None,
        "history": history,
    }


def _save_weights(model: nn.Module, model_dir: Path) -> None:
    """Overwrite an exported directory's weights with `model`'s (same keys as the file written by export)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = model_dir / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    state = model.state_dict()
    save_file({k: state[k].detach().contiguous() for k in keys}, str(path), metadata={"format": "pt"})


# --------------------------------------------------------------------------- the run


def _rows(ds: Any, indices: Sequence[int]) -> list[dict[str, Any]]:
    picked = ds[list(indices)]
    return [{k: picked[k][i] for k in picked} for i in range(len(indices))]


def batches_of(
    ds: Any, indices: Sequence[int], batch_size: int, collate: Callable[[list[dict[str, Any]]], Any]
) -> list[dict[str, torch.Tensor]]:
    """Collated batches of `ds[indices]`, in order."""
    idx = list(indices)
    return [collate(_rows(ds, idx[i : i + batch_size])) for i in range(0, len(idx), batch_size)]


def heldout_ranges(n_validation: int, n_fitness: int, n_report: int) -> tuple[range, range, bool]:
    """Validation indices for search fitness and for the report, and whether they overlap.

    The report uses the examples after the search's; when too few remain (a small
    validation split), it falls back to the start of the split and says so.
    """
    fit = range(0, min(n_validation, n_fitness))
    rest = range(len(fit), min(n_validation, len(fit) + n_report))
    if len(rest) >= min(n_report, 16):
        return fit, rest, False
    return fit, range(0, min(n_validation, n_report)), True


def default_task_id(recipe: Recipe) -> str:
    """The task's name in the history: data source (and config) and objective."""
    d = recipe.data
    source = d.source if d.hf_config is None else f"{d.source}:{d.hf_config}"
    label = f"[{d.label_column}]" if d.label_column else ""
    return f"{source}{label}/{recipe.objective.name}"


def _needs_latency(recipe: Recipe) -> bool:
    return (
        recipe.budget.latency_ms is not None
        or "latency_ms" in recipe.search.objectives
        or recipe.search.latency.measure
    )


def _prepare_run_dir(run_dir: Path, adopt: bool = False) -> None:
    """Create `run_dir` and prove it is writable, with one clear error when it is not.

    A non-empty directory that holds no compress run is refused (unless `adopt`), so
    compress never mixes its files into unrelated ones.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"output directory {str(run_dir)!r} is not writable: a file is in the way")
    if not adopt and run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / RECIPE_FILE).is_file():
        raise ValueError(
            f"output directory {str(run_dir)!r} is not empty and holds no metanas compress run; choose another --out"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output directory {str(run_dir)!r} is not writable: {e.strerror or e}") from None


@dataclass
class CompressResult:
    """Where a finished compress run put its outputs, and the report's content."""

    run_dir: Path
    report: dict[str, Any]
    report_path: Path
    model_dir: Path


class CompressRun:
    """One run directory of `compress`: the recipe, its checks, the stages and their shared state.

    Construction checks everything that needs no training (recipe, teacher config,
    space, parameter/FLOPs budgets, warm start); heavy state (the trained supernet,
    the tokenized data) is loaded once, when a stage first needs it.
    """

    def __init__(self, recipe: Recipe, run_dir: str | os.PathLike, *, train_dir: Path | None = None) -> None:
        """`train_dir`: where the trained supernet is (default `RUN_DIR/train`; a train-supernet run dir
        when searching one, which is then adopted as a run directory)."""
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.train_dir = train_dir or self.run_dir / TRAIN_DIR
        self.adopt = train_dir is not None
        self.teacher = resolve_teacher(recipe, self.run_dir)
        self.space = SearchSpace.from_teacher_config(self.teacher.config, **recipe.space)
        self.budget: Budget = recipe.budget.to_budget()
        if recipe.data.validation_fraction <= 0:
            raise ValueError("compress needs held-out data: set data.validation_fraction > 0")
        if "latency_ms" in recipe.search.objectives and not _needs_latency(recipe):
            raise ValueError("a latency_ms objective needs a latency source")
        CostModel(self.space, self.budget.seq_len, self.budget.batch_size).check_feasible(
            replace(self.budget, latency_ms=None)
        )
        if recipe.search.warm_start not in ("auto", "off"):
            self.warm_start()  # an explicit predictor file must load now, not after training
        self.fingerprints = stage_fingerprints(recipe)
        self.inputs = stage_inputs(recipe)
        self.tracker: Tracker | None = None
        self.log: StageLog | None = None

    # ----- lazily loaded state -------------------------------------------
    @cached_property
    def trained(self) -> TrainedSupernet:
        from metanas.train import load_trained_supernet

        return load_trained_supernet(self.train_dir)

    @cached_property
    def tokenizer(self) -> Any:
        """The teacher's tokenizer as the train stage saved it (loading it needs no supernet)."""
        from transformers import AutoTokenizer

        from metanas.train import TOKENIZER_DIR

        return AutoTokenizer.from_pretrained(str(self.train_dir / TOKENIZER_DIR))

    @cached_property
    def bundle(self) -> Any:
        from metanas.data import build_datasets

        return build_datasets(
            self.recipe.data, self.tokenizer, teacher_config=self.teacher.config, cache_dir=self.train_dir / "cache"
        )

    @cached_property
    def collate(self) -> Any:
        from metanas.data import Collator

        return Collator(self.tokenizer)

    @cached_property
    def objective(self) -> Any:
        return self.trained.objective()

    @property
    def heldout(self) -> tuple[range, range, bool]:
        s = self.recipe.search
        n_fitness = s.eval_batches * s.eval_batch_size
        return heldout_ranges(len(self.bundle.validation), n_fitness, self.recipe.report.examples)

    @property
    def search_budget(self) -> Budget:
        """The budget the search and the baseline must meet: the latency limit less `search.latency.margin`."""
        margin = self.recipe.search.latency.margin
        limit = self.budget.latency_ms
        if limit is None or margin == 0:
            return self.budget
        tighter = f"{float(limit[:-1]) * (1 - margin):g}%" if isinstance(limit, str) else limit * (1 - margin)
        return replace(self.budget, latency_ms=tighter)

    def cost_model(self, sn: Any = None) -> CostModel:
        """Costs at the budget's setting; latency from this run's predictor or measurements when it has one."""
        lat = self.recipe.search.latency
        latency: Any = None
        predictor_path = self.run_dir / LATENCY_DIR / PREDICTOR_FILE
        if predictor_path.is_file():
            latency = LatencyPredictor.load(predictor_path, self.space)
        elif lat.measure and (self.run_dir / LATENCY_DIR / MEASURED_FILE).is_file():
            latency = MeasuredLatency(
                sn if sn is not None else self._timing_supernet(),
                self.run_dir / LATENCY_DIR / MEASURED_FILE,
                self.budget.batch_size,
                self.budget.seq_len,
                lat.threads,
                lat.warmup,
                lat.runs,
            )
        return CostModel(self.space, self.budget.seq_len, self.budget.batch_size, latency)

    def _timing_supernet(self) -> Any:
        """A supernet of the teacher's shape with random weights: latency does not depend on weights."""
        from metanas.supernet.model import ElasticBert

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return ElasticBert(self.teacher.config, self.space).eval()

    def warm_start(self) -> Any:
        """The warm-start decision (`resolve_warm_start`), or None when the strategy does not use it."""
        s = self.recipe.search
        if s.strategy != "evolution":
            return None
        from metanas.meta.warmstart import resolve_warm_start

        return resolve_warm_start(s.warm_start)

    def strategy(self) -> tuple[str, dict[str, Any], str]:
        """(strategy name, options, a line saying how the search starts)."""
        s = self.recipe.search
        options = dict(s.options)
        choice = self.warm_start()
        if choice is None:
            return s.strategy, options, f"{s.strategy} (no warm start for this strategy)"
        if choice.active:
            return "warm_evolution", {**options, "warm_start": str(choice.path)}, choice.message
        from metanas.search import strategy_options

        plain = set(strategy_options("evolution"))
        unused = sorted(k for k in options if k not in plain)
        if unused:
            logger.warning("no meta-predictor, so the warm-start options %s are not used", ", ".join(unused))
        return "evolution", {k: v for k, v in options.items() if k in plain}, choice.message

    # ----- stage control -------------------------------------------------
    def _check_recorded(self, log: StageLog, redo_allowed: Callable[[str], bool]) -> list[str]:
        """Stages whose records no longer match the recipe; raises when one may not be redone."""
        stale = []
        for stage in STAGES:
            record = log.stages.get(stage)
            if record is None or record.get("fingerprint") == self.fingerprints[stage]:
                continue
            changed = _changed_keys(record.get("inputs", {}), self.inputs[stage])
            why = f"changed: {', '.join(changed)}" if changed else "a stage it depends on changed"
            if not redo_allowed(stage):
                hint = (
                    "use another --out to train anew"
                    if stage == "train"
                    else "set export.overwrite=true to redo it and later stages, or use another --out"
                )
                raise ValueError(
                    f"{str(self.run_dir)!r} holds stage {stage!r} made with another recipe ({why}); {hint}"
                )
            stale.append(stage)
        return stale  # fingerprints include those of the stages consumed, so dependents are in the list

    def _clear_outputs(self, stage: str) -> None:
        paths = {
            "latency": [self.run_dir / LATENCY_DIR],
            "search": [self.run_dir / SEARCH_DIR],
            "export": [self.run_dir / MODEL_DIR, self.run_dir / BASELINE_DIR],
            "report": [],
        }[stage]
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)

    @contextlib.contextmanager
    def _session(self) -> Iterator[StageLog]:
        """The run dir prepared, the stage log loaded, the tracker open, torch threads set."""
        from metanas.tracking import Tracker

        r = self.recipe
        _prepare_run_dir(self.run_dir, self.adopt)
        (self.run_dir / RECIPE_FILE).write_text(r.to_yaml(), encoding="utf-8")
        (self.run_dir / SPACE_FILE).write_text(json.dumps(self.space.to_dict(), indent=1), encoding="utf-8")
        if self.teacher.path is not None and r.teacher.tiny:
            write_tiny_teacher(Path(self.teacher.path), seed=r.training.seed)
        log = StageLog(self.run_dir / STAGES_FILE)
        previous_threads = torch.get_num_threads()
        if r.threads is not None:
            torch.set_num_threads(r.threads)
        tracker = Tracker(
            self.run_dir,
            config=r.to_dict(),
            use_wandb=r.logging.wandb,
            project=r.logging.project,
            name=r.logging.name or self.run_dir.resolve().name,
            tags=[*r.logging.tags, "compress"],
        )
        self.tracker, self.log = tracker, log
        try:
            with tracker:
                yield log
        finally:
            torch.set_num_threads(previous_threads)
            self.tracker = None

    def run(self, stages: Sequence[str] = STAGES, redo: Sequence[str] = ()) -> StageLog:
        """Run `stages` in order, skipping completed ones; `redo` stages are rerun even when recorded."""
        overwrite = self.recipe.export.overwrite
        with self._session() as log:
            stale = self._check_recorded(log, lambda s: s != "train" and (overwrite or s in redo))
            for stage in stale:
                self._clear_outputs(stage)
            if stale:
                logger.warning("redoing stages %s: the recipe changed", ", ".join(stale))
                log.forget(stale)
            stage = stages[0]
            try:
                for stage in stages:
                    if log.done(stage):
                        logger.info("stage %s: done already, skipped", stage)
                        continue
                    later = [s for s in dependents(stage) if s in log.stages]
                    if later:  # their outputs were made from what this stage is about to replace
                        log.forget(later)
                    self._run_stage(stage, log)
            except KeyboardInterrupt:
                raise CompressInterrupted(stage, self.run_dir) from None
        return log

    def _run_stage(self, stage: str, log: StageLog) -> None:
        started = time.perf_counter()
        logger.info("stage %d/%d %s", STAGES.index(stage) + 1, len(STAGES), stage)
        log.start(stage, self.fingerprints[stage], self.inputs[stage])
        assert self.tracker is not None
        section = StageTracker(self.tracker, log.data["next_step"])
        info = getattr(self, f"_stage_{stage}")(log, section)
        log.data["next_step"] = section.last + 1
        log.finish(stage, time.perf_counter() - started, info)

    # ----- stages ------------------------------------------------------------
    def _stage_latency(self, log: StageLog, section: StageTracker) -> dict[str, Any]:
        if not _needs_latency(self.recipe):
            return {"skipped": "no latency budget, objective or measurement requested"}
        lat = self.recipe.search.latency
        out_dir = self.run_dir / LATENCY_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        sn = self._timing_supernet()
        info: dict[str, Any] = {"source": "measured per candidate" if lat.measure else "predictor"}
        if lat.measure:
            measure = MeasuredLatency(
                sn,
                out_dir / MEASURED_FILE,
                self.budget.batch_size,
                self.budget.seq_len,
                lat.threads,
                lat.warmup,
                lat.runs,
            )
            for arch in (self.space.smallest(), self.space.largest()):
                measure(arch)
        else:
            predictor = LatencyPredictor.build(
                sn,
                n=lat.predictor_archs,
                batch_size=self.budget.batch_size,
                seq_len=self.budget.seq_len,
                threads=lat.threads,
                cache_dir=lat.cache_dir,
                warmup=lat.warmup,
                runs=lat.runs,
                rounds=lat.rounds,
                seed=self.recipe.search.seed,
            )
            predictor.save(out_dir / PREDICTOR_FILE)
            info.update(archs_measured=len(predictor.measurements), holdout_mape=predictor.holdout_mape)
        cost_model = self.cost_model(sn)
        absolute = cost_model.check_feasible(self.search_budget)
        teacher = cost_model.teacher_costs(need_latency=True)
        info.update(teacher_latency_ms=teacher["latency_ms"], search_budget=dataclasses.asdict(absolute))
        section.log({"latency/teacher_ms": teacher["latency_ms"]}, step=0)
        return info

    def _stage_train(self, log: StageLog, section: StageTracker) -> dict[str, Any]:
        from metanas.tracking import read_metrics
        from metanas.train import CHECKPOINT_FILE, train_supernet

        r = self.recipe
        resume = (self.train_dir / CHECKPOINT_FILE).is_file()
        if not resume and self.train_dir.exists():  # a start that never reached its first checkpoint
            for p in self.train_dir.iterdir():
                if p.name != "cache":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        train_recipe = replace(
            r,
            teacher=replace(r.teacher, path=self.teacher.path, tiny=False),
            logging=replace(r.logging, wandb=False),  # the compress run's tracker carries W&B
        )
        result = train_supernet(train_recipe, self.train_dir, resume=resume)
        for record in read_metrics(self.train_dir):
            if "summary" in record:
                section.summary({f"train/{k}": v for k, v in record["summary"].items()})
            elif "step" in record:
                metrics = {f"train/{k}": v for k, v in record.items() if k not in ("step", "time")}
                section.log(metrics, step=record["step"])
        return {
            "steps": result.steps,
            "metric_name": result.metric_name,
            "before": result.before,
            "after": result.after,
            "final_losses": result.final_losses,
        }

    def _evaluator(self) -> Evaluator:
        from metanas.evaluate import Evaluator

        fit, _, _ = self.heldout
        if len(fit) == 0:
            raise ValueError("the validation split is empty; use more data or a larger data.validation_fraction")
        batches = batches_of(self.bundle.validation, fit, self.recipe.search.eval_batch_size, self.collate)
        return Evaluator(self.trained.supernet, self.objective, batches)

    def _stage_search(self, log: StageLog, section: StageTracker) -> dict[str, Any]:
        from metanas.meta.history import HistoryStore
        from metanas.search import run_search

        s = self.recipe.search
        sn = self.trained.supernet
        cost_model = self.cost_model(sn)
        if self.budget.latency_ms is not None and not cost_model.has_latency:
            raise ValueError("the latency budget has no latency model: run the latency stage first")
        name, options, how = self.strategy()
        logger.info("search: %s", how)
        task_meta = {
            "objective": self.recipe.objective.name,
            "corpus_size": len(self.bundle.train),
            "space": self.space.to_dict(),
        }
        with HistoryStore(s.history) as history:
            result = run_search(
                self._evaluator(),
                self.space,
                cost_model,
                self.search_budget,
                strategy_name=name,
                strategy_options=options,
                run_dir=self.run_dir / SEARCH_DIR,
                history=history,
                task_id=s.task_id or default_task_id(self.recipe),
                seed=s.seed,
                tracker=section,
                objectives=s.objectives,
                task_meta=task_meta,
            )
            history_url = history.url
        return {
            "strategy": name,
            "warm_start": how,
            "history": history_url,
            "best_arch": result.best_arch.to_dict(),
            "best_metric": result.best_metric,
            "metric_name": result.metric_name,
            "best_costs": result.best_costs,
            "num_evaluations": result.num_evaluations,
            "evals_per_minute": result.evals_per_minute,
            "budget": dataclasses.asdict(cost_model.check_feasible(self.budget)),
            "search_budget": dataclasses.asdict(cost_model.check_feasible(self.search_budget)),
        }

    def ranked_archs(self) -> Iterator[tuple[ArchConfig, None]]:
        """Every arch the search evaluated, best fitness first (the first is search.json's best)."""
        from metanas.search.runner import STATE_FILE

        path = self.run_dir / SEARCH_DIR / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no search state at {str(path)!r}; run the search stage first")
        evaluations = json.loads(path.read_text(encoding="utf-8"))["evaluations"]
        seen: set[ArchConfig] = set()
        for e in sorted(evaluations, key=lambda e: -e["fitness"]):
            arch = ArchConfig.from_dict(e["arch"])
            if arch not in seen:
                seen.add(arch)
                yield arch, None

    def baseline_archs(self) -> Iterator[tuple[ArchConfig, float]]:
        """Uniform-shrink archs within the search's budget (by the latency model), largest first."""
        cost_model = self.cost_model(self.trained.supernet)
        absolute = cost_model.check_feasible(self.search_budget)
        return uniform_shrink_candidates(self.space, lambda a: cost_model.feasible(a, absolute))

    def verified(
        self, candidates: Iterator[tuple[ArchConfig, Any]]
    ) -> tuple[ArchConfig, Any, list[dict[str, Any]] | None]:
        """The first candidate whose latency, measured beside the teacher's, meets the search's latency limit.

        The latency model chose the candidates; this check times each against the
        teacher in interleaved rounds (the report's protocol), so a model error or a
        change of machine load since the model was built cannot slip an over-budget
        arch through. A relative limit uses the faster of this teacher timing and the
        latency stage's (`_teacher_timing`). Up to `search.latency.verify` candidates are timed; when none
        passes, the one closest to the limit is used and the report says it is over.
        """
        from itertools import islice

        from metanas.report import measure_models_latency
        from metanas.supernet.export import build_subnet_model

        lat = self.recipe.search.latency
        limit = self.search_budget.latency_ms
        if limit is None or lat.verify == 0:
            arch, extra = next(candidates)
            return arch, extra, None
        sn = self.trained.supernet
        teacher = build_subnet_model(sn, self.space.largest())
        reference = self._teacher_timing()
        checks: list[dict[str, Any]] = []
        tried: list[tuple[ArchConfig, Any]] = []
        for arch, extra in islice(candidates, lat.verify):
            ms = measure_models_latency(
                {"teacher": teacher, "candidate": build_subnet_model(sn, arch)},
                self.space.vocab_size,
                self.budget.batch_size,
                self.budget.seq_len,
                lat.threads,
                self.recipe.report.latency_rounds,
                lat.warmup,
                lat.runs,
            )
            teacher_ms = min(ms["teacher"], reference)
            limit_ms = float(limit[:-1]) / 100 * teacher_ms if isinstance(limit, str) else float(limit)
            ok = ms["candidate"] <= limit_ms
            check = {"arch": arch.to_dict(), "ms": ms["candidate"], "teacher_ms": teacher_ms, "limit_ms": limit_ms}
            checks.append({**check, "ok": ok})
            if ok:
                return arch, extra, checks
            tried.append((arch, extra))
        closest = min(range(len(checks)), key=lambda i: checks[i]["ms"] / checks[i]["limit_ms"])
        logger.warning("none of %d candidates met the latency limit when timed; using the closest", len(checks))
        return tried[closest][0], tried[closest][1], checks

    def _teacher_timing(self) -> float:
        """The fastest timing of the teacher the latency stage made (inf without one).

        Load from other processes can slow the teacher more than a smaller candidate;
        a relative limit taken from the fastest teacher timing seen keeps the check
        valid for a quiet machine too.
        """
        lat_dir = self.run_dir / LATENCY_DIR
        largest = self.space.largest()
        if (lat_dir / PREDICTOR_FILE).is_file():
            measured = LatencyPredictor.load(lat_dir / PREDICTOR_FILE, self.space).measurements
            return min((ms for arch, ms, _ in measured if arch == largest), default=float("inf"))
        if (lat_dir / MEASURED_FILE).is_file():
            return float(json.loads((lat_dir / MEASURED_FILE).read_text()).get(largest.to_json(), float("inf")))
        return float("inf")

    def _stage_export(self, log: StageLog, section: StageTracker) -> dict[str, Any]:
        from metanas.supernet.convert import load_teacher_model

        e = self.recipe.export
        parts: dict[str, tuple[Callable[[], Iterator[tuple[ArchConfig, Any]]], Path]] = {
            "student": (self.ranked_archs, self.run_dir / MODEL_DIR)
        }
        if e.baseline:
            parts["baseline"] = (self.baseline_archs, self.run_dir / BASELINE_DIR)
        done: dict[str, Any] = dict(log.stages["export"].get("parts", {}))
        teacher = load_teacher_model(self.teacher.path) if e.distill_steps else None
        for i, (name, (candidates, out)) in enumerate(parts.items()):
            if name in done and out.is_dir():
                continue
            shutil.rmtree(out, ignore_errors=True)  # written by an attempt that did not record it
            arch, fraction, checks = self.verified(candidates())
            record = self._export_one(name, arch, out, teacher)
            record.update(fraction=fraction, latency_checks=checks)
            if record["distill"]:
                for step, h in enumerate(record["distill"].pop("history")):
                    section.log({f"export/{name}/{k}": v for k, v in h.items()}, step=i * (e.distill_steps + 1) + step)
            done[name] = record
            log.stages["export"]["parts"] = done
            log.save()
        return {"parts": done}

    def _export_one(self, name: str, arch: ArchConfig, out: Path, teacher: PreTrainedModel | None) -> dict[str, Any]:
        """Export `arch`, distil it when asked, and move it into `out` only when finished."""
        from transformers import AutoModel

        from metanas.supernet.export import ARCH_FILE, export

        e = self.recipe.export
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            export(
                self.trained.supernet, arch, tmp, tokenizer=self.tokenizer, overwrite=True, extra_info={"role": name}
            )
            distill_info = None
            if teacher is not None:
                model = AutoModel.from_pretrained(str(tmp), trust_remote_code=True)
                distill_info = distill(
                    model,
                    teacher,
                    self.bundle.train,
                    self.collate,
                    steps=e.distill_steps,
                    lr=e.distill_lr,
                    batch_size=e.distill_batch_size,
                    bf16=e.distill_bf16,
                    seed=self.recipe.training.seed,
                    desc=f"distill {name}",
                )
                _save_weights(model, tmp)
                info = json.loads((tmp / ARCH_FILE).read_text())
                info["final_distillation"] = {k: v for k, v in distill_info.items() if k != "history"}
                (tmp / ARCH_FILE).write_text(json.dumps(info, indent=2) + "\n")
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return {"arch": arch.to_dict(), "dir": out.name, "distill": distill_info}

    def _stage_report(self, log: StageLog, section: StageTracker) -> dict[str, Any]:
        report = self.build_report(log)
        from metanas.report import write_report

        json_path, _ = write_report(report, self.run_dir)
        section.log(
            {
                f"report/{role}/{k}": report[key][k]
                for role, key in (("teacher", "teacher"), ("student", "student"))
                for k in ("params", "latency_ms", "quality")
            },
            step=0,
        )
        section.summary(
            {
                "report/within_budget": report["within_budget"],
                "report/student_quality": report["student"]["quality"],
                "report/speedup": report["speedup"],
            }
        )
        self._log_artifact(report)
        return {"report": json_path.name, "within_budget": report["within_budget"]}

    def _log_artifact(self, report: Mapping[str, Any]) -> None:
        run = self.tracker.wandb_run if self.tracker is not None else None
        if run is None:
            return
        import wandb

        name = re.sub(r"[^\w.-]", "-", f"{self.run_dir.resolve().name}-student")
        keys = ("params", "flops_per_token", "latency_ms", "quality", "quality_metric")
        meta = {k: report["student"][k] for k in keys}
        artifact = wandb.Artifact(name, type="model", metadata={**meta, "arch": report["student"]["arch"]})
        artifact.add_dir(str(self.run_dir / MODEL_DIR))
        run.log_artifact(artifact)

    # ----- report ------------------------------------------------------------
    def build_report(self, log: StageLog) -> dict[str, Any]:
        """Teacher, student and baseline measured alike; see `metanas.report`."""
        from transformers import AutoModel

        from metanas.report import REPORT_FORMAT, dir_bytes, measure_models_latency, weights_bytes
        from metanas.supernet.convert import load_teacher_model

        r = self.recipe
        lat = r.search.latency
        parts = log.info("export")["parts"]
        models: dict[str, Any] = {"teacher": load_teacher_model(self.teacher.path)}
        arches = {"teacher": self.space.largest()}
        for role, key in ROLE_PARTS:
            if key in parts:
                models[role] = AutoModel.from_pretrained(str(self.run_dir / parts[key]["dir"]), trust_remote_code=True)
                arches[role] = ArchConfig.from_dict(parts[key]["arch"])
        latency = measure_models_latency(
            models,
            self.space.vocab_size,
            self.budget.batch_size,
            self.budget.seq_len,
            lat.threads,
            r.report.latency_rounds,
            lat.warmup,
            lat.runs,
        )
        quality = self._quality(models, arches)
        seq = self.budget.seq_len
        entries: dict[str, dict[str, Any]] = {}
        for role, model in models.items():
            arch = arches[role]
            entries[role] = {
                "arch": arch.to_dict(),
                "params": self.space.params(arch),
                "non_embedding_params": self.space.params(arch, embeddings=False),
                "flops_per_token": self.space.flops(arch, seq),
                "latency_ms": latency[role],
                "size_bytes": weights_bytes(model),
                **quality[role],
            }
        entries["teacher"]["source"] = self.teacher.source
        entries["student"]["dir_bytes"] = dir_bytes(self.run_dir / MODEL_DIR)
        entries["student"]["vanilla"] = json.loads((self.run_dir / MODEL_DIR / "metanas_arch.json").read_text())[
            "vanilla"
        ]
        if "uniform_baseline" in entries:
            entries["uniform_baseline"]["fraction"] = parts["baseline"]["fraction"]
        check = self._budget_check(entries, log)
        search = log.info("search")
        plots = self._copy_plots()
        _, report_range, overlap = self.heldout
        return {
            "format": REPORT_FORMAT,
            "run_name": self.run_dir.resolve().name,
            "objective": r.objective.name,
            "teacher": entries["teacher"],
            "student": entries["student"],
            "uniform_baseline": entries.get("uniform_baseline"),
            "budget": {
                "requested": {k: v for k, v in dataclasses.asdict(self.budget).items()},
                "resolved": search["budget"],
                "searched_under": search["search_budget"],
                "description": describe_budget(self.budget),
            },
            "within_budget": all(c["ok"] for c in check.values()),
            "budget_check": check,
            "export_dir": MODEL_DIR,
            "speedup": entries["teacher"]["latency_ms"] / entries["student"]["latency_ms"],
            "held_out": {"examples": len(report_range), "overlap": overlap},
            "search": {
                k: search[k] for k in ("strategy", "warm_start", "num_evaluations", "best_metric", "metric_name")
            },
            "distillation": {"steps": r.export.distill_steps, "lr": r.export.distill_lr},
            "latency_checks": {role: parts[key].get("latency_checks") for role, key in ROLE_PARTS if key in parts},
            "plots": plots,
            "stage_seconds": {s: rec.get("seconds", 0.0) for s, rec in log.stages.items() if rec.get("done")},
            "recipe": r.to_dict(),
            "recipe_file": RECIPE_FILE,
        }

    def _quality(self, models: Mapping[str, Any], arches: Mapping[str, ArchConfig]) -> dict[str, dict[str, Any]]:
        """The quality metric of each model on the report's held-out examples."""
        from metanas.report import EMBEDDING_METRIC, embed, embedding_agreement, load_subnet_weights, objective_quality

        _, report_range, _ = self.heldout
        batches = batches_of(self.bundle.validation, report_range, self.recipe.report.batch_size, self.collate)
        out: dict[str, dict[str, Any]] = {}
        if self.recipe.objective.name in EMBEDDING_OBJECTIVES:
            reference = embed(models["teacher"], batches)
            for role, model in models.items():
                agreement = embedding_agreement(embed(model, batches), reference)
                out[role] = {
                    "quality": agreement[EMBEDDING_METRIC],
                    "quality_metric": EMBEDDING_METRIC,
                    "higher_is_better": True,
                    "embedding_cosine": agreement["embedding_cosine"],
                }
            return out
        teacher_sn = self.trained.original_teacher()
        for role, model in models.items():
            sn = teacher_sn if role == "teacher" else self.trained.supernet
            if role != "teacher":
                load_subnet_weights(sn, arches[role], model)
            name, value, higher = objective_quality(self.objective, sn, arches[role], batches)
            out[role] = {"quality": value, "quality_metric": name, "higher_is_better": higher}
        return out

    def _budget_check(self, entries: Mapping[str, Mapping[str, Any]], log: StageLog) -> dict[str, dict[str, Any]]:
        """Each limit against the exported student; a relative latency limit against the teacher re-measured now."""
        resolved = log.info("search")["budget"]
        student, teacher = entries["student"], entries["teacher"]
        check = {}
        for key, requested in self.budget.limits().items():
            limit = resolved[key]
            if key == "latency_ms" and isinstance(requested, str):
                limit = float(requested[:-1]) / 100 * teacher["latency_ms"]
            value = student["flops_per_token"] if key == "flops" else student[key]
            check[key] = {"limit": limit, "value": value, "ok": bool(value <= limit)}
        return check

    def _copy_plots(self) -> dict[str, str]:
        from metanas.search.runner import CURVE_PLOT, PARETO_PLOT

        out = {}
        for key, name in (("pareto", PARETO_PLOT), ("curve", CURVE_PLOT)):
            src = self.run_dir / SEARCH_DIR / name
            if src.is_file():
                shutil.copy2(src, self.run_dir / name)
            out[key] = name
        return out


def describe_budget(budget: Budget) -> str:
    """'latency_ms <= 50% of the teacher, params <= 10,000,000 (batch 1 x seq 128)'."""
    parts = []
    for key, limit in budget.limits().items():
        value = f"{limit} of the teacher" if isinstance(limit, str) else f"{limit:,.6g}"
        parts.append(f"{key} <= {value}")
    text = ", ".join(parts) or "none (unconstrained)"
    return f"{text} (batch {budget.batch_size} x seq {budget.seq_len})"


# --------------------------------------------------------------------------- entry points


def compress(recipe: Recipe, run_dir: str | os.PathLike) -> CompressResult:
    """Run (or resume) every stage of `recipe` in `run_dir` and return the report."""
    run = CompressRun(recipe, run_dir)
    run.run()
    from metanas.report import REPORT_JSON

    path = run.run_dir / REPORT_JSON
    return CompressResult(run.run_dir, json.loads(path.read_text(encoding="utf-8")), path, run.run_dir / MODEL_DIR)


def find_train_dir(run_dir: Path) -> Path:
    """Where a run directory keeps its trained supernet: `train/` of a compress run, or the dir itself."""
    from metanas.train import SUPERNET_FILE

    for candidate in (run_dir / TRAIN_DIR, run_dir):
        if (candidate / SUPERNET_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"no trained supernet in {str(run_dir)!r} (looked for {TRAIN_DIR}/{SUPERNET_FILE} and {SUPERNET_FILE}); "
        "run `metanas compress` or `metanas train-supernet` first"
    )


def search_only(recipe: Recipe, run_dir: str | os.PathLike) -> dict[str, Any]:
    """The search stage alone on a run dir holding a trained supernet (a compress or a train-supernet run).

    A finished search with the same settings is reported, not repeated; one with
    other settings is replaced (the later stages of a compress run are then redone
    by the next `compress`).
    """
    run_dir = Path(run_dir)
    train_dir = find_train_dir(run_dir)
    run = CompressRun(recipe, run_dir, train_dir=train_dir)
    if train_dir == run_dir / TRAIN_DIR:
        log = StageLog(run_dir / STAGES_FILE)
        if not log.done("train"):
            raise ValueError(f"the train stage of {str(run_dir)!r} has not finished; resume it with `metanas compress`")
    log = run.run(stages=("latency", "search"), redo=("latency", "search", "export", "report"))
    return log.info("search")


def export_arch(run_dir: str | os.PathLike, arch: ArchConfig | None, out: str | os.PathLike, overwrite: bool) -> Path:
    """Export `arch` (default: the search's best) of the supernet trained in `run_dir` to `out`."""
    from transformers import AutoTokenizer

    from metanas.search.runner import RESULT_FILE
    from metanas.supernet.export import export
    from metanas.train import load_trained_supernet

    run_dir = Path(run_dir)
    trained = load_trained_supernet(find_train_dir(run_dir))
    if arch is None:
        path = run_dir / SEARCH_DIR / RESULT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no search result at {str(path)!r}; run `metanas search` first or pass --arch")
        arch = ArchConfig.from_dict(json.loads(path.read_text(encoding="utf-8"))["best"]["arch"])
    trained.supernet.space.validate(arch)
    tokenizer = AutoTokenizer.from_pretrained(str(trained.tokenizer_path))
    try:
        return export(trained.supernet, arch, out, tokenizer=tokenizer, overwrite=overwrite)
    except FileExistsError as e:
        raise ValueError(f"{e} (pass --overwrite)") from None


# --------------------------------------------------------------------------- dry run


@dataclass
class Timing:
    """Seconds for one forward and one forward+backward of the teacher-shaped model, measured here."""

    batch_size: int
    seq_len: int
    forward_s: float
    forward_backward_s: float


def time_teacher_shape(config: PretrainedConfig, batch_size: int, seq_len: int, bf16: bool) -> Timing:
    """Time the teacher's architecture (random weights, no download) on one batch: the unit of every estimate."""
    from transformers import AutoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModel.from_config(config)
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len))
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=bf16)

    def forward_backward() -> float:
        start = time.perf_counter()
        with autocast:
            out = model(input_ids=ids).last_hidden_state.float().sum()
        out.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    def forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode(), autocast:
            model(input_ids=ids)
        return time.perf_counter() - start

    for _ in range(2):  # warm-up: the first calls allocate and pick kernels
        forward_backward()
    fb = min(forward_backward() for _ in range(3))
    fw = min(forward() for _ in range(3))
    return Timing(batch_size, seq_len, fw, fb)


def _fmt_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def search_evaluations(recipe: Recipe) -> int:
    """How many archs the configured strategy evaluates (its schedule, before de-duplication)."""
    from metanas.search import STRATEGIES

    s = recipe.search
    name = s.strategy
    import inspect

    params = inspect.signature(STRATEGIES[name]).parameters
    opts = {k: v.default for k, v in params.items() if v.default is not inspect.Parameter.empty}
    opts.update(s.options)
    if name == "random":
        return int(opts["num_samples"])
    return int(opts["population_size"]) * int(opts["generations"])


def plan(recipe: Recipe, run_dir: str | os.PathLike, measure: bool = True) -> str:
    """What `compress` would do, and roughly how long it would take, without doing it.

    Resolves the teacher's config (a hub id that cannot be fetched offline is named
    as unresolved instead of failing), the space and every budget that formulas can
    resolve; times one forward/backward of the teacher's shape here (`measure`) to
    estimate each stage.
    """
    from metanas.meta.history import DEFAULT_PATH, ENV_VAR

    r = recipe
    run_dir = Path(run_dir)
    teacher = resolve_teacher(r, None, allow_unresolved=True)
    lines = ["metanas compress: plan (dry run, nothing is written)", f"run dir: {run_dir}"]
    log_path = run_dir / STAGES_FILE
    if log_path.is_file():
        done = [s for s in STAGES if StageLog(log_path).done(s)]
        lines.append(f"  existing run: completed stages {', '.join(done) or 'none'}; compress resumes after them")
    lines.append(f"teacher: {teacher.source}")
    if teacher.config is None:
        lines.append(f"  UNRESOLVED: {teacher.problem}")
        lines.append("  (space size, budgets in absolute terms and cost estimates need the teacher's config)")
    d = r.data
    lines.append(
        f"data: {d.source}" + (f" ({d.hf_config})" if d.hf_config else "") + f", split {d.split}, text column "
        f"{d.text_column!r}"
        + (f", label column {d.label_column!r}" if d.label_column else "")
        + f", max_length {d.max_length}, validation {d.validation_fraction:.0%} (not loaded in a dry run)"
    )
    lines.append(f"objective: {r.objective.name} {r.objective.options or ''}".rstrip())
    budget = r.budget.to_budget()
    lines.append(f"budget: {describe_budget(budget)}")
    space = None
    timing = None
    if teacher.config is not None:
        c = teacher.config
        space = SearchSpace.from_teacher_config(c, **r.space)
        top = space.largest()
        lines.append(
            f"  teacher: {c.model_type}, {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
            f"{c.num_attention_heads} heads, FFN {c.intermediate_size}: {space.params(top):,} params, "
            f"{space.flops(top, budget.seq_len) / 1e6:.1f} MFLOPs/token at seq {budget.seq_len}"
        )
        cm = CostModel(space, budget.seq_len, budget.batch_size)
        absolute = cm.check_feasible(replace(budget, latency_ms=None))
        for key, limit in absolute.limits().items():
            lines.append(f"  {key} <= {limit:,.6g} ({100 * limit / cm.teacher_costs()[key]:.0f}% of the teacher)")
        if budget.latency_ms is not None:
            what = f"{budget.latency_ms} of the teacher's" if isinstance(budget.latency_ms, str) else "an absolute"
            lines.append(f"  latency_ms: {what} latency, measured in stage 1 on this machine before training")
        lines.append(
            f"space: depth {list(space.depth_choices)}, hidden {list(space.hidden_choices)}, heads per layer "
            f"{list(space.head_choices)}, FFN per layer {list(space.ffn_choices)}: {space.size():.3g} archs"
        )
        if measure:
            previous = torch.get_num_threads()
            torch.set_num_threads(r.threads or previous)
            try:
                timing = time_teacher_shape(c, r.training.batch_size, d.max_length, r.training.bf16)
            finally:
                torch.set_num_threads(previous)
            lines.append(
                f"measured here: teacher-shaped forward+backward {timing.forward_backward_s:.2f} s, forward "
                f"{timing.forward_s:.2f} s (batch {timing.batch_size} x {timing.seq_len} tokens"
                f"{', bf16' if r.training.bf16 else ''})"
            )
    lines.append("stages:")
    lines += _plan_stages(r, space, budget, timing, _warm_choice(r))
    history = r.search.history or os.environ.get(ENV_VAR) or str(DEFAULT_PATH)
    lines.append(f"history store: {history}")
    return "\n".join(lines)


def _plan_stages(r: Recipe, space: SearchSpace | None, budget: Budget, timing: Timing | None, warm: Any) -> list[str]:
    t, s, e, lat = r.training, r.search, r.export, r.search.latency
    estimates: dict[str, float | None] = dict.fromkeys(STAGES)
    per_unit = dict.fromkeys(STAGES, "")
    ratio = {"largest": 1.0, "smallest": 1.0, "middle": 1.0, "budget": 1.0}
    if space is not None:
        from metanas.train import middle_arch

        flops = space.flops(space.largest(), r.data.max_length)
        ratio.update(
            smallest=space.flops(space.smallest(), r.data.max_length) / flops,
            middle=space.flops(middle_arch(space), r.data.max_length) / flops,
        )
        ratio["budget"] = _budget_fraction(budget, space, r.data.max_length, ratio["middle"])
    teacher_fwd = r.objective.name == "kd"
    evaluations = search_evaluations(r)
    if warm is not None and warm.active:  # the anchors are scored first (those within the budget)
        evaluations += int(warm.predictor.encoding["anchor_k"])
    if timing is not None:
        per_example_fw = timing.forward_s / timing.batch_size
        subnets = [ratio["largest"], ratio["smallest"]] + [ratio["middle"]] * t.num_random
        if t.sampling == "uniform":
            subnets = [ratio["middle"]]
        step = t.grad_accum * (timing.forward_backward_s * sum(subnets) + (timing.forward_s if teacher_fwd else 0))
        estimates["train"] = t.steps * step
        per_unit["train"] = f", {step:.2f} s/step"
        evaluation = s.eval_batches * s.eval_batch_size * per_example_fw * ratio["budget"]
        per_unit["search"] = f", {evaluation:.2f} s/evaluation"
        estimates["search"] = evaluations * evaluation
        scale = e.distill_batch_size / timing.batch_size
        per_distill = scale * (timing.forward_backward_s * ratio["budget"] + timing.forward_s)
        estimates["export"] = (2 if e.baseline else 1) * e.distill_steps * per_distill
        latency_tokens = budget.batch_size * budget.seq_len / (timing.batch_size * timing.seq_len)
        one_latency = timing.forward_s * latency_tokens
        if _needs_latency(r):
            n = 2 if lat.measure else lat.predictor_archs
            estimates["latency"] = n * (1 if lat.measure else lat.rounds) * (lat.warmup + lat.runs) * one_latency * 0.6
        else:
            estimates["latency"] = 0.0
        models = 3 if e.baseline else 2
        if budget.latency_ms is not None and lat.verify:  # one candidate timed beside the teacher per model
            rounds = r.report.latency_rounds
            estimates["export"] += (models - 1) * rounds * 2 * (lat.warmup + lat.runs) * one_latency * 0.75
        estimates["report"] = (
            models * r.report.latency_rounds * (lat.warmup + lat.runs) * one_latency * 0.7
            + models * r.report.examples * per_example_fw * 0.7
        )
    warm_line = "no warm start for this strategy" if warm is None else warm.message
    if not _needs_latency(r):
        latency_line = "skipped (no latency budget or objective)"
    else:
        how = (
            f"time every candidate ({lat.warmup}+{lat.runs} runs each)"
            if lat.measure
            else f"fit a latency predictor on {lat.predictor_archs} measured archs (cached in {lat.cache_dir})"
        )
        latency_line = f"{how}; check the latency budget is reachable"
    distill = (
        f"final distillation {e.distill_steps} steps (batch {e.distill_batch_size}, lr {e.distill_lr:g}) each"
        if e.distill_steps
        else "no final distillation (export.distill_steps=0)"
    )
    rows = [
        ("latency", latency_line),
        (
            "train",
            f"convert{' + rewire' if r.teacher.rewire else ''} the teacher; train the supernet {t.steps} steps "
            f"({t.sampling}{f', {2 + t.num_random} subnets' if t.sampling == 'sandwich' else ''}, batch "
            f"{t.batch_size} x {r.data.max_length} tokens{', bf16' if t.bf16 else ''})",
        ),
        (
            "search",
            f"{s.strategy}: {evaluations} evaluations on {s.eval_batches} x {s.eval_batch_size} validation "
            f"examples; {warm_line}",
        ),
        ("export", "best arch" + (" + uniform-shrink baseline" if e.baseline else "") + f"; {distill}"),
        (
            "report",
            f"teacher vs student{' vs baseline' if e.baseline else ''}: params, FLOPs, latency "
            f"({r.report.latency_rounds} rounds), size, quality on {r.report.examples} held-out examples",
        ),
    ]
    lines = []
    for i, (stage, text) in enumerate(rows, 1):
        est = estimates[stage]
        suffix = "" if est is None else f"  [~{_fmt_seconds(est)}{per_unit[stage]}]"
        lines.append(f"  {i}. {stage:8s} {text}{suffix}")
    known = [v for v in estimates.values() if v is not None]
    if timing is not None and len(known) == len(STAGES):
        lines.append(
            f"estimated total: ~{_fmt_seconds(sum(known))} (from the timing above, scaled by FLOPs; "
            "a loaded machine is slower)"
        )
    else:
        lines.append("estimated total: unknown (the teacher's config is unresolved)")
    return lines


def _budget_fraction(budget: Budget, space: SearchSpace, seq_len: int, default: float) -> float:
    """The share of the teacher's FLOPs a within-budget subnet has at most (latency ~ FLOPs)."""
    top = space.largest()
    fractions = []
    for key, limit in budget.limits().items():
        if isinstance(limit, str):
            fractions.append(float(limit[:-1]) / 100)
        elif key == "flops":
            fractions.append(limit / space.flops(top, seq_len))
        elif key in ("params", "non_embedding_params"):
            fractions.append(limit / space.params(top, embeddings=key == "params"))
    return min([1.0, *fractions]) if fractions else default


def _warm_choice(r: Recipe) -> Any:
    """The warm-start decision for the plan (None: the strategy has no warm start); a bad PATH is an error."""
    if r.search.strategy != "evolution":
        return None
    from metanas.meta.warmstart import resolve_warm_start

    try:
        return resolve_warm_start(r.search.warm_start)
    except (OSError, ValueError) as e:
        raise ValueError(f"search.warm_start: {e}") from None
