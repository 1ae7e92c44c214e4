"""Numerical building blocks shared by the public modules (private).

- ``tempered_logits``: ``(logits + noise) / temperature`` that keeps masked (``-inf``) categories
  at ``-inf`` without producing ``NaN`` in values or in any gradient.
- ``hard_with_soft_gradient``: returns the hard one-hot exactly, differentiated as the soft one.
  The usual ``soft + stop_gradient(hard - soft)`` is not exactly 0/1 in floating point
  (``0.3 + (1 - 0.3) != 1`` can happen), so this is a ``jax.custom_jvp`` instead.
- ``bernoulli_below``, ``bernoulli_log_prob``, ``categorical_log_prob``: exact Bernoulli samples
  from uniforms and the log-probabilities of samples, safe at infinite logits (for the
  score-function estimators).
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


def bernoulli_below(u: jax.Array, logits: jax.Array) -> jax.Array:
    """``1[u < sigmoid(logits)]`` in the dtype of ``logits``: a Bernoulli sample from a uniform.

    For ``u`` uniform on ``[0, 1)`` this is exactly ``Bernoulli(sigmoid(logits))`` up to the float
    grid of ``u``, with no ``eps``: ``+inf`` logits always give 1, ``-inf`` always 0 (and ``NaN``
    gives 0; callers make the ``NaN`` visible elsewhere).
    """
    return (u < jax.nn.sigmoid(logits)).astype(logits.dtype)


def bernoulli_log_prob(b: jax.Array, logits: jax.Array) -> jax.Array:
    """``log P(b)`` elementwise for ``b`` in {0, 1} and ``P(1) = sigmoid(logits)``.

    Selected with ``jnp.where`` (not ``b * log_sigmoid + (1 - b) * log_sigmoid(-logits)``), so
    certain outcomes of ``+-inf`` logits give 0 and a zero gradient rather than ``0 * -inf``.
    """
    return jnp.where(b > 0, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))


def categorical_log_prob(one_hot: jax.Array, logits: jax.Array, axis: int) -> jax.Array:
    """``log softmax(logits)`` at the category of ``one_hot``, summed out along ``axis``.

    Masked (``-inf``) categories that are not selected contribute 0 (no ``0 * -inf``) and get a
    zero gradient.
    """
    log_p = jax.nn.log_softmax(logits, axis=axis)
    return jnp.sum(jnp.where(one_hot > 0, log_p, 0.0), axis=axis)
