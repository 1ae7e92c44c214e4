"""Gumbel noise and the samplers built on it: Gumbel-Softmax, Gumbel-max and Gumbel-top-k.

All functions take a PRNG key first, work under ``jit``, ``vmap`` and ``grad`` for any batch shape
and any category ``axis``, and accept ``-inf`` logits for masked categories (probability zero, no
``NaN``). A row with a ``NaN`` or ``+inf`` logit, or with no finite logit, is invalid and gives
``NaN`` (see "Invalid inputs" in ``gumbel_jax``). ``bfloat16`` and ``float16`` inputs are computed
in ``float32`` and returned in the input dtype.

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

from gumbel_jax import _checks, _ops

__all__ = ["gumbel", "gumbel_max", "gumbel_softmax", "gumbel_top_k"]


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
    noise = jax.random.gumbel(key, shape, _checks.compute_dtype(dtype))
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
        ``logits`` (may be traced, so annealing does not recompile). A traced temperature is not
        checked: 0 gives ``NaN`` and a negative one reverses the ordering of the soft sample.
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
    invalid = _ops.invalid_rows(x, axis)
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
