"""The deployment formats `export.format` names, and the packages the ONNX ones need.

Torch-free, so the recipe schema (`metanas.config`) checks a format at load time with
the same names and the same install hint the exporter (`metanas.supernet.onnx_export`) uses.
"""

from __future__ import annotations

import importlib.util

FORMATS = ("torch", "onnx", "onnx-int8")
ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")  # torch.onnx's exporter needs onnxscript
INSTALL_HINT = "pip install 'metanas[onnx]'"


def missing_modules(fmt: str) -> list[str]:
    """The packages format `fmt` needs that are not installed (checked without importing them)."""
    if fmt == "torch":
        return []
    return [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]
