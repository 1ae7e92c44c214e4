"""gumbel_jax: Gumbel-Softmax samplers and gradient estimators for discrete latent variables.

The public modules, each doing one thing:

- ``sample``: exact Gumbel noise; Gumbel-Softmax (relaxed and straight-through), Gumbel-max and
  Gumbel-top-k sampling; the binary Concrete (relaxed Bernoulli), the hard concrete gate and the
  relaxed top-k subset.
- ``concrete``: the Concrete / ExpConcrete distributions: log-space sampling, log-densities and
  the relaxed KL; the binary Concrete's densities and the hard concrete's expected L0 penalty.
- ``estimators``: gradient estimators with one-hot forward values (straight-through,
  Gumbel-Rao, ReinMax) and the relaxed one, selectable by name with ``estimators.get``.
- ``schedules``: temperature annealing schedules.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gumbel_jax import sample
  >>> sample.gumbel_softmax(jax.random.key(0), jnp.zeros(3), 0.5, hard=True).sum().item()
  1.0
"""

from gumbel_jax import concrete, estimators, sample, schedules

__all__ = ["concrete", "estimators", "sample", "schedules"]
