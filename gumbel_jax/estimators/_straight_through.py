"""The Gumbel-Softmax family: the relaxed sample and the straight-through estimators.

- ``gumbel_softmax`` ("relaxed"): the Concrete / Gumbel-Softmax sample itself (not one-hot).
- ``straight_through`` ("st"): the exact sample forward, the soft sample's gradient backward.
- ``st_softmax`` ("st-softmax"): the exact sample forward, the gradient of the tempered
  probabilities ``softmax(logits / temperature)`` backward (no noise in the backward pass).
- ``gapped_st`` ("gapped-st"): the exact sample forward, the gradient of a softmax of logits
  moved deterministically, given the sample, so that the sample leads the others by a gap.
- ``zgr`` ("zgr"): the exact sample forward, the average of the ST and DARN gradients backward.

For Bernoulli log-odds ``relaxed`` and ``st`` are the binary Concrete
(``sample.relaxed_bernoulli``), ``zgr`` has its authors' binary form, and the others are their
categorical form on the two categories ``(0, logits)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gumbel_jax import _checks, _ops, _random, sample
from gumbel_jax.estimators import _binary
from gumbel_jax.estimators._spec import DISTRIBUTIONS, Spec, register


def gumbel_softmax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
    distribution: str = "categorical",
) -> jax.Array:
    """The relaxed estimator: the soft sample ``softmax((logits + G) / temperature)``.

    Same as ``sample.gumbel_softmax(key, logits, temperature, axis=axis)``; here for symmetry so
    an experiment can select it by name (``"relaxed"``). The forward value is not one-hot.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``.
      temperature: a positive temperature (Python number or array, may be traced).
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).

    Returns:
      A point of the simplex along ``axis``, of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> y = gumbel_softmax(jax.random.key(0), jnp.zeros((2, 5)), 0.5)
      >>> y.shape
      (2, 5)

    References:
      Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
      https://arxiv.org/abs/1611.01144
      Maddison, Mnih, Teh. The Concrete Distribution (ICLR 2017), https://arxiv.org/abs/1611.00712
    """
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return sample.relaxed_bernoulli(key, logits, temperature)
    return sample.gumbel_softmax(key, logits, temperature, hard=False, axis=axis)


def straight_through(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
    distribution: str = "categorical",
) -> jax.Array:
    """Straight-through Gumbel-Softmax (ST-GS): hard one-hot forward, soft sample's gradient.

    Same as ``sample.gumbel_softmax(key, logits, temperature, hard=True, axis=axis)``.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``.
      temperature: a positive temperature (Python number or array, may be traced).
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).

    Returns:
      An exact one-hot sample (0.0 and 1.0), of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> y = straight_through(jax.random.key(0), jnp.zeros((2, 5)), 0.5)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]

    References:
      Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
      https://arxiv.org/abs/1611.01144
      Bengio, Leonard, Courville. Estimating or Propagating Gradients Through Stochastic
      Neurons for Conditional Computation (2013), https://arxiv.org/abs/1308.3432
    """
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return sample.relaxed_bernoulli(key, logits, temperature, hard=True)
    return sample.gumbel_softmax(key, logits, temperature, hard=True, axis=axis)


def one_hot_sample(key: jax.Array, logits: jax.Array, axis: int) -> jax.Array:
    """``sample.gumbel_max(key, logits, axis=axis)`` without its ``NaN`` for invalid rows.

    Shared by the one-hot estimators of every family. The estimators put ``NaN`` in invalid rows
    of their own result; a ``NaN``-free one-hot here keeps Gumbel-Rao's ``_conditional_gumbel``
    fast (with the ``NaN``, XLA fuses its backward pass about 40% slower on CPU).
    """
    return one_hot_sample_and_noise(key, logits, axis)[0]


def one_hot_sample_and_noise(
    key: jax.Array, logits: jax.Array, axis: int
) -> tuple[jax.Array, jax.Array]:
    """:func:`one_hot_sample` and the standard Gumbel noise ``G`` that drew it
    (``argmax(logits + G)``), both of the shape of ``logits``, for an estimator whose backward
    pass reuses the forward noise."""
    noise = sample.gumbel(key, logits.shape, logits.dtype)
    return jax.lax.stop_gradient(_ops.one_hot_argmax(logits + noise, axis, logits.dtype)), noise


def st_softmax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
    distribution: str = "categorical",
) -> jax.Array:
    """Straight-through with the softmax gradient: exact sample forward, no noise backward.

    Forward: a one-hot sample ``D ~ Categorical(softmax(logits))``. Backward: the gradient of
    ``s = softmax(logits / temperature)``, the tempered probabilities themselves (no Gumbel noise,
    unlike ``straight_through``): for an incoming gradient ``g``, the gradient with respect to
    ``logits`` is ``s * (g - <s, g>) / temperature`` (``<s, g>`` summed along ``axis``), and
    ``temperature`` gets the gradient of ``s`` too. The temperature enters the backward pass
    only. This is Bengio et al.'s straight-through estimator for a softmax unit, the "ST"
    baseline of Liu et al. (2023). For Bernoulli log-odds ``l`` the sample is
    ``b ~ Bernoulli(sigmoid(l))`` and the gradient that of ``sigmoid(l / temperature)``:
    ``g * s * (1 - s) / temperature`` with ``s = sigmoid(l / temperature)`` (the categorical
    form on the two categories ``(0, l)``).

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category (never sampled, zero gradient).
      temperature: a positive temperature (Python number or array, may be traced).
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).

    Returns:
      An exact one-hot sample (0.0 and 1.0; for ``"bernoulli"`` 0.0 or 1.0 per entry), of the
      shape and dtype of ``logits`` (``bfloat16``/``float16`` computed in ``float32``).

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range, a concrete ``temperature`` is ``<= 0`` or
        ``distribution`` is unknown.

    Examples:
      >>> y = st_softmax(jax.random.key(0), jnp.zeros((2, 5)), 0.5)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]
      >>> g = jax.grad(lambda x: st_softmax(jax.random.key(0), x, 2.0)[0])(jnp.zeros(2))
      >>> g.tolist()  # s = (1/2, 1/2), g = (1, 0): s * (g - 1/2) / 2
      [0.125, -0.125]

    References:
      Bengio, Leonard, Courville. Estimating or Propagating Gradients Through Stochastic
      Neurons for Conditional Computation (2013), https://arxiv.org/abs/1308.3432
      Liu, Zhao, Li, Yin, Zhang, Gao, Han. Bridging Discrete and Backpropagation:
      Straight-Through and Beyond (NeurIPS 2023), https://arxiv.org/abs/2304.08612
    """
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return _binary.two_categories(st_softmax, key, logits, temperature)
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    invalid = _ops.invalid_rows(x, axis, tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    hard = one_hot_sample(key, x, axis)
    soft = jax.nn.softmax(_ops.tempered_logits(x, jnp.zeros((), x.dtype), tau), axis=axis)
    one_hot = _ops.hard_with_soft_gradient(soft, jnp.broadcast_to(hard, soft.shape))
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


def gapped_st(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
    distribution: str = "categorical",
    gap: float = 1.0,
) -> jax.Array:
    """Gapped straight-through (GST): ST-Gumbel-Softmax with deterministic noise given the sample.

    Forward: a one-hot sample ``D ~ Categorical(softmax(logits))``. Backward: the gradient of
    ``s = softmax((logits + m) / temperature)``, where the perturbation ``m`` is a function of
    ``D`` and the logits ``theta`` that is treated as a constant (no gradient flows through it)::

      m = m1 - m2,   m1 = (max(theta) - theta) * D,   m2 = relu(theta - max(theta) + gap) * (1 - D)

    so the perturbed logits put the sampled category at ``max(theta)`` and every other category
    ``j`` at ``min(theta_j, max(theta) - gap)``: the sample is their argmax, ahead of the rest by
    at least ``gap`` (the paper's consistency and strict-gap properties of ST-Gumbel-Softmax's
    noise, without drawing the noise). For an incoming gradient ``g`` the gradient with respect
    to ``logits`` is ``s * (g - <s, g>) / temperature``; ``temperature`` gets the gradient of
    ``s`` too. ``gap=1.0`` is the paper's "GST-1.0" (its adaptive "GST-p" gap is not offered).

    For Bernoulli log-odds ``l`` it is the categorical form on the two categories ``(0, l)``:
    with ``b ~ Bernoulli(sigmoid(l))`` the gradient is ``g * s * (1 - s) / temperature`` for
    ``s = sigmoid(delta / temperature)``, ``delta = max(l, gap)`` if ``b = 1`` and
    ``min(l, -gap)`` if ``b = 0``.

    This is the authors' ``gst_mover`` (github.com/chijames/GST) and SynJax's
    ``gapped_straight_through`` (google-deepmind/synjax); they differ only in a shift of the
    logits that no softmax sees (the authors subtract the mean, SynJax applies ``log_softmax``
    first), so all three give the same gradient.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category (never sampled, zero gradient).
      temperature: a positive temperature (Python number or array, may be traced).
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).
      gap: the margin ``> 0`` (in logit units, before the temperature) by which the sampled
        category leads the others in the perturbed logits; a Python number (static).

    Returns:
      An exact one-hot sample (0.0 and 1.0; for ``"bernoulli"`` 0.0 or 1.0 per entry), of the
      shape and dtype of ``logits`` (``bfloat16``/``float16`` computed in ``float32``).

    Raises:
      TypeError: if ``logits`` is not floating, or ``temperature`` or ``gap`` is not a real
        number.
      ValueError: if ``axis`` is out of range, a concrete ``temperature`` is ``<= 0``, ``gap``
        is not finite and ``> 0``, or ``distribution`` is unknown.

    Examples:
      >>> y = gapped_st(jax.random.key(0), jnp.zeros((2, 5)), 0.5, gap=2.0)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]

    References:
      Fan, Chi, Rudnicky, Ramadge. Training Discrete Deep Generative Models via Gapped
      Straight-Through Estimator (ICML 2022), https://arxiv.org/abs/2206.07235
    """
    gap = _checks.positive_finite(gap, name="gap")
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return _binary.two_categories(gapped_st, key, logits, temperature, gap=gap)
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    invalid = _ops.invalid_rows(x, axis, tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    hard = one_hot_sample(key, x, axis)
    move = jax.lax.stop_gradient(_gap_perturbation(x, hard, gap, axis))
    soft = jax.nn.softmax(_ops.tempered_logits(x, move, tau), axis=axis)
    one_hot = _ops.hard_with_soft_gradient(soft, jnp.broadcast_to(hard, soft.shape))
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


def _gap_perturbation(logits: jax.Array, hard: jax.Array, gap: float, axis: int) -> jax.Array:
    """GST's ``m1 - m2``: the sampled logit up to the maximum, the others ``gap`` below it.

    Masked (``-inf``) categories are never sampled and get 0 (finite, as ``tempered_logits``
    needs), so they stay at ``-inf``.
    """
    top = jnp.max(logits, axis=axis, keepdims=True)
    finite = jnp.where(jnp.isneginf(logits), top, logits)
    return jnp.where(hard > 0, top - finite, -jax.nn.relu(finite - top + gap))


def zgr(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    *,
    axis: int = -1,
    distribution: str = "categorical",
) -> jax.Array:
    """ZGR: the average of the straight-through and DARN gradients; no temperature.

    Forward: a one-hot sample ``D ~ Categorical(p)``, ``p = softmax(logits)``. Backward, for an
    incoming gradient ``g`` (``<a, b>`` summed along ``axis``, ``g_D = <D, g>``)::

      grad = ( (diag(p) - p p^T) g  +  <D - p, g> (D - p) ) / 2
           = ( p * (g - g_D) - D <p, g - g_D> ) / 2

    the mean of the straight-through gradient (that of ``p``, i.e. ``st_softmax`` at
    temperature 1) and the DARN gradient (``<D - p, g>`` times the score ``D - p`` of
    ``log p_D``); the second line is the author's equation (50). Computed as ``D`` with the
    gradient of the surrogate ``(p + stop_gradient(D - p) * log p_D) / 2``, as in the author's
    code and in SynJax's ``zgr``. It is Gumbel-Rao's limit as the temperature goes to 0, hence no
    temperature (``Spec.uses_temperature`` is false). For Bernoulli log-odds ``l`` it is the
    author's binary form (the categorical form on the two categories ``(0, l)``): with
    ``q = sigmoid(l)`` and ``b ~ Bernoulli(q)``, the gradient is
    ``g * (b (1 - q) + (1 - b) q) / 2`` (DARN(1/2)), and ``+-inf`` log-odds are certain
    outcomes with a zero gradient. The Bernoulli sample is ``1[l + L > 0]`` for standard
    logistic ``L``, the sample of ``straight_through(..., distribution="bernoulli")`` for the
    same key.

    Same gradient as the author's ``ZGR_categorical`` and ``ZGR_binary``
    (github.com/shekhovt/ZGR) and SynJax's ``zgr`` and ``zgr_binary``.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category (never sampled, zero gradient).
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).

    Returns:
      An exact one-hot sample (0.0 and 1.0; for ``"bernoulli"`` 0.0 or 1.0 per entry), of the
      shape and dtype of ``logits`` (``bfloat16``/``float16`` computed in ``float32``).

    Raises:
      TypeError: if ``logits`` is not floating.
      ValueError: if ``axis`` is out of range or ``distribution`` is unknown.

    Examples:
      >>> y = zgr(jax.random.key(0), jnp.zeros((2, 5)))
      >>> y.sum(-1).tolist()
      [1.0, 1.0]
      >>> b = zgr(jax.random.key(0), jnp.array([0.0, jnp.inf]), distribution="bernoulli")
      >>> b[1].item()
      1.0

    References:
      Shekhovtsov. Cold Analysis of Rao-Blackwellized Straight-Through Gumbel-Softmax Gradient
      Estimator (ICML 2023), https://arxiv.org/abs/2310.03602
      Gregor, Danihelka, Mnih, Blundell, Wierstra. Deep AutoRegressive Networks (ICML 2014),
      https://arxiv.org/abs/1310.8499
    """
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return _zgr_binary(key, logits)
    x, dtype, axis = _checks.logits_array(logits, axis)
    invalid = _ops.invalid_rows(x, axis)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    hard = one_hot_sample(key, x, axis)
    log_p = jax.nn.log_softmax(x, axis=axis)
    log_p_sample = jnp.sum(jnp.where(hard > 0, log_p, 0.0), axis=axis, keepdims=True)
    p = jnp.exp(log_p)
    soft = 0.5 * (p + jax.lax.stop_gradient(hard - p) * log_p_sample)
    one_hot = _ops.hard_with_soft_gradient(soft, hard)
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


def _zgr_binary(key: jax.Array, logits: jax.typing.ArrayLike) -> jax.Array:
    """ZGR for Bernoulli log-odds: ``b`` with the gradient ``(b (1 - q) + (1 - b) q) / 2``."""
    x, dtype = _checks.float_array(logits, name="logits")
    noise = _random.drawn_flat(jax.random.logistic, key, x.shape, x.dtype)  # relaxed_bernoulli's
    b = jnp.where(jnp.isnan(x), jnp.nan, (x + noise > 0).astype(x.dtype))
    # b (1 - q) + (1 - b) q is q(-x) where b = 1 and q(x) where b = 0 (NaN stays NaN).
    slope = 0.5 * jax.nn.sigmoid(jnp.where(b > 0, -x, x))
    # Infinite log-odds are clipped (their slope is 0) so the surrogate's value is finite.
    clipped = jnp.clip(x, -_ops.CERTAIN_LOG_ODDS, _ops.CERTAIN_LOG_ODDS)
    soft = jax.lax.stop_gradient(slope) * clipped
    return _ops.hard_with_soft_gradient(soft, b).astype(dtype)


register(
    Spec(
        "relaxed",
        gumbel_softmax,
        distributions=DISTRIBUTIONS,
        reference="Jang, Gu, Poole (ICLR 2017), https://arxiv.org/abs/1611.01144; Maddison, "
        "Mnih, Teh (ICLR 2017), https://arxiv.org/abs/1611.00712",
        summary="the relaxed (Concrete) sample itself: exact gradient of a biased relaxation; "
        "not one-hot",
    )
)
register(
    Spec(
        "st",
        straight_through,
        distributions=DISTRIBUTIONS,
        reference="Jang, Gu, Poole (ICLR 2017), https://arxiv.org/abs/1611.01144",
        summary="straight-through Gumbel-Softmax: exact sample, the soft sample's gradient",
    )
)
register(
    Spec(
        "st-softmax",
        st_softmax,
        distributions=DISTRIBUTIONS,
        reference="Bengio, Leonard, Courville (2013), https://arxiv.org/abs/1308.3432; the ST "
        "of Liu et al. (NeurIPS 2023), https://arxiv.org/abs/2304.08612",
        summary="straight-through without noise: exact sample, the gradient of "
        "softmax(logits / temperature)",
    )
)
register(
    Spec(
        "gapped-st",
        gapped_st,
        distributions=DISTRIBUTIONS,
        options={"gap": 1.0},
        reference="Fan, Chi, Rudnicky, Ramadge (ICML 2022), https://arxiv.org/abs/2206.07235",
        summary="gapped straight-through: exact sample, the gradient of a softmax of logits "
        "moved so the sample leads by `gap`",
    )
)
register(
    Spec(
        "zgr",
        zgr,
        distributions=DISTRIBUTIONS,
        uses_temperature=False,
        reference="Shekhovtsov (ICML 2023), https://arxiv.org/abs/2310.03602",
        summary="ZGR: exact sample, the mean of the straight-through and DARN gradients; "
        "no temperature",
    )
)
