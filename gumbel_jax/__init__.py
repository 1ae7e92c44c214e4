"""gumbel_jax: Gumbel-Softmax samplers and gradient estimators for discrete latent variables.

The public modules, each doing one thing:

- ``sample``: exact Gumbel noise; Gumbel-Softmax (relaxed and straight-through), Gumbel-max and
  Gumbel-top-k sampling.
- ``concrete``: the Concrete / ExpConcrete distributions: log-space sampling, log-densities and
  the relaxed KL.
- ``estimators``: gradient estimators with one-hot forward values (straight-through,
  Gumbel-Rao, ReinMax) and the relaxed one, selectable by name with ``estimators.get``; and the
  score-function estimators (REINFORCE with a leave-one-out baseline, DisARM), which take the
  downstream function and return a surrogate to differentiate (``estimators.get_surrogate``).
- ``diagnostics``: exact gradients by enumeration, and the bias, variance, MSE and cosine of an
  estimator over many draws.
- ``schedules``: temperature annealing schedules.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gumbel_jax import sample
  >>> sample.gumbel_softmax(jax.random.key(0), jnp.zeros(3), 0.5, hard=True).sum().item()
  1.0
"""

from gumbel_jax import concrete, diagnostics, estimators, sample, schedules

__all__ = ["concrete", "diagnostics", "estimators", "sample", "schedules"]
