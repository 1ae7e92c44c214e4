"""Score-function estimators: REINFORCE with a leave-one-out baseline, and DisARM.

They take the downstream function ``f`` and return a *surrogate*: its value is the Monte-Carlo
mean of ``f`` over exact samples and its gradient is the estimator's (plus the pathwise gradient
of what ``f`` closes over). Both are unbiased.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gumbel_jax import _checks, _ops, _random, sample
from gumbel_jax.estimators._spec import DISTRIBUTIONS, Spec, register


def _prefix_to_full(values: jax.Array, ndim: int) -> jax.Array:
    """Appends axes of size 1 so ``[*P]`` values broadcast against ``ndim``-dimensional arrays."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def _sum_after_prefix(x: jax.Array, prefix_ndim: int) -> jax.Array:
    """Sums ``x`` over its axes after the first ``prefix_ndim``."""
    return jnp.sum(x, axis=tuple(range(prefix_ndim, x.ndim)))


def reinforce_loo(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    f: Callable[[jax.Array], jax.Array],
    *,
    num_samples: int = 2,
    distribution: str = "categorical",
    axis: int = -1,
) -> jax.Array:
    """REINFORCE with the leave-one-out baseline, as a surrogate value to differentiate.

    Draws ``S = num_samples`` samples ``z_1..z_S ~ q(logits)``, calls ``f`` once on all of them
    (``f(z)`` has shape ``[S, *P]``) and returns the mean ``mean_s f(z_s)`` of shape ``P``. Its
    gradient with respect to ``logits`` is the leave-one-out estimator::

        1 / (S - 1) * sum_s (f(z_s) - mean_j f(z_j)) * grad log q(z_s)

    (each sample's baseline is the mean of the other ``S - 1`` values), computed separately for
    every element of ``P`` (e.g. every example of a batch), and its gradient with respect to
    whatever ``f`` closes over is the ordinary pathwise one, ``mean_s grad f(z_s)``. The samples
    are constants (``f`` is never differentiated with respect to them), and ``log q(z_s)`` is
    summed over the axes of ``logits`` after ``P``. The surrogate is
    ``mean_s [f(z_s) + A_s * (log q(z_s) - stop_gradient(log q(z_s)))]`` with the advantage
    ``A_s = S / (S - 1) * (f(z_s) - mean_j f(z_j))`` held constant: its forward value is exactly
    the Monte-Carlo mean (the "magic box" of DiCE, to first order: the surrogate's higher
    derivatives are not estimators of anything).

    Invalid values: a ``NaN`` logit makes the value and gradient of its element of ``P``
    ``NaN``; masked (``-inf``) categorical logits are never sampled and get a zero gradient;
    Bernoulli logits of ``+-inf`` are certain outcomes (value and zero gradient, no ``NaN``).

    Args:
      key: a PRNG key.
      logits: ``[*P, ..., num_categories, ...]`` unnormalised log-probabilities (categorical,
        the categories on ``axis``; ``-inf`` masks a category) or ``[*P, ...]`` logits of
        ``P(1) = sigmoid(logits)`` (Bernoulli).
      f: any JAX function mapping ``[num_samples, *logits.shape]`` samples (one-hot along
        ``axis``, or 0.0/1.0) to ``[num_samples, *P]`` floating values, ``P`` a prefix of
        ``logits.shape`` that stops before the category axis.
      num_samples: ``S >= 2``, a Python int.
      distribution: ``"categorical"`` or ``"bernoulli"``.
      axis: the category axis (categorical only; ignored for ``"bernoulli"``).

    Returns:
      The surrogate: ``mean_s f(z_s)``, shape ``P``, in the dtype of ``f``'s values.

    Raises:
      TypeError: if ``logits`` or ``f``'s values are not floating, or ``num_samples`` or
        ``axis`` is not an int.
      ValueError: if ``num_samples < 2``, ``distribution`` is unknown, ``axis`` is out of range
        or ``f``'s values do not have shape ``[num_samples, *P]`` (the message lists the valid
        shapes).

    Examples:
      >>> f = lambda z: jnp.sum(z * jnp.arange(3.0), axis=-1)  # [S, batch, 3] -> [S, batch]
      >>> loss = lambda x: reinforce_loo(jax.random.key(0), x, f, num_samples=4).sum()
      >>> jax.grad(loss)(jnp.zeros((2, 3))).shape
      (2, 3)

    References:
      Kool, van Hoof, Welling. Buy 4 REINFORCE Samples, Get a Baseline for Free! (ICLR 2019
      workshop), https://openreview.net/forum?id=r1lgTGL5DE
      Mnih, Rezende. Variational Inference for Monte Carlo Objectives (ICML 2016),
      https://arxiv.org/abs/1602.06725
      Williams. Simple Statistical Gradient-Following Algorithms for Connectionist
      Reinforcement Learning (1992).
      Foerster et al. DiCE: The Infinitely Differentiable Monte Carlo Estimator (ICML 2018),
      https://arxiv.org/abs/1802.05098
    """
    num_samples = _checks.positive_int(num_samples, name="num_samples")
    if num_samples < 2:
        raise ValueError(
            f"`num_samples` must be >= 2 (the leave-one-out baseline of a sample is the mean of "
            f"the others); got num_samples={num_samples}."
        )
    distribution = _checks.one_of(distribution, DISTRIBUTIONS, name="distribution")
    if distribution == "categorical":
        x, _, axis = _checks.logits_array(logits, axis)
        z = sample.gumbel_max(key, jnp.broadcast_to(x, (num_samples, *x.shape)), axis=axis + 1)
    else:
        x, _ = _checks.float_array(logits, name="logits")
        u = _random.drawn_flat(jax.random.uniform, key, (num_samples, *x.shape), x.dtype)
        z = _ops.bernoulli_below(u, x)
    return _reinforce_loo_surrogate(x, z, f, distribution, axis)


def _reinforce_loo_surrogate(
    x: jax.Array, z: jax.Array, f: Callable[[jax.Array], jax.Array], distribution: str, axis: int
) -> jax.Array:
    """``reinforce_loo`` given its samples ``z`` (``[S, *x.shape]``); ``axis`` non-negative."""
    num_samples = z.shape[0]
    z = jax.lax.stop_gradient(z)
    if distribution == "categorical":
        log_q = _ops.categorical_log_prob(z, x[None], axis + 1)  # [S, *shape without axis]
        max_prefix = axis
    else:
        log_q = _ops.bernoulli_log_prob(z, x)
        max_prefix = x.ndim
    values, dtype = _checks.per_sample_values(f(z), num_samples, x.shape, max_prefix)
    log_q = _sum_after_prefix(log_q, values.ndim).astype(values.dtype)
    mean = jnp.mean(values, axis=0)
    advantage = jax.lax.stop_gradient(num_samples / (num_samples - 1) * (values - mean))
    score = log_q - jax.lax.stop_gradient(log_q)  # 0 in value, grad log q in gradient
    return (mean + jnp.mean(advantage * score, axis=0)).astype(dtype)


def disarm(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    f: Callable[[jax.Array], jax.Array],
    *,
    distribution: str = "bernoulli",
    axis: int = -1,
) -> jax.Array:
    """DisARM for Bernoulli latents: one antithetic pair, as a surrogate value to differentiate.

    With ``u ~ Uniform[0, 1)`` of the shape of ``logits``, ``b = 1[u < sigmoid(logits)]`` and the
    antithetic ``b~ = 1[1 - u < sigmoid(logits)]`` (both exactly ``Bernoulli(sigmoid(logits))``),
    ``f`` is called once on the pair stacked, ``[2, *logits.shape]``, and returns ``[2, *P]``
    (``P`` a prefix of ``logits.shape``). The result is the pair's mean ``(f(b) + f(b~)) / 2``,
    shape ``P``; its gradient with respect to coordinate ``d`` of ``logits`` is::

        (f(b) - f(b~)) / 2 * (-1)^{b~_d} * 1[b_d != b~_d] * sigmoid(|logits_d|)

    with ``f`` of the element of ``P`` that ``d`` belongs to: an unbiased estimator of the
    gradient of ``E[f(b)]`` (ARM's pair, Rao-Blackwellised over the logistic noise). Whatever
    ``f`` closes over gets the pathwise gradient of the pair's mean. The pair is constant for
    differentiation.

    Invalid values: a ``NaN`` logit makes the value and gradient of its element of ``P``
    ``NaN``; logits of ``+-inf`` are certain outcomes (``b = b~``), with zero gradient.

    Args:
      key: a PRNG key.
      logits: ``[*P, ...]`` logits of ``P(b = 1) = sigmoid(logits)``, any shape.
      f: any JAX function mapping ``[2, *logits.shape]`` samples (0.0/1.0) to ``[2, *P]``
        floating values.
      distribution: ``"bernoulli"``, the only one DisARM is defined for (the argument exists so
        that every surrogate estimator takes the same call).
      axis: unused (Bernoulli logits have no category axis).

    Returns:
      The surrogate: ``(f(b) + f(b~)) / 2``, shape ``P``, in the dtype of ``f``'s values.

    Raises:
      TypeError: if ``logits`` or ``f``'s values are not floating.
      ValueError: if ``f``'s values do not have shape ``[2, *P]``, or ``distribution`` is not
        ``"bernoulli"``.

    Examples:
      >>> f = lambda b: jnp.sum((b - 0.49) ** 2, axis=-1)  # [2, 5] -> [2]
      >>> g = jax.grad(lambda x: disarm(jax.random.key(0), x, f))(jnp.zeros(5))
      >>> g.shape
      (5,)

    References:
      Dong, Mnih, Tucker. DisARM: An Antithetic Gradient Estimator for Binary Latent Variables
      (NeurIPS 2020), https://arxiv.org/abs/2006.10680
      Yin, Zhou. ARM: Augment-REINFORCE-Merge Gradient Estimator for Binary Latent Variables
      (ICLR 2019), https://arxiv.org/abs/1807.11143
    """
    del axis
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") != "bernoulli":
        raise ValueError(
            "DisARM is defined for Bernoulli latents only (distribution='bernoulli'); for "
            "categorical latents use 'reinforce-loo'."
        )
    x, _ = _checks.float_array(logits, name="logits")
    return _disarm_surrogate(x, _random.drawn_flat(jax.random.uniform, key, x.shape, x.dtype), f)


def _disarm_surrogate(x: jax.Array, u: jax.Array, f: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``disarm`` given its uniform noise ``u`` (of the shape of ``x``)."""
    u = jax.lax.stop_gradient(u)
    b, b_tilde = _ops.bernoulli_below(u, x), _ops.bernoulli_below(1.0 - u, x)
    values, dtype = _checks.per_sample_values(f(jnp.stack([b, b_tilde])), 2, x.shape, x.ndim)
    half_difference = _prefix_to_full((values[0] - values[1]) / 2, x.ndim)
    sign = 1.0 - 2.0 * b_tilde  # (-1)^{b~}
    weight = half_difference * sign * (b != b_tilde) * jax.nn.sigmoid(jnp.abs(x))
    weight = jax.lax.stop_gradient(weight)
    finite = jnp.where(jnp.isinf(x), 0.0, x)  # inf - inf would be NaN; b = b~ there anyway
    score = _sum_after_prefix(weight * (finite - jax.lax.stop_gradient(finite)), values.ndim - 1)
    return (jnp.mean(values, axis=0) + score.astype(values.dtype)).astype(dtype)


register(
    Spec(
        "reinforce-loo",
        reinforce_loo,
        kind="surrogate",
        distributions=DISTRIBUTIONS,
        options={"num_samples": 2},
        unbiased=True,
        evaluations=lambda options, shape: options["num_samples"],
        reference="Kool, van Hoof, Welling (ICLR 2019 workshop), "
        "https://openreview.net/forum?id=r1lgTGL5DE",
        summary="REINFORCE with the leave-one-out baseline; unbiased",
    )
)
register(
    Spec(
        "disarm",
        disarm,
        kind="surrogate",
        distributions=("bernoulli",),
        unbiased=True,
        evaluations=lambda options, shape: 2,
        reference="Dong, Mnih, Tucker (NeurIPS 2020), https://arxiv.org/abs/2006.10680",
        summary="an antithetic pair, Rao-Blackwellised over the logistic noise; unbiased",
    )
)
