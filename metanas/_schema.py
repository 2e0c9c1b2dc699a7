"""The recipe validator: build a dataclass tree from plain YAML data, checking keys, types, ranges and choices.

Generic (it knows no recipe section), so the schema in `metanas.config` stays the list of
sections and their rules. Field metadata `check` (a callable returning a problem or None)
and `choices` (a callable returning the allowed values) are read here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal


def suggest(key: str, allowed: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {join(prefix, close[0])!r}?)" if close else ""


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass `cls` from `data`, checking keys, types, ranges and choices."""
    where = prefix or "recipe"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            dotted = join(prefix, str(key))
            raise ValueError(
                f"unknown key {dotted!r}{suggest(str(key), fields, prefix)}; valid keys in {where}: {', '.join(fields)}"
            )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = join(prefix, name)
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


def _coerce_union(value: Any, args: tuple[Any, ...], key: str) -> Any:
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


def _coerce_container(value: Any, origin: Any, args: tuple[Any, ...], key: str) -> Any:
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping, got {value!r}")
    return {str(k): _coerce(v, args[1] if args else Any, join(key, str(k))) for k, v in value.items()}


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-4` (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if tp in _TYPE_NAMES:
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise ValueError(f"{key} must be {_TYPE_NAMES[tp]}, got {value!r}")
    raise TypeError(f"{key}: the recipe schema uses an unsupported annotation {tp!r}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; ints become floats where a float is expected."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, key)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (list, dict):
        return _coerce_container(value, origin, args, key)
    return _coerce_scalar(value, tp, key)
