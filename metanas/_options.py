"""One check for option mappings (strategy options, objective options): unknown keys name the allowed ones."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


def check_options(what: str, options: Mapping[str, Any], allowed: Iterable[str], prefix: str = "") -> None:
    """Raise ValueError listing the unknown keys of `options`, the nearest allowed key, and every allowed one.

    `prefix` is put before the suggested key (e.g. "options." where the user wrote it in a recipe).
    """
    allowed = list(allowed)
    unknown = sorted(k for k in options if k not in allowed)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown option(s) {', '.join(map(repr, unknown))} for {what}{hint}; allowed options: {', '.join(allowed)}"
    )
