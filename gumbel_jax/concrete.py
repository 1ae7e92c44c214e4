"""The Concrete (Gumbel-Softmax) distribution and its log-space form, the ExpConcrete.

A Concrete sample is ``x = softmax((logits + G) / temperature)``; an ExpConcrete sample is its
logarithm ``y = log_softmax((logits + G) / temperature)``, which stays finite where ``x`` would
underflow to 0 at low temperatures. This module samples the ExpConcrete, evaluates both
log-densities, and estimates the KL divergence between two of them (the relaxed KL of Maddison et
al., Appendix C).

Densities (``n`` categories, ``log_pi = log_softmax(logits)``, ``tau`` the temperature):

- Concrete, with respect to Lebesgue measure on ``x_1, ..., x_{n-1}`` of the simplex::

    log p(x) = lgamma(n) + (n - 1) log(tau) + sum_k (log_pi_k - (tau + 1) log x_k)
               - n logsumexp_k(log_pi_k - tau log x_k)

- ExpConcrete (the paper's form)::

    log p(y) = lgamma(n) + (n - 1) log(tau) + sum_k (log_pi_k - tau y_k)
               - n logsumexp_k(log_pi_k - tau y_k)

  This is the density with respect to Lebesgue measure on the ``n - 1`` log-ratios
  ``y_k - y_n`` (equivalently ``dx / prod_k x_k``), which treats all categories alike; it is
  *not* normalised with respect to ``dy_1 ... dy_{n-1}`` (that density is ``log p(y) - y_n``).
  The two densities are related by ``log p_x(exp(y)) = log p_y(y) - sum_k y_k``. KL divergences
  do not depend on the choice of base measure.

The binary Concrete (the relaxed Bernoulli of ``sample.relaxed_bernoulli``) has one log-odds per
entry: ``y = sigmoid((logits + L) / tau)`` with ``L`` standard logistic noise, so its log-ratio
``x = log(y) - log(1 - y) = (logits + L) / tau`` is Logistic(``logits / tau``, ``1 / tau``)::

    log p(x) = log(tau) - softplus(tau x - logits) - softplus(logits - tau x)
    log p(y) = log p(x) - log(y) - log(1 - y)            (dx/dy = 1 / (y (1 - y)))

These are ``bernoulli_log_prob_logit`` and ``bernoulli_log_prob``; ``hard_concrete_l0`` is the
closed-form ``P(z != 0)`` of the hard concrete gate of ``sample.hard_concrete``.

Masked categories (``-inf`` logits) are left out: the distribution then lives on the smaller
simplex of the ``n' < n`` unmasked categories, ``n'`` replaces ``n`` above, and the entries of
``x`` (``y``) at masked categories are ignored (samples have 0 and ``-inf`` there).

References:
  Maddison, Mnih, Teh. The Concrete Distribution: A Continuous Relaxation of Discrete Random
  Variables (ICLR 2017), https://arxiv.org/abs/1611.00712 (eq. 11 and Appendix C).
  Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
  https://arxiv.org/abs/1611.01144
  Louizos, Welling, Kingma. Learning Sparse Neural Networks through L0 Regularization (ICLR
  2018), https://arxiv.org/abs/1712.01312
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gumbel_jax import _checks, _ops
from gumbel_jax.sample import gumbel

__all__ = [
    "bernoulli_log_prob",
    "bernoulli_log_prob_logit",
    "hard_concrete_l0",
    "kl_relaxed",
    "log_prob",
    "log_prob_log",
    "sample_log",
]


def _sample_log(key: jax.Array, logits: jax.Array, tau: jax.Array, axis: int) -> jax.Array:
    noise = gumbel(key, logits.shape, logits.dtype)
    return jax.nn.log_softmax(_ops.tempered_logits(logits, noise, tau), axis=axis)


def _exp_concrete_log_density(
    log_y: jax.Array, logits: jax.Array, tau: jax.Array, axis: int
) -> jax.Array:
    """The ExpConcrete log-density, keeping ``axis`` as a dimension of size 1."""
    masked = jnp.isneginf(logits)
    log_pi = jnp.where(masked, 0.0, jax.nn.log_softmax(logits, axis=axis))
    safe_log_y = jnp.where(masked, 0.0, log_y)
    inner = log_pi - tau * safe_log_y
    n = jnp.sum(~masked, axis=axis, keepdims=True).astype(logits.dtype)
    return (
        jax.lax.lgamma(n)
        + (n - 1.0) * jnp.log(tau)
        + jnp.sum(jnp.where(masked, 0.0, inner), axis=axis, keepdims=True)
        - n * jax.nn.logsumexp(jnp.where(masked, -jnp.inf, inner), axis=axis, keepdims=True)
    )


def sample_log(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
    *,
    axis: int = -1,
) -> jax.Array:
    """Draws an ExpConcrete sample: the logarithm of a Concrete sample, computed in log space.

    ``log_softmax((logits + G) / temperature)`` never underflows, so it is finite at unmasked
    categories for temperatures down to 1e-3 (where ``gumbel_softmax`` has exact zeros).
    ``exp`` of the result is the ``gumbel_softmax`` sample of the same key.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category.
      temperature: a positive temperature, a Python number or an array broadcastable to
        ``logits`` (may be traced; a traced value ``<= 0`` or ``NaN`` gives ``NaN``).
      axis: the category axis.

    Returns:
      An array of the shape and dtype of ``logits`` whose ``logsumexp`` along ``axis`` is 0
      (``-inf`` at masked categories). In ``float16`` very negative values (below -65504, e.g.
      at temperature 1e-3) round to ``-inf``; use ``bfloat16`` or ``float32`` there.

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> y = sample_log(jax.random.key(0), jnp.zeros(4), 0.5)
      >>> y.shape
      (4,)

    References:
      Maddison, Mnih, Teh (2017), https://arxiv.org/abs/1611.00712, Appendix C.
    """
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    invalid = _ops.invalid_rows(x, axis, tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    log_y = _sample_log(key, x, tau, axis)
    return _ops.nan_where_invalid(log_y, invalid).astype(dtype)


def log_prob_log(
    log_y: jax.typing.ArrayLike,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
    *,
    axis: int = -1,
) -> jax.Array:
    """Log-density of the ExpConcrete distribution at ``log_y`` (a point with logsumexp 0).

    The density is with respect to Lebesgue measure on the log-ratios ``log_y_k - log_y_n``
    (see the module docstring); it integrates to 1 over them.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN``, in value
    and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      log_y: ``[..., num_categories, ...]`` the point, e.g. from ``sample_log``; broadcast
        against ``logits``.
      logits: ``[..., num_categories, ...]`` the distribution's logits; ``-inf`` masks a
        category (the value of ``log_y`` there is ignored).
      temperature: a positive temperature, broadcastable to ``logits`` with size 1 on ``axis``.
      axis: the category axis (of the broadcast shape of ``log_y`` and ``logits``).

    Returns:
      The log-density, of the broadcast shape of ``log_y`` and ``logits`` without ``axis``, in
      their promoted dtype.

    Raises:
      TypeError: if an input is not floating or ``temperature`` is not a real number.
      ValueError: if the shapes do not broadcast or differ in the number of categories, ``axis``
        is out of range, or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> logits = jnp.array([0.5, -1.0, 0.0])
      >>> y = sample_log(jax.random.key(0), logits, 0.5)
      >>> log_prob_log(y, logits, 0.5).shape
      ()

    References:
      Maddison, Mnih, Teh (2017), https://arxiv.org/abs/1611.00712, Appendix C.
    """
    log_y, logits, dtype, axis = _checks.logits_pair(log_y, logits, axis, names=("log_y", "logits"))
    tau = _checks.temperature(temperature, logits.dtype)
    invalid = _ops.invalid_rows(logits, axis, tau)
    log_y = _ops.nan_gradient_where_invalid(log_y, invalid)
    logits = _ops.nan_gradient_where_invalid(logits, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    density = _exp_concrete_log_density(log_y, logits, tau, axis)
    return jnp.squeeze(_ops.nan_where_invalid(density, invalid), axis).astype(dtype)


def log_prob(
    y: jax.typing.ArrayLike,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
    *,
    axis: int = -1,
) -> jax.Array:
    """Log-density of the Concrete (Gumbel-Softmax) distribution at ``y`` on the simplex.

    The density is with respect to Lebesgue measure on ``y_1, ..., y_{n-1}`` (the paper's eq.
    11); it integrates to 1 over the simplex. ``y`` must be in the open simplex (positive at
    unmasked categories); near its boundary prefer ``log_prob_log`` of ``sample_log`` samples.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN``, in value
    and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      y: ``[..., num_categories, ...]`` a point of the simplex, e.g. from
        ``sample.gumbel_softmax``; broadcast against ``logits``.
      logits: ``[..., num_categories, ...]`` the distribution's logits; ``-inf`` masks a
        category (the value of ``y`` there is ignored).
      temperature: a positive temperature, broadcastable to ``logits`` with size 1 on ``axis``.
      axis: the category axis (of the broadcast shape of ``y`` and ``logits``).

    Returns:
      The log-density, of the broadcast shape of ``y`` and ``logits`` without ``axis``, in their
      promoted dtype.

    Raises:
      TypeError: if an input is not floating or ``temperature`` is not a real number.
      ValueError: if the shapes do not broadcast or differ in the number of categories, ``axis``
        is out of range, or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(log_prob(jnp.array([0.5, 0.5]), jnp.zeros(2), 1.0))  # log(1/2 * 4 / 2) = 0
      0.0

    References:
      Maddison, Mnih, Teh (2017), https://arxiv.org/abs/1611.00712, eq. 11.
      Jang, Gu, Poole (2017), https://arxiv.org/abs/1611.01144, eq. 3.
    """
    y, logits, dtype, axis = _checks.logits_pair(y, logits, axis, names=("y", "logits"))
    tau = _checks.temperature(temperature, logits.dtype)
    invalid = _ops.invalid_rows(logits, axis, tau)
    y = _ops.nan_gradient_where_invalid(y, invalid)
    logits = _ops.nan_gradient_where_invalid(logits, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    masked = jnp.isneginf(logits)
    log_y = jnp.log(jnp.where(masked, 1.0, y))
    density = _exp_concrete_log_density(log_y, logits, tau, axis) - jnp.sum(
        log_y, axis=axis, keepdims=True
    )
    return jnp.squeeze(_ops.nan_where_invalid(density, invalid), axis).astype(dtype)


def kl_relaxed(
    key: jax.Array,
    logits_q: jax.typing.ArrayLike,
    temperature_q: jax.typing.ArrayLike,
    logits_p: jax.typing.ArrayLike,
    temperature_p: jax.typing.ArrayLike,
    *,
    axis: int = -1,
) -> jax.Array:
    """Single-sample Monte Carlo estimate of KL(q || p) between two Concrete distributions.

    Draws ``y ~ ExpConcrete(logits_q, temperature_q)`` (reparameterised, so gradients flow to
    ``logits_q``) and returns ``log q(y) - log p(y)`` in log space. The KL between two Concretes
    equals the KL between their ExpConcretes, since both are mapped by the same bijection. Its
    expectation over keys is the KL; for the same parameters it is exactly 0.

    An invalid row of either logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN``, in
    value and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits_q: ``[..., num_categories, ...]`` logits of q (e.g. the encoder's output).
      temperature_q: q's positive temperature.
      logits_p: logits of p (e.g. a uniform prior ``jnp.zeros(num_categories)``), broadcast
        against ``logits_q``. Mask the same categories in both (a category masked only in q
        gives ``NaN``).
      temperature_p: p's positive temperature.
      axis: the category axis (of the broadcast shape of the logits).

    Returns:
      The estimate, of the broadcast shape of the logits without ``axis``, in their promoted
      dtype.

    Raises:
      TypeError: if the logits are not floating or a temperature is not a real number.
      ValueError: if the shapes do not broadcast or differ in the number of categories, ``axis``
        is out of range, or a concrete temperature is ``<= 0``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> logits_q = jnp.array([[2.0, 0.0, -1.0]])
      >>> kl = kl_relaxed(jax.random.key(0), logits_q, 0.5, jnp.zeros(3), 0.5)
      >>> kl.shape
      (1,)

    References:
      Maddison, Mnih, Teh (2017), https://arxiv.org/abs/1611.00712, Appendix C.
    """
    logits_q, logits_p, dtype, axis = _checks.logits_pair(
        logits_q, logits_p, axis, names=("logits_q", "logits_p")
    )
    tau_q = _checks.temperature(temperature_q, logits_q.dtype, name="temperature_q")
    tau_p = _checks.temperature(temperature_p, logits_q.dtype, name="temperature_p")
    invalid = _ops.invalid_rows(logits_q, axis, tau_q, tau_p) | _ops.invalid_rows(logits_p, axis)
    logits_q = _ops.nan_gradient_where_invalid(logits_q, invalid)
    logits_p = _ops.nan_gradient_where_invalid(logits_p, invalid)
    tau_q = _ops.nan_gradient_where_invalid(tau_q, invalid)
    tau_p = _ops.nan_gradient_where_invalid(tau_p, invalid)
    log_y = _sample_log(key, logits_q, tau_q, axis)
    kl = _exp_concrete_log_density(log_y, logits_q, tau_q, axis) - _exp_concrete_log_density(
        log_y, logits_p, tau_p, axis
    )
    return jnp.squeeze(_ops.nan_where_invalid(kl, invalid), axis).astype(dtype)


def _nan_where_temperature_outside_domain(
    x: jax.Array, logits: jax.Array, tau: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The binary densities' inputs with ``NaN`` gradients where a traced ``tau`` is not ``> 0``,
    and that mask, for ``_ops.nan_where_invalid`` on the result."""
    bad_tau = _ops.outside_domain(tau)
    x, logits, tau = (_ops.nan_gradient_where_invalid(v, bad_tau) for v in (x, logits, tau))
    return x, logits, tau, bad_tau


def _logistic_log_density(x: jax.Array, logits: jax.Array, tau: jax.Array) -> jax.Array:
    """The log-density of Logistic(``logits / tau``, ``1 / tau``) at ``x``, stable for any ``x``."""
    z = tau * x - logits
    return jnp.log(tau) - jax.nn.softplus(z) - jax.nn.softplus(-z)


def bernoulli_log_prob_logit(
    x: jax.typing.ArrayLike, logits: jax.typing.ArrayLike, temperature: jax.typing.ArrayLike
) -> jax.Array:
    """Log-density of the binary Concrete's log-ratio ``x = log(y) - log(1 - y)``.

    ``x = (logits + L) / temperature`` is Logistic with location ``logits / temperature`` and
    scale ``1 / temperature``; its density with respect to Lebesgue measure on ``x`` integrates
    to 1. The binary Concrete density of ``y = sigmoid(x)`` is this minus ``log(y (1 - y))`` (the
    Jacobian ``dx/dy = 1 / (y (1 - y))``): ``bernoulli_log_prob(sigmoid(x)) ==
    bernoulli_log_prob_logit(x) - log(sigmoid(x)) - log(sigmoid(-x))``. Use this form in a KL or a
    likelihood (e.g. with ``x = logits_q / tau + L / tau`` drawn in log-ratio space): it is finite
    for every finite ``x``, where ``y`` would round to 0 or 1 for ``|x| > 17`` in ``float32``. The
    KL between two binary Concretes is the same in either coordinate.

    Log-odds of ``+-inf`` give ``-inf`` (a point mass at ``+-inf``: no density at a finite ``x``)
    with finite gradients; ``NaN`` gives ``NaN``.

    Args:
      x: the log-ratio, any shape broadcastable against ``logits``.
      logits: the log-odds of the Bernoulli being relaxed.
      temperature: a positive temperature broadcastable against them (a traced value is not
        checked).

    Returns:
      The log-density, of the broadcast shape of ``x`` and ``logits``, in their promoted dtype.

    Raises:
      TypeError: if an input is not floating.
      ValueError: if the shapes do not broadcast or a Python-number ``temperature`` is ``<= 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(bernoulli_log_prob_logit(0.0, 0.0, 1.0))  # the logistic's peak: log(1/4)
      -1.3862943649291992

    References:
      Maddison, Mnih, Teh (2017), https://arxiv.org/abs/1611.00712 (the binary Concrete and its
      logistic log-ratio, section 3.3 and Appendix C).
    """
    x, logits, dtype = _checks.float_pair(x, logits, names=("x", "logits"))
    tau = _checks.temperature(temperature, logits.dtype)
    x, logits, tau, bad_tau = _nan_where_temperature_outside_domain(x, logits, tau)
    return _ops.nan_where_invalid(_logistic_log_density(x, logits, tau), bad_tau).astype(dtype)


def bernoulli_log_prob(
    y: jax.typing.ArrayLike, logits: jax.typing.ArrayLike, temperature: jax.typing.ArrayLike
) -> jax.Array:
    """Log-density of the binary Concrete (relaxed Bernoulli) distribution at ``y`` in (0, 1).

    The density with respect to Lebesgue measure on ``(0, 1)`` (it integrates to 1 there), of
    ``y = sigmoid((logits + L) / temperature)`` as ``sample.relaxed_bernoulli`` draws it::

      p(y) = tau alpha y^(-tau-1) (1 - y)^(-tau-1) / (alpha y^(-tau) + (1 - y)^(-tau))^2

    with ``alpha = exp(logits)``. It equals ``bernoulli_log_prob_logit(log(y) - log(1 - y))
    - log(y) - log(1 - y)``. At ``y`` exactly 0 or 1 (a sample rounded there) the density is not
    defined and the result is ``NaN``; prefer ``bernoulli_log_prob_logit`` in a KL or a likelihood.

    Args:
      y: the point, in the open interval (0, 1), any shape broadcastable against ``logits``.
      logits: the log-odds of the Bernoulli being relaxed.
      temperature: a positive temperature broadcastable against them (a traced value is not
        checked).

    Returns:
      The log-density, of the broadcast shape of ``y`` and ``logits``, in their promoted dtype.

    Raises:
      TypeError: if an input is not floating.
      ValueError: if the shapes do not broadcast or a Python-number ``temperature`` is ``<= 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(bernoulli_log_prob(0.5, 0.0, 1.0))  # uniform on (0, 1) at temperature 1
      0.0

    References:
      Maddison, Mnih, Teh (2017), https://arxiv.org/abs/1611.00712, section 3.3 (eq. 13 of the
      binary Concrete's density).
    """
    y, logits, dtype = _checks.float_pair(y, logits, names=("y", "logits"))
    tau = _checks.temperature(temperature, logits.dtype)
    y, logits, tau, bad_tau = _nan_where_temperature_outside_domain(y, logits, tau)
    log_y, log1m_y = jnp.log(y), jnp.log1p(-y)
    density = _logistic_log_density(log_y - log1m_y, logits, tau) - log_y - log1m_y
    return _ops.nan_where_invalid(density, bad_tau).astype(dtype)


def hard_concrete_l0(
    log_alpha: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 2 / 3,
    *,
    low: jax.typing.ArrayLike = -0.1,
    high: jax.typing.ArrayLike = 1.1,
) -> jax.Array:
    """``P(z != 0)`` of the hard concrete gate ``z``: the expected L0 penalty, in closed form.

    For the gate of ``sample.hard_concrete`` with the same parameters,
    ``P(z != 0) = sigmoid(log_alpha - temperature * log(-low / high))`` (eq. 12 of the paper).
    Summed over a layer's gates it is the expected number of non-zero gates, differentiable in
    ``log_alpha``. ``+-inf`` give exactly 1 and 0 with zero gradients; ``NaN`` gives ``NaN``.

    Args:
      log_alpha: the gates' location parameters, any shape.
      temperature: the gates' positive temperature (2/3 by default), broadcastable to
        ``log_alpha``; may be traced (then it is not checked).
      low: the stretched interval's lower end, ``< 0`` (checked when a Python number).
      high: its upper end, ``> 1`` (checked when a Python number).

    Returns:
      An array of the shape and dtype of ``log_alpha`` with values in ``[0, 1]``.

    Raises:
      TypeError: if ``log_alpha`` is not floating or ``low``/``high`` are not real.
      ValueError: if a Python-number ``temperature`` is ``<= 0``, ``low >= 0`` or ``high <= 1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> round(float(hard_concrete_l0(jnp.float32(0.0))), 4)  # sigmoid(-2/3 log(1/11))
      0.8318

    References:
      Louizos, Welling, Kingma. Learning Sparse Neural Networks through L0 Regularization
      (ICLR 2018), https://arxiv.org/abs/1712.01312, eq. 12.
    """
    x, dtype = _checks.float_array(log_alpha, name="log_alpha")
    tau = _checks.temperature(temperature, x.dtype)
    low, high = _checks.stretch_interval(low, high, x.dtype)
    bad = _ops.outside_domain(tau) | ~(low < 0) | ~(high > 1)  # traced values out of range
    x = _ops.nan_gradient_where_invalid(x, bad)
    tau = _ops.nan_gradient_where_invalid(tau, bad)
    probability = jax.nn.sigmoid(x - tau * jnp.log(-low / high))
    return _ops.nan_where_invalid(probability, bad).astype(dtype)
