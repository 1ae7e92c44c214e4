"""Numerical building blocks shared by the public modules (private).

- ``tempered_logits``: ``(logits + noise) / temperature`` that keeps masked (``-inf``) categories
  at ``-inf`` without producing ``NaN`` in values or in any gradient.
- ``tempered_log_odds``: the same for Bernoulli log-odds, with ``+-inf`` (certain outcomes)
  clipped to a finite value whose sigmoid is exactly 1 or 0, again without ``NaN``.
- ``relaxed_top_k``: the successive tempered softmaxes of the relaxed k-subset, in log space.
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


def invalid_rows(logits: jax.Array, axis: int, *temperatures: jax.Array) -> jax.Array:
    """Which rows of ``logits`` are invalid: a ``NaN`` or ``+inf`` logit, or no finite logit, or
    a temperature outside its domain.

    A row (the categories along ``axis``) is valid when its maximum is finite: every logit is
    finite or ``-inf`` (masked) and at least one is finite. The maximum propagates ``NaN``, so
    one reduction decides all three cases. A temperature that is not ``> 0`` (``NaN``
    included; possible only when traced, since concrete ones are checked) makes the rows it
    applies to invalid too (``outside_domain``). See "Invalid inputs" in ``gumbel_jax``'s
    docstring.

    Args:
      logits: ``[..., num_categories, ...]`` logits.
      axis: the category axis.
      *temperatures: temperatures broadcastable to ``logits``.

    Returns:
      A boolean array of the shape of ``logits`` with ``axis`` of size 1 (or the broadcast shape
      with the temperatures): ``True`` for invalid rows. Broadcasts against ``logits`` and
      anything computed from them.
    """
    invalid = ~jnp.isfinite(jnp.max(logits, axis=axis, keepdims=True))
    for temperature in temperatures:
        invalid = invalid | outside_domain(temperature)
    return invalid


def outside_domain(positive: jax.Array) -> jax.Array:
    """``True`` where a parameter that must be ``> 0`` (a temperature) is not: ``<= 0`` or ``NaN``.

    Concrete values are checked before tracing (``_checks``); this is the rule for traced ones:
    every output they touch is ``NaN``, never a plausible sample.
    """
    return ~(positive > 0)


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
