"""export.format onnx / onnx-int8: the files, their numbers outside metanas, timing and the recipe checks."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import REPO, child_env, tiny_tokenizer
from tiny_models import random_batch, tiny_teacher

import metanas
from metanas import ArchConfig
from metanas.config import EXPORT_FORMATS, Recipe, load_recipe
from metanas.cost.latency import device_fingerprint, measure_arch_latency, measure_models_latency
from metanas.report import embed
from metanas.supernet.onnx_export import (
    FORMATS,
    INT8_FILE,
    ONNX_FILE,
    OnnxEncoder,
    as_format,
    export_onnx,
    load_encoder,
    write_format,
)

pytest.importorskip("onnxruntime")

FP32_ATOL = 1e-4  # fp32 ONNX vs torch, max abs difference of the last hidden state
INT8_MIN_COSINE = 0.99  # int8 vs torch, cosine of mean-pooled embeddings (measured ~0.9999 on the tiny BERT)

# Runs the exported files with onnxruntime alone: metanas (and torch) must not be needed to deploy them.
RUN_ONNX = textwrap.dedent(
    """
    import sys
    sys.modules["metanas"] = None  # metanas must not be importable in this process
    import numpy as np
    import onnxruntime as ort
    ids, mask, out_path = np.load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
    results = {}
    for path in sys.argv[4:]:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        results[path] = session.run(["last_hidden_state"], {n: feed[n] for n in names})[0]
    assert "torch" not in sys.modules
    np.savez(out_path, *[results[p] for p in sys.argv[4:]])
    """
)


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    return (hidden * m).sum(1) / m.sum(1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_format_choices_agree_between_the_recipe_and_the_exporter():
    assert EXPORT_FORMATS == FORMATS == ("torch", "onnx", "onnx-int8")
    assert Recipe().export.format == "torch"


def test_onnx_and_int8_files_run_in_a_fresh_process_without_metanas(tmp_path):
    model = tiny_teacher("bert")
    shipped = export_onnx(model, tmp_path, "onnx-int8")
    assert shipped == tmp_path / "onnx" / INT8_FILE
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [ONNX_FILE, INT8_FILE]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary directory left behind
    # another batch and sequence length than the export's example: the axes are dynamic
    ids, mask = random_batch(batch=4, seq=23, seed=3)
    np.save(tmp_path / "ids.npy", ids.numpy())
    np.save(tmp_path / "mask.npy", mask.numpy())
    files = [str(tmp_path / "onnx" / ONNX_FILE), str(shipped)]
    cmd = [sys.executable, "-c", RUN_ONNX, str(tmp_path / "ids.npy"), str(tmp_path / "mask.npy")]
    subprocess.run([*cmd, str(tmp_path / "out.npz"), *files], check=True, env=child_env(), timeout=120)
    fp32, int8 = np.load(tmp_path / "out.npz").values()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    assert fp32.shape == int8.shape == ref.shape == (4, 23, 32)
    assert np.abs(fp32 - ref).max() < FP32_ATOL
    assert np.abs(int8 - ref).max() > 1e-4  # really quantized, not a copy of the fp32 graph
    m = mask.numpy()
    assert _cosines(_mean_pool(int8, m), _mean_pool(ref, m)).min() > INT8_MIN_COSINE
    assert (tmp_path / "onnx" / INT8_FILE).stat().st_size < (tmp_path / "onnx" / ONNX_FILE).stat().st_size


def test_int8_weights_have_one_scale_per_output_channel(tmp_path):
    """Per-tensor scales cost the real MiniLM 0.954 -> 0.991 embedding Spearman; the int8 file must be per-channel."""
    import onnx

    model = tiny_teacher("bert")
    shipped = export_onnx(model, tmp_path, "onnx-int8")
    graph = onnx.load(str(shipped)).graph
    inits = {t.name: t for t in graph.initializer}
    weights = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert len(weights) >= 4 * 2  # Q, K, V, output and the two FFN matmuls of each of the 2 layers
    for node in weights:
        quantized = node.input[1]  # the int8 weight: its zero point has one entry per output column
        zero_point = inits[node.input[3]]
        assert list(zero_point.dims) == [inits[quantized].dims[-1]], node.name


@pytest.mark.parametrize(
    "kind,arch",
    [("bert", ArchConfig(2, 28, (3, 3), (32, 32))), ("roberta", ArchConfig(2, 24, (3, 3), (16, 16)))],
    ids=["metanas-bert", "roberta"],
)
def test_write_format_adds_onnx_to_an_exported_directory_and_records_it(tmp_path, kind, arch):
    """A custom-class export (MetanasBertModel) and a vanilla one; the torch files stay beside the ONNX ones."""
    sn = metanas.ElasticBert.from_teacher(tiny_teacher(kind))
    out = metanas.export(sn, arch, tmp_path / "model", tokenizer=tiny_tokenizer(tmp_path / "tok"))
    assert write_format(out, "torch") is None and not (out / "onnx").exists()
    assert write_format(out, "onnx") == out / "onnx" / ONNX_FILE
    info = json.loads((out / "metanas_arch.json").read_text())
    assert info["format"] == "onnx" and info["onnx_file"] == "onnx/model.onnx"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    enc = load_encoder(out, "onnx", threads=1)
    torch_model = metanas.supernet.export.build_subnet_model(sn, arch)
    ids, mask = random_batch(batch=2, seq=9, pad_id=1 if kind == "roberta" else 0)
    with torch.no_grad():
        ref = torch_model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (enc(input_ids=ids, attention_mask=mask).last_hidden_state - ref).abs().max() < FP32_ATOL
    with pytest.raises(FileNotFoundError, match="onnx-int8"):
        load_encoder(out, "onnx-int8")


def test_onnx_encoder_embeds_like_the_torch_model(tmp_path):
    model = tiny_teacher("bert")
    enc = as_format(model, "onnx", threads=1)
    assert isinstance(enc, OnnxEncoder) and enc.training is False
    assert enc.eval() is enc and enc.train() is enc
    batches = []
    for seed in range(3):
        ids, mask = random_batch(batch=3, seq=10 + seed, seed=seed)
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    got, ref = embed(enc, batches), embed(model, batches)
    assert got.shape == ref.shape == (9, 32)
    assert (got - ref).abs().max() < FP32_ATOL
    assert as_format(model, "torch") is model


def test_recipe_rejects_an_unknown_format_naming_the_field_and_the_choices():
    with pytest.raises(ValueError, match=r"export\.format must be one of torch, onnx, onnx-int8; got 'tflite'"):
        Recipe.from_dict({"export": {"format": "tflite"}})
    assert Recipe.from_dict({"export": {"format": "onnx-int8"}}).export.format == "onnx-int8"


def test_missing_onnxruntime_is_one_error_at_recipe_load_with_the_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs onnxruntime.*pip install 'metanas\[onnx\]'"):
        Recipe.from_dict({"export": {"format": "onnx"}})
    assert Recipe.from_dict({"export": {"format": "torch"}}).export.format == "torch"


def test_onnx_latency_is_measured_and_keyed_apart_from_torch():
    sn = metanas.ElasticBert.from_teacher(tiny_teacher("bert"))
    arch = sn.space.smallest()
    for fmt in ("onnx", "onnx-int8"):
        stats = measure_arch_latency(sn, arch, 1, 16, threads=1, warmup=2, runs=5, fmt=fmt)
        assert len(stats.timings_ms) == 5 and all(math.isfinite(t) and t > 0 for t in stats.timings_ms)
        assert 0 < stats.mean_ms < 1000 and stats.median_ms <= stats.p90_ms
    prints = {fmt: device_fingerprint(1, "cpu", "wall", fmt) for fmt in FORMATS}
    assert len(set(prints.values())) == 3 and "format" not in prints["torch"]
    assert prints["torch"] == device_fingerprint(1)  # torch caches keep their old keys
    ms = measure_models_latency(
        {"torch": sn.eval(), "onnx": as_format(tiny_teacher("bert"), "onnx", 1)}, 120, 1, 16, 1, 1, 1, 3
    )
    assert set(ms) == {"torch", "onnx"} and all(0 < v < 1000 for v in ms.values())
    with pytest.raises(ValueError, match="fmt must be one of"):
        measure_arch_latency(sn, arch, 1, 16, threads=1, fmt="tflite")


@pytest.mark.slow
def test_compress_tiny_with_onnx_int8_reports_the_int8_rows(tmp_path, monkeypatch):
    """The tiny recipe end to end with export.format=onnx-int8: files shipped, rows timed as int8."""
    from metanas.pipeline import compress

    monkeypatch.setenv("METANAS_HISTORY", str(tmp_path / "history.db"))
    run_dir = tmp_path / "tiny"
    compress(load_recipe(REPO / "recipes" / "tiny.yaml", ["export.format=onnx-int8", "logging.wandb=false"]), run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["export_format"] == "onnx-int8"
    assert report["student"]["format"] == report["uniform_baseline"]["format"] == "onnx-int8"
    assert report["teacher"]["format"] == "torch"
    int8 = report["int8_teacher"]
    assert int8["format"] == "onnx-int8" and int8["params"] == report["teacher"]["params"]
    assert int8["latency_ms"] > 0 and int8["quality"] > 0.9 and int8["embedding_cosine"] > 0.99
    assert report["teacher"]["shipped_latency_ms"] == int8["latency_ms"]
    assert report["student"]["onnx_file"] == "onnx/model_qint8.onnx"
    for part in ("model", "baseline"):
        assert (run_dir / part / "onnx" / "model_qint8.onnx").is_file()
        assert (run_dir / part / "onnx" / "model.onnx").is_file()
        assert json.loads((run_dir / part / "metanas_arch.json").read_text())["format"] == "onnx-int8"
    md = (run_dir / "report.md").read_text()
    assert "| teacher, onnx-int8 (quantized only) |" in md and "| student (searched), onnx-int8 |" in md
    assert os.fspath(tmp_path) not in json.dumps(report)


def test_ctrl_c_during_an_export_is_raised_when_it_ends():
    """torch.onnx swallows a KeyboardInterrupt raised inside it; `interrupt_after` holds it until the block ends."""
    import os
    import signal
    import time

    from metanas.supernet.onnx_export import interrupt_after

    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_after():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            finished.append(True)
    assert finished == [True] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
