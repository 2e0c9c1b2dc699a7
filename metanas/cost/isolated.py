"""Time saved models in a fresh process, as the latency model was timed at the start of a run.

A compress run's report used to time the exported models in the process that had just
trained the supernet, searched and distilled three models. Timed there, the quickstart's
student measured 52% of the teacher; the same files timed by a fresh process, 47%
(docs/benchmarks.md, "Session 6"). The report's budget check is against a latency model
measured in a fresh process, so the models it checks are timed in one too: each model is
named by where it is saved, loaded by a spawned process and timed there.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

MODEL_KINDS = ("teacher", "hf", "onnx")


@dataclass(frozen=True)
class SavedModel:
    """A model on disk: `teacher` (a teacher checkpoint, base encoder), `hf` (an exported model directory,
    custom code allowed) or `onnx` (an ONNX file)."""

    kind: str
    path: str

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"SavedModel.kind must be one of {list(MODEL_KINDS)}, got {self.kind!r}")

    def load(self, threads: int | None) -> Any:
        if self.kind == "teacher":
            from metanas.supernet.convert import load_teacher_model

            return load_teacher_model(self.path)
        if self.kind == "hf":
            from transformers import AutoModel

            return AutoModel.from_pretrained(self.path, trust_remote_code=True).eval()
        from metanas.supernet.onnx_export import OnnxEncoder

        return OnnxEncoder(self.path, threads)


def _time_saved(models: Mapping[str, SavedModel], *timing: Any) -> dict[str, list[float]]:
    """The spawned process: load every model, then time them in interleaved rounds.

    `timing` is `measure_models_rounds`' arguments after the models (vocab size, batch
    size, sequence length, threads, ...); ONNX sessions are made with its thread count.
    """
    from metanas.cost.latency import measure_models_rounds

    threads = timing[3]
    return measure_models_rounds({name: saved.load(threads) for name, saved in models.items()}, *timing)


def measure_saved_models(
    models: Mapping[str, SavedModel],
    vocab_size: int,
    batch_size: int,
    seq_len: int,
    threads: int | None = None,
    rounds: int = 3,
    warmup: int = 10,
    runs: int = 50,
) -> dict[str, list[float]]:
    """`measure_models_rounds` of saved models, in a freshly spawned process (a few seconds to start)."""
    timing = (vocab_size, batch_size, seq_len, threads, rounds, warmup, runs)
    # an executor shuts its worker down and joins it (a Pool's terminate leaves semaphores behind, and Python
    # warns about them at exit)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_time_saved, dict(models), *timing).result()
