"""Gradient estimators for discrete samples, each described once by a registered :class:`Spec`.

Two kinds:

- **Sample estimators** ``fn(key, logits, temperature=1.0, *, axis=-1,
  distribution="categorical", ...)`` return a sample of ``Categorical(softmax(logits))`` along
  ``axis``, or with ``distribution="bernoulli"`` of independent ``Bernoulli(sigmoid(logits))``
  variables (logits of any shape), whose gradient with respect to ``logits`` is the
  estimator's. The sample is exact (one-hot, or 0.0/1.0) for all but the relaxed estimator.
  Selected by name with ``get``.
- **Surrogate (score-function) estimators** ``fn(key, logits, f, *, axis=-1,
  distribution="categorical", ...)`` need the downstream function ``f``: they draw samples, call
  ``f`` once on all of them and return a *surrogate* whose value is the Monte-Carlo mean of ``f``
  and whose gradient is the estimator's (plus the pathwise gradient of what ``f`` closes over).
  Selected with ``get_surrogate``.

Each estimator has a :class:`Spec` (``spec(name)``): its function, kind, supported
distributions, options and their defaults, temperature floor, whether it is unbiased, its
evaluations of ``f`` and its paper. ``names()`` lists the registered ones; ``register`` adds
yours, and ``spec("my_module:MY_SPEC")`` loads a :class:`Spec` from your own module, which is
how ``python -m experiments.mnist --estimator my_module:MY_SPEC`` runs it.

===================  =====================  ==============================================
name                 function               gradient
===================  =====================  ==============================================
*sample*
``"relaxed"``        ``gumbel_softmax``     exact gradient of the relaxed sample (biased
                                            for the discrete problem; not one-hot)
``"st"``             ``straight_through``   ST Gumbel-Softmax: gradient of the soft sample
``"st-softmax"``     ``st_softmax``         ST without noise: gradient of
                                            ``softmax(logits / temperature)``
``"gapped-st"``      ``gapped_st``          ST with deterministic noise given the sample,
                                            which leads the others by ``gap`` (option)
``"zgr"``            ``zgr``                mean of the ST and DARN gradients; no
                                            temperature
``"gumbel-rao"``     ``gumbel_rao``         ST-GS Rao-Blackwellised over the Gumbel noise
                                            given the sample (lower variance)
``"reinmax"``        ``reinmax``            second-order (Heun) straight-through
``"reinmax-rao"``    ``reinmax_rao``        ReinMax with Gumbel-Rao's Jacobian at
                                            ``log((pi + D) / 2)`` (lower variance)
``"reinmax-cv"``     ``reinmax_cv``         ReinMax plus ``eta`` x (Gumbel-Rao minus one
                                            Gumbel-Softmax draw) as a control variate
*surrogate*
``"reinforce-loo"``  ``reinforce_loo``      REINFORCE with the leave-one-out baseline;
                                            categorical or Bernoulli; unbiased
``"disarm"``         ``disarm``             antithetic pair for Bernoulli logits; unbiased
``"rebar"``          ``rebar``              REINFORCE with ``eta f(sigma(z))`` as control
                                            variate at z and z ~ p(z | b); unbiased
``"relax"``          ``relax``              REBAR plus a learned ``control_variate``
                                            (passed by the caller, not an option); unbiased
``"indecater"``      ``indecater``          every category of every variable, the others at
                                            the sample; unbiased
===================  =====================  ==============================================

The sample estimators accept a traced temperature (annealing does not recompile; ``zgr`` takes
none), masked (``-inf``) logits, and compute ``bfloat16``/``float16`` inputs in ``float32``.
Those defined with ``jax.custom_vjp`` (``gumbel_rao`` and the ``reinmax`` family) support
reverse-mode differentiation (``grad``, ``vjp``) only. The surrogate estimators work under
``jit`` and ``vmap``, never sample masked categories, and treat their samples as constants
(``f`` needs no gradient with respect to them).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gumbel_jax import estimators
  >>> estimator = estimators.get("gumbel-rao")
  >>> loss = lambda logits: jnp.sum(estimator(jax.random.key(0), logits, 0.5) * jnp.arange(3.0))
  >>> jax.grad(loss)(jnp.zeros(3)).shape
  (3,)
  >>> estimators.spec("gumbel-rao").options["num_samples"]
  10
"""

from gumbel_jax.estimators._gumbel_rao import gumbel_rao
from gumbel_jax.estimators._reinmax import reinmax, reinmax_cv, reinmax_rao
from gumbel_jax.estimators._score_function import disarm, reinforce_loo
from gumbel_jax.estimators._spec import (
    DISTRIBUTIONS,
    KINDS,
    Estimator,
    Spec,
    SurrogateEstimator,
    get,
    get_surrogate,
    names,
    parse_variant,
    register,
    spec,
)
from gumbel_jax.estimators._straight_through import (
    gapped_st,
    gumbel_softmax,
    st_softmax,
    straight_through,
    zgr,
)

# After the others, so that `names()` lists these surrogates last.
from gumbel_jax.estimators._control_variates import indecater, rebar, relax  # isort: skip

NAMES: tuple[str, ...] = names(kind="sample")
"""The built-in sample estimators' names, as accepted by ``get`` (``names()`` also lists those
registered later)."""

SURROGATE_NAMES: tuple[str, ...] = names(kind="surrogate")
"""The built-in surrogate estimators' names, as accepted by ``get_surrogate``."""

__all__ = [
    "DISTRIBUTIONS",
    "KINDS",
    "NAMES",
    "SURROGATE_NAMES",
    "Estimator",
    "Spec",
    "SurrogateEstimator",
    "disarm",
    "gapped_st",
    "get",
    "get_surrogate",
    "gumbel_rao",
    "gumbel_softmax",
    "indecater",
    "names",
    "parse_variant",
    "rebar",
    "register",
    "reinforce_loo",
    "reinmax",
    "reinmax_cv",
    "reinmax_rao",
    "relax",
    "spec",
    "st_softmax",
    "straight_through",
    "zgr",
]
