"""Numerical building blocks shared by the public modules (private).

- ``tempered_logits``: ``(logits + noise) / temperature`` that keeps masked (``-inf``) categories
  at ``-inf`` without producing ``NaN`` in values or in any gradient.
- ``tempered_log_odds``: the same for Bernoulli log-odds, keeping ``+-inf`` (certain outcomes)
  exact, again without ``NaN``.
- ``relaxed_top_k``: the successive tempered softmaxes of the relaxed k-subset, in log space.
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


def tempered_log_odds(logits: jax.Array, noise: jax.Array, temperature: jax.Array) -> jax.Array:
    """``(logits + noise) / temperature`` with infinite log-odds kept at exactly ``+-inf``.

    As in ``tempered_logits``, infinite entries are selected by ``jnp.where`` from a computation on
    finite stand-ins, so the gradients there (``sigmoid`` is flat at ``+-inf``) are exactly zero
    instead of ``inf * 0 = NaN``. ``NaN`` log-odds stay ``NaN``.

    Args:
      logits: log-odds of any shape; ``+-inf`` for certain outcomes.
      noise: noise broadcastable to ``logits`` (finite).
      temperature: a positive temperature broadcastable to ``logits``.

    Returns:
      An array of the broadcast shape of ``logits`` and ``noise``.
    """
    infinite = jnp.isinf(logits)
    safe_logits = jnp.where(infinite, jnp.zeros_like(logits), logits)
    scaled = (safe_logits + noise) / temperature
    return jnp.where(infinite, logits, scaled)


def _softmax_and_log1m(scores: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """``a = softmax(scores)`` and ``log(1 - a)``, accurate and finite where ``a`` rounds to 1.

    One ``exp`` per entry, stabilised by the row's *second* largest score: at the largest entry
    ``log(1 - a)`` is ``logsumexp(others) - logsumexp(all)``, and ``logsumexp(others) >= second``
    never underflows, so it stays finite (with finite gradients) at any temperature, even where
    every other entry of ``a`` underflows to 0. Elsewhere ``a <= 1/2``, so ``log(1 - a)`` is
    accurate to an ulp of 1. Needs two finite scores per row.
    """
    is_max = jax.nn.one_hot(
        jnp.argmax(scores, axis=axis), scores.shape[axis], dtype=bool, axis=axis
    )
    top = jnp.max(scores, axis=axis, keepdims=True)
    others = jnp.where(is_max, -jnp.inf, scores)
    second = jax.lax.stop_gradient(jnp.max(others, axis=axis, keepdims=True))
    e = jnp.exp(others - second)  # 0 at the largest score and at masked entries
    log_rest = second + jnp.log(jnp.sum(e, axis=axis, keepdims=True))
    lse = jnp.logaddexp(top, log_rest)
    a_others = e * jnp.exp(second - lse)  # 0 at the largest score, elsewhere <= 1/2
    a = jnp.where(is_max, jnp.exp(top - lse), a_others)
    log1m = jnp.where(is_max, log_rest - lse, jnp.log(1.0 - a_others))
    return a, log1m


def relaxed_top_k(scores: jax.Array, k: int, temperature: jax.Array, axis: int) -> jax.Array:
    """The relaxed k-hot of Xie & Ermon: ``k`` tempered softmaxes, each down-weighting the last.

    With ``alpha`` the perturbed logits, pass ``j`` takes ``a_j = softmax(alpha_j / temperature)``
    and the next starts from ``alpha_{j+1} = alpha_j + log(1 - a_j)``; the result is
    ``sum_j a_j``. Here the passes run on ``scores = alpha / temperature`` with ``log(1 - a_j)``
    from ``_softmax_and_log1m``, so nothing rounds to ``log(0)`` at low temperatures.

    Args:
      scores: ``[..., num_categories, ...]`` tempered perturbed logits (``tempered_logits``),
        ``-inf`` at masked categories; at least ``k`` finite entries along ``axis``.
      k: the number of passes (a Python int >= 1).
      temperature: the temperature the scores were divided by, broadcastable to them.
      axis: the category axis.

    Returns:
      An array of the shape of ``scores``, summing to ``k`` along ``axis`` (0 at masked entries).
    """
    total = jnp.zeros_like(scores)
    for _ in range(k - 1):
        a, log1m = _softmax_and_log1m(scores, axis)
        total = total + a
        scores = scores + log1m / temperature
    return total + jax.nn.softmax(scores, axis=axis)


def k_hot(
    indices: jax.Array, num_categories: int, axis: int, dtype: jax.typing.DTypeLike
) -> jax.Array:
    """The k-hot vector of ``[..., k]`` distinct ``indices`` (exactly 0 and 1) on ``axis``."""
    hot = jnp.sum(jax.nn.one_hot(indices, num_categories, dtype=dtype), axis=-2)
    return jnp.moveaxis(hot, -1, axis)


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
