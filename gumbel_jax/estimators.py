"""Gradient estimators for categorical samples: one-hot forward values, different gradients.

Every estimator is a pure function ``fn(key, logits, temperature=1.0, *, axis=-1, ...)`` that
returns a sample of ``Categorical(softmax(logits))`` along ``axis`` (a relaxed one for
``gumbel_softmax``, an exact one-hot for the others) whose gradient with respect to ``logits``
is the estimator's. An experiment picks one by name with ``get``:

================  =====================  ==================================================
name              function               gradient
================  =====================  ==================================================
``"relaxed"``     ``gumbel_softmax``     exact gradient of the relaxed sample (biased for
                                         the discrete problem; forward is not one-hot)
``"st"``          ``straight_through``   ST Gumbel-Softmax: gradient of the soft sample
``"gumbel-rao"``  ``gumbel_rao``         ST-GS Rao-Blackwellised over the Gumbel noise
                                         given the sample (lower variance)
``"reinmax"``     ``reinmax``            second-order (Heun) straight-through
================  =====================  ==================================================

All estimators accept a traced temperature (annealing does not recompile), masked (``-inf``)
logits, and compute ``bfloat16``/``float16`` inputs in ``float32``. ``reinmax`` is defined with
``jax.custom_vjp`` and so supports reverse-mode differentiation (``grad``, ``vjp``) only.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gumbel_jax import estimators
  >>> estimator = estimators.get("gumbel-rao")
  >>> loss = lambda logits: jnp.sum(estimator(jax.random.key(0), logits, 0.5) * jnp.arange(3.0))
  >>> jax.grad(loss)(jnp.zeros(3)).shape
  (3,)
"""

from __future__ import annotations

import functools
from typing import Protocol

import jax
import jax.numpy as jnp

from gumbel_jax import _checks, _ops, sample

__all__ = [
    "NAMES",
    "Estimator",
    "get",
    "gumbel_rao",
    "gumbel_softmax",
    "reinmax",
    "straight_through",
]


class Estimator(Protocol):
    """The shared signature of the estimators in this module."""

    def __call__(
        self,
        key: jax.Array,
        logits: jax.typing.ArrayLike,
        temperature: jax.typing.ArrayLike = 1.0,
        *,
        axis: int = -1,
    ) -> jax.Array: ...


def gumbel_softmax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
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
      axis: the category axis.

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
    return sample.gumbel_softmax(key, logits, temperature, hard=False, axis=axis)


def straight_through(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
) -> jax.Array:
    """Straight-through Gumbel-Softmax (ST-GS): hard one-hot forward, soft sample's gradient.

    Same as ``sample.gumbel_softmax(key, logits, temperature, hard=True, axis=axis)``.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``.
      temperature: a positive temperature (Python number or array, may be traced).
      axis: the category axis.

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
    return sample.gumbel_softmax(key, logits, temperature, hard=True, axis=axis)


def _one_hot_sample(key: jax.Array, logits: jax.Array, axis: int) -> jax.Array:
    """``sample.gumbel_max(key, logits, axis=axis)`` without its ``NaN`` for invalid rows.

    The estimators put ``NaN`` in invalid rows of their own result; a ``NaN``-free one-hot here
    keeps ``_conditional_gumbel`` as fast as before (with it, XLA fuses gumbel_rao's backward
    pass about 40% slower on CPU).
    """
    noise = sample.gumbel(key, logits.shape, logits.dtype)
    return jax.lax.stop_gradient(_ops.one_hot_argmax(logits + noise, axis, logits.dtype))


def _conditional_gumbel(
    key: jax.Array, logits: jax.Array, hard: jax.Array, num_samples: int, axis: int
) -> jax.Array:
    """``num_samples`` standard Gumbel vectors ``G`` conditioned on ``argmax(logits + G) = hard``.

    With ``E = exp(-G')`` for fresh standard Gumbel ``G'`` (so ``E ~ Exp(1)``, and ``log E`` is
    finite for every draw) and ``Z = sum(exp(logits))``, the conditioned perturbed logits are
    ``log Z - log E_i`` at the sampled category ``i`` (the maximum, ``Gumbel(log Z)``) and
    ``-logaddexp(log E_j - logit_j, log E_i - log Z)`` elsewhere (Gumbels truncated below it).

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` logits in the compute dtype; ``-inf`` masks.
      hard: the one-hot sample, same shape as ``logits``.
      num_samples: the number of conditional noise vectors.
      axis: the category axis (non-negative).

    Returns:
      ``[num_samples, ...]`` noise, 0 at masked categories, with gradients stopped.
    """
    masked = jnp.isneginf(logits)
    safe_logits = jnp.where(masked, 0.0, logits)
    log_z = jax.nn.logsumexp(logits, axis=axis, keepdims=True)
    log_e = -sample.gumbel(key, (num_samples, *logits.shape), logits.dtype)
    log_e_max = jnp.sum(jnp.where(hard > 0, log_e, 0.0), axis=axis + 1, keepdims=True)
    at_max = log_z - log_e_max
    below_max = -jnp.logaddexp(log_e - safe_logits, log_e_max - log_z)
    perturbed = jnp.where(hard > 0, at_max, below_max)
    return jax.lax.stop_gradient(jnp.where(masked, 0.0, perturbed - safe_logits))


def gumbel_rao(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    num_samples: int = 10,
    axis: int = -1,
) -> jax.Array:
    """Gumbel-Rao (GR-MCk): straight-through Gumbel-Softmax, Rao-Blackwellised over the noise.

    Forward: a one-hot sample ``D ~ Categorical(softmax(logits))``. Backward: the gradient of
    ``mean_k softmax((logits + G_k) / temperature)`` where ``G_1..G_k`` are Gumbel noise vectors
    drawn conditionally on ``argmax(logits + G_k) = D`` and treated as constants (as in the
    authors' reference implementation). Its expectation equals that of ST-GS and its variance is
    no larger; ``num_samples=1`` has the same distribution as ST-GS.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category.
      temperature: a positive temperature (Python number or array, may be traced; a traced
        value is not checked and 0 gives ``NaN`` gradients).
      num_samples: ``k``, the number of conditional noise samples (a Python int >= 1). Memory
        and time of the backward surrogate grow linearly in it.
      axis: the category axis.

    Returns:
      An exact one-hot sample (0.0 and 1.0), of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, ``temperature`` is not a real number or
        ``num_samples`` is not an int.
      ValueError: if ``axis`` is out of range, ``num_samples < 1`` or a concrete
        ``temperature`` is ``<= 0``.

    Examples:
      >>> y = gumbel_rao(jax.random.key(0), jnp.zeros((2, 5)), 0.5, num_samples=8)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]

    References:
      Paulus, Maddison, Krause. Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
      Estimator (ICLR 2021), https://arxiv.org/abs/2010.04838
      Reference implementation: https://github.com/nshepperd/gumbel-rao-pytorch
    """
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    num_samples = _checks.positive_int(num_samples, name="num_samples")
    invalid = _ops.invalid_rows(x, axis)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    key_sample, key_noise = jax.random.split(key)
    hard = _one_hot_sample(key_sample, x, axis)
    noise = _conditional_gumbel(key_noise, x, hard, num_samples, axis)
    soft = jax.nn.softmax(_ops.tempered_logits(x, noise, tau), axis=axis + 1)
    surrogate = jnp.mean(soft, axis=0)
    one_hot = _ops.hard_with_soft_gradient(surrogate, hard)
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _reinmax_one_hot(logits: jax.Array, tau: jax.Array, hard: jax.Array, axis: int) -> jax.Array:
    """Returns ``hard``; its vector-Jacobian product is ReinMax's (see ``reinmax``)."""
    del logits, tau, axis
    return hard


def _reinmax_fwd(logits, tau, hard, axis):
    del axis
    return hard, (logits, tau, hard)


def _reinmax_bwd(axis, residuals, g):
    logits, tau, hard = residuals

    def softmax_jacobian_times_g(p):  # (diag(p) - p p^T) g
        return p * g - p * jnp.sum(p * g, axis=axis, keepdims=True)

    pi0 = jax.nn.softmax(logits, axis=axis)
    pi1 = 0.5 * (jax.nn.softmax(_ops.tempered_logits(logits, 0.0, tau), axis=axis) + hard)
    grad = 2.0 * softmax_jacobian_times_g(pi1) - 0.5 * softmax_jacobian_times_g(pi0)
    return grad, jnp.zeros_like(tau), jnp.zeros_like(hard)


_reinmax_one_hot.defvjp(_reinmax_fwd, _reinmax_bwd)


def reinmax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
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
      axis: the category axis.

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
    invalid = _ops.invalid_rows(x, axis)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    hard = _one_hot_sample(key, x, axis)
    one_hot = _reinmax_one_hot(x, tau, hard, axis)
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


_REGISTRY: dict[str, Estimator] = {
    "relaxed": gumbel_softmax,
    "st": straight_through,
    "gumbel-rao": gumbel_rao,
    "reinmax": reinmax,
}

NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""The estimators' names, as accepted by ``get``: relaxed, st, gumbel-rao, reinmax."""


def get(name: str) -> Estimator:
    """Returns the estimator called ``name``.

    Args:
      name: one of ``NAMES``: ``"relaxed"`` (``gumbel_softmax``), ``"st"``
        (``straight_through``), ``"gumbel-rao"`` (``gumbel_rao``), ``"reinmax"`` (``reinmax``).

    Returns:
      The estimator function ``fn(key, logits, temperature=1.0, *, axis=-1, ...)``.

    Raises:
      ValueError: if ``name`` is not one of ``NAMES``.

    Examples:
      >>> get("st") is straight_through
      True
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown estimator {name!r}; expected one of {', '.join(map(repr, NAMES))}."
        ) from None
