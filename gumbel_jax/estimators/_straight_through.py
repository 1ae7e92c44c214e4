"""The Gumbel-Softmax family: the relaxed sample and the straight-through estimators.

- ``gumbel_softmax`` ("relaxed"): the Concrete / Gumbel-Softmax sample itself (not one-hot).
- ``straight_through`` ("st"): the exact sample forward, the soft sample's gradient backward.

For Bernoulli log-odds both are the binary Concrete (``sample.relaxed_bernoulli``).
"""

from __future__ import annotations

import jax

from gumbel_jax import _checks, _ops, sample
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
    noise = sample.gumbel(key, logits.shape, logits.dtype)
    return jax.lax.stop_gradient(_ops.one_hot_argmax(logits + noise, axis, logits.dtype))


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
