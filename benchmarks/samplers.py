"""Micro-benchmarks of the gumbel_jax samplers and estimators, in microseconds per call.

The reference point is what any Gumbel-Softmax must do: draw one Gumbel variate per logit and take
a softmax. `baseline/noise+softmax` times exactly that (forward and backward); the hard sampler's
forward+backward is reported as a ratio to it (1.16x on a 2-core CPU; see `benchmarks/README.md`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.timing import time_call
from gumbel_jax import estimators, sample

SHAPE = (4096, 30, 10)


def _loss_of(sampler):
    """A scalar loss whose gradient runs the sampler's backward pass."""
    weights = jnp.linspace(-1.0, 1.0, SHAPE[-1])

    def loss(key, logits, temperature):
        return jnp.sum(sampler(key, logits, temperature) * weights)

    return loss


def _baseline(key, logits, temperature):
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    return jax.nn.softmax((logits + noise) / temperature, axis=-1)


def _hard(key, logits, temperature):
    return sample.gumbel_softmax(key, logits, temperature, hard=True)


def sampler_benchmarks(repeats: int = 50) -> list[dict]:
    """Times forward and forward+backward of each sampler on logits of shape ``SHAPE``.

    Returns:
      One row per measurement: ``{"name", "pass", "us_min", "us_median"}``.
    """
    key = jax.random.key(0)
    logits = jax.random.normal(jax.random.key(1), SHAPE, jnp.float32)
    temperature = jnp.float32(0.7)
    candidates = {
        "baseline/noise+softmax": _baseline,
        "sample.gumbel_softmax(hard=True)": _hard,
    }
    for name in estimators.NAMES:
        candidates[f"estimators.get({name!r})"] = estimators.get(name)
    rows = []
    for name, sampler in candidates.items():
        passes = {
            "forward": jax.jit(sampler),
            "forward+backward": jax.jit(jax.grad(_loss_of(sampler), argnums=1)),
        }
        for pass_name, fn in passes.items():
            stats = time_call(fn, key, logits, temperature, repeats=repeats)
            rows.append(
                {
                    "name": name,
                    "pass": pass_name,
                    "us_min": stats["min_s"] * 1e6,
                    "us_median": stats["median_s"] * 1e6,
                }
            )
    return rows
