"""Control-variate surrogate estimators: REBAR, RELAX and IndeCateR.

Like ``reinforce_loo`` they take the downstream function ``f`` and return a *surrogate*: its value
is the mean of ``f`` over exact samples and its gradient with respect to the logits is the
estimator's (plus the pathwise gradient of what ``f`` closes over). All three are unbiased.

- ``rebar`` / ``relax``: the score function of the exact sample ``b = H(z)`` with a control
  variate ``c`` of the continuous noise-perturbed logits ``z``, whose expectation is added back by
  reparameterisation, once at an unconditional ``z`` and once at ``z~ ~ p(z | b)``::

      g = [f(b) - c(z~)] d/dlogits log p(b) + d/dlogits c(z) - d/dlogits c(z~)

  REBAR's ``c(z) = eta * f(sigma_lambda(z))`` (the concrete relaxation of ``f``); RELAX adds a
  learned ``control_variate``. The gradient ``g`` is itself differentiable with respect to
  ``eta``, the temperature ``lambda`` and the control variate's parameters, exactly, so that
  ``jax.grad`` of ``sum(g ** 2)`` is the single-sample gradient of the estimator's variance used
  to tune them (Grathwohl et al., eq. 5).
- ``indecater``: for every variable, ``f`` at each of its categories with the other variables
  held at the sample; the gradient of the probabilities weighted by those values, summed over the
  variables (the CatLog-derivative trick).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gumbel_jax import _checks, _ops, sample
from gumbel_jax.estimators._score_function import _sum_after_prefix
from gumbel_jax.estimators._spec import DISTRIBUTIONS, Spec, register

ControlVariate = Callable[[jax.Array], jax.Array]


def _real(value: jax.typing.ArrayLike, dtype: np.dtype, *, name: str) -> jax.Array:
    """``value`` as an array of ``dtype``: a real number or array, finite when known."""
    static = _checks.static_value(value)
    if static is None and not isinstance(value, jax.Array):  # a tracer is a jax.Array
        raise TypeError(f"`{name}` must be a real number or a real array; got {value!r}.")
    kind = static.dtype if static is not None else jnp.result_type(value)
    if not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
        raise TypeError(f"`{name}` must be a real number or a real array; got {value!r}.")
    if static is not None and not np.all(np.isfinite(static)):
        raise ValueError(f"`{name}` must be finite; got {value!r}.")
    return jnp.asarray(value, dtype)


def _noise(key: jax.Array, shape: tuple[int, ...], dtype: np.dtype, distribution: str):
    """The two independent noises of REBAR/RELAX: ``z``'s and ``z~``'s (see ``_perturbed``)."""
    key_u, key_v = jax.random.split(key)
    if distribution == "categorical":
        return jax.random.gumbel(key_u, shape, dtype), jax.random.gumbel(key_v, shape, dtype)
    tiny = jnp.finfo(dtype).tiny  # v in [tiny, 1): log v finite
    return jax.random.logistic(key_u, shape, dtype), jax.random.uniform(
        key_v, shape, dtype, minval=tiny
    )


def _perturbed(
    x: jax.Array, noise_u: jax.Array, noise_v: jax.Array, distribution: str, axis: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(b, z, z~)``: the exact sample, the perturbed logits and the conditional ones.

    ``z`` and ``z~`` are differentiable functions of ``x`` (reparameterised; the noises and ``b``
    are constants), finite everywhere: at masked categories they hold a finite stand-in that the
    relaxation replaces by ``-inf`` and whose gradient is zero.

    Categorical (Tucker et al., appendix; Grathwohl et al., appendix B), with ``log p`` the
    log-softmax of ``x``, ``G`` and ``G'`` standard Gumbels and ``E = exp(-G')``::

        z = log p + G,   b = one_hot(argmax z),
        z~_b = -log E_b,   z~_i = -log(E_i / p_i + E_b)  (i != b)

    (the maximum is ``Gumbel(0)`` whatever ``b``; the others are ``Gumbel(log p_i)`` truncated
    below it). Bernoulli, with ``p = sigmoid(x)``, ``L`` standard logistic, ``v ~ U(0, 1)``::

        z = x + L,   b = 1[z > 0],
        z~ = log p + log v - log(1 - (1 - p) v)          if b = 0  (u~ = v (1 - p))
        z~ = -(log(1 - p) + log v - log(1 - p v))        if b = 1  (1 - u~ = v p)

    i.e. ``z~ = x + logit(u~)`` with ``u~`` uniform on the region of ``u`` that gives ``b``, in a
    form that stays finite for large ``|x|``; ``+-inf`` log-odds are clipped to ``+-1e10``
    (certain outcomes, zero gradient).
    """
    if distribution == "categorical":
        masked = jnp.isneginf(x)
        log_p = jnp.where(masked, 0.0, jax.nn.log_softmax(x, axis=axis))
        z = log_p + noise_u
        b = _ops.one_hot_argmax(jnp.where(masked, -jnp.inf, z), axis, x.dtype)
        log_e = -noise_v
        log_e_b = jnp.sum(jnp.where(b > 0, log_e, 0.0), axis=axis, keepdims=True)
        z_tilde = jnp.where(b > 0, -log_e_b, -jnp.logaddexp(log_e - log_p, log_e_b))
        return jax.lax.stop_gradient(b), z, z_tilde
    clipped = jnp.clip(x, -_ops.CERTAIN_LOG_ODDS, _ops.CERTAIN_LOG_ODDS)
    z = clipped + noise_u
    b = (z > 0).astype(x.dtype)
    sign = 1.0 - 2.0 * b  # b = 0: +1, b = 1: -1
    y = sign * clipped
    h = jax.nn.log_sigmoid(y) + jnp.log(noise_v) - jnp.log1p(-jax.nn.sigmoid(-y) * noise_v)
    return jax.lax.stop_gradient(b), z, sign * h


def _relaxation(x: jax.Array, tau: jax.Array, distribution: str, axis: int):
    """``sigma_lambda``: the tempered softmax (sigmoid) of stacked perturbed logits ``[k, ...]``."""
    if distribution == "categorical":
        masked = jnp.isneginf(x)
        return lambda w: jax.nn.softmax(jnp.where(masked, -jnp.inf, w / tau), axis=axis + 1)
    return lambda w: jax.nn.sigmoid(w / tau)


def _relax_surrogate(
    x: jax.Array,
    noise_u: jax.Array,
    noise_v: jax.Array,
    f: Callable[[jax.Array], jax.Array],
    control_variate: ControlVariate | None,
    tau: jax.Array,
    eta: jax.Array,
    use_f: bool,
    distribution: str,
    axis: int,
    *,
    _drop_conditional_term: bool = False,
) -> jax.Array:
    """RELAX's surrogate given its noises; ``x`` in the compute dtype, ``axis`` non-negative.

    With ``c(z) = eta * f(sigma(z)) + control_variate(sigma(z))`` (the first term only when
    ``use_f``), ``f`` and the control variate are called once each, on the stacked points
    ``[b, sigma(z), sigma(z~)]`` and ``[sigma(z), sigma(z~)]``, inside one ``jax.vjp`` that gives
    their values and ``dc/dz`` at ``z`` and ``z~`` (for the parameters, not for ``x``: the points
    enter with their dependence on ``x`` stopped). The surrogate is::

        f(b) + A * (log p(b) - sg(log p(b))) + <dc/dz (z), z - sg(z)> - <dc/dz (z~), z~ - sg(z~)>

    with ``A = f(b) - c(z~)``. Every added term is 0 in value, so the value is ``f(b)``; the
    gradient with respect to ``x`` is RELAX's; ``A`` and ``dc/dz`` keep their dependence on the
    control variate's parameters, ``eta`` and the temperature, so that gradient differentiates
    exactly with respect to them; and the gradient with respect to them (and to what ``f``
    closes over, beyond ``f(b)``) is exactly zero, as the value does not depend on them.

    ``_drop_conditional_term`` plants a bias for the tests (drops ``-d/dx c(z~)``).
    """
    shape = x.shape
    max_prefix = axis if distribution == "categorical" else x.ndim
    b, z, z_tilde = _perturbed(x, noise_u, noise_v, distribution, axis)
    relax_fn = _relaxation(x, tau, distribution, axis)
    points = jnp.stack([z, z_tilde])

    dtypes = []  # f's dtype, found inside `evaluate`

    def evaluate(at):
        relaxed = relax_fn(at)
        inputs = jnp.concatenate([b[None], relaxed]) if use_f else b[None]
        f_values, f_dtype = _checks.per_sample_values(f(inputs), inputs.shape[0], shape, max_prefix)
        dtypes.append(f_dtype)
        c = eta * f_values[1:] if use_f else jnp.zeros((2, *f_values.shape[1:]), f_values.dtype)
        if control_variate is not None:
            cv_values, _ = _checks.per_sample_values(control_variate(relaxed), 2, shape, max_prefix)
            if cv_values.shape != c.shape:
                raise ValueError(
                    f"`control_variate` must return the shape of `f`'s values for its two "
                    f"relaxed inputs, {c.shape} (``[2, *P]``); got {cv_values.shape}."
                )
            c = c + cv_values
        return f_values[0], c

    if control_variate is None and not use_f:  # c = 0: REINFORCE with one sample
        f_b, c = evaluate(jax.lax.stop_gradient(points))
        dc = jnp.zeros_like(points)
    else:
        (f_b, c), pullback = jax.vjp(evaluate, jax.lax.stop_gradient(points))
        (dc,) = pullback((jnp.zeros_like(f_b), jnp.ones_like(c)))
    f_dtype = dtypes[0]
    prefix_ndim = f_b.ndim
    if distribution == "categorical":
        log_p = _ops.categorical_log_prob(b, x, axis)
    else:
        log_p = _ops.bernoulli_log_prob(b, x)
    log_p = _sum_after_prefix(log_p, prefix_ndim).astype(f_b.dtype)
    score = log_p - jax.lax.stop_gradient(log_p)  # 0 in value, grad log p(b) in gradient
    moved = points - jax.lax.stop_gradient(points)  # 0 in value, dz/dx in gradient
    linear = _sum_after_prefix(dc * moved.astype(dc.dtype), prefix_ndim + 1)
    conditional = 0.0 if _drop_conditional_term else linear[1]
    advantage = f_b - c[1]
    return (f_b + advantage * score + linear[0] - conditional).astype(f_dtype)


def relax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    f: Callable[[jax.Array], jax.Array],
    control_variate: ControlVariate | None = None,
    *,
    temperature: jax.typing.ArrayLike = 0.5,
    eta: jax.typing.ArrayLike = 1.0,
    distribution: str = "categorical",
    axis: int = -1,
) -> jax.Array:
    """RELAX: REINFORCE with a learnable control variate of the relaxed sample; a surrogate.

    With ``z`` the noise-perturbed logits (Gumbel for categorical, logistic for Bernoulli
    latents), ``b = H(z)`` the exact sample (``one_hot(argmax z)``, or ``1[z > 0]``), ``z~`` a
    draw of ``p(z | b)`` reparameterised in the logits (Tucker et al.'s conditional
    reparameterisation, see below), ``sigma`` the relaxation at ``temperature`` (softmax, or
    sigmoid, of ``z / temperature``) and the control variate::

        c(z) = eta * f(sigma(z)) + control_variate(sigma(z))

    its gradient with respect to ``logits`` is Grathwohl et al.'s eq. 6::

        [f(b) - c(z~)] d/dlogits log p(b) + d/dlogits c(z) - d/dlogits c(z~)

    unbiased for every ``temperature``, ``eta`` and control variate (``E[c(z~) d log p(b)] +
    E[d c(z~)] = E[d c(z)]``). ``eta = 0`` leaves the paper's generic control variate
    ``c = control_variate`` (``f`` is then only evaluated on ``b``, and need not be
    differentiable); the default ``eta = 1`` is the paper's ``c = f(sigma(z)) + r(sigma(z))`` of
    its discrete VAE experiments; without a ``control_variate`` it is REBAR. As in the authors'
    code, the control variate sees the relaxed sample ``sigma(z)`` (in ``(0, 1)``, or on the
    simplex with 0 at masked categories): it carries the same information as ``z`` (up to a
    shift of the logits, which no categorical distribution sees) and bounded.

    ``f`` and ``control_variate`` are each called once, on stacked inputs: ``f`` on
    ``[b, sigma(z), sigma(z~)]`` (``[3, *logits.shape]``; only ``[b]`` when ``eta`` is a
    Python/NumPy 0), the control variate on ``[sigma(z), sigma(z~)]``. Both must be
    differentiable on the relaxed inputs. The value is ``f(b)``, shape ``P``.

    The estimate is differentiable, exactly, with respect to ``eta``, ``temperature`` (both may be
    traced arrays) and whatever ``control_variate`` closes over: with ``g`` the gradient with
    respect to ``logits``, ``jax.grad`` of ``sum(g ** 2)`` with respect to them is the
    single-sample gradient of the estimator's variance (Grathwohl et al., eq. 5), the signal
    that tunes them. The surrogate's own gradient with respect to them is zero (its value does
    not depend on them), and with respect to what ``f`` closes over it is that of ``f(b)``.
    Higher derivatives with respect to ``logits`` are not estimators of anything.

    Conditional noise: with ``p = softmax(logits)``, ``G, G'`` standard Gumbels, ``E = exp(-G')``:
    ``z = log p + G``, ``z~_b = -log E_b``, ``z~_i = -log(E_i / p_i + E_b)`` for ``i != b``
    (Tucker et al., appendix). Bernoulli, ``p = sigmoid(logits)``, ``L`` logistic, ``v`` uniform:
    ``z = logits + L``, ``z~ = logits + logit(u~)`` with ``u~ = v (1 - p)`` if ``b = 0`` and
    ``u~ = 1 - v p`` if ``b = 1`` (Grathwohl et al., appendix B), computed stably.

    Invalid values: a ``NaN`` logit makes the value and gradient of its element of ``P``
    ``NaN``; masked (``-inf``) categorical logits are never sampled and get a zero gradient;
    Bernoulli logits of ``+-inf`` are certain outcomes (value and zero gradient, no ``NaN``).

    Registered as ``"relax"`` with the options ``temperature`` and ``eta`` (both
    ``Spec.tunable``) and ``Spec.control_variate`` true. ``Spec.bind`` passes options only, so
    bound without a control variate this is REBAR; ``Spec.bind_learned`` takes the control
    variate and tuned values, which the experiment and the benchmark learn.

    Args:
      key: a PRNG key.
      logits: ``[*P, ..., num_categories, ...]`` unnormalised log-probabilities (categorical,
        the categories on ``axis``; ``-inf`` masks a category) or ``[*P, ...]`` logits of
        ``P(1) = sigmoid(logits)`` (Bernoulli).
      f: any JAX function mapping ``[n, *logits.shape]`` inputs (exact samples, and with
        ``eta != 0`` relaxed ones) to ``[n, *P]`` floating values, ``P`` a prefix of
        ``logits.shape`` that stops before the category axis; element ``p`` of ``P`` must
        depend on slice ``p`` of the input only (e.g. one loss per example).
      control_variate: ``None`` or a function mapping ``[2, *logits.shape]`` relaxed samples to
        ``[2, *P]`` values (the same ``P`` as ``f``), e.g. a small network whose parameters it
        closes over.
      temperature: ``lambda > 0`` of the relaxation; a number or an array broadcastable to
        ``logits`` (traced values are not checked).
      eta: the scale of ``f(sigma(z))`` in the control variate; a number or an array
        broadcastable to ``P``.
      distribution: ``"categorical"`` or ``"bernoulli"``.
      axis: the category axis (categorical only; ignored for ``"bernoulli"``).

    Returns:
      The surrogate: ``f(b)``, shape ``P``, in the dtype of ``f``'s values.

    Raises:
      TypeError: if ``logits``, ``f``'s or the control variate's values are not floating,
        ``control_variate`` is not callable, or ``temperature`` or ``eta`` is not real.
      ValueError: if ``distribution`` is unknown, ``axis`` is out of range, a concrete
        ``temperature`` is ``<= 0`` or ``eta`` is not finite, or ``f``'s or the control
        variate's values have the wrong shape (the message lists the valid ones).

    Examples:
      >>> f = lambda b: jnp.sum((b - 0.45) ** 2, axis=-1)  # [n, 4] -> [n]
      >>> cv = lambda s: 0.1 * jnp.sum(s, axis=-1)  # [2, 4] relaxed samples -> [2]
      >>> loss = lambda x: relax(jax.random.key(0), x, f, cv, distribution="bernoulli")
      >>> grad = jax.grad(loss)(jnp.zeros(4))
      >>> grad.shape
      (4,)
      >>> variance_grad = jax.grad(  # d/dscale of the squared estimate (Grathwohl eq. 5)
      ...     lambda w: jnp.sum(jax.grad(lambda x: relax(
      ...         jax.random.key(0), x, f, lambda s: w * jnp.sum(s, -1), distribution="bernoulli"
      ...     ))(jnp.zeros(4)) ** 2))(0.1)
      >>> variance_grad.shape
      ()

    References:
      Grathwohl, Choi, Wu, Roeder, Duvenaud. Backpropagation through the Void: Optimizing
      Control Variates for Black-Box Gradient Estimation (ICLR 2018),
      https://arxiv.org/abs/1711.00123; code: https://github.com/duvenaud/relax
      Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein. REBAR: Low-variance, unbiased gradient
      estimates for discrete latent variable models (NeurIPS 2017),
      https://arxiv.org/abs/1703.07370
    """
    if control_variate is not None and not callable(control_variate):
        raise TypeError(
            f"`control_variate` must be a function of the relaxed samples or None; got "
            f"{control_variate!r}."
        )
    distribution = _checks.one_of(distribution, DISTRIBUTIONS, name="distribution")
    if distribution == "categorical":
        x, _, axis = _checks.logits_array(logits, axis)
        invalid = _ops.invalid_rows(x, axis)
        x = _ops.nan_gradient_where_invalid(x, invalid)
    else:
        x, _ = _checks.float_array(logits, name="logits")
    tau = _checks.temperature(temperature, x.dtype)
    static_eta = _checks.static_value(eta)
    eta = _real(eta, x.dtype, name="eta")
    use_f = static_eta is None or bool(np.any(static_eta != 0))
    noise_u, noise_v = _noise(key, x.shape, x.dtype, distribution)
    return _relax_surrogate(
        x, noise_u, noise_v, f, control_variate, tau, eta, use_f, distribution, axis
    )


def rebar(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    f: Callable[[jax.Array], jax.Array],
    *,
    temperature: jax.typing.ArrayLike = 0.5,
    eta: jax.typing.ArrayLike = 1.0,
    distribution: str = "categorical",
    axis: int = -1,
) -> jax.Array:
    """REBAR: REINFORCE with the concrete relaxation of ``f`` as control variate; a surrogate.

    With ``z`` the noise-perturbed logits (Gumbel for categorical, logistic for Bernoulli
    latents), ``b = H(z)`` the exact sample, ``z~ ~ p(z | b)`` the conditional noise
    (reparameterised in the logits) and ``sigma_lambda`` the relaxation at temperature
    ``lambda`` (softmax, or sigmoid, of ``z / lambda``), the gradient with respect to
    ``logits`` is Tucker et al.'s::

        [f(b) - eta f(sigma_lambda(z~))] d/dlogits log p(b)
            + eta d/dlogits f(sigma_lambda(z)) - eta d/dlogits f(sigma_lambda(z~))

    unbiased for every ``temperature`` and ``eta``. It is ``relax`` without a learned part (RELAX
    with ``c(z) = eta f(sigma_lambda(z))``); see ``relax`` for the conditional noise, the
    invalid values, and the variance gradient with respect to ``eta`` and ``temperature``, both of
    which may be traced arrays (Tucker et al. tune them online by that gradient).

    ``f`` is called once, on ``[b, sigma(z), sigma(z~)]`` stacked (``[3, *logits.shape]``; 3
    evaluations per example), and must be differentiable on the relaxed inputs (values in
    ``(0, 1)``, or on the simplex along ``axis``). The value is ``f(b)``, shape ``P``.

    Args:
      key: a PRNG key.
      logits: ``[*P, ..., num_categories, ...]`` unnormalised log-probabilities (categorical,
        the categories on ``axis``; ``-inf`` masks a category) or ``[*P, ...]`` logits of
        ``P(1) = sigmoid(logits)`` (Bernoulli).
      f: a differentiable JAX function mapping ``[3, *logits.shape]`` inputs to ``[3, *P]``
        floating values, ``P`` a prefix of ``logits.shape`` before the category axis; element
        ``p`` of ``P`` must depend on slice ``p`` of the input only.
      temperature: ``lambda > 0``; a number or an array broadcastable to ``logits``.
      eta: the control variate's scale; a number or an array broadcastable to ``P``.
      distribution: ``"categorical"`` or ``"bernoulli"``.
      axis: the category axis (categorical only).

    Returns:
      The surrogate: ``f(b)``, shape ``P``, in the dtype of ``f``'s values.

    Raises:
      TypeError: if ``logits`` or ``f``'s values are not floating, or ``temperature`` or ``eta``
        is not real.
      ValueError: if ``distribution`` is unknown, ``axis`` is out of range, a concrete
        ``temperature`` is ``<= 0`` or ``eta`` is not finite, or ``f``'s values have the wrong
        shape.

    Examples:
      >>> f = lambda z: jnp.sum(z * jnp.arange(3.0), axis=-1) ** 2  # [3, batch, 3] -> [3, batch]
      >>> loss = lambda x: rebar(jax.random.key(0), x, f, temperature=0.5).sum()
      >>> jax.grad(loss)(jnp.zeros((2, 3))).shape
      (2, 3)

    References:
      Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein. REBAR: Low-variance, unbiased gradient
      estimates for discrete latent variable models (NeurIPS 2017),
      https://arxiv.org/abs/1703.07370
      Grathwohl, Choi, Wu, Roeder, Duvenaud. Backpropagation through the Void (ICLR 2018),
      https://arxiv.org/abs/1711.00123
    """
    return relax(
        key, logits, f, None, temperature=temperature, eta=eta, distribution=distribution, axis=axis
    )


def _variables_and_categories(shape: tuple[int, ...]) -> tuple[int, int]:
    """For ``Spec.evaluations``: one example's ``(latents, categories)`` or ``(latents,)``."""
    if len(shape) >= 2:  # categorical, the categories last
        return math.prod(shape[:-1]), shape[-1]
    return math.prod(shape), 2


def _one_variable_set(samples: jax.Array) -> jax.Array:
    """Every sample with one variable set to one category.

    Args:
      samples: one-hot ``[S, *P, V, K]``.

    Returns:
      ``[S, V, K, *P, V, K]``: element ``[s, j, k, *p, i, :]`` is ``samples[s, *p, i, :]``, with
      variable ``i = j`` set to category ``k``.
    """
    num_variables, num_categories = samples.shape[-2:]
    ones_p = (1,) * (samples.ndim - 3)
    same = jnp.eye(num_variables, dtype=bool).reshape(
        1, num_variables, 1, *ones_p, num_variables, 1
    )
    category = jnp.eye(num_categories, dtype=samples.dtype).reshape(
        1, 1, num_categories, *ones_p, 1, -1
    )
    return jnp.where(same, category, samples[:, None, None])


def indecater(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    f: Callable[[jax.Array], jax.Array],
    *,
    num_samples: int = 1,
    distribution: str = "categorical",
    axis: int = -1,
) -> jax.Array:
    """IndeCateR: every category of every variable, the others held at the sample; a surrogate.

    Draws ``S = num_samples`` exact samples ``b_1..b_S``. For each sample, each variable ``i``
    (a position of ``logits`` without the category axis, within one element of ``P``) and each
    category ``k`` (``0`` and ``1`` for Bernoulli), ``f`` is evaluated at ``b_s`` with ``b_{s,i}``
    set to ``k``; the gradient with respect to the logits of variable ``i`` is::

        1 / S * sum_s sum_k d/dlogits_i p_i(k) * f(b_s with b_{s,i} = k)

    (De Smet et al., eq. 9: the CatLog-derivative trick, which Rao-Blackwellises REINFORCE over
    each variable given the others). Unbiased; with a single variable it is the exact gradient
    on every draw. The value is ``mean_s f(b_s)``, shape ``P``; what ``f`` closes over gets its
    pathwise gradient.

    ``f`` is called once, on all ``S * V * K`` variants (``[S * V * K, *logits.shape]``, ``V``
    the variables per element of ``P`` and ``K`` the categories): a variant changes variable
    ``i`` in every element of ``P`` at once, so ``f``'s element ``p`` must depend on slice ``p``
    of its input only. To know ``P`` before that call, ``f`` is traced once by
    ``jax.eval_shape`` (no computation). Masked (``-inf``) categories are never sampled; the
    variants that set a variable to one are evaluated too and their values ignored.

    Invalid values: a ``NaN`` logit makes the value and gradient of its element of ``P``
    ``NaN``; masked categorical logits get a zero gradient; Bernoulli logits of ``+-inf`` are
    certain outcomes (value and zero gradient, no ``NaN``).

    Args:
      key: a PRNG key.
      logits: ``[*P, ..., num_categories, ...]`` unnormalised log-probabilities (categorical,
        the categories on ``axis``) or ``[*P, ...]`` Bernoulli logits.
      f: any JAX function mapping ``[n, *logits.shape]`` samples (one-hot along ``axis``, or
        0.0/1.0) to ``[n, *P]`` floating values, ``P`` a prefix of ``logits.shape`` before the
        category axis (``n`` is ``S * V * K``, and another ``n`` when traced for its shape).
      num_samples: ``S >= 1``, a Python int.
      distribution: ``"categorical"`` or ``"bernoulli"``.
      axis: the category axis (categorical only).

    Returns:
      The surrogate: ``mean_s f(b_s)``, shape ``P``, in the dtype of ``f``'s values.

    Raises:
      TypeError: if ``logits`` or ``f``'s values are not floating, or ``num_samples`` or
        ``axis`` is not an int.
      ValueError: if ``num_samples < 1``, ``distribution`` is unknown, ``axis`` is out of range
        or ``f``'s values have the wrong shape.

    Examples:
      >>> f = lambda z: jnp.sum(z * jnp.arange(3.0), axis=-1) ** 2  # [n, 3] -> [n]
      >>> exact = jax.grad(lambda x: jnp.sum(jax.nn.softmax(x) * jnp.arange(3.0) ** 2))
      >>> g = jax.grad(lambda x: indecater(jax.random.key(0), x, f))(jnp.array([0.5, 0.0, -1.0]))
      >>> bool(jnp.allclose(g, exact(jnp.array([0.5, 0.0, -1.0])), atol=1e-6))
      True

    References:
      De Smet, Sansone, Zuidberg Dos Martires. Differentiable Sampling of Categorical
      Distributions Using the CatLog-Derivative Trick (NeurIPS 2023),
      https://arxiv.org/abs/2311.12569; code: https://github.com/ML-KULeuven/catlog
    """
    num_samples = _checks.positive_int(num_samples, name="num_samples")
    distribution = _checks.one_of(distribution, DISTRIBUTIONS, name="distribution")
    if distribution == "categorical":
        x, _, axis = _checks.logits_array(logits, axis)
        invalid = _ops.invalid_rows(x, axis)
        x = _ops.nan_gradient_where_invalid(x, invalid)
        b = sample.gumbel_max(key, jnp.broadcast_to(x, (num_samples, *x.shape)), axis=axis + 1)
        max_prefix = axis
    else:
        x, _ = _checks.float_array(logits, name="logits")
        b = _ops.bernoulli_below(jax.random.uniform(key, (num_samples, *x.shape), x.dtype), x)
        max_prefix = x.ndim
    b = jax.lax.stop_gradient(b)
    probe = jax.eval_shape(f, jax.ShapeDtypeStruct(b.shape, b.dtype))
    _checks.per_sample_values(
        jnp.zeros(getattr(probe, "shape", ()), getattr(probe, "dtype", jnp.float32)),
        num_samples,
        x.shape,
        max_prefix,
    )
    prefix = tuple(probe.shape[1:])
    n_p = len(prefix)
    if distribution == "categorical":
        # [S, *P, V, K]: the variables of one element of P flattened, the categories last.
        moved = jnp.moveaxis(b, axis + 1, -1)
        inner = moved.shape[1 + n_p : -1]
        num_categories = moved.shape[-1]
        probs = jnp.moveaxis(jax.nn.softmax(x, axis=axis), axis, -1)
        masked = jnp.moveaxis(jnp.isneginf(x), axis, -1)
    else:
        moved = jnp.stack([1.0 - b, b], axis=-1)  # one-hot over (0, 1)
        inner = b.shape[1 + n_p :]
        num_categories = 2
        clipped = jnp.clip(x, -_ops.CERTAIN_LOG_ODDS, _ops.CERTAIN_LOG_ODDS)
        probs = jnp.stack([jax.nn.sigmoid(-clipped), jax.nn.sigmoid(clipped)], axis=-1)
        masked = jnp.zeros(probs.shape, bool)
    num_variables = math.prod(inner)
    moved = moved.reshape(num_samples, *prefix, num_variables, num_categories)
    probs = probs.reshape(*prefix, num_variables, num_categories)
    masked = masked.reshape(*prefix, num_variables, num_categories)
    total = num_samples * num_variables * num_categories
    variants = _one_variable_set(moved).reshape(total, *prefix, *inner, num_categories)
    if distribution == "categorical":
        variants = jnp.moveaxis(variants, -1, axis + 1)
    else:
        variants = variants[..., 1]
    values, dtype = _checks.per_sample_values(f(variants), total, x.shape, max_prefix)
    # [S, V, K, *P] -> [S, *P, V, K], like probs.
    values = values.reshape(num_samples, num_variables, num_categories, *prefix)
    values = jnp.moveaxis(values, (1, 2), (-2, -1))
    at_sample = jnp.where(moved[..., 0, :] > 0, values[..., 0, :], 0.0)  # variable 0 as drawn
    value = jnp.mean(jnp.sum(at_sample, axis=-1), axis=0)
    weights = jax.lax.stop_gradient(jnp.where(masked, 0.0, jnp.mean(values, axis=0)))
    probs = probs.astype(weights.dtype)
    score = jnp.sum(weights * (probs - jax.lax.stop_gradient(probs)), axis=(-2, -1))
    return (value + score).astype(dtype)


register(
    Spec(
        "rebar",
        rebar,
        kind="surrogate",
        distributions=DISTRIBUTIONS,
        options={"temperature": 0.5, "eta": 1.0},
        unbiased=True,
        evaluations=lambda options, shape: 3 if options["eta"] != 0 else 1,
        tunable={"eta": "real", "temperature": "positive"},
        reference="Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein (NeurIPS 2017), "
        "https://arxiv.org/abs/1703.07370",
        summary="REINFORCE with the Concrete relaxation eta f(sigma(z)) as control variate, "
        "at z and at z ~ p(z | b); unbiased",
    )
)
register(
    Spec(
        "relax",
        relax,
        kind="surrogate",
        distributions=DISTRIBUTIONS,
        options={"temperature": 0.5, "eta": 1.0},
        unbiased=True,
        evaluations=lambda options, shape: 3 if options["eta"] != 0 else 1,
        control_variate=True,
        tunable={"eta": "real", "temperature": "positive"},
        reference="Grathwohl, Choi, Wu, Roeder, Duvenaud (ICLR 2018), "
        "https://arxiv.org/abs/1711.00123",
        summary="REBAR plus a learned control variate (passed by the caller, not an option; "
        "bound without one it is REBAR; the tools learn it); unbiased",
    )
)
register(
    Spec(
        "indecater",
        indecater,
        kind="surrogate",
        distributions=DISTRIBUTIONS,
        options={"num_samples": 1},
        unbiased=True,
        evaluations=lambda options, shape: (
            options["num_samples"] * math.prod(_variables_and_categories(shape))
        ),
        reference="De Smet, Sansone, Zuidberg Dos Martires (NeurIPS 2023), "
        "https://arxiv.org/abs/2311.12569",
        summary="every category of every variable, the others at the sample (CatLog trick); "
        "unbiased",
    )
)
