"""ReinMax: straight-through estimators with second-order (Heun) accuracy.

``reinmax`` (Liu et al., NeurIPS 2023) approximates the gradient of the discrete model with
Heun's method on the straight line between the probabilities and the one-hot sample.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gumbel_jax import _checks, _ops
from gumbel_jax.estimators import _binary
from gumbel_jax.estimators._spec import DISTRIBUTIONS, Spec, register
from gumbel_jax.estimators._straight_through import one_hot_sample


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
    invalid = _ops.invalid_rows(x, axis)
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
