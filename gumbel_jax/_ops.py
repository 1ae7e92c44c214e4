"""Numerical building blocks shared by the public modules (private).

- ``tempered_logits``: ``(logits + noise) / temperature`` that keeps masked (``-inf``) categories
  at ``-inf`` without producing ``NaN`` in values or in any gradient.
- ``tempered_log_odds``: the same for Bernoulli log-odds, with ``+-inf`` (certain outcomes)
  clipped to a finite value whose sigmoid is exactly 1 or 0, again without ``NaN``.
- ``relaxed_top_k``: the successive tempered softmaxes of the relaxed k-subset, in log space.
- ``hard_with_soft_gradient``: returns the hard one-hot exactly, differentiated as the soft one.
  The usual ``soft + stop_gradient(hard - soft)`` is not exactly 0/1 in floating point
  (``0.3 + (1 - 0.3) != 1`` can happen), so this is a ``jax.custom_jvp`` instead.
"""

from __future__ import annotations

import functools

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


CERTAIN_LOG_ODDS = 1e10  # log-odds beyond this (infinite ones included) are certain outcomes


def tempered_log_odds(logits: jax.Array, noise: jax.Array, temperature: jax.Array) -> jax.Array:
    """``(logits + noise) / temperature`` with infinite log-odds clipped to ``+-1e10``.

    ``sigmoid`` of the result is then exactly 0 or 1 there (for temperatures up to about 1e8),
    and every gradient is exactly zero instead of ``inf * 0 = NaN``: ``sigmoid`` is flat there,
    and ``d/dtemperature = -1e10 / temperature**2`` stays finite (for temperatures above about
    1e-14). Finite log-odds beyond ``+-1e10`` are clipped too, which changes nothing at such
    temperatures. ``NaN`` log-odds stay ``NaN``. (A clip rather than ``jnp.where(isinf(...))``:
    on CPU the select kept XLA from vectorising the noise's fused loop, 1.7x slower.)

    Args:
      logits: log-odds of any shape; ``+-inf`` for certain outcomes.
      noise: noise broadcastable to ``logits`` (finite).
      temperature: a positive temperature broadcastable to ``logits``.

    Returns:
      An array of the broadcast shape of ``logits`` and ``noise``.
    """
    clipped = jnp.clip(logits, -CERTAIN_LOG_ODDS, CERTAIN_LOG_ODDS)
    return (clipped + noise) / temperature


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax_and_log1m(scores: jax.Array, axis: int) -> tuple[jax.Array, jax.Array]:
    """``a = softmax(scores)`` and ``log(1 - a)``, accurate and finite where ``a`` rounds to 1.

    At the largest entry ``log(1 - a)`` is the ``logsumexp`` of the other entries' ``log(a)``,
    stabilised by their own maximum (the row's second largest score), so it never underflows: it
    stays finite (with finite gradients) at any temperature, even where every other entry of
    ``a`` underflows to 0. Elsewhere ``a <= 1/2``, so ``log(1 - a)`` is
    accurate to an ulp of 1. Needs two finite scores per row.

    The VJP is written out (see ``_softmax_and_log1m_bwd``): the same gradient as autodiff of
    the forward, in fewer passes over the array.
    """
    return _softmax_and_log1m_fwd(scores, axis)[0]


def _softmax_and_log1m_fwd(scores, axis):
    is_max = jax.nn.one_hot(
        jnp.argmax(scores, axis=axis), scores.shape[axis], dtype=bool, axis=axis
    )
    log_a = jax.nn.log_softmax(scores, axis=axis)
    # log(1 - a[max]) = logsumexp of the others' log_a, stabilised by their own maximum.
    log_rest = jax.nn.logsumexp(jnp.where(is_max, -jnp.inf, log_a), axis=axis, keepdims=True)
    a = jnp.exp(log_a)
    log1m = jnp.where(is_max, log_rest, jnp.log(1.0 - jnp.where(is_max, 0.0, a)))
    return (a, log1m), (is_max, a, log_a, log_rest)


def _softmax_and_log1m_bwd(axis, residuals, cotangents):
    """The VJP. With ``d a_k / d s_j = a_k (delta_kj - a_j)`` and, for ``i != k``,
    ``d log(1 - a_i) / d s_k = a_i a_k / (1 - a_i)``, ``d log(1 - a_k) / d s_k = -a_k``::

      g_s = a * (g_a - sum(a g_a) + W - w - g_l) + g_l[max] a[max] q

    where ``w_i = g_l_i a_i / (1 - a_i)`` below the maximum (``a_i <= 1/2``; 0 at it),
    ``W = sum(w)`` and ``q = a / (1 - a[max])`` is the softmax of the other entries (0 at the
    maximum), computed from the scores, so ``1 - a[max]`` is never formed.
    """
    is_max, a, log_a, log_rest = residuals
    g_a, g_l = cotangents
    q = jnp.where(is_max, 0.0, jnp.exp(log_a - log_rest))
    w = jnp.where(is_max, 0.0, g_l * a / (1.0 - jnp.where(is_max, 0.0, a)))
    row = functools.partial(jnp.sum, axis=axis, keepdims=True)
    inner = g_a - row(a * g_a) + row(w) - w - g_l
    g_s = a * inner + row(jnp.where(is_max, g_l * a, 0.0)) * q
    return (g_s,)


_softmax_and_log1m.defvjp(_softmax_and_log1m_fwd, _softmax_and_log1m_bwd)


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


_ARGMAX_TOP_K = 8  # up to this k, k argmax passes are faster than lax.top_k (a sort) on CPU


def top_k_hot(scores: jax.Array, k: int, axis: int, dtype: jax.typing.DTypeLike) -> jax.Array:
    """The k-hot vector (exactly 0 and 1) of the ``k`` largest ``scores`` along ``axis``.

    The same entries as ``jax.lax.top_k`` picks, ties included (the lower index first): for small
    ``k`` by ``k`` successive argmaxes, each excluding the entries already taken. Needs ``k``
    entries per row that are not ``NaN`` and not ``-inf``.
    """
    num_categories = scores.shape[axis]
    if k > _ARGMAX_TOP_K:
        _, indices = jax.lax.top_k(jnp.moveaxis(scores, axis, -1), k)
        hot = jnp.sum(jax.nn.one_hot(indices, num_categories, dtype=dtype), axis=-2)
        return jnp.moveaxis(hot, -1, axis)
    taken = jnp.zeros(scores.shape, dtype=bool)
    for _ in range(k):
        best = jnp.argmax(jnp.where(taken, -jnp.inf, scores), axis=axis)
        taken = taken | jax.nn.one_hot(best, num_categories, dtype=bool, axis=axis)
    return taken.astype(dtype)


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
