"""Numerical building blocks shared by the public modules (private).

- ``tempered_logits``: ``(logits + noise) / temperature`` that keeps masked (``-inf``) categories
  at ``-inf`` without producing ``NaN`` in values or in any gradient.
- ``hard_with_soft_gradient``: returns the hard one-hot exactly, differentiated as the soft one.
  The usual ``soft + stop_gradient(hard - soft)`` is not exactly 0/1 in floating point
  (``0.3 + (1 - 0.3) != 1`` can happen), so this is a ``jax.custom_jvp`` instead.
- ``bernoulli_below``, ``bernoulli_log_prob``, ``categorical_log_prob``: exact Bernoulli samples
  from uniforms and the log-probabilities of samples, safe at infinite logits (for the
  score-function estimators).
- ``invalid_rows``, ``nan_gradient_where_invalid``, ``nan_where_invalid``: the "Invalid inputs"
  rule of ``gumbel_jax`` (a row with a ``NaN`` or ``+inf`` logit, or no finite one, is ``NaN``
  in values and gradients). Every categorical function applies it the same way::

    invalid = invalid_rows(logits, axis)
    logits = nan_gradient_where_invalid(logits, invalid)  # in: gradients NaN, values unchanged
    temperature = nan_gradient_where_invalid(temperature, invalid)  # the same, broadcast
    ...
    return nan_where_invalid(result, invalid)  # out: values NaN
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


def invalid_rows(logits: jax.Array, axis: int) -> jax.Array:
    """Which rows of ``logits`` are invalid: a ``NaN`` or ``+inf`` logit, or no finite logit.

    A row (the categories along ``axis``) is valid when its maximum is finite: every logit is
    finite or ``-inf`` (masked) and at least one is finite. The maximum propagates ``NaN``, so
    one reduction decides all three cases. See "Invalid inputs" in ``gumbel_jax``'s docstring.

    Args:
      logits: ``[..., num_categories, ...]`` logits.
      axis: the category axis.

    Returns:
      A boolean array of the shape of ``logits`` with ``axis`` of size 1: ``True`` for invalid
      rows. Broadcasts against ``logits`` and anything computed from them.
    """
    return ~jnp.isfinite(jnp.max(logits, axis=axis, keepdims=True))


def _nan_scale(invalid: jax.Array, dtype: jax.typing.DTypeLike) -> jax.Array:
    """``NaN`` where ``invalid`` is set, else 1: a tangent times it is ``NaN`` there."""
    return jnp.where(invalid, jnp.asarray(jnp.nan, dtype), jnp.asarray(1, dtype))


@jax.custom_jvp
def nan_where_invalid(x: jax.Array, invalid: jax.Array) -> jax.Array:
    """``jnp.where(invalid, nan, x)``, whose tangent passes through unchanged.

    Apply it to a function's result, with ``invalid = invalid_rows(logits, axis)``, so that a
    value that does not depend smoothly on the logits (an argmax, a one-hot) is ``NaN`` too;
    elsewhere the value is ``x`` exactly (``-inf`` included). Gradients are made ``NaN`` by
    ``nan_gradient_where_invalid`` on the inputs, so here the tangent is simply ``x_dot``: no
    work in the backward pass (a plain ``where`` would zero the cotangent of the ``NaN``
    entries, which is harmless but costs a select).

    Args:
      x: any floating array.
      invalid: a boolean array broadcastable to ``x`` (not to a larger shape).

    Returns:
      An array of the shape and dtype of ``x``.
    """
    return jnp.where(invalid, jnp.asarray(jnp.nan, x.dtype), x)


@nan_where_invalid.defjvp
def _nan_where_invalid_jvp(primals, tangents):
    x_dot, _ = tangents
    return nan_where_invalid(*primals), x_dot


@jax.custom_jvp
def nan_gradient_where_invalid(x: jax.Array, invalid: jax.Array) -> jax.Array:
    """Returns ``x`` (broadcast against ``invalid``); its gradients are ``NaN`` where ``invalid``.

    Apply it to every differentiable input on the way in (the logits, and a temperature shared
    by the rows) and ``nan_where_invalid`` to the result on the way out: every gradient through
    an invalid row is then ``NaN``, even where the computation in between would zero it (masked
    ``-inf`` categories, a ``where``) and even for a zero cotangent (``0 * nan`` is ``NaN``).
    The value is left alone, so under ``jit`` this costs nothing unless differentiated (a
    ``where`` on the logits would add a pass over them, about a third of the hard sampler's
    time on CPU). The multiplication is on the gradient only, never on values: XLA rewrites
    ``one_hot * nan`` into a select that leaves a one-hot's zeros at 0.

    Args:
      x: any floating array, e.g. ``[..., num_categories, ...]`` logits or a scalar temperature.
      invalid: a boolean array broadcastable with ``x``, e.g. ``invalid_rows(logits, axis)``.

    Returns:
      ``x`` broadcast to the shape of ``x`` and ``invalid`` together, whose tangent is
      ``x_dot * where(invalid, nan, 1)``.
    """
    return jnp.broadcast_to(x, jnp.broadcast_shapes(x.shape, invalid.shape))


@nan_gradient_where_invalid.defjvp
def _nan_gradient_where_invalid_jvp(primals, tangents):
    x, invalid = primals
    x_dot, _ = tangents
    return nan_gradient_where_invalid(x, invalid), x_dot * _nan_scale(invalid, x.dtype)
