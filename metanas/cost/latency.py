"""Latency measurement (HAT protocol) of standalone models, and the latency models built from it.

Every latency metanas reports or budgets is a timing of the exported-equivalent
standalone model (never of the sliced supernet): warm-up runs, then the mean of
the middle 80% of timed runs. `measure_models_latency` interleaves several models
so load from other processes hits them alike; `MeasuredLatency` times each arch of
a search once and keeps the numbers in a file so a resumed search sees the same
ones; `build_latency_predictor` measures archs and fits a `LatencyPredictor`.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PretrainedConfig

from metanas._io import atomic_write_json, read_json
from metanas._threads import torch_threads
from metanas.cost.latency_predictor import LatencyPredictor
from metanas.space import ArchConfig, SearchSpace
from metanas.supernet.export import build_subnet_model
from metanas.supernet.model import ElasticBert
from metanas.supernet.onnx_export import FORMATS, OnnxEncoder, as_format

CLOCKS = ("wall", "cpu")
DEFAULT_LATENCY_CACHE = Path("~/.cache/metanas/latency")


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
    fmt: str = "torch",
) -> LatencyStats:
    """Latency of the exported-equivalent standalone model for `arch` (not the supernet).

    The supernet's slicing adds overhead the deployed model does not have, so the
    arch is built as the standalone model `export` would write and timed under
    `torch.inference_mode` on seeded random ids. `clock="cpu"` (see
    `measure_latency`) needs `threads=1` on the CPU, the only case where one
    thread's CPU time is the latency. `fmt` (`export.format`) onnx / onnx-int8 times
    an ONNX Runtime session of the model's export instead (CPU only).
    """
    if clock == "cpu" and (threads != 1 or torch.device(device).type != "cpu"):
        raise ValueError("measure_arch_latency: clock='cpu' measures latency only with threads=1 on device='cpu'")
    if fmt not in FORMATS:
        raise ValueError(f"measure_arch_latency: fmt must be one of {list(FORMATS)}, got {fmt!r}")
    if fmt != "torch" and torch.device(device).type != "cpu":
        raise ValueError(f"measure_arch_latency: format {fmt!r} is timed on the CPU only, got device={device!r}")

    model = as_format(build_subnet_model(sn, arch).to(device), fmt, threads)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, sn.space.vocab_size, (batch_size, seq_len), generator=gen).to(device)
    mask = torch.ones_like(ids)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    with torch_threads(threads), torch.inference_mode():
        return measure_latency(lambda: model(input_ids=ids, attention_mask=mask), warmup, runs, sync, clock)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint(threads: int | None = None, device: str = "cpu", clock: str = "wall", fmt: str = "torch") -> str:
    """Names the hardware and software a latency was measured on, to key caches.

    Latency depends on the CPU model, the thread count, the torch build, the
    accelerator, the clock and the format that runs (torch, or an ONNX Runtime
    build), so a predictor for one never silently serves another.
    """
    dev = torch.device(device)
    parts = [f"cpu={_cpu_model()}", f"threads={threads or torch.get_num_threads()}", f"torch={torch.__version__}"]
    if dev.type == "cuda":
        parts.append(f"device={torch.cuda.get_device_name(dev)}")
    else:
        parts.append(f"device={dev.type}")
    if clock != "wall":
        parts.append(f"clock={clock}")
    if fmt != "torch":
        parts.append(f"format={fmt}|onnxruntime={importlib.metadata.version('onnxruntime')}")
    return "|".join(parts)


def measure_models_latency(
    models: Mapping[str, nn.Module | OnnxEncoder],
    vocab_size: int,
    batch_size: int,
    seq_len: int,
    threads: int | None = None,
    rounds: int = 3,
    warmup: int = 10,
    runs: int = 50,
    seed: int = 0,
) -> dict[str, float]:
    """Latency (ms) of each model: HAT mean of the middle 80%, best of `rounds` interleaved rounds."""
    timed = measure_models_rounds(models, vocab_size, batch_size, seq_len, threads, rounds, warmup, runs, seed)
    return {name: min(ms) for name, ms in timed.items()}


def measure_models_rounds(
    models: Mapping[str, nn.Module | OnnxEncoder],
    vocab_size: int,
    batch_size: int,
    seq_len: int,
    threads: int | None = None,
    rounds: int = 3,
    warmup: int = 10,
    runs: int = 50,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Each model's latency (ms, HAT mean of the middle 80%) in each of `rounds` interleaved rounds.

    Every model sees the same seeded random ids; rounds alternate the models (and
    which one goes first), so a burst of load from another process is shared rather
    than landing on one model, and two models' latencies in one round are comparable.
    An `OnnxEncoder` (export.format onnx / onnx-int8) is timed like a torch model; its
    thread count is the one its session was made with.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen)
    mask = torch.ones_like(ids)
    timed: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    with torch_threads(threads), torch.inference_mode():
        with tqdm(total=rounds * len(models), desc="latency", unit="model") as bar:
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:  # each model takes its turn first
                    model = models[name]
                    model.eval()
                    stats = measure_latency(lambda m=model: m(input_ids=ids, attention_mask=mask), warmup, runs)
                    timed[name].append(stats.mean_ms)
                    bar.update()
    return timed


def timing_supernet(config: PretrainedConfig, space: SearchSpace) -> ElasticBert:
    """A supernet of the teacher's shape with seeded random weights: latency does not depend on weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ElasticBert(config, space).eval()


class MeasuredLatency:
    """arch -> ms measured on the exported-equivalent model, each arch once, kept in a JSON file.

    The file makes a resumed search see exactly the numbers the interrupted one saw;
    `fmt` is the format timed (`measure_arch_latency`).
    """

    def __init__(
        self,
        sn: ElasticBert,
        path: Path,
        batch_size: int,
        seq_len: int,
        threads: int | None,
        warmup: int,
        runs: int,
        fmt: str = "torch",
    ) -> None:
        self.sn, self.path, self.fmt = sn, path, fmt
        self.settings = (batch_size, seq_len, threads, warmup, runs)
        fix = "delete it to measure again"
        self.cache: dict[str, float] = read_json(path, fix) if path.is_file() else {}

    def __call__(self, arch: ArchConfig) -> float:
        key = arch.to_json()
        if key not in self.cache:
            batch_size, seq_len, threads, warmup, runs = self.settings
            stats = measure_arch_latency(
                self.sn, arch, batch_size, seq_len, threads, warmup=warmup, runs=runs, fmt=self.fmt
            )
            self.cache[key] = stats.mean_ms
            atomic_write_json(self.cache, self.path)
        return self.cache[key]


def _archs_to_measure(
    space: SearchSpace,
    measured: Sequence[tuple[ArchConfig, float, str]],
    sampler: Callable[[random.Random], ArchConfig],
    n: int,
    rng: random.Random,
) -> list[ArchConfig]:
    """The smallest and largest archs (unless measured already) and new samples up to `n` distinct archs."""
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
    return todo


def build_latency_predictor(
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
    fmt: str = "torch",
) -> LatencyPredictor:
    """Measure `n` archs of the supernet `sn`, fit a `LatencyPredictor` on all but a `holdout` share, and cache it.

    The smallest and largest archs are always measured and trained on, so
    predictions never extrapolate past the space; the rest come from
    `arch_sampler(rng)` (default: uniform `space.sample`). `holdout_mape` is the
    error on the kept-out share. A cached predictor with >= `n` measurements for
    this (space, device fingerprint, batch, seq_len) is returned without
    measuring; one with fewer is topped up.

    `rounds` > 1 measures every arch again in later passes (in a new order) and
    keeps the median of its HAT means: on a shared machine other processes' load
    and the clock frequency come and go, and a disturbed pass is outvoted. `clock`
    and `fmt` (the format timed: torch, onnx, onnx-int8) are passed to
    `measure_arch_latency` and are part of the cache key.
    """
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"build: holdout must be in [0, 1), got {holdout}")
    if rounds < 1:
        raise ValueError(f"build: rounds must be >= 1, got {rounds}")
    space = sn.space
    fingerprint = device_fingerprint(threads, device, clock, fmt)
    path = (
        LatencyPredictor.cache_path(cache_dir, space, fingerprint, batch_size, seq_len)
        if cache_dir is not None
        else None
    )
    measured: list[tuple[ArchConfig, float, str]] = []
    if path is not None and path.is_file():
        cached = LatencyPredictor.load(path, space)
        if len(cached.measurements) >= n:
            return cached
        measured = list(cached.measurements)

    rng = random.Random(seed)
    todo = _archs_to_measure(space, measured, arch_sampler or space.sample, n, rng)
    edges = (space.smallest(), space.largest())
    candidates = [i for i, a in enumerate(todo) if a not in edges]
    held_out = set(rng.sample(candidates, round(holdout * len(candidates))))
    passes: list[list[float]] = [[] for _ in todo]
    order = list(range(len(todo)))
    with tqdm(total=len(todo) * rounds, desc="latency", unit="arch", disable=not progress) as bar:
        for _ in range(rounds):
            for i in order:
                stats = measure_arch_latency(
                    sn, todo[i], batch_size, seq_len, threads, device, warmup, runs, seed, clock, fmt
                )
                passes[i].append(stats.mean_ms)
                bar.update()
            rng.shuffle(order)
    measured += [
        (a, statistics.median(p), "holdout" if i in held_out else "train") for i, (a, p) in enumerate(zip(todo, passes))
    ]
    pred = LatencyPredictor(space, batch_size, seq_len, fingerprint).fit_measurements(measured)
    if path is not None:
        pred.save(path)
    return pred
