"""bfloat16 autocast only where bfloat16 is faster than float32.

A CPU with native bfloat16 (AVX512-BF16 or AMX) runs bf16 matrix products faster than float32; one
without it (AVX2, or AVX512 without the BF16 extension) emulates them, far slower. torch's CPU
capability ("AVX2", "AVX512") does not tell the two AVX512 kinds apart, so the decision is
measured: one probe of a bf16 against a float32 matrix product, once per process.
"""
import functools
import logging
import time

import torch

logger = logging.getLogger(__name__)

MIN_SPEEDUP = 1.1  # bf16 must be measurably faster, not merely as fast
PROBE_SIZE = 384  # about the width of the demo's models


def cpu_name() -> str:
    """The CPU's model name as lscpu prints it (from /proc/cpuinfo), or "unknown CPU"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _matmul_seconds(dtype: torch.dtype, repeats: int = 3) -> float:
    a, b = (torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype) for _ in range(2))
    a @ b  # warm-up: kernel selection, first-touch memory
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup() -> float:
    """float32 time / bfloat16 time of a 384x384 matrix product on this CPU (> 1: bf16 faster),
    measured once per process."""
    return _matmul_seconds(torch.float32) / _matmul_seconds(torch.bfloat16)


@functools.lru_cache(maxsize=None)
def bf16_autocast_pays(device_type: str) -> bool:
    """Whether bf16 autocast speeds up ``device_type``: on the CPU, measured (and logged once);
    elsewhere (CUDA) the user's flag decides."""
    if device_type != "cpu":
        return True
    speedup = cpu_bf16_speedup()
    where = f"{cpu_name()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    if speedup >= MIN_SPEEDUP:
        logger.info(f"--autocast-bf16: bfloat16 matrix products run {speedup:.1f}x faster than float32 "
                    f"on this CPU ({where})")
        return True
    logger.warning(
        f"--autocast-bf16 is off: this CPU ({where}) has no native bfloat16 (AVX512-BF16 or AMX) and "
        f"runs bfloat16 matrix products {1 / speedup:.0f}x slower than float32 (measured), so this "
        "process runs in float32")
    return False


def bf16_autocast(device_type: str, requested: bool):
    """``torch.autocast`` in bfloat16 where it is requested and pays; a no-op context otherwise."""
    enabled = requested and bf16_autocast_pays(device_type)
    return torch.autocast(device_type, torch.bfloat16, enabled=enabled)
