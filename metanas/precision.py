"""bf16 autocast only where this machine computes bf16 at least as fast as float32.

Recipes ask for bf16 (`training.bf16`, `export.distill_bf16`) for speed: on CPUs with
bf16 matrix instructions (AVX512-BF16, AMX) a bf16 product is several times faster
than a float32 one. A CPU without them (AVX2 only, as on many AMD EPYC machines)
emulates it: on such a 2-core machine a 1024x384 by 384x1536 product took 1,006 ms in
bf16 against 9.9 ms in float32, and a quickstart supernet step 25 s instead of about 1.
So the first request on a device times one small product in both dtypes and keeps
bf16 only where it is not slower, saying once per setting when it falls back.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import torch

logger = logging.getLogger(__name__)

_PROBE_SIZE = 256  # a 256^3 product: under 0.1 s even where bf16 is emulated
_PROBE_REPEATS = 3


def _product_seconds(dtype: torch.dtype) -> float:
    """The fastest of a few 256x256 products in `dtype` on the CPU (the first call also builds its kernel)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(_PROBE_SIZE, _PROBE_SIZE, generator=g).to(dtype)
    b = torch.randn(_PROBE_SIZE, _PROBE_SIZE, generator=g).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(_PROBE_REPEATS):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def cpu_product_seconds() -> dict[str, float]:
    """Seconds of one 256x256 product in float32 and in bf16 on this CPU, measured once per process."""
    return {"float32": _product_seconds(torch.float32), "bfloat16": _product_seconds(torch.bfloat16)}


def bf16_is_fast(device_type: str) -> bool:
    """True where bf16 autocast pays on `device_type`: a CUDA device that supports bf16, a CPU whose bf16
    product is not slower than its float32 one."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return True
    seconds = cpu_product_seconds()
    return seconds["bfloat16"] <= seconds["float32"]


_warned: set[str] = set()


def use_bf16(requested: bool, device_type: str = "cpu", setting: str = "bf16") -> bool:
    """Whether to run bf16 autocast for `setting` (the recipe field that asked): `requested` and fast here."""
    if not requested:
        return False
    if bf16_is_fast(device_type):
        return True
    if setting not in _warned:
        _warned.add(setting)
        s = cpu_product_seconds() if device_type == "cpu" else {}
        measured = f" (a bf16 product {s['bfloat16'] / s['float32']:.0f}x slower than float32)" if s else ""
        logger.warning(
            "%s: this %s has no fast bf16 matrix instructions%s; running in float32", setting, device_type, measured
        )
    return False


def bf16_autocast(requested: bool, device_type: str = "cpu", setting: str = "bf16") -> Any:
    """`torch.autocast` to bf16 on `device_type`, enabled when `use_bf16` says so."""
    return torch.autocast(device_type, torch.bfloat16, enabled=use_bf16(requested, device_type, setting))
