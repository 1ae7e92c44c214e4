"""Temperature schedules for annealing: pure functions of the training step, in optax's style.

A schedule is a function ``step -> temperature`` that can be traced inside ``jit`` and
``lax.scan``, so the temperature reaches the estimators as an array and annealing never
recompiles.

Examples:
  >>> from gumbel_jax import schedules
  >>> schedule = schedules.exponential(1.0, rate=3e-5, minimum=0.5, every=1000)
  >>> float(schedule(0)), round(float(schedule(1999)), 4)
  (1.0, 0.9704)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gumbel_jax import _checks

__all__ = ["exponential"]


def exponential(
    initial: float = 1.0, *, rate: float = 3e-5, minimum: float = 0.5, every: int = 1
) -> Callable[[jax.typing.ArrayLike], jax.Array]:
    """Exponential temperature decay with a floor, updated every ``every`` steps.

    ``tau(t) = max(minimum, initial * exp(-rate * t_k))`` where ``t_k`` is ``t`` rounded down to
    a multiple of ``every``: the schedule of Jang et al. (2017), who use
    ``max(0.5, exp(-r t))`` with ``r`` in ``{1e-5, 1e-4}``, updated every 500 steps. Defined for
    every step: a negative step is held at step 0 (``initial``), so the value always lies in
    ``[minimum, initial]``.

    Args:
      initial: the temperature at step 0 (> 0).
      rate: the decay rate per step (>= 0).
      minimum: the floor (> 0); the schedule never goes below it.
      every: update the temperature every this many steps (a Python int >= 1).

    Returns:
      A pure function of the step (an int or an integer array, may be traced) returning the
      temperature as a ``float32`` array of the step's shape.

    Raises:
      TypeError: if a parameter has the wrong type.
      ValueError: if ``initial`` or ``minimum`` is not > 0, ``minimum > initial`` (the floor
        above the start: no value lies in ``[minimum, initial]``), ``rate`` is negative, or
        ``every`` is < 1.

    Examples:
      >>> schedule = exponential(1.0, rate=1e-4, minimum=0.5, every=500)
      >>> [round(float(schedule(t)), 4) for t in (0, 499, 500, 100_000)]
      [1.0, 1.0, 0.9512, 0.5]

    References:
      Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
      https://arxiv.org/abs/1611.01144, section 4.
    """
    initial = _checks.positive_finite(initial, name="initial")
    rate = _checks.positive_finite(rate, name="rate", allow_zero=True)
    minimum = _checks.positive_finite(minimum, name="minimum")
    every = _checks.positive_int(every, name="every")
    if minimum > initial:
        raise ValueError(
            f"`minimum` ({minimum}) must not exceed `initial` ({initial}): the schedule starts at "
            f"`initial` and decays to `minimum`; lower `minimum` or raise `initial`."
        )

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        step = jnp.asarray(step)
        if not jnp.issubdtype(step.dtype, jnp.integer):
            step = jnp.floor(step)
        held = jnp.maximum(step // every, 0) * every  # a negative step is step 0
        decayed = initial * jnp.exp(-rate * held.astype(jnp.float32))
        return jnp.maximum(jnp.float32(minimum), decayed).astype(jnp.float32)

    return schedule
