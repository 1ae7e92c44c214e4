"""Binary (Bernoulli) latents for the categorical sample estimators (private).

``Bernoulli(sigmoid(l))`` is the categorical distribution over ``(0, 1)`` with logits
``(0, l)``: the Gumbel-max sample of that pair is an exact Bernoulli sample, its Gumbel-Softmax
is the binary Concrete (the difference of two standard Gumbels is standard logistic), and every
categorical estimator applied to the pair is the same estimator for the binary variable. The
pair is written ``(min(0, -l), min(0, l))`` (the same logits up to a shift, which no softmax
sees): log-odds of ``+-inf`` are then a masked category, a certain outcome with a zero gradient,
as the "Invalid inputs" rule of ``gumbel_jax`` asks of binary samplers; ``NaN`` log-odds give
``NaN``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gumbel_jax import _checks


def two_categories(
    categorical: Callable[..., jax.Array],
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    *args,
    **options,
) -> jax.Array:
    """Applies the categorical estimator ``categorical`` to Bernoulli log-odds of any shape.

    Args:
      categorical: ``fn(key, pair_logits, *args, axis=-1, **options)``, one-hot along ``axis``.
      key: a PRNG key.
      logits: log-odds ``log(p / (1 - p))``, any shape.
      *args: passed on (the temperature).
      **options: passed on (the estimator's options).

    Returns:
      The sample's entry for the value 1: exactly 0.0/1.0 (or relaxed, for a relaxed
      estimator), of the shape and dtype of ``logits``, with the estimator's gradient.
    """
    x, dtype = _checks.float_array(logits, name="logits")
    pair = jnp.stack([jnp.minimum(0.0, -x), jnp.minimum(0.0, x)], axis=-1)
    return categorical(key, pair, *args, axis=-1, **options)[..., 1].astype(dtype)
