"""ReinMax: straight-through estimators with second-order (Heun) accuracy, and its variants.

- ``reinmax`` (Liu et al., NeurIPS 2023) approximates the gradient of the discrete model with
  Heun's method on the straight line between the probabilities and the one-hot sample.
- ``reinmax_rao`` and ``reinmax_cv`` (Wang and Bui, 2026) reduce ReinMax's variance with
  Gumbel-Rao's conditional Gumbel noise: ReinMax-Rao replaces ReinMax's softmax Jacobian at
  ``(pi + D) / 2`` by Gumbel-Rao's at the logits ``log((pi + D) / 2)``; ReinMax-CV adds
  Gumbel-Rao there minus a single Gumbel-Softmax draw, as a control variate. Both draw the
  conditional noise in the backward pass with ``gumbel_rao``'s own backward pass
  (``_gumbel_rao._rao_blackwell_bwd``), so they cost what ``gumbel_rao`` costs with the same
  ``num_samples`` and keep nothing of size ``num_samples`` between the passes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gumbel_jax import _checks, _ops, _random
from gumbel_jax.estimators import _binary
from gumbel_jax.estimators._gumbel_rao import _rao_blackwell_bwd
from gumbel_jax.estimators._spec import DISTRIBUTIONS, Spec, register
from gumbel_jax.estimators._straight_through import one_hot_sample, one_hot_sample_and_noise


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _reinmax_one_hot(logits: jax.Array, tau: jax.Array, hard: jax.Array, axis: int) -> jax.Array:
    """Returns ``hard``; its vector-Jacobian product is ReinMax's (see ``reinmax``)."""
    del logits, tau, axis
    return hard


def _reinmax_fwd(logits, tau, hard, axis):
    del axis
    return hard, (logits, tau, hard)


def _softmax_jacobian_times(p: jax.Array, g: jax.Array, axis: int) -> jax.Array:
    """``J(p) g = (diag(p) - p p^T) g`` along ``axis`` (``J`` is symmetric: also ``J^T g``)."""
    return p * g - p * jnp.sum(p * g, axis=axis, keepdims=True)


def _reinmax_vjp(logits, tau, hard, g, axis):
    """ReinMax's ``2 J(pi1) g - J(pi0) g / 2`` (see ``reinmax``)."""
    pi0 = jax.nn.softmax(logits, axis=axis)
    pi1 = 0.5 * (jax.nn.softmax(_ops.tempered_logits(logits, 0.0, tau), axis=axis) + hard)
    return 2.0 * _softmax_jacobian_times(pi1, g, axis) - 0.5 * _softmax_jacobian_times(pi0, g, axis)


def _reinmax_bwd(axis, residuals, g):
    logits, tau, hard = residuals
    return _reinmax_vjp(logits, tau, hard, g, axis), jnp.zeros_like(tau), jnp.zeros_like(hard)


_reinmax_one_hot.defvjp(_reinmax_fwd, _reinmax_bwd)


def reinmax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
    distribution: str = "categorical",
) -> jax.Array:
    """ReinMax: a second-order-accurate straight-through estimator.

    Forward: a one-hot sample ``D ~ Categorical(softmax(logits))`` (the temperature is not used
    in the forward pass). Backward: with ``pi0 = softmax(logits)``,
    ``pi1 = (softmax(logits / temperature) + D) / 2`` and ``J(p) = diag(p) - p p^T``, the
    gradient with respect to ``logits`` for an incoming gradient ``g`` is
    ``2 J(pi1) g - J(pi0) g / 2``. Reverse mode only (``jax.custom_vjp``); no gradient flows to
    ``temperature``.

    The authors recommend ``temperature >= 1`` (the temperature enters only the backward pass,
    through ``pi1``), so a concrete temperature below 1 raises ``ValueError``. A traced
    temperature is not checked: values below 1 are used as given, and 0 gives ``NaN``
    gradients.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category.
      temperature: a temperature ``>= 1`` (Python number or array, may be traced).
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).

    Returns:
      An exact one-hot sample (0.0 and 1.0), of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range or a concrete ``temperature`` is ``< 1``.

    Examples:
      >>> y = reinmax(jax.random.key(0), jnp.zeros((2, 5)), 1.5)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]

    References:
      Liu, Zhao, Li, Yin, Zhang, Gao, Han. Bridging Discrete and Backpropagation:
      Straight-Through and Beyond (NeurIPS 2023), https://arxiv.org/abs/2304.08612
    """
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return _binary.two_categories(reinmax, key, logits, temperature)
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(
        temperature,
        x.dtype,
        minimum=1.0,
        hint=(
            " ReinMax's authors recommend temperature >= 1 (Liu et al. 2023, "
            "https://arxiv.org/abs/2304.08612); for lower temperatures use 'st' or 'gumbel-rao'."
        ),
    )
    invalid = _ops.invalid_rows(x, axis, tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    hard = one_hot_sample(key, x, axis)
    one_hot = _reinmax_one_hot(x, tau, hard, axis)
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


register(
    Spec(
        "reinmax",
        reinmax,
        distributions=DISTRIBUTIONS,
        min_temperature=1.0,
        reference="Liu et al. (NeurIPS 2023), https://arxiv.org/abs/2304.08612",
        summary="second-order (Heun) straight-through",
    )
)


def _midpoint_logits(logits: jax.Array, hard: jax.Array, axis: int) -> jax.Array:
    """``theta' = log((softmax(logits) + D) / 2) + log 2``, in log space.

    ``log pi_j`` off the sample and ``log(1 + pi_i)`` at it (the constant ``log 2`` is dropped:
    no softmax sees it, so ``softmax(theta') = (pi + D) / 2``). Masked categories stay ``-inf``.
    """
    log_p = jax.nn.log_softmax(logits, axis=axis)
    return jnp.where(hard > 0, jnp.logaddexp(log_p, 0.0), log_p)


def _rao_jacobian_times(logits, tau, hard, seed, g, num_samples, axis):
    """``mean_r J(softmax((theta' + G_r) / tau)) g / tau``: Gumbel-Rao's VJP at ``theta'``.

    ``G_r`` are drawn from ``seed`` conditionally on ``argmax(theta' + G_r) = D`` by
    ``gumbel_rao``'s backward pass (``_gumbel_rao._rao_blackwell_bwd``), which this calls on
    ``theta'`` (its cotangent for the temperature is dropped).
    """
    theta = _midpoint_logits(logits, hard, axis)
    grad, *_ = _rao_blackwell_bwd(num_samples, axis, (theta, tau, hard, seed), g)
    return grad


def _no_gradient(seed: jax.Array) -> jax.Array:
    return jnp.zeros(seed.shape, jax.dtypes.float0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _reinmax_rao_one_hot(
    logits: jax.Array, tau: jax.Array, hard: jax.Array, seed: jax.Array, num_samples: int, axis: int
) -> jax.Array:
    """Returns ``hard``; its vector-Jacobian product is ReinMax-Rao's (see ``reinmax_rao``)."""
    del logits, tau, seed, num_samples, axis
    return hard


def _reinmax_rao_fwd(logits, tau, hard, seed, num_samples, axis):
    del num_samples, axis
    return hard, (logits, tau, hard, seed)


def _reinmax_rao_bwd(num_samples, axis, residuals, g):
    logits, tau, hard, seed = residuals
    g = g.astype(logits.dtype)
    rao = _rao_jacobian_times(logits, tau, hard, seed, g, num_samples, axis)
    pi0 = jax.nn.softmax(logits, axis=axis)
    grad = 2.0 * rao - 0.5 * _softmax_jacobian_times(pi0, g, axis)
    return grad, jnp.zeros_like(tau), jnp.zeros_like(hard), _no_gradient(seed)


_reinmax_rao_one_hot.defvjp(_reinmax_rao_fwd, _reinmax_rao_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _reinmax_cv_one_hot(
    logits: jax.Array,
    tau: jax.Array,
    eta: jax.Array,
    hard: jax.Array,
    noise: jax.Array,
    seed: jax.Array,
    num_samples: int,
    axis: int,
) -> jax.Array:
    """Returns ``hard``; its vector-Jacobian product is ReinMax-CV's (see ``reinmax_cv``)."""
    del logits, tau, eta, noise, seed, num_samples, axis
    return hard


def _reinmax_cv_fwd(logits, tau, eta, hard, noise, seed, num_samples, axis):
    del num_samples, axis
    return hard, (logits, tau, eta, hard, noise, seed)


def _reinmax_cv_bwd(num_samples, axis, residuals, g):
    logits, tau, eta, hard, noise, seed = residuals
    g = g.astype(logits.dtype)
    reinmax_at_one = _reinmax_vjp(logits, jnp.ones((), logits.dtype), hard, g, axis)
    rao = _rao_jacobian_times(logits, tau, hard, seed, g, num_samples, axis)
    theta = _midpoint_logits(logits, hard, axis)
    single = jax.nn.softmax(_ops.tempered_logits(theta, noise, tau), axis=axis)
    single = _softmax_jacobian_times(single, g, axis) / tau
    grad = reinmax_at_one + eta * (rao - single)
    return (
        grad,
        jnp.zeros_like(tau),
        jnp.zeros_like(eta),
        jnp.zeros_like(hard),
        jnp.zeros_like(noise),
        _no_gradient(seed),
    )


_reinmax_cv_one_hot.defvjp(_reinmax_cv_fwd, _reinmax_cv_bwd)


def _noise_seed(key: jax.Array) -> jax.Array:
    """The seed of the conditional noise: independent of ``key``'s forward sample."""
    return _random.noise_seed(jax.random.fold_in(key, 1))


def reinmax_rao(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    num_samples: int = 100,
    axis: int = -1,
    distribution: str = "categorical",
) -> jax.Array:
    """ReinMax-Rao: ReinMax with its second Jacobian Rao-Blackwellised over Gumbel noise.

    Forward: a one-hot sample ``D ~ Categorical(softmax(logits))``, the same sample as
    ``reinmax`` draws from the same key. Backward: with ``pi = softmax(logits)``,
    ``J(p) = diag(p) - p p^T``, ``theta' = log((pi + D) / 2)`` (so ``softmax(theta') =
    (pi + D) / 2``) and ``G_1..G_R`` standard Gumbel vectors drawn conditionally on
    ``argmax(theta' + G_r) = D``, the gradient with respect to ``logits`` for an incoming
    gradient ``g`` is::

        2 * mean_r J(softmax((theta' + G_r) / temperature)) g / temperature  -  J(pi) g / 2

    ReinMax's ``2 J((softmax(logits / temperature) + D) / 2) g`` is replaced by twice
    Gumbel-Rao's backward pass at the logits ``theta'`` (``theta'`` is a constant of the backward
    pass: no gradient flows through it, as in the authors' code). The ``G_r`` are drawn in the
    backward pass from the key, by ``gumbel_rao``'s own backward pass, so the cost is that of
    ``gumbel_rao`` with the same ``num_samples`` and nothing of size ``num_samples`` is kept
    between the passes. Reverse mode only (``jax.custom_vjp``); no gradient flows to
    ``temperature``. Biased, like ReinMax.

    Sources: the paper's text beyond its abstract could not be read when this was written; the
    formula follows the authors' code (``reinmax_v2.py``: ``rao_gumbel_v3``, method
    ``"reinmax_v3"``), where ``pi`` is taken at temperature 1 and the temperature is the
    Gumbel-Softmax temperature of the Gumbel-Rao term. ``num_samples`` defaults to their
    ``R = 100``; their experiments use temperature 1.0. Unlike ReinMax they state no temperature
    floor (the temperature here is a Gumbel-Softmax temperature, not ReinMax's), so any
    positive temperature is accepted.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category (never sampled, zero gradient).
      temperature: a positive temperature (Python number or array, may be traced; a traced
        value is not checked and 0 gives ``NaN`` gradients).
      num_samples: ``R``, the number of conditional Gumbel vectors (a Python int >= 1; the
        authors use 100). The backward pass's time grows linearly in ``R``.
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).

    Returns:
      An exact one-hot sample (0.0 and 1.0), of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, ``temperature`` is not a real number or
        ``num_samples`` is not an int.
      ValueError: if ``axis`` is out of range, ``num_samples < 1`` or a concrete
        ``temperature`` is ``<= 0``.

    Examples:
      >>> y = reinmax_rao(jax.random.key(0), jnp.zeros((2, 5)), num_samples=8)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]
      >>> loss = lambda x: jnp.sum(reinmax_rao(jax.random.key(0), x) * jnp.arange(5.0))
      >>> jax.grad(loss)(jnp.zeros(5)).shape
      (5,)

    References:
      Wang, Bui. Beyond ReinMax: Low-Variance Gradient Estimators for Discrete Latent
      Variables (2026), https://arxiv.org/abs/2603.08257
      Authors' code: https://github.com/danielwang0452/DiscreteNumericalMethodsASC
      Liu, Zhao, Li, Yin, Zhang, Gao, Han. Bridging Discrete and Backpropagation:
      Straight-Through and Beyond (NeurIPS 2023), https://arxiv.org/abs/2304.08612
      Paulus, Maddison, Krause. Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
      Estimator (ICLR 2021), https://arxiv.org/abs/2010.04838
    """
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return _binary.two_categories(
            reinmax_rao, key, logits, temperature, num_samples=num_samples
        )
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    num_samples = _checks.positive_int(num_samples, name="num_samples")
    invalid = _ops.invalid_rows(x, axis, tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    hard = one_hot_sample(key, x, axis)
    one_hot = _reinmax_rao_one_hot(x, tau, hard, _noise_seed(key), num_samples, axis)
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


def reinmax_cv(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    eta: float = 1.0,
    num_samples: int = 100,
    axis: int = -1,
    distribution: str = "categorical",
) -> jax.Array:
    """ReinMax-CV: ReinMax with Gumbel-Rao minus Gumbel-Softmax as a control variate.

    Forward: a one-hot sample ``D = argmax(logits + G)`` for standard Gumbel noise ``G`` (so
    ``D ~ Categorical(softmax(logits))``), the same sample as ``reinmax`` draws from the same
    key. Backward: with ``pi = softmax(logits)``, ``J(p) = diag(p) - p p^T``,
    ``theta' = log((pi + D) / 2)``, ``tau`` the temperature and ``G_1..G_R`` standard Gumbel
    vectors drawn conditionally on ``argmax(theta' + G_r) = D``, the gradient with respect to
    ``logits`` for an incoming gradient ``g`` is::

        2 J((pi + D) / 2) g - J(pi) g / 2                  # ReinMax at temperature 1
          + eta * (mean_r J(softmax((theta' + G_r) / tau)) g / tau    # Gumbel-Rao at theta'
                   - J(softmax((theta' + G) / tau)) g / tau)          # one Gumbel-Softmax draw

    The last two terms are the control variate: a straight-through Gumbel-Softmax Jacobian at
    ``theta'`` whose expectation is estimated by its Rao-Blackwellisation. ``eta = 0`` is
    ReinMax at temperature 1 (the same sample and gradient as ``reinmax(key, logits, 1.0)``).
    The ``G_r`` are drawn in the backward pass from the key by ``gumbel_rao``'s own backward
    pass, so the cost is that of ``gumbel_rao`` with the same ``num_samples``; the single draw
    ``G`` is the forward sample's noise (one array of the shape of ``logits`` is kept). Reverse
    mode only (``jax.custom_vjp``); no gradient flows to ``temperature``. Biased, like ReinMax.

    Sources: the paper's text beyond its abstract could not be read when this was written; this
    follows the authors' code (``reinmax_jacobians.py``, method ``"reinmax_cv"``): ReinMax's
    temperature fixed to 1, ``theta'`` from ``pi`` at temperature 1, the single draw the Gumbel
    noise that sampled ``D``, ``R = 100`` (the default of ``num_samples``). One difference:
    their single draw is ``J(softmax(theta' + G)) / tau``, its softmax untempered, while their
    Gumbel-Rao term tempers it; here both are tempered, so the two terms are Jacobians of the
    same Gumbel-Softmax (the same at ``tau = 1``, the temperature of their experiments). A
    second: their forward pass saves the soft sample ``softmax((logits + G) / tau)`` where their
    backward pass reads ``G`` (``reinmax_jacobians.py`` at commits 62697d1 and 54b6cc7), so their
    single draw is taken at ``theta'`` plus that soft sample; here it is ``theta' + G``, as their
    formula writes it. Their code falls back to ``eta = 0.7`` and sweeps ``eta`` over 0.5 to
    2.0 and the temperature over 0.5 to 2.0; the reported choices are ``eta`` of 1.0 to 1.5, so
    the default here is 1.0. They state no temperature floor: any positive temperature is accepted.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category (never sampled, zero gradient).
      temperature: a positive temperature of the Gumbel-Softmax terms (Python number or array,
        may be traced; a traced value is not checked and 0 gives ``NaN`` gradients).
      eta: the control variate's coefficient, a real number ``>= 0`` (0: ReinMax).
      num_samples: ``R``, the number of conditional Gumbel vectors (a Python int >= 1). The
        backward pass's time grows linearly in ``R``.
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).

    Returns:
      An exact one-hot sample (0.0 and 1.0), of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, ``temperature`` or ``eta`` is not a real number
        or ``num_samples`` is not an int.
      ValueError: if ``axis`` is out of range, ``num_samples < 1``, ``eta`` is negative or not
        finite, or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> y = reinmax_cv(jax.random.key(0), jnp.zeros((2, 5)), eta=1.5, num_samples=8)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]
      >>> loss = lambda x: jnp.sum(reinmax_cv(jax.random.key(0), x) * jnp.arange(5.0))
      >>> jax.grad(loss)(jnp.zeros(5)).shape
      (5,)

    References:
      Wang, Bui. Beyond ReinMax: Low-Variance Gradient Estimators for Discrete Latent
      Variables (2026), https://arxiv.org/abs/2603.08257
      Authors' code: https://github.com/danielwang0452/DiscreteNumericalMethodsASC
      Liu, Zhao, Li, Yin, Zhang, Gao, Han. Bridging Discrete and Backpropagation:
      Straight-Through and Beyond (NeurIPS 2023), https://arxiv.org/abs/2304.08612
      Paulus, Maddison, Krause. Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
      Estimator (ICLR 2021), https://arxiv.org/abs/2010.04838
    """
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return _binary.two_categories(
            reinmax_cv, key, logits, temperature, eta=eta, num_samples=num_samples
        )
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    eta = _checks.positive_finite(eta, name="eta", allow_zero=True)
    num_samples = _checks.positive_int(num_samples, name="num_samples")
    invalid = _ops.invalid_rows(x, axis, tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    hard, noise = one_hot_sample_and_noise(key, x, axis)  # D = argmax(x + noise)
    one_hot = _reinmax_cv_one_hot(
        x, tau, jnp.asarray(eta, x.dtype), hard, noise, _noise_seed(key), num_samples, axis
    )
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


register(
    Spec(
        "reinmax-rao",
        reinmax_rao,
        distributions=DISTRIBUTIONS,
        options={"num_samples": 100},
        reference="Wang, Bui (2026), https://arxiv.org/abs/2603.08257",
        summary="ReinMax with Gumbel-Rao's Jacobian at log((pi + D) / 2) in place of "
        "J((pi + D) / 2)",
    )
)
register(
    Spec(
        "reinmax-cv",
        reinmax_cv,
        distributions=DISTRIBUTIONS,
        options={"eta": 1.0, "num_samples": 100},
        reference="Wang, Bui (2026), https://arxiv.org/abs/2603.08257",
        summary="ReinMax (temperature 1) plus eta x (Gumbel-Rao - one Gumbel-Softmax draw) at "
        "log((pi + D) / 2)",
    )
)
