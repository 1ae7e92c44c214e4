"""Numerical building blocks shared by the public modules (private).

- ``tempered_logits``: ``(logits + noise) / temperature`` that keeps masked (``-inf``) categories
  at ``-inf`` without producing ``NaN`` in values or in any gradient.
- ``hard_with_soft_gradient``: returns the hard one-hot exactly, differentiated as the soft one.
  The usual ``soft + stop_gradient(hard - soft)`` is not exactly 0/1 in floating point
  (``0.3 + (1 - 0.3) != 1`` can happen), so this is a ``jax.custom_jvp`` instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def tempered_logits(logits: jax.Array, noise: jax.Array, temperature: jax.Array) -> jax.Array:
    """``(logits + noise) / temperature`` with masked categories kept at exactly ``-inf``.

    Naively, a gradient with respect to ``temperature`` at a masked category is ``inf * 0 = NaN``.
    Here masked entries are a constant ``-inf`` selected by ``jnp.where`` from a computation on
    finite stand-ins, so every gradient at masked entries is exactly zero.

    Args:
      logits: ``[..., num_categories, ...]`` logits, ``-inf`` for masked categories.
      noise: noise broadcastable to ``logits`` (finite).
      temperature: a positive temperature broadcastable to ``logits``.

    Returns:
      An array of the broadcast shape of ``logits`` and ``noise``.
    """
    masked = jnp.isneginf(logits)
    safe_logits = jnp.where(masked, jnp.zeros_like(logits), logits)
    scaled = (safe_logits + noise) / temperature
    return jnp.where(masked, -jnp.inf, scaled)


def one_hot_argmax(scores: jax.Array, axis: int, dtype: jax.typing.DTypeLike) -> jax.Array:
    """The one-hot vector of ``argmax(scores)`` along ``axis``, exactly 0 and 1 in ``dtype``."""
    index = jnp.argmax(scores, axis=axis)
    return jax.nn.one_hot(index, scores.shape[axis], dtype=dtype, axis=axis)


@jax.custom_jvp
def hard_with_soft_gradient(soft: jax.Array, hard: jax.Array) -> jax.Array:
    """Returns ``hard`` exactly; its derivative is the derivative of ``soft``.

    Args:
      soft: the differentiable surrogate, any shape.
      hard: the value to return, same shape and dtype as ``soft``.

    Returns:
      ``hard``, whose tangent (and hence gradient) is that of ``soft``.
    """
    del soft
    return hard


@hard_with_soft_gradient.defjvp
def _hard_with_soft_gradient_jvp(primals, tangents):
    soft, hard = primals
    soft_dot, _ = tangents
    del soft
    return hard, soft_dot
