"""Diagnostics for gradient estimators: exact gradients by enumeration, and estimator statistics.

- ``exact_gradient``: the exact gradient of ``E_{z ~ q(logits)}[f(z)]`` by summing over every
  joint configuration of a small categorical or Bernoulli latent (at most
  ``MAX_CONFIGURATIONS``).
- ``gradient_stats``: the mean, variance, and (given the exact gradient) bias, mean squared error
  and cosine of any estimator ``estimate(key) -> gradient``, from many independent draws.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gumbel_jax import diagnostics, estimators
  >>> f = lambda b: jnp.sum((b - 0.49) ** 2)
  >>> logits = jnp.zeros(3)
  >>> exact = diagnostics.exact_gradient(f, logits, distribution="bernoulli")
  >>> estimate = jax.grad(
  ...     lambda x, key: estimators.disarm(key, x, jax.vmap(f)), argnums=0
  ... )
  >>> stats = diagnostics.gradient_stats(
  ...     jax.random.key(0), lambda key: estimate(logits, key), 1000, exact=exact
  ... )
  >>> stats.mean.shape, stats.num_draws
  ((3,), 1000)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gumbel_jax import _checks, _ops, estimators

__all__ = ["MAX_CONFIGURATIONS", "GradientStats", "exact_gradient", "gradient_stats"]

MAX_CONFIGURATIONS: int = 2**20
"""The most joint configurations ``exact_gradient`` enumerates (e.g. 20 binary latents)."""

_CHUNK = 1024  # draws per vmapped call of ``gradient_stats``: bounds its memory
_ENUMERATION_BATCH = 4096  # configurations per step of ``exact_gradient``'s ``lax.map``


def exact_gradient(
    f: Callable[[jax.Array], jax.Array],
    logits: jax.typing.ArrayLike,
    *,
    distribution: str = "categorical",
    axis: int = -1,
) -> jax.Array:
    """The exact gradient of ``E_{z ~ q(logits)}[f(z)]`` with respect to ``logits``.

    Enumerates every joint configuration ``z`` (``num_categories ** num_variables`` for a
    categorical, ``2 ** logits.size`` for Bernoulli logits) and differentiates
    ``sum_z q(z) f(z)``, in batches of configurations so that memory stays bounded. Masked
    (``-inf``) categories are enumerated too, with probability 0. For a reference to test
    estimators against, compute in ``float64``: call it on ``float64`` logits inside
    ``with jax.enable_x64(True):``.

    Args:
      f: maps one sample, of the shape of ``logits`` (one-hot along ``axis``, or 0.0/1.0), to a
        scalar. It is ``vmap``-ed over configurations.
      logits: ``[..., num_categories, ...]`` categorical logits on ``axis``, or Bernoulli logits
        of ``P(1) = sigmoid(logits)`` of any shape.
      distribution: ``"categorical"`` or ``"bernoulli"``.
      axis: the category axis (categorical only).

    Returns:
      The gradient, of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating.
      ValueError: if ``distribution`` is unknown, ``axis`` is out of range, or there are more
        than ``MAX_CONFIGURATIONS`` configurations.

    Examples:
      >>> f = lambda z: z[1]  # E f = softmax(logits)[1]
      >>> exact_gradient(f, jnp.zeros(2)).tolist()
      [-0.25, 0.25]
    """
    distribution = _checks.one_of(distribution, estimators.DISTRIBUTIONS, name="distribution")
    if distribution == "categorical":
        x, dtype, axis = _checks.logits_array(logits, axis)
        base = x.shape[axis]
        moved_shape = (*x.shape[:axis], *x.shape[axis + 1 :], base)
        num_variables = math.prod(moved_shape[:-1])
    else:
        x, dtype = _checks.float_array(logits, name="logits")
        base, num_variables = 2, x.size
    num_configurations = base**num_variables
    if num_configurations > MAX_CONFIGURATIONS:
        raise ValueError(
            f"exact_gradient enumerates every joint configuration: {base}^{num_variables} = "
            f"{num_configurations} for `logits` of shape {x.shape} ({distribution}), more than "
            f"MAX_CONFIGURATIONS = {MAX_CONFIGURATIONS}. Use fewer latent variables."
        )
    powers = jnp.asarray([base**v for v in range(num_variables)], jnp.int32)

    def configuration(index: jax.Array) -> jax.Array:
        digits = (index // powers) % base  # [num_variables]
        if distribution == "bernoulli":
            return digits.astype(x.dtype).reshape(x.shape)
        one_hot = jax.nn.one_hot(digits, base, dtype=x.dtype).reshape(moved_shape)
        return jnp.moveaxis(one_hot, -1, axis)

    def expectation(x: jax.Array) -> jax.Array:
        def term(index: jax.Array) -> jax.Array:
            z = configuration(index)
            if distribution == "bernoulli":
                log_q = jnp.sum(_ops.bernoulli_log_prob(z, x))
            else:
                log_q = jnp.sum(_ops.categorical_log_prob(z, x, axis))
            value = jnp.asarray(f(z), x.dtype)
            if value.shape != ():
                raise ValueError(
                    f"`f` must map one sample of shape {x.shape} to a scalar; got shape "
                    f"{value.shape}."
                )
            return jnp.exp(log_q) * value

        indices = jnp.arange(num_configurations, dtype=jnp.int32)
        return jnp.sum(jax.lax.map(term, indices, batch_size=_ENUMERATION_BATCH))

    return jax.grad(expectation)(x).astype(dtype)


class GradientStats(NamedTuple):
    """Statistics of ``num_draws`` independent draws of a gradient estimator (a pytree).

    Attributes:
      mean: the mean estimate, ``float64``, of the estimate's shape.
      variance: the trace of the covariance: the per-coordinate variances (with ``n - 1``)
        summed.
      num_draws: the number of draws ``n``.
      bias: ``|mean - exact|`` (L2 norm), or ``None`` without ``exact``. For an unbiased
        estimator it is of the order of ``sqrt(variance / num_draws)``, the noise floor.
      mse: the mean over draws of ``|estimate - exact|^2``, or ``None``.
      cosine: the cosine between ``mean`` and ``exact``, or ``None``.
    """

    mean: np.ndarray
    variance: float
    num_draws: int
    bias: float | None = None
    mse: float | None = None
    cosine: float | None = None

    @property
    def noise_floor(self) -> float:
        """``sqrt(variance / num_draws)``: the L2 size of the mean's standard error."""
        return math.sqrt(self.variance / self.num_draws)


@jax.jit
def _chunk_moments(
    estimate: jax.tree_util.Partial, keys: jax.Array, count: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and sum of squared deviations (two-pass) of the first ``count`` draws of a chunk."""
    draws = jax.vmap(estimate)(keys)
    draws = draws.astype(jnp.promote_types(draws.dtype, "f4"))
    valid = (jnp.arange(draws.shape[0]) < count).reshape((-1,) + (1,) * (draws.ndim - 1))
    mean = jnp.sum(jnp.where(valid, draws, 0.0), axis=0) / count
    return mean, jnp.sum(jnp.where(valid, (draws - mean) ** 2, 0.0), axis=0)


def gradient_stats(
    key: jax.Array,
    estimate: Callable[[jax.Array], jax.Array],
    num_draws: int,
    *,
    exact: jax.typing.ArrayLike | None = None,
) -> GradientStats:
    """Runs ``estimate(key_i)`` for ``num_draws`` independent keys and summarises the draws.

    The draws are ``vmap``-ed and ``jit``-ed in chunks of 1024 (memory stays bounded whatever
    ``num_draws``). Each chunk's mean and sum of squared deviations from it (``M2``) are
    computed on the device, two-pass; the chunks are combined on the host in ``float64`` with
    Chan et al.'s pairwise formula, so no sum of squares of large numbers is ever formed. The
    mean squared error uses the exact identity ``mse = |mean - exact|^2 + M2_total / n``.

    This is a driver (a Python loop over chunks), not a function to ``jit``. Its compiled chunk
    is cached per ``estimate`` function: pass a ``jax.tree_util.Partial`` (e.g.
    ``Partial(fn, temperature)``) to reuse one compilation for many values of its arguments.

    Args:
      key: a PRNG key, split into ``num_draws`` keys.
      estimate: maps a key to one gradient estimate (an array, any fixed shape); a function or
        a ``jax.tree_util.Partial``.
      num_draws: the number of draws, a Python int >= 2.
      exact: the exact gradient, of the estimate's shape, for ``bias``, ``mse`` and ``cosine``.

    Returns:
      A ``GradientStats``.

    Raises:
      TypeError: if ``num_draws`` is not an int.
      ValueError: if ``num_draws < 2`` or ``exact`` has another shape than the estimates.

    Examples:
      >>> estimate = lambda key: 1.0 + jax.random.normal(key, (2,))
      >>> stats = gradient_stats(jax.random.key(0), estimate, 10_000, exact=jnp.ones(2))
      >>> round(stats.variance, 1), stats.bias < 0.05
      (2.0, True)

    References:
      Chan, Golub, LeVeque. Updating Formulae and a Pairwise Algorithm for Computing Sample
      Variances (1979), https://doi.org/10.1007/978-3-642-51461-6_3
    """
    num_draws = _checks.positive_int(num_draws, name="num_draws")
    if num_draws < 2:
        raise ValueError(f"`num_draws` must be >= 2 for a variance; got num_draws={num_draws}.")

    if not isinstance(estimate, jax.tree_util.Partial):
        estimate = jax.tree_util.Partial(estimate)
    chunk = min(num_draws, _CHUNK)
    keys = jax.random.split(key, num_draws)
    count, mean, m2 = 0, None, None
    for start in range(0, num_draws, chunk):
        chunk_keys = keys[start : start + chunk]
        chunk_count = chunk_keys.shape[0]
        if chunk_count < chunk:  # pad the last chunk (and ignore the padding): no recompilation
            chunk_keys = jnp.concatenate([chunk_keys, keys[: chunk - chunk_count]])
        moments = _chunk_moments(estimate, chunk_keys, chunk_count)
        chunk_mean, chunk_m2 = (np.asarray(a, np.float64) for a in moments)
        if mean is None:
            count, mean, m2 = chunk_count, chunk_mean, chunk_m2
            continue
        total = count + chunk_count
        delta = chunk_mean - mean
        mean = mean + delta * (chunk_count / total)
        m2 = m2 + chunk_m2 + delta**2 * (count * chunk_count / total)
        count = total
    shape = mean.shape
    mean, m2 = mean.reshape(-1), m2.reshape(-1)
    variance = float(np.sum(m2) / (count - 1))
    result = GradientStats(mean=mean.reshape(shape), variance=variance, num_draws=count)
    if exact is None:
        return result
    exact = np.asarray(exact, np.float64)
    if exact.shape != shape:
        raise ValueError(
            f"`exact` must have the estimates' shape {shape}; got shape {exact.shape}."
        )
    error = mean - exact.reshape(-1)
    bias = float(np.linalg.norm(error))
    mse = bias**2 + float(np.sum(m2) / count)
    norms = np.linalg.norm(mean) * np.linalg.norm(exact)
    cosine = float(np.dot(mean, exact.reshape(-1)) / norms) if norms > 0 else float("nan")
    return result._replace(bias=bias, mse=mse, cosine=cosine)
