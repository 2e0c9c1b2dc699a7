"""A latency model: latency (ms) of an arch from physical work terms, fitted on measurements.

`metanas.cost.latency.build_latency_predictor` measures archs and fits one;
this module holds the model itself (features, fit, predict, persistence), which
needs no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from metanas._io import atomic_write_json
from metanas.space import ArchConfig, SearchSpace

FEATURE_NAMES = (
    "bias",
    "layers",
    "attn_proj",
    "attn_scores",
    "ffn",
    "ffn_act",
    "layer_norm",
    "embed",
    "embed_proj",
    "pooler",
)


def latency_features(space: SearchSpace, arch: ArchConfig, batch_size: int, seq_len: int) -> np.ndarray:
    """Work terms that a transformer's latency is close to linear in, one per `FEATURE_NAMES`.

    Per layer: a fixed dispatch cost, the Q/K/V/output projections (tokens x hidden x
    attention width), attention scores and values (batch x seq^2 x width), the FFN
    matmuls (tokens x hidden x ffn), its activation (tokens x ffn) and the
    LayerNorms/residuals (tokens x hidden); once: the embeddings (tokens x hidden),
    ELECTRA's projection and the pooler. Scaled to millions so weights read as ms per Mop.
    """
    tokens = batch_size * seq_len
    h = arch.hidden
    widths = [n * space.head_dim for n in arch.heads]
    emb_proj = tokens * space.embedding_size * h if space.embedding_size else 0
    return np.array(
        [
            1.0,
            arch.depth,
            tokens * h * sum(widths) / 1e6,
            batch_size * seq_len * seq_len * sum(widths) / 1e6,
            tokens * h * sum(arch.ffn) / 1e6,
            tokens * sum(arch.ffn) / 1e6,
            tokens * h * arch.depth / 1e6,
            tokens * h / 1e6,
            emb_proj / 1e6,
            batch_size * h * h / 1e6,
        ]
    )


def _mape(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true) / true) * 100.0)


class LatencyPredictor:
    """Latency (ms) of an arch at one (batch, seq_len) on one device, from arch features.

    Model: non-negative least squares on `latency_features`, weighted by 1/latency
    so it minimises relative error (what MAPE measures). Latency is nearly linear
    in these physical work terms, so with a few hundred measurements a linear model
    has little variance to fight; the non-negative weights keep it monotone (a
    bigger arch never predicts faster) and let it extrapolate to the teacher.
    Compared by 5-fold cross-validation on three sets of 200 measured MiniLM
    subnets (batch 1, seq 128, one thread, CPU clock, a shared 2-core machine),
    MAPE: this model 5.8-7.3%, unconstrained least squares 5.9-8.1% (and not
    monotone), this model plus a gradient-boosted correction 6.2-8.0%, an MLP on
    these features 9.1-11.2%, a HAT-style MLP on the raw arch encoding 18.1-19.4%,
    latency proportional to FLOPs 8.1-8.8%. Measuring the same archs twice
    disagreed by 6.5-12% there, so measurement noise, not the model, set the
    floor; `scripts/bench_latency.py` reports the held-out error.
    """

    FORMAT = "metanas-latency-predictor"
    VERSION = 1

    def __init__(self, space: SearchSpace, batch_size: int = 1, seq_len: int = 128, device: str = "") -> None:
        self.space = space
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.device = device  # a `device_fingerprint`, "" when unknown
        self.weights: np.ndarray | None = None
        self.holdout_mape: float | None = None
        # (arch, latency ms, "train" | "holdout") of the measurements behind `build`.
        self.measurements: list[tuple[ArchConfig, float, str]] = []

    @property
    def space_signature(self) -> str:
        return self.space.signature()

    def features(self, arch: ArchConfig) -> np.ndarray:
        return latency_features(self.space, arch, self.batch_size, self.seq_len)

    def _matrix(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return np.stack([self.features(a) for a in archs])

    def fit(self, archs: Sequence[ArchConfig], latencies_ms: Sequence[float]) -> LatencyPredictor:
        """Fit the weights to measured latencies; returns self."""
        y = np.asarray(latencies_ms, dtype=float)
        if len(archs) != len(y) or len(y) < 2:
            raise ValueError(f"fit: need >= 2 archs with one latency each, got {len(archs)} archs, {len(y)} latencies")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise ValueError("fit: latencies must be positive finite numbers")
        x = self._matrix(archs) / y[:, None]  # relative residuals: (x.w - y) / y
        scale = np.linalg.norm(x, axis=0)
        scale[scale == 0] = 1.0  # features constant at zero in this space (e.g. no ELECTRA projection)
        w, _ = nnls(x / scale, np.ones(len(y)))
        self.weights = w / scale
        return self

    def fit_measurements(self, measured: Sequence[tuple[ArchConfig, float, str]]) -> LatencyPredictor:
        """Fit on the `train` measurements of (arch, ms, split) and score the `holdout` ones; returns self."""
        self.measurements = list(measured)
        train = [(a, ms) for a, ms, s in measured if s == "train"]
        held = [(a, ms) for a, ms, s in measured if s == "holdout"]
        self.fit([a for a, _ in train], [ms for _, ms in train])
        if held:
            self.holdout_mape = self.mape([a for a, _ in held], [ms for _, ms in held])
        return self

    def predict(self, arch: ArchConfig) -> float:
        if self.weights is None:
            raise ValueError("LatencyPredictor: call fit() or load() before predict()")
        return float(self.features(arch) @ self.weights)

    def __call__(self, arch: ArchConfig) -> float:
        return self.predict(arch)

    def mape(self, archs: Sequence[ArchConfig], latencies_ms: Sequence[float]) -> float:
        """Mean absolute percentage error in percent (3.0 means 3%)."""
        return _mape(np.array([self.predict(a) for a in archs]), np.asarray(latencies_ms, dtype=float))

    # ----- persistence ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        if self.weights is None:
            raise ValueError("LatencyPredictor: nothing to save before fit()")
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "space_signature": self.space_signature,
            "device": self.device,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "features": list(FEATURE_NAMES),
            "weights": [float(w) for w in self.weights],
            "holdout_mape": self.holdout_mape,
            "measurements": [{"arch": a.to_dict(), "latency_ms": ms, "split": s} for a, ms, s in self.measurements],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically, so readers never see half a file."""
        return atomic_write_json(self.to_dict(), path, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike, space: SearchSpace) -> LatencyPredictor:
        """Read a predictor saved for `space`; another space or format version is a ValueError."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a latency predictor file ({e})") from None
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise ValueError(f"{path}: not a latency predictor file")
        if data.get("version") != cls.VERSION:
            raise ValueError(
                f"{path}: predictor format version {data.get('version')}; this metanas reads {cls.VERSION}"
            )
        try:
            if data["space_signature"] != space.signature():
                raise ValueError(
                    f"{path}: predictor is for search space {data['space_signature']}, not {space.signature()}; "
                    "build one for this space"
                )
            if data["features"] != list(FEATURE_NAMES):
                raise ValueError(f"{path}: predictor features {data['features']} differ from {list(FEATURE_NAMES)}")
            pred = cls(space, data["batch_size"], data["seq_len"], data["device"])
            pred.weights = np.asarray(data["weights"], dtype=float)
            pred.holdout_mape = data["holdout_mape"]
            pred.measurements = [
                (ArchConfig.from_dict(m["arch"]), m["latency_ms"], m["split"]) for m in data["measurements"]
            ]
        except KeyError as e:
            raise ValueError(f"{path}: latency predictor file lacks the field {e}") from None
        return pred

    @classmethod
    def cache_path(
        cls, cache_dir: str | os.PathLike, space: SearchSpace, fingerprint: str, batch_size: int, seq_len: int
    ) -> Path:
        """One file per (space, device, batch, seq_len)."""
        dev = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
        return Path(cache_dir).expanduser() / f"{space.signature()}-{dev}-b{batch_size}-s{seq_len}.json"
