"""Costs of subnets and the budgets a search must respect.

Parameters and FLOPs come from exact formulas in `SearchSpace`; latency is either
measured on the exported-equivalent standalone model (HAT protocol: mean of the
middle 80% of timed runs after warm-up) or predicted by a `LatencyPredictor`
trained on such measurements, because measuring every candidate during a search
costs seconds each while a prediction costs microseconds.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metanas.space import ArchConfig, RngLike, SearchSpace

if TYPE_CHECKING:  # torch-heavy; imported lazily so budgets and FLOPs maths stay quick
    from metanas.supernet.model import ElasticBert

BUDGET_KEYS = ("params", "non_embedding_params", "flops", "latency_ms")
CLOCKS = ("wall", "cpu")
DEFAULT_LATENCY_CACHE = Path("~/.cache/metanas/latency")

Limit = float | str | None


# --------------------------------------------------------------------------- budgets


def _parse_limit(key: str, value: Any) -> Limit:
    """A positive number, a relative string like '50%', or None; anything else is a ValueError."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"budget {key}: {value!r} is not a number; use a number or a percentage like '50%'")
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"budget {key}: {value!r} is not a valid percentage like '50%'") from None
        if not math.isfinite(pct) or pct <= 0:
            raise ValueError(f"budget {key}: must be a positive percentage, got {value!r}")
        return f"{pct:g}%"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"budget {key}: expected a number or a percentage like '50%', got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget {key}: must be a positive limit, got {value!r}")
    return value


@dataclass
class Budget:
    """Upper limits on costs (None = unconstrained) and the setting they are measured in.

    `flops` is per token at `seq_len` (as `SearchSpace.flops`); `latency_ms` is one
    forward pass of a `batch_size` x `seq_len` batch. Any limit may be relative to
    the teacher (the largest arch of the space), written as a string: the user's
    "half the teacher's latency" is `latency_ms="50%"`. `resolve(cost_model)` turns
    relative limits into absolute ones.
    """

    params: Limit = None
    non_embedding_params: Limit = None
    flops: Limit = None
    latency_ms: Limit = None
    seq_len: int = 128
    batch_size: int = 1

    def __post_init__(self) -> None:
        for key in BUDGET_KEYS:
            setattr(self, key, _parse_limit(key, getattr(self, key)))
        for key in ("seq_len", "batch_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"budget {key}: must be a positive integer, got {v!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        """Parse a recipe's `budget:` mapping; unknown keys fail with the nearest allowed one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"budget: expected a mapping of limits, got {type(data).__name__}")
        allowed = [f.name for f in fields(cls)]
        for key in data:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise ValueError(f"budget: unknown key {key!r}{hint} (allowed: {', '.join(allowed)})")
        return cls(**dict(data))

    def limits(self) -> dict[str, float | str]:
        """The constrained keys and their limits."""
        return {k: getattr(self, k) for k in BUDGET_KEYS if getattr(self, k) is not None}

    @property
    def is_relative(self) -> bool:
        return any(isinstance(v, str) for v in self.limits().values())

    def resolve(self, cost_model: CostModel) -> Budget:
        """An absolute budget: each 'P%' limit becomes P% of the teacher's (largest arch's) cost."""
        if not self.is_relative:
            return self
        teacher = cost_model.teacher_costs(need_latency=isinstance(self.latency_ms, str))
        absolute = {k: float(v[:-1]) / 100 * teacher[k] for k, v in self.limits().items() if isinstance(v, str)}
        return replace(self, **absolute)


# --------------------------------------------------------------------------- cost model


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


class CostModel:
    """Costs of archs in `space` at one (seq_len, batch_size) setting.

    `latency` is a callable arch -> ms (e.g. a measurement) or a `LatencyPredictor`;
    without it, latency budgets are refused rather than silently ignored.
    """

    def __init__(
        self,
        space: SearchSpace,
        seq_len: int = 128,
        batch_size: int = 1,
        latency: Callable[[ArchConfig], float] | LatencyPredictor | None = None,
    ) -> None:
        if isinstance(latency, LatencyPredictor):
            if latency.space_signature != space.signature():
                raise ValueError("CostModel: the latency predictor was trained for another search space")
            if (latency.seq_len, latency.batch_size) != (seq_len, batch_size):
                raise ValueError(
                    f"CostModel: the latency predictor is for batch {latency.batch_size} x seq {latency.seq_len}, "
                    f"not batch {batch_size} x seq {seq_len}"
                )
            latency = latency.predict
        self.space = space
        self.seq_len = seq_len
        self.batch_size = batch_size
        self._latency = latency
        self._edge_costs: dict[ArchConfig, dict[str, float]] = {}  # largest and smallest arch, computed once

    @property
    def has_latency(self) -> bool:
        return self._latency is not None

    def _cost(self, arch: ArchConfig, key: str) -> float:
        if key == "params":
            return self.space.params(arch)
        if key == "non_embedding_params":
            return self.space.params(arch, embeddings=False)
        if key == "flops":
            return self.space.flops(arch, self.seq_len)
        if self._latency is None:
            raise ValueError("CostModel: a latency_ms budget needs a latency source (a predictor or a measurement)")
        return float(self._latency(arch))

    def costs(self, arch: ArchConfig) -> dict[str, float]:
        """params, non_embedding_params, flops (per token at seq_len) and, with a latency source, latency_ms.

        The keys match `EvalRecord`'s cost fields, so `EvalRecord(..., **cm.costs(arch))` works.
        """
        keys = BUDGET_KEYS if self.has_latency else BUDGET_KEYS[:3]
        return {k: self._cost(arch, k) for k in keys}

    def teacher_costs(self, need_latency: bool = False) -> dict[str, float]:
        """Costs of the largest arch (the teacher), computed once."""
        if need_latency and not self.has_latency:
            raise ValueError("CostModel: a relative latency_ms budget needs a latency source")
        return self._edge(self.space.largest())

    def _edge(self, arch: ArchConfig) -> dict[str, float]:
        if arch not in self._edge_costs:
            self._edge_costs[arch] = self.costs(arch)
        return self._edge_costs[arch]

    def _absolute(self, budget: Budget) -> Budget:
        if (budget.seq_len, budget.batch_size) != (self.seq_len, self.batch_size):
            raise ValueError(
                f"budget is for batch {budget.batch_size} x seq {budget.seq_len} but the CostModel counts "
                f"batch {self.batch_size} x seq {self.seq_len}; build the CostModel with the budget's setting"
            )
        if budget.latency_ms is not None and not self.has_latency:
            raise ValueError("CostModel: a latency_ms budget needs a latency source (a predictor or a measurement)")
        return budget.resolve(self)

    def feasible(self, arch: ArchConfig, budget: Budget) -> bool:
        """True when `arch` meets every limit; latency, the costly one, is evaluated last."""
        for key, limit in self._absolute(budget).limits().items():
            if self._cost(arch, key) > limit:
                return False
        return True

    def check_feasible(self, budget: Budget) -> Budget:
        """Raise when even the smallest arch breaks a limit; return the absolute budget.

        Every cost grows with every dimension, so the smallest arch has the smallest
        achievable cost and a budget it breaks cannot be met by any arch.
        """
        absolute = self._absolute(budget)
        smallest = self.space.smallest()
        for key, limit in absolute.limits().items():
            need = self._edge(smallest)[key]
            if need > limit:
                raise ValueError(
                    f"infeasible budget: {key} <= {_fmt(limit)} but the smallest arch in the space needs "
                    f"{_fmt(need)} ({smallest.to_json()})"
                )
        return absolute

    def sample_feasible(self, rng: RngLike, budget: Budget, max_tries: int = 1000) -> ArchConfig:
        """A random arch within `budget`.

        Rejection sampling for up to `max_tries` draws keeps the space's distribution;
        when the budget is so tight that none is accepted, a random draw is shrunk one
        choice at a time (a random dimension each step) until it fits. Shrinking ends
        at the smallest arch, which `check_feasible` guarantees fits, so this always
        terminates after a bounded number of cost evaluations.
        """
        if max_tries < 0:
            raise ValueError(f"sample_feasible: max_tries must be >= 0, got {max_tries}")
        r = rng if isinstance(rng, random.Random) else random.Random(rng)
        absolute = self.check_feasible(budget)
        for _ in range(max_tries):
            arch = self.space.sample(r)
            if self.feasible(arch, absolute):
                return arch
        arch = self.space.sample(r)
        while not self.feasible(arch, absolute):
            arch = self._shrink(arch, r)
        return arch

    def _shrink(self, arch: ArchConfig, r: random.Random) -> ArchConfig:
        """One step towards the smallest arch in a random dimension that can still shrink."""
        s = self.space

        def lower(choices: tuple[int, ...], v: int) -> int:
            return max(c for c in choices if c < v)

        moves: list[tuple[str, int]] = []
        if arch.depth > min(s.depth_choices):
            moves.append(("depth", 0))
        if arch.hidden > min(s.hidden_choices):
            moves.append(("hidden", 0))
        moves += [("heads", i) for i, v in enumerate(arch.heads) if v > min(s.head_choices)]
        moves += [("ffn", i) for i, v in enumerate(arch.ffn) if v > min(s.ffn_choices)]
        if not moves:
            raise ValueError("sample_feasible: the smallest arch no longer fits the budget (a noisy latency source?)")
        name, i = r.choice(moves)
        if name == "depth":
            d = lower(s.depth_choices, arch.depth)
            return ArchConfig(d, arch.hidden, arch.heads[:d], arch.ffn[:d])
        if name == "hidden":
            return replace(arch, hidden=lower(s.hidden_choices, arch.hidden))
        values = list(getattr(arch, name))
        values[i] = lower(s.head_choices if name == "heads" else s.ffn_choices, values[i])
        return replace(arch, **{name: tuple(values)})


# --------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class LatencyStats:
    """Timings of one workload in ms; `mean_ms` is HAT's mean of the middle 80%."""

    mean_ms: float
    median_ms: float
    p90_ms: float
    timings_ms: tuple[float, ...]

    @classmethod
    def from_timings(cls, timings_ms: Sequence[float]) -> LatencyStats:
        """Drop the fastest and slowest 10% (outliers from scheduling) and average the rest."""
        if not timings_ms:
            raise ValueError("LatencyStats: no timings")
        ordered = sorted(float(t) for t in timings_ms)
        n = len(ordered)
        k = int(n * 0.1)
        middle = ordered[k : n - k]
        p90 = ordered[min(n - 1, math.ceil(0.9 * n) - 1)]
        return cls(statistics.fmean(middle), statistics.median(ordered), p90, tuple(timings_ms))


def measure_latency(
    fn: Callable[[], Any],
    warmup: int = 10,
    runs: int = 50,
    sync: Callable[[], None] | None = None,
    clock: str = "wall",
) -> LatencyStats:
    """Time `fn()` `runs` times after `warmup` untimed calls; `sync` waits for async devices.

    `clock="wall"` is real elapsed time (HAT). `clock="cpu"` is the calling thread's
    CPU time: for single-threaded CPU work it equals the wall time on an idle
    machine, but time slices taken by other processes are not counted, so it
    stays repeatable on a shared machine.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"measure_latency: need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    if clock not in CLOCKS:
        raise ValueError(f"measure_latency: clock must be one of {list(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and sync is not None:
        raise ValueError("measure_latency: clock='cpu' cannot time asynchronous device work; use clock='wall'")
    timer = time.perf_counter if clock == "wall" else time.thread_time
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    timings = []
    for _ in range(runs):
        start = timer()
        fn()
        if sync:
            sync()
        timings.append((timer() - start) * 1000.0)
    return LatencyStats.from_timings(timings)


def measure_arch_latency(
    sn: ElasticBert,
    arch: ArchConfig,
    batch_size: int = 1,
    seq_len: int = 128,
    threads: int | None = None,
    device: str = "cpu",
    warmup: int = 10,
    runs: int = 50,
    seed: int = 0,
    clock: str = "wall",
) -> LatencyStats:
    """Latency of the exported-equivalent standalone model for `arch` (not the supernet).

    The supernet's slicing adds overhead the deployed model does not have, so the
    arch is built as the standalone model `export` would write and timed under
    `torch.inference_mode` on seeded random ids. `clock="cpu"` (see
    `measure_latency`) needs `threads=1` on the CPU, the only case where one
    thread's CPU time is the latency.
    """
    import torch

    from metanas.supernet.export import build_subnet_model

    if clock == "cpu" and (threads != 1 or torch.device(device).type != "cpu"):
        raise ValueError("measure_arch_latency: clock='cpu' measures latency only with threads=1 on device='cpu'")

    model = build_subnet_model(sn, arch).to(device)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, sn.space.vocab_size, (batch_size, seq_len), generator=gen).to(device)
    mask = torch.ones_like(ids)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return measure_latency(lambda: model(input_ids=ids, attention_mask=mask), warmup, runs, sync, clock)
    finally:
        torch.set_num_threads(previous)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint(threads: int | None = None, device: str = "cpu", clock: str = "wall") -> str:
    """Names the hardware and software a latency was measured on, to key caches.

    Latency depends on the CPU model, the thread count, the torch build, the
    accelerator and the clock, so a predictor for one never silently serves another.
    """
    import torch

    dev = torch.device(device)
    parts = [f"cpu={_cpu_model()}", f"threads={threads or torch.get_num_threads()}", f"torch={torch.__version__}"]
    if dev.type == "cuda":
        parts.append(f"device={torch.cuda.get_device_name(dev)}")
    else:
        parts.append(f"device={dev.type}")
    if clock != "wall":
        parts.append(f"clock={clock}")
    return "|".join(parts)


# --------------------------------------------------------------------------- latency predictor

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
        from scipy.optimize import nnls

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
        """Write JSON atomically (a temporary file renamed into place), so readers never see half a file."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, out)
        return out

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

    # ----- measuring and fitting ----------------------------------------------
    @classmethod
    def cache_path(
        cls, cache_dir: str | os.PathLike, space: SearchSpace, fingerprint: str, batch_size: int, seq_len: int
    ) -> Path:
        """One file per (space, device, batch, seq_len)."""
        dev = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
        return Path(cache_dir).expanduser() / f"{space.signature()}-{dev}-b{batch_size}-s{seq_len}.json"

    @classmethod
    def build(
        cls,
        sn: ElasticBert,
        arch_sampler: Callable[[random.Random], ArchConfig] | None = None,
        n: int = 200,
        batch_size: int = 1,
        seq_len: int = 128,
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = DEFAULT_LATENCY_CACHE,
        *,
        device: str = "cpu",
        clock: str = "wall",
        warmup: int = 10,
        runs: int = 50,
        rounds: int = 1,
        holdout: float = 0.2,
        seed: int = 0,
        progress: bool = True,
    ) -> LatencyPredictor:
        """Measure `n` archs of the supernet `sn`, fit on all but a `holdout` share, and cache.

        The smallest and largest archs are always measured and trained on, so
        predictions never extrapolate past the space; the rest come from
        `arch_sampler(rng)` (default: uniform `space.sample`). `holdout_mape` is the
        error on the kept-out share. A cached predictor with >= `n` measurements for
        this (space, device fingerprint, batch, seq_len) is returned without
        measuring; one with fewer is topped up.

        `rounds` > 1 measures every arch again in later passes (in a new order) and
        keeps the median of its HAT means: on a shared machine other processes' load
        and the clock frequency come and go, and a disturbed pass is outvoted. `clock`
        is passed to `measure_arch_latency` and is part of the cache key.
        """
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"build: holdout must be in [0, 1), got {holdout}")
        if rounds < 1:
            raise ValueError(f"build: rounds must be >= 1, got {rounds}")
        space = sn.space
        fingerprint = device_fingerprint(threads, device, clock)
        path = cls.cache_path(cache_dir, space, fingerprint, batch_size, seq_len) if cache_dir is not None else None
        measured: list[tuple[ArchConfig, float, str]] = []
        if path is not None and path.is_file():
            cached = cls.load(path, space)
            if len(cached.measurements) >= n:
                return cached
            measured = list(cached.measurements)

        rng = random.Random(seed)
        sampler = arch_sampler or space.sample
        seen = {a for a, _, _ in measured}
        todo = [a for a in (space.smallest(), space.largest()) if a not in seen]
        seen.update(todo)
        for _ in range(50 * n):  # bounded: a small space may hold fewer than n distinct archs
            if len(seen) >= n:
                break
            arch = sampler(rng)
            if arch not in seen:
                seen.add(arch)
                todo.append(arch)

        from tqdm.auto import tqdm

        edges = (space.smallest(), space.largest())
        candidates = [i for i, a in enumerate(todo) if a not in edges]
        held_out = set(rng.sample(candidates, round(holdout * len(candidates))))
        passes: list[list[float]] = [[] for _ in todo]
        order = list(range(len(todo)))
        with tqdm(total=len(todo) * rounds, desc="latency", unit="arch", disable=not progress) as bar:
            for _ in range(rounds):
                for i in order:
                    stats = measure_arch_latency(
                        sn, todo[i], batch_size, seq_len, threads, device, warmup, runs, seed, clock
                    )
                    passes[i].append(stats.mean_ms)
                    bar.update()
                rng.shuffle(order)
        measured += [
            (a, statistics.median(p), "holdout" if i in held_out else "train")
            for i, (a, p) in enumerate(zip(todo, passes))
        ]

        pred = cls(space, batch_size, seq_len, fingerprint)
        pred.measurements = measured
        train = [(a, ms) for a, ms, s in measured if s == "train"]
        held = [(a, ms) for a, ms, s in measured if s == "holdout"]
        pred.fit([a for a, _ in train], [ms for _, ms in train])
        if held:
            pred.holdout_mape = pred.mape([a for a, _ in held], [ms for _, ms in held])
        if path is not None:
            pred.save(path)
        return pred
