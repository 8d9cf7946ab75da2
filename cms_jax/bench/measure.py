"""What every benchmark measures with: a matmul rate, timers, CPU seconds, XLA's FLOP counts.

Achieved FLOP/s means little alone; each benchmark sets it against a dense matmul timed in the
same process on the same device, so a shared or throttled machine lowers both alike.
"""
from __future__ import annotations

import resource
import statistics
import time

import jax
import jax.numpy as jnp


def timed(fn) -> float:
    """Seconds one call of ``fn()`` takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def matmul_rate(n: int = 2048, dtype=jnp.float32) -> float:
    """Measured dense matmul FLOP/s of an n x n ``dtype`` product on the default device (best of 3)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    best = min(timed(lambda: f(a, a).block_until_ready()) for _ in range(3))
    return 2.0 * n ** 3 / best


def median_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn()`` after one warm-up (and compilation) call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 1)


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its joined children so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def xla_flops(lowered) -> float:
    """FLOPs of a lowered (``jax.jit(f).lower(...)``) program, from XLA's cost analysis."""
    cost = lowered.cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def device_info() -> dict:
    """The default device's kind and platform, and the number of devices."""
    dev = jax.devices()[0]
    return {"kind": dev.device_kind, "platform": dev.platform, "count": jax.device_count()}
