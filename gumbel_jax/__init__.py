"""gumbel_jax: Gumbel-Softmax samplers and gradient estimators for discrete latent variables.

The public modules, each doing one thing:

- ``sample``: exact Gumbel noise; Gumbel-Softmax (relaxed and straight-through), Gumbel-max and
  Gumbel-top-k sampling; the binary Concrete (relaxed Bernoulli), the hard concrete gate and the
  relaxed top-k subset.
- ``concrete``: the Concrete / ExpConcrete distributions: log-space sampling, log-densities and
  the relaxed KL; the binary Concrete's densities and the hard concrete's expected L0 penalty.
- ``estimators``: gradient estimators with one-hot forward values (straight-through,
  Gumbel-Rao, ReinMax) and the relaxed one, selectable by name with ``estimators.get``; and the
  score-function estimators (REINFORCE with a leave-one-out baseline, DisARM), which take the
  downstream function and return a surrogate to differentiate (``estimators.get_surrogate``).
- ``diagnostics``: exact gradients by enumeration, and the bias, variance, MSE and cosine of an
  estimator over many draws.
- ``schedules``: temperature annealing schedules.

Invalid inputs (one rule for every categorical sampler, estimator and density; each function's
docstring refers here):

- A row (the logits along the category ``axis``) is *invalid* when it holds a ``NaN`` or a
  ``+inf`` logit, or no finite logit at all (every category masked). The result is ``NaN``
  across that row, in its values and in every gradient flowing through it (with respect to the
  row's logits, whatever the incoming cotangent, and to a temperature its value depends on), so
  it is never a plausible sample; other rows are unaffected. ``sample.gumbel_max`` has no gradient
  (zero everywhere). ``sample.gumbel_top_k`` returns indices, so there the sentinel is the
  out-of-range index ``num_categories``, in every slot of an invalid row and in each slot beyond a
  valid row's number of unmasked categories (``k`` larger than that number). The ``concrete``
  densities and ``kl_relaxed`` are ``NaN`` for an invalid row of logits (either one's, for the KL).
- ``-inf`` masks a category: never sampled, zero gradient, as long as the row has a finite
  logit. Large finite logits (``+-1e4``) are valid.
- For samplers of binary variables, log-odds of ``+inf`` and ``-inf`` are certain outcomes
  (valid) and ``NaN`` log-odds give ``NaN``.
- Options are checked whenever their value is known before tracing: Python and NumPy numbers and
  arrays, and JAX arrays outside ``jit`` alike. A value out of range raises ``ValueError``; a
  string, ``bool``, ``None``, list or complex number where a real number is expected raises
  ``TypeError``; both name the argument and what was received. A traced value (inside ``jit``,
  ``vmap`` or ``grad``) cannot be checked: one outside its domain gives ``NaN`` in every value
  and gradient it touches, never a plausible sample, like an invalid row. That holds for a
  temperature ``<= 0`` or ``NaN`` in every sampler, estimator and density (also where the
  temperature enters only the gradient, as in the straight-through estimators), and for the hard
  concrete's ``low >= 0`` or ``high <= 1``. Schedules are defined for every integer step, negative
  ones included (held at step 0), and stay within ``[minimum, initial]``.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gumbel_jax import sample
  >>> sample.gumbel_softmax(jax.random.key(0), jnp.zeros(3), 0.5, hard=True).sum().item()
  1.0
"""

from gumbel_jax import concrete, diagnostics, estimators, sample, schedules

__all__ = ["concrete", "diagnostics", "estimators", "sample", "schedules"]
