"""Wall-clock timing of jitted JAX computations, and this machine's fp32 matmul peak.

Every figure the benchmarks print comes from `time_call`: the function is called once to compile
(and to warm caches), then `repeats` times with `jax.block_until_ready` around each call, so
asynchronous dispatch is never mistaken for speed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def time_call(fn: Callable[..., Any], *args: Any, repeats: int = 20) -> dict[str, float]:
    """Times ``fn(*args)`` after one warm-up call.

    Args:
      fn: a (usually jitted) function.
      *args: its arguments, reused for every call.
      repeats: number of timed calls.

    Returns:
      ``{"first_s", "min_s", "median_s"}``: the warm-up call (compilation included) and the
      minimum and median of the timed calls, in seconds.
    """
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return {"first_s": first, "min_s": min(times), "median_s": statistics.median(times)}


def matmul_peak_gflops(sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5) -> dict:
    """Measures the fp32 matrix-multiply peak of the default JAX device.

    Square ``[n, n] @ [n, n]`` products for each ``n``; the best rate over sizes and repeats is
    the peak that the training epoch is compared with.

    Returns:
      ``{"peak_gflops", "by_size": {n: gflops}}``.
    """
    matmul = jax.jit(jnp.matmul)
    by_size = {}
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        stats = time_call(matmul, a, b, repeats=repeats)
        by_size[n] = 2 * n**3 / stats["min_s"] / 1e9
    return {"peak_gflops": max(by_size.values()), "by_size": by_size}
