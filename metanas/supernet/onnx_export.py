"""Deployment formats of an exported encoder: ONNX (fp32) and ONNX with int8 weights.

`export.format` decides what ships and therefore what is timed and scored: the
latency model, the pre-export check and the report all run the format that ships,
because an ONNX Runtime session (let alone an int8 one) is not as fast as the torch
model it came from, and a budget met in one format says little about another.

Files follow the layout sentence-transformers' ONNX backend and optimum read:
`onnx/model.onnx` (fp32) and `onnx/model_qint8.onnx` (dynamic quantization, int8
weights), beside the torch weights, config and tokenizer of the same directory.
`OnnxEncoder` runs such a file with the call signature of a HF encoder, so code
that embeds with a torch model (`metanas.report.embed`) runs it unchanged.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModel
from transformers.modeling_outputs import BaseModelOutput

from metanas._io import atomic_dir, atomic_write_json
from metanas.formats import FORMATS, INSTALL_HINT, missing_modules
from metanas.supernet.export import ARCH_FILE
from metanas.supernet.families import MODEL_INPUTS

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"
FORMAT_FILES = {"onnx": f"{ONNX_DIR}/{ONNX_FILE}", "onnx-int8": f"{ONNX_DIR}/{INT8_FILE}"}
OUTPUT = "last_hidden_state"


def require_format(fmt: str, field: str = "export.format") -> None:
    """Fail early, with the fix, when `fmt` is unknown or needs packages that are missing."""
    if fmt not in FORMATS:
        raise ValueError(f"{field} must be one of {list(FORMATS)}, got {fmt!r}")
    missing = missing_modules(fmt)
    if missing:
        raise ImportError(f"{field}: {fmt!r} needs {', '.join(missing)}, which are not installed: {INSTALL_HINT}")


def onnx_available() -> bool:
    return not missing_modules("onnx")


def encoder_inputs(model: nn.Module) -> tuple[str, ...]:
    """The HF encoder inputs (of `MODEL_INPUTS`) that `model.forward` accepts, in that order."""
    params = inspect.signature(model.forward).parameters
    return tuple(name for name in MODEL_INPUTS if name in params)


class _LastHiddenState(nn.Module):
    """Positional inputs in, `last_hidden_state` out: the graph deployment runtimes expect (no pooler output)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, tuple(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).last_hidden_state


def _example_inputs(model: nn.Module, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """Batch 2 x 16 tokens, one row padded: no dimension of size 0 or 1 for the tracer to specialise on."""
    vocab = int(getattr(model.config, "vocab_size", 100))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, max(vocab, 4), (2, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return tuple(values[n] for n in names)


EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")


@contextmanager
def _quiet(names: Sequence[str], level: int) -> Iterator[None]:
    """Raise the named loggers ("" is the root logger) to `level` while the block runs."""
    loggers = [logging.getLogger(name or None) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(level)
    try:
        yield
    finally:
        for log, old in zip(loggers, levels):
            log.setLevel(old)


def _torch_to_onnx(model: nn.Module, path: Path) -> None:
    """`torch.onnx.export` (the torch.export-based exporter) with dynamic batch and sequence axes."""
    names = encoder_inputs(model)
    if "input_ids" not in names or "attention_mask" not in names:
        raise ValueError(f"onnx export: {type(model).__name__} does not take input_ids and attention_mask")
    was_training = model.training
    wrapper = _LastHiddenState(model, names).eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        # the exporter's optimizer logs every rewrite at INFO (a thousand lines per model under the CLI's logging)
        with _quiet(EXPORTER_LOGGERS, logging.WARNING), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            with torch.inference_mode(False):
                torch.onnx.export(
                    wrapper,
                    _example_inputs(model, names),
                    str(path),
                    input_names=list(names),
                    output_names=[OUTPUT],
                    dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),),  # one entry: forward's *inputs
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
    finally:
        model.train(was_training)


def _quantize(src: Path, dst: Path) -> None:
    """onnxruntime's dynamic quantization: int8 weights, one scale per output channel, activations per batch.

    Per-channel weight scales: on all-MiniLM-L6-v2 they lift the int8 model's embedding
    Spearman against fp32 from 0.954 (one scale per tensor, onnxruntime's default) to
    0.991 at the same latency (docs/benchmarks.md, "Deployment formats").
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet([""], logging.ERROR):  # it logs a "consider pre-processing" hint on the root logger every call
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def export_onnx(model: nn.Module, model_dir: str | os.PathLike, fmt: str) -> Path:
    """Write `model_dir/onnx/` for `fmt` (onnx: model.onnx; onnx-int8: also model_qint8.onnx); return the shipped file.

    The `onnx/` directory is written whole into a temporary sibling and renamed into
    place, so a failure leaves no partial file. The fp32 file stays beside the int8
    one: it is what the int8 file was made from, and runtimes choose between them.
    """
    require_format(fmt)
    if fmt == "torch":
        raise ValueError("export_onnx: format 'torch' has no ONNX file")
    out = Path(model_dir) / ONNX_DIR
    with atomic_dir(out, overwrite=True) as tmp:
        with interrupt_after():
            _torch_to_onnx(model, tmp / ONNX_FILE)
            if fmt == "onnx-int8":
                _quantize(tmp / ONNX_FILE, tmp / INT8_FILE)
    return Path(model_dir) / FORMAT_FILES[fmt]


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then raise KeyboardInterrupt.

    torch.onnx's exporter catches the KeyboardInterrupt raised inside it and carries on
    (found by the compress Ctrl-C test), so a run interrupted while exporting would not
    stop; an export takes seconds, so deferring the interrupt to its end is cheap.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def write_format(model_dir: str | os.PathLike, fmt: str) -> Path | None:
    """Add the `fmt` files to an exported model directory and record them in its `metanas_arch.json`.

    The model is loaded from the directory's own torch weights, so the ONNX file is
    exactly what was saved (after any final distillation). `torch` writes nothing.
    """
    require_format(fmt)
    if fmt == "torch":
        return None
    model_dir = Path(model_dir)
    model = AutoModel.from_pretrained(str(model_dir), trust_remote_code=True).eval()
    shipped = export_onnx(model, model_dir, fmt)
    info_path = model_dir / ARCH_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info.update(format=fmt, onnx_file=shipped.relative_to(model_dir).as_posix())
    atomic_write_json(info, info_path)
    return shipped


class OnnxEncoder:
    """An ONNX Runtime session with a HF encoder's call: `enc(input_ids=..., attention_mask=...).last_hidden_state`.

    `threads` is the session's intra-op thread count (None: ONNX Runtime's default),
    the counterpart of torch's thread count for timing. `eval`/`train` are no-ops so
    that code written for `nn.Module` encoders runs it as is.
    """

    training = False

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.path = Path(path)
        self.size_bytes = self.path.stat().st_size  # what ships; kept: `as_format`'s temporary file goes away
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, **inputs: Any) -> BaseModelOutput:
        ids = inputs["input_ids"]
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None:
                value = torch.zeros_like(ids) if name == "token_type_ids" else torch.ones_like(ids)
            feed[name] = np.ascontiguousarray(torch.as_tensor(value).detach().cpu().numpy(), dtype=np.int64)
        (hidden,) = self.session.run([OUTPUT], feed)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))

    def eval(self) -> OnnxEncoder:
        return self

    def train(self, mode: bool = True) -> OnnxEncoder:
        return self

    def __repr__(self) -> str:
        return f"OnnxEncoder({self.path.name!r}, inputs={list(self.input_names)})"


def load_encoder(model_dir: str | os.PathLike, fmt: str, threads: int | None = None) -> OnnxEncoder:
    """The shipped ONNX file of an exported model directory, ready to run."""
    if fmt not in FORMAT_FILES:
        raise ValueError(f"load_encoder: format must be one of {list(FORMAT_FILES)}, got {fmt!r}")
    path = Path(model_dir) / FORMAT_FILES[fmt]
    if not path.is_file():
        raise FileNotFoundError(f"no {fmt} file at {str(path)!r}; export with export.format: {fmt}")
    return OnnxEncoder(path, threads)


def as_format(model: nn.Module, fmt: str, threads: int | None = None) -> nn.Module | OnnxEncoder:
    """`model` as it would ship in `fmt`: itself for torch, else an in-memory ONNX Runtime session of its export.

    The files go to a temporary directory that is removed once the session has
    loaded them (a session keeps its own copy of the graph).
    """
    if fmt == "torch":
        return model
    with tempfile.TemporaryDirectory(prefix="metanas-onnx-") as tmp:
        return OnnxEncoder(export_onnx(model, tmp, fmt), threads)


def as_formats(model: nn.Module, formats: Sequence[str], threads: int | None = None) -> dict[str, OnnxEncoder]:
    """Sessions of `model` in several ONNX formats from a single export (int8 is made from the fp32 file)."""
    if any(f not in FORMAT_FILES for f in formats):
        raise ValueError(f"as_formats: formats must be among {list(FORMAT_FILES)}, got {list(formats)}")
    with tempfile.TemporaryDirectory(prefix="metanas-onnx-") as tmp:
        export_onnx(model, tmp, "onnx-int8" if "onnx-int8" in formats else "onnx")
        return {f: OnnxEncoder(Path(tmp) / FORMAT_FILES[f], threads) for f in formats}
