"""The estimator's first step, traced before anything runs: a plug-in that raises, or that returns
the wrong shape or dtype, is a one-line usage error instead of a traceback after the data loads.

:func:`check_first_step` traces (``jax.eval_shape``: nothing is computed or allocated) the bound
estimator, and its gradient, on logits of the run's shape, as the training step will call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from experiments.mnist import latents
from gumbel_jax import estimators


def logits_shape(
    batch: int, num_latents: int, categories: int, latent_type: str
) -> tuple[int, ...]:
    """The logits of a batch: ``(batch, latents, categories)``, or ``(batch, latents)`` binary."""
    return (batch, *latents.get(latent_type).shape(num_latents, categories))


def check_first_step(
    spec: estimators.Spec,
    options: Mapping[str, Any],
    *,
    shape: tuple[int, ...],
    distribution: str,
    temperature: float = 1.0,
    name: str | None = None,
    flag: str = "--estimator",
) -> None:
    """Traces the estimator's first call on float32 logits of ``shape`` and its gradient.

    A sample estimator must return an array of the logits' shape and a float dtype; a surrogate,
    given ``f`` mapping samples ``[S, batch, ...]`` to ``[S, batch]``, one float per example
    ``[batch]``.

    Raises:
      ValueError: one line naming the estimator (``name``, default its spec's) and what is wrong.
    """
    name = name or spec.name
    bound = spec.bind(options)
    logits = jax.ShapeDtypeStruct(shape, jnp.float32)
    key = jax.random.key(0)
    if spec.kind == "sample":
        expected, what = shape, "a sample of the logits' shape"

        def call(logits):
            return bound(key, logits, jnp.float32(temperature), distribution=distribution)

    else:
        expected, what = shape[:1], "one value per example"

        def f(z):  # [S, batch, ...] -> [S, batch]
            return jnp.sum(z.reshape(*z.shape[:2], -1), axis=-1)

        def call(logits):
            return bound(key, logits, f, distribution=distribution)

    where = f"{flag} {name} (logits {shape}, {distribution})"
    try:
        out = jax.eval_shape(call, logits)
    except Exception as error:  # the user's code: whatever it raises is reported in one line
        raise ValueError(f"{where} fails on its first step: {_one_line(error)}") from None
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(f"{where} must return one array ({what}), got {type(out).__name__}")
    if tuple(out.shape) != tuple(expected) or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            f"{where} returns shape {tuple(out.shape)} {out.dtype}: it must return {what}, "
            f"shape {tuple(expected)} of a float dtype"
        )
    try:
        jax.eval_shape(jax.grad(lambda logits: jnp.sum(call(logits))), logits)
    except Exception as error:
        raise ValueError(f"{where} has no gradient on its first step: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
