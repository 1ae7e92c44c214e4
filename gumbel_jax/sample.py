"""Gumbel noise and the samplers built on it: Gumbel-Softmax, Gumbel-max and Gumbel-top-k; the
binary Concrete, the hard concrete and the relaxed top-k subset.

All functions take a PRNG key first, work under ``jit``, ``vmap`` and ``grad`` for any batch shape
and any category ``axis``, and accept ``-inf`` logits for masked categories (probability zero, no
``NaN``). A row with a ``NaN`` or ``+inf`` logit, or with no finite logit, is invalid and gives
``NaN`` (see "Invalid inputs" in ``gumbel_jax``). Binary samplers take one log-odds per entry, any
shape; ``+-inf`` log-odds are certain outcomes and ``NaN`` gives ``NaN``. ``bfloat16`` and
``float16`` inputs are computed in ``float32`` and returned in the input dtype.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gumbel_jax import sample
  >>> logits = jnp.log(jnp.array([0.2, 0.3, 0.5]))
  >>> y = sample.gumbel_softmax(jax.random.key(0), logits, 0.5, hard=True)
  >>> bool(y.sum() == 1.0)
  True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gumbel_jax import _checks, _ops, _random

__all__ = [
    "gumbel",
    "gumbel_max",
    "gumbel_softmax",
    "gumbel_top_k",
    "hard_concrete",
    "relaxed_bernoulli",
    "relaxed_top_k",
]


def gumbel(
    key: jax.Array, shape: tuple[int, ...] = (), dtype: jax.typing.DTypeLike = jnp.float32
) -> jax.Array:
    """Draws standard Gumbel noise, exactly and finite for every draw.

    The noise is ``-log(-log(U))`` for ``U`` uniform on ``[tiny, 1)`` (this is
    ``jax.random.gumbel``): no ``eps`` is added anywhere, unlike the common
    ``-log(-log(U + 1e-20) + 1e-20)``, and ``U`` is never 0 or 1, so every draw is finite
    (in ``float32`` between about -4.5 and 16; only the float resolution of ``U`` limits the tails).
    ``bfloat16`` and ``float16`` noise is drawn in ``float32`` and rounded, because a uniform
    drawn in 8 or 11 bits would cut the right tail off near 5.5 or 7.6.

    Args:
      key: a PRNG key.
      shape: the shape of the result.
      dtype: a floating dtype.

    Returns:
      An array of shape ``shape`` and dtype ``dtype``, i.i.d. standard Gumbel
      (mean: the Euler-Mascheroni constant 0.5772..., variance pi^2 / 6).

    Raises:
      TypeError: if ``dtype`` is not a floating dtype.

    Examples:
      >>> g = gumbel(jax.random.key(0), (2, 3))
      >>> g.shape
      (2, 3)

    References:
      Gumbel, E. J. Statistical theory of extreme values and some practical applications (1954).
      Maddison, Tarlow, Minka. A* Sampling, https://arxiv.org/abs/1411.0030
    """
    dtype = _checks.float_dtype(dtype, name="dtype")
    noise = _random.drawn_flat(jax.random.gumbel, key, shape, _checks.compute_dtype(dtype))
    return noise.astype(dtype)


def gumbel_softmax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    hard: bool = False,
    axis: int = -1,
) -> jax.Array:
    """Draws a relaxed one-hot sample ``softmax((logits + G) / temperature)`` (Gumbel-Softmax).

    With ``hard=True`` the forward value is the one-hot vector of ``argmax(logits + G)``, exactly
    0.0 and 1.0 in every dtype (an exact categorical sample: the same as ``gumbel_max`` with the
    same key), and the gradient is that of the soft sample: the straight-through Gumbel-Softmax
    estimator.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities, with the categories
        on ``axis``; ``-inf`` masks a category.
      temperature: a positive temperature, a Python number or an array broadcastable to
        ``logits`` (may be traced, so annealing does not recompile). A traced temperature cannot
        be checked: one ``<= 0`` or ``NaN`` gives ``NaN`` values and gradients.
      hard: return the straight-through one-hot sample instead of the relaxed one.
      axis: the category axis.

    Returns:
      An array of the shape and dtype of ``logits``: a point of the probability simplex along
      ``axis`` (soft) or a one-hot vector (hard).

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> logits = jnp.zeros((8, 10))
      >>> y = gumbel_softmax(jax.random.key(0), logits, 0.5, hard=True)
      >>> y.shape, bool((y.sum(-1) == 1.0).all())
      ((8, 10), True)

    References:
      Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
      https://arxiv.org/abs/1611.01144
      Maddison, Mnih, Teh. The Concrete Distribution (ICLR 2017), https://arxiv.org/abs/1611.00712
      Bengio, Leonard, Courville. Estimating or Propagating Gradients Through Stochastic Neurons,
      https://arxiv.org/abs/1308.3432
    """
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    invalid = _ops.invalid_rows(x, axis, tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    noise = gumbel(key, x.shape, x.dtype)
    soft = jax.nn.softmax(_ops.tempered_logits(x, noise, tau), axis=axis)
    if hard:
        one_hot = _ops.one_hot_argmax(x + noise, axis, soft.dtype)
        soft = _ops.hard_with_soft_gradient(soft, one_hot)
    return _ops.nan_where_invalid(soft, invalid).astype(dtype)


def gumbel_max(key: jax.Array, logits: jax.typing.ArrayLike, *, axis: int = -1) -> jax.Array:
    """Draws an exact categorical sample as a one-hot vector (the Gumbel-max trick).

    ``one_hot(argmax(logits + G))`` is distributed as ``Categorical(softmax(logits))``. The result
    is not differentiable (its gradient is zero); use ``gumbel_softmax`` or
    ``gumbel_jax.estimators`` for gradients.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives a row of ``NaN``:
    see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category.
      axis: the category axis.

    Returns:
      A one-hot array (exactly 0.0 and 1.0) of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating.
      ValueError: if ``axis`` is out of range.

    Examples:
      >>> y = gumbel_max(jax.random.key(0), jnp.log(jnp.array([0.1, 0.9])))
      >>> y.shape
      (2,)

    References:
      Gumbel (1954); Maddison, Tarlow, Minka. A* Sampling, https://arxiv.org/abs/1411.0030
    """
    x, dtype, axis = _checks.logits_array(logits, axis)
    invalid = _ops.invalid_rows(x, axis)
    noise = gumbel(key, x.shape, x.dtype)
    one_hot = jax.lax.stop_gradient(_ops.one_hot_argmax(x + noise, axis, dtype))
    return _ops.nan_where_invalid(one_hot, invalid)


def gumbel_top_k(
    key: jax.Array, logits: jax.typing.ArrayLike, k: int, *, axis: int = -1
) -> jax.Array:
    """Samples ``k`` categories without replacement (the Gumbel-top-k trick).

    The indices of the ``k`` largest ``logits + G`` are, in order, a sample of ``k`` successive
    draws without replacement from ``softmax(logits)`` (the Plackett-Luce distribution): the
    first index is distributed as ``Categorical(softmax(logits))``, the second as a draw from the
    remaining categories renormalised, and so on. Masked (``-inf``) categories are never drawn.

    A slot that no valid category can fill holds the out-of-range index ``num_categories``: every
    slot of an invalid row (a ``NaN`` or ``+inf``, or no finite logit) and the slots beyond a
    row's number of unmasked categories; see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``.
      k: the number of categories to draw, ``1 <= k <= num_categories`` (a Python int).
      axis: the category axis.

    Returns:
      An ``int32`` array of the shape of ``logits`` with ``axis`` of size ``k``: the sampled
      category indices in the order they were drawn, ``num_categories`` in unfilled slots.

    Raises:
      TypeError: if ``logits`` is not floating or ``k`` is not an int.
      ValueError: if ``axis`` is out of range or ``k`` is not in ``[1, num_categories]``.

    Examples:
      >>> idx = gumbel_top_k(jax.random.key(0), jnp.zeros((4, 10)), 3)
      >>> idx.shape
      (4, 3)

    References:
      Kool, van Hoof, Welling. Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick
      for Sampling Sequences Without Replacement (ICML 2019), https://arxiv.org/abs/1903.06059
    """
    x, _, axis = _checks.logits_array(logits, axis)
    k = _checks.positive_int(
        k, name="k", maximum=x.shape[axis], what=f"the number of categories on axis {axis}"
    )
    invalid = jnp.moveaxis(_ops.invalid_rows(x, axis), axis, -1)
    noise = gumbel(key, x.shape, x.dtype)
    scores = jnp.moveaxis(x + noise, axis, -1)
    values, indices = jax.lax.top_k(scores, k)
    # Slots that no valid category can fill get the out-of-range index ``num_categories``.
    unfilled = invalid | jnp.isneginf(values)
    indices = jnp.where(unfilled, x.shape[axis], indices)
    return jnp.moveaxis(indices.astype(jnp.int32), -1, axis)


def _logistic(key: jax.Array, shape: tuple[int, ...], dtype: jax.typing.DTypeLike) -> jax.Array:
    """Standard logistic noise ``log U - log(1 - U)`` for ``U`` on ``[tiny, 1)``, in ``dtype``.

    This is ``jax.random.logistic``: no ``eps`` anywhere and finite for every draw (in
    ``float32`` between about -87 and 16.6; the float resolution of ``U`` limits the tails).
    Callers draw it in the compute dtype (``float32`` for ``bfloat16``/``float16`` inputs).
    """
    return _random.drawn_flat(jax.random.logistic, key, shape, dtype)


def relaxed_bernoulli(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    hard: bool = False,
) -> jax.Array:
    """Draws a binary Concrete (relaxed Bernoulli) sample ``sigmoid((logits + L) / temperature)``.

    ``L = log U - log(1 - U)`` is standard logistic noise, drawn exactly (no ``eps``; finite for
    every draw), one per entry: ``logits`` holds the log-odds of independent Bernoullis, any
    shape. With ``hard=True`` the forward value is ``1.0`` where ``logits + L > 0`` and ``0.0``
    elsewhere, exactly, in every dtype: an exact ``Bernoulli(sigmoid(logits))`` sample, equal to
    ``soft > 0.5`` for the same key (except where the soft sample rounds to exactly 0.5, within
    an ulp of it), with the gradient of the soft sample (straight-through).

    Log-odds of ``+inf`` (``-inf``) give exactly 1 (0), soft and hard, with zero gradients and no
    ``NaN``; ``NaN`` log-odds give ``NaN`` (also with ``hard=True``, never a plausible sample).

    Args:
      key: a PRNG key.
      logits: the log-odds ``log(p / (1 - p))``, any shape.
      temperature: a positive temperature, a Python number or an array broadcastable to
        ``logits`` (may be traced, so annealing does not recompile). A traced temperature cannot
        be checked: one ``<= 0`` or ``NaN`` gives ``NaN`` values and gradients.
      hard: return the straight-through 0/1 sample instead of the relaxed one.

    Returns:
      An array of the shape and dtype of ``logits``, in ``[0, 1]`` (soft) or exactly 0 and 1
      (hard).

    Raises:
      TypeError: if ``logits`` is not floating.
      ValueError: if a Python-number ``temperature`` is ``<= 0`` or not finite.

    Examples:
      >>> y = relaxed_bernoulli(jax.random.key(0), jnp.zeros((4, 3)), 0.5)
      >>> y.shape, bool(((y > 0) & (y < 1)).all())
      ((4, 3), True)
      >>> z = relaxed_bernoulli(jax.random.key(0), jnp.array([-jnp.inf, 0.0, jnp.inf]), hard=True)
      >>> z[0].item(), z[2].item()
      (0.0, 1.0)

    References:
      Maddison, Mnih, Teh. The Concrete Distribution (ICLR 2017), https://arxiv.org/abs/1611.00712
      (the binary Concrete, section 3.3).
      Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
      https://arxiv.org/abs/1611.01144
    """
    x, dtype = _checks.float_array(logits, name="logits")
    tau = _checks.temperature(temperature, x.dtype)
    bad_tau = _ops.outside_domain(tau)  # a traced temperature <= 0 or NaN: NaN out
    x = _ops.nan_gradient_where_invalid(x, bad_tau)
    tau = _ops.nan_gradient_where_invalid(tau, bad_tau)
    noise = _logistic(key, x.shape, x.dtype)
    soft = jax.nn.sigmoid(_ops.tempered_log_odds(x, noise, tau))
    if hard:
        sample = jnp.where(jnp.isnan(x), jnp.nan, (x + noise > 0).astype(soft.dtype))
        soft = _ops.hard_with_soft_gradient(soft, jnp.broadcast_to(sample, soft.shape))
    return _ops.nan_where_invalid(soft, bad_tau).astype(dtype)


def hard_concrete(
    key: jax.Array,
    log_alpha: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 2 / 3,
    *,
    low: jax.typing.ArrayLike = -0.1,
    high: jax.typing.ArrayLike = 1.1,
) -> jax.Array:
    """Draws a hard concrete gate: a binary Concrete stretched to (low, high), clipped to [0, 1].

    ``s = sigmoid((log_alpha + L) / temperature)`` is the binary Concrete sample of
    ``relaxed_bernoulli`` (same key, same value), and the gate is
    ``z = clip(low + (high - low) * s, 0, 1)``. Because ``low < 0`` and ``high > 1``, exact zeros
    and ones have positive probability::

      P(z = 0) = sigmoid(temperature * log(-low / high) - log_alpha)
      P(z = 1) = sigmoid(log_alpha - temperature * log((1 - low) / (high - 1)))

    ``concrete.hard_concrete_l0`` is ``P(z != 0)``, the expected L0 penalty. Between the clips
    ``z`` is differentiable in ``log_alpha`` (and the temperature, ``low`` and ``high``); at
    exact 0 or 1 its gradient is zero.

    Args:
      key: a PRNG key.
      log_alpha: the gates' location parameters ``log(alpha)``, any shape; ``+-inf`` give gates
        that are always 1 (0), ``NaN`` gives ``NaN``.
      temperature: the Concrete's positive temperature (the paper's ``beta``, 2/3 by default),
        broadcastable to ``log_alpha``; may be traced (then it is not checked).
      low: the stretched interval's lower end, ``< 0`` (the paper's ``gamma``); a Python number
        is checked, an array broadcastable to ``log_alpha`` is used as given.
      high: its upper end, ``> 1`` (the paper's ``zeta``); the same.

    Returns:
      An array of the shape and dtype of ``log_alpha`` with values in ``[0, 1]``.

    Raises:
      TypeError: if ``log_alpha`` is not floating or ``low``/``high`` are not real.
      ValueError: if a Python-number ``temperature`` is ``<= 0``, ``low >= 0`` or ``high <= 1``.

    Examples:
      >>> z = hard_concrete(jax.random.key(0), jnp.zeros(10_000))
      >>> bool(((z >= 0) & (z <= 1)).all()), bool((z == 0).any() and (z == 1).any())
      (True, True)

    References:
      Louizos, Welling, Kingma. Learning Sparse Neural Networks through L0 Regularization
      (ICLR 2018), https://arxiv.org/abs/1712.01312 (eqs. 10 to 12).
      Maddison, Mnih, Teh (2017), https://arxiv.org/abs/1611.00712
    """
    x, dtype = _checks.float_array(log_alpha, name="log_alpha")
    tau = _checks.temperature(temperature, x.dtype)
    low, high = _checks.stretch_interval(low, high, x.dtype)
    # Traced parameters outside their domain (temperature <= 0, low >= 0, high <= 1, NaN): NaN.
    bad = _ops.outside_domain(tau) | ~(low < 0) | ~(high > 1)
    x = _ops.nan_gradient_where_invalid(x, bad)
    tau = _ops.nan_gradient_where_invalid(tau, bad)
    noise = _logistic(key, x.shape, x.dtype)
    soft = jax.nn.sigmoid(_ops.tempered_log_odds(x, noise, tau))
    gate = jnp.clip(low + (high - low) * soft, 0.0, 1.0)
    return _ops.nan_where_invalid(gate, bad).astype(dtype)


def relaxed_top_k(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    k: int,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    hard: bool = False,
    axis: int = -1,
) -> jax.Array:
    """Draws a relaxed k-hot vector: a continuous relaxation of ``k`` draws without replacement.

    With ``alpha = logits + G`` (the Gumbel noise of ``gumbel_top_k`` for the same key), ``k``
    successive passes take ``a_j = softmax(alpha_j / temperature)`` and down-weight what the pass
    took, ``alpha_{j+1} = alpha_j + log(1 - a_j)``; the sample is ``sum_j a_j``, which sums to
    ``k`` along ``axis`` (up to rounding). As the temperature goes to 0 it tends to the k-hot
    vector of the ``k`` largest ``alpha``; at higher temperatures an entry can exceed 1. The
    passes run in log space, so they stay finite at temperatures down to 1e-3 (where the
    softmaxes are exactly one-hot), with no ``eps``.

    With ``hard=True`` the forward value is the k-hot vector (exactly 0.0 and 1.0) of the indices
    that ``gumbel_top_k(key, logits, k, axis=axis)`` returns, an exact sample of ``k`` categories
    without replacement, and the gradient is that of the soft sample (straight-through).

    Masked (``-inf``) categories are never chosen (0 in both forms, zero gradient) as long as a
    row has at least ``k`` finite logits. A row (along ``axis``) with fewer than ``k`` finite
    logits, or with a ``NaN`` or ``+inf`` logit, is ``NaN`` throughout, soft and hard (no
    plausible k-hot), and so are the gradients with respect to its logits and to a temperature
    shared with it (see "Invalid inputs" in ``gumbel_jax``). Other rows' values and gradients are
    unaffected.

    Differentiation is reverse-mode only (``grad``, ``vjp``): each pass has a custom VJP.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities, with the categories
        on ``axis``; ``-inf`` masks a category.
      k: the subset size, ``1 <= k <= num_categories`` (a Python int).
      temperature: a positive temperature, a Python number or an array broadcastable to
        ``logits`` (may be traced, so annealing does not recompile; a traced value is not
        checked and 0 gives ``NaN``).
      hard: return the straight-through k-hot sample instead of the relaxed one.
      axis: the category axis.

    Returns:
      An array of the shape and dtype of ``logits`` that sums to ``k`` along ``axis``.

    Raises:
      TypeError: if ``logits`` is not floating or ``k`` is not an int.
      ValueError: if ``axis`` is out of range, ``k`` is not in ``[1, num_categories]`` or a
        Python-number ``temperature`` is ``<= 0``.

    Examples:
      >>> y = relaxed_top_k(jax.random.key(0), jnp.zeros((4, 10)), 3, 0.5)
      >>> y.shape, bool(jnp.allclose(y.sum(-1), 3.0))
      ((4, 10), True)
      >>> z = relaxed_top_k(jax.random.key(0), jnp.zeros((4, 10)), 3, 0.5, hard=True)
      >>> z.sum(-1).tolist()
      [3.0, 3.0, 3.0, 3.0]

    References:
      Xie, Ermon. Reparameterizable Subset Sampling via Continuous Relaxations (IJCAI 2019),
      https://arxiv.org/abs/1901.10517
      Kool, van Hoof, Welling (2019), https://arxiv.org/abs/1903.06059 (the Gumbel-top-k trick).
    """
    x, dtype, axis = _checks.logits_array(logits, axis)
    k = _checks.positive_int(
        k, name="k", maximum=x.shape[axis], what=f"the number of categories on axis {axis}"
    )
    tau = _checks.temperature(temperature, x.dtype)
    noise = gumbel(key, x.shape, x.dtype)
    # A row is valid with >= k finite logits and no NaN or +inf: count finite logits as 1,
    # masked ones as 0 and NaN/+inf as -(n + 1), in one pass. Invalid rows are set to NaN at the
    # end; NaN/+inf entries get a finite stand-in (elementwise: a row-wise one costs a third more).
    n = x.shape[axis]
    weight = jnp.where(jnp.isfinite(x), 1, jnp.where(jnp.isneginf(x), 0, -(n + 1)))
    invalid = (jnp.sum(weight, axis=axis, keepdims=True) < k) | _ops.outside_domain(tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    safe_x = jnp.where(jnp.isfinite(x) | jnp.isneginf(x), x, jnp.zeros_like(x))
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    soft = _ops.relaxed_top_k(_ops.tempered_logits(safe_x, noise, tau), k, tau, axis)
    if hard:
        k_hot = _ops.top_k_hot(safe_x + noise, k, axis, soft.dtype)
        soft = _ops.hard_with_soft_gradient(soft, jnp.broadcast_to(k_hot, soft.shape))
    return _ops.nan_where_invalid(soft, invalid).astype(dtype)
