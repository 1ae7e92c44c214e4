"""Tests for the control-variate surrogates ``estimators.rebar``, ``relax`` and ``indecater``.

- Formulas: for fixed noise, the estimators' gradient equals a direct float64 transcription of
  the papers' (Tucker et al.'s conditional noise, Grathwohl et al.'s eq. 6); RELAX with
  ``c = eta f o sigma`` as a user control variate is REBAR.
- Unbiasedness: the mean of 40,000 draws against ``diagnostics.exact_gradient`` within 5 standard
  errors per coordinate (estimated from the same draws), on a binary and a categorical problem,
  for several temperatures and ``eta`` and a fixed random network as control variate. The same
  statistic flags a planted bias (RELAX without its ``-d c(z~)`` term) by far.
- The variance gradient: the estimate's derivative with respect to ``eta``, the temperature and
  the control variate's parameters matches float64 central differences, and training a small
  network by it lowers the variance.
- IndeCateR is exact for one variable and has a lower variance than REINFORCE-LOO at equal
  evaluations.
- Values, single calls of ``f``, invalid inputs, ``jit``/``vmap`` and the registry.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized
from jax.flatten_util import ravel_pytree

from gumbel_jax import diagnostics, estimators, sample
from gumbel_jax.estimators import _control_variates

NUM_DRAWS = 40_000
BINARY_LOGITS = jnp.linspace(-1.0, 1.0, 4)
CATEGORICAL_LOGITS = jnp.array(
    [[0.3, -1.2, 0.8, 0.1], [-jnp.inf, 0.5, -0.4, 1.0], [0.0, 0.7, -0.9, -0.3]]
)
VALUES = jnp.linspace(0.0, 1.0, 4)


def binary_f(b):  # the REBAR toy: [n, 4] -> [n]
    return jnp.sum((b - 0.45) ** 2, -1)


def categorical_f(z):  # [n, 3, 4] -> [n]: a polynomial coupling the three variables
    y = z @ VALUES
    return jnp.sum((y - 0.45) ** 2, -1) + y[..., 0] * y[..., 1] - 0.5 * y[..., 2] ** 3


def mlp(params, s):
    """A small network of the flattened relaxed sample: ``[n, ...] -> [n]``."""
    (w1, b1), (w2, b2) = params
    h = jnp.tanh(s.reshape(s.shape[0], -1) @ w1 + b1)
    return h @ w2 + b2


def init_mlp(key, size, hidden=8, scale=0.5):
    k1, k2 = jax.random.split(key)
    return (
        (scale * jax.random.normal(k1, (size, hidden)), jnp.zeros(hidden)),
        (scale * jax.random.normal(k2, (hidden,)), jnp.zeros(())),
    )


def draws(estimate, logits, seed=11, num=NUM_DRAWS):
    """``num`` gradients ``jax.grad(estimate(key, logits))`` as float64."""
    keys = jax.random.split(jax.random.key(seed), num)
    grads = jax.jit(jax.vmap(jax.grad(estimate, argnums=1), in_axes=(0, None)))(keys, logits)
    return np.asarray(grads, np.float64)


def z_scores(grads, exact, atol=1e-6):
    """``(mean - exact) / (standard error + atol / 5)`` per coordinate: below 5 in magnitude
    when the error is within 5 standard errors plus ``atol`` (float32 rounding, for estimators
    that are exact on some coordinates)."""
    standard_error = grads.std(0) / np.sqrt(grads.shape[0])
    error = grads.mean(0) - np.asarray(exact, np.float64)
    return error / (standard_error + atol / 5)


def exact_gradients():
    binary = diagnostics.exact_gradient(
        lambda b: binary_f(b[None])[0], BINARY_LOGITS, distribution="bernoulli"
    )
    categorical = diagnostics.exact_gradient(
        lambda z: categorical_f(z[None])[0], CATEGORICAL_LOGITS
    )
    return binary, categorical


BINARY_CV = functools.partial(mlp, init_mlp(jax.random.key(5), 4))
CATEGORICAL_CV = functools.partial(mlp, init_mlp(jax.random.key(6), 12))


def estimator_cases():
    """``(name, distribution, estimate)`` for the unbiasedness tests."""
    cases = []
    for tau, eta in ((0.5, 1.0), (2.0, 0.3), (0.1, -0.7)):
        cases.append(
            (
                f"rebar_binary_tau{tau}_eta{eta}",
                "bernoulli",
                lambda k, x, tau=tau, eta=eta: estimators.rebar(
                    k, x, binary_f, temperature=tau, eta=eta, distribution="bernoulli"
                ),
            )
        )
    for eta in (1.0, 0.0):
        cases.append(
            (
                f"relax_binary_eta{eta}",
                "bernoulli",
                lambda k, x, eta=eta: estimators.relax(
                    k, x, binary_f, BINARY_CV, temperature=0.7, eta=eta, distribution="bernoulli"
                ),
            )
        )
    cases += [
        (
            "rebar_categorical",
            "categorical",
            lambda k, x: estimators.rebar(k, x, categorical_f, temperature=0.5, eta=0.8),
        ),
        (
            "relax_categorical",
            "categorical",
            lambda k, x: estimators.relax(k, x, categorical_f, CATEGORICAL_CV, temperature=1.5),
        ),
        (
            "relax_categorical_eta0",
            "categorical",
            lambda k, x: estimators.relax(k, x, categorical_f, CATEGORICAL_CV, eta=0.0),
        ),
        (
            "indecater_binary",
            "bernoulli",
            lambda k, x: estimators.indecater(k, x, binary_f, distribution="bernoulli"),
        ),
        (
            "indecater_categorical",
            "categorical",
            lambda k, x: estimators.indecater(k, x, categorical_f),
        ),
        (
            "indecater_categorical_3",
            "categorical",
            lambda k, x: estimators.indecater(k, x, categorical_f, num_samples=3),
        ),
    ]
    return cases


@pytest.mark.slow
class UnbiasedTest(parameterized.TestCase):
    @parameterized.named_parameters(*estimator_cases())
    def test_mean_within_five_standard_errors(self, distribution, estimate):
        binary, categorical = exact_gradients()
        exact, logits = (
            (binary, BINARY_LOGITS)
            if distribution == "bernoulli"
            else (categorical, CATEGORICAL_LOGITS)
        )
        grads = draws(estimate, logits)
        scores = z_scores(grads, exact)
        self.assertLess(np.abs(scores).max(), 5.0, msg=f"z-scores {np.round(scores, 2)}")
        self.assertGreater(np.abs(np.asarray(exact)).max(), 0.02)
        if distribution == "categorical":
            np.testing.assert_array_equal(grads[:, 1, 0], 0.0)  # the masked category

    @parameterized.named_parameters(
        ("binary", "bernoulli", BINARY_LOGITS, binary_f, BINARY_CV),
        ("categorical", "categorical", CATEGORICAL_LOGITS, categorical_f, CATEGORICAL_CV),
    )
    def test_planted_bias_is_detected(self, distribution, logits, f, cv):
        """Without ``-d c(z~)/dlogits`` RELAX is biased; the statistic above sees it at once."""
        biased = functools.partial(_control_variates._relax_surrogate, _drop_conditional_term=True)
        binary, categorical = exact_gradients()
        exact = binary if distribution == "bernoulli" else categorical

        def estimate(key, x):
            return estimators.relax(key, x, f, cv, distribution=distribution)

        with absltest.mock.patch.object(_control_variates, "_relax_surrogate", biased):
            grads = draws(estimate, logits, num=10_000)
        self.assertGreater(np.abs(z_scores(grads, exact)).max(), 20.0)


def reference_rebar_bernoulli(x, u, v, f, cv, tau, eta):
    """Grathwohl et al.'s eq. 6 and appendix B, transcribed (``u``, ``v`` uniforms, float64)."""
    z = x + jnp.log(u) - jnp.log1p(-u)
    b = (z > 0).astype(x.dtype)

    def z_tilde(x):
        p = jax.nn.sigmoid(x)
        v_prime = jnp.where(b > 0, 1.0 - v * p, v * (1.0 - p))  # v -> 1 - v for b = 1
        return x + jnp.log(v_prime) - jnp.log1p(-v_prime)

    def c(z):
        relaxed = jax.nn.sigmoid(z / tau)[None]
        return eta * f(relaxed)[0] + cv(relaxed)[0]

    log_p = lambda x: jnp.sum(jnp.where(b > 0, jax.nn.log_sigmoid(x), jax.nn.log_sigmoid(-x)))
    f_b = f(b[None])[0]
    return (
        (f_b - c(z_tilde(x))) * jax.grad(log_p)(x)
        + jax.grad(lambda x: c(x + jnp.log(u) - jnp.log1p(-u)))(x)
        - jax.grad(lambda x: c(z_tilde(x)))(x)
    )


def reference_rebar_categorical(x, gumbel_u, gumbel_v, f, cv, tau, eta):
    """Tucker et al.'s appendix: ``z~_b = -log(-log v_b)``, ``z~_i = -log(-log v_i / p_i -
    log v_b)``, with ``-log v = exp(-G')`` (one row of logits, float64)."""
    z_of = lambda x: jax.nn.log_softmax(x) + gumbel_u
    b = jax.nn.one_hot(jnp.argmax(z_of(x)), x.shape[-1], dtype=x.dtype)
    minus_log_v = jnp.exp(-gumbel_v)

    def z_tilde(x):
        p = jax.nn.softmax(x)
        minus_log_v_b = jnp.sum(b * minus_log_v)
        return jnp.where(b > 0, -jnp.log(minus_log_v), -jnp.log(minus_log_v / p + minus_log_v_b))

    def c(z):
        relaxed = jax.nn.softmax(z / tau)[None]
        return eta * f(relaxed)[0] + cv(relaxed)[0]

    log_p = lambda x: jnp.sum(b * jax.nn.log_softmax(x))
    return (
        (f(b[None])[0] - c(z_tilde(x))) * jax.grad(log_p)(x)
        + jax.grad(lambda x: c(z_of(x)))(x)
        - jax.grad(lambda x: c(z_tilde(x)))(x)
    )


@pytest.mark.slow
class FormulaTest(parameterized.TestCase):
    @parameterized.named_parameters(("eta1", 1.0), ("eta0", 0.0), ("eta_negative", -0.6))
    def test_bernoulli_matches_the_papers(self, eta):
        with jax.enable_x64(True):
            x = jnp.array([-1.5, -0.2, 0.4, 2.0])
            cv = functools.partial(mlp, init_mlp(jax.random.key(1), 4))
            for seed in range(6):
                ku, kv = jax.random.split(jax.random.key(seed))
                u = jax.random.uniform(ku, x.shape, jnp.float64, minval=1e-6, maxval=1 - 1e-6)
                v = jax.random.uniform(kv, x.shape, jnp.float64, minval=1e-6, maxval=1 - 1e-6)
                logistic = jnp.log(u) - jnp.log1p(-u)
                got = jax.grad(
                    lambda x, logistic=logistic, v=v: _control_variates._relax_surrogate(
                        x, logistic, v, binary_f, cv, 0.7, eta, eta != 0, "bernoulli", 0
                    )
                )(x)
                want = reference_rebar_bernoulli(x, u, v, binary_f, cv, 0.7, eta)
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)

    def test_categorical_matches_the_papers(self):
        with jax.enable_x64(True):
            x = jnp.array([0.3, -1.2, 0.8, 0.1, 2.0])
            f = lambda z: jnp.sin(z @ jnp.arange(5.0)) + z[..., 0] ** 2
            cv = functools.partial(mlp, init_mlp(jax.random.key(2), 5))
            for seed in range(6):
                ku, kv = jax.random.split(jax.random.key(seed))
                g_u = jax.random.gumbel(ku, x.shape, jnp.float64)
                g_v = jax.random.gumbel(kv, x.shape, jnp.float64)
                got = jax.grad(
                    lambda x, g_u=g_u, g_v=g_v: _control_variates._relax_surrogate(
                        x, g_u, g_v, f, cv, 0.4, 0.9, True, "categorical", 0
                    )
                )(x)
                want = reference_rebar_categorical(x, g_u, g_v, f, cv, 0.4, 0.9)
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)

    def test_conditional_noise_has_the_conditional_distribution(self):
        """``z~`` given ``b`` is distributed as ``z`` given ``b``: compare moments by class."""
        x = jnp.array([0.3, -1.2, 0.8])
        keys = jax.random.split(jax.random.key(0), 200_000)

        def one(key):
            ku, kv = jax.random.split(key)
            g_u, g_v = jax.random.gumbel(ku, (3,)), jax.random.gumbel(kv, (3,))
            b, z, _ = _control_variates._perturbed(x, g_u, g_v, "categorical", 0)
            # z~ from an independent b' (kv's sample) vs z from b: both given their class.
            b2, _, z_tilde2 = _control_variates._perturbed(x, g_v, g_u, "categorical", 0)
            return b, z, b2, z_tilde2

        b, z, b2, z_tilde2 = jax.jit(jax.vmap(one))(keys)
        for k in range(3):
            left, right = np.asarray(z[b[:, k] > 0]), np.asarray(z_tilde2[b2[:, k] > 0])
            np.testing.assert_allclose(left.mean(0), right.mean(0), atol=0.03)
            np.testing.assert_allclose(left.std(0), right.std(0), atol=0.03)

    def test_relax_with_eta_f_as_control_variate_is_rebar(self):
        x = jnp.array([[0.2, -0.5, 1.0], [0.0, 0.3, -1.0]])
        f = lambda z: jnp.sum((z @ jnp.array([1.0, -2.0, 0.5]) - 0.3) ** 2, -1)
        key = jax.random.key(4)
        for distribution in ("categorical", "bernoulli"):
            rebar = functools.partial(
                estimators.rebar, temperature=0.3, eta=0.7, distribution=distribution
            )
            relax = functools.partial(
                estimators.relax, temperature=0.3, eta=0.0, distribution=distribution
            )
            rebar = jax.grad(lambda x, rebar=rebar: rebar(key, x, f))(x)
            relax = jax.grad(lambda x, relax=relax: relax(key, x, f, lambda s: 0.7 * f(s)))(x)
            np.testing.assert_allclose(rebar, relax, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
class VarianceGradientTest(parameterized.TestCase):
    @parameterized.named_parameters(("bernoulli", "bernoulli"), ("categorical", "categorical"))
    def test_derivatives_of_the_estimate_match_finite_differences(self, distribution):
        """d g / d(eta, temperature, network parameters) is exact (float64 central differences)."""
        with jax.enable_x64(True):
            if distribution == "bernoulli":
                x = jnp.array([-1.0, 0.2, 0.8])
                f = lambda b: jnp.sum((b - 0.45) ** 2, -1) + b[..., 0] * b[..., 2]
            else:
                x = jnp.array([[0.3, -1.2, 0.8], [-jnp.inf, 0.5, -0.4]])
                f = lambda z: jnp.sum((z @ jnp.array([0.0, 0.5, 1.0]) - 0.45) ** 2, -1)
            params = init_mlp(jax.random.key(3), x.size)
            flat, unravel = ravel_pytree(params)
            theta = jnp.concatenate([flat, jnp.array([0.6, 0.7])])  # [..., eta, temperature]

            def estimate(theta, key):
                cv = functools.partial(mlp, unravel(theta[:-2]))
                return jax.grad(
                    lambda x: estimators.relax(
                        key,
                        x,
                        f,
                        cv,
                        eta=theta[-2],
                        temperature=theta[-1],
                        distribution=distribution,
                    )
                )(x)

            for seed in range(3):
                key = jax.random.key(seed)
                jacobian = jax.jacobian(estimate)(theta, key)
                step = 1e-6
                for i in (0, 7, flat.size - 1, flat.size, flat.size + 1):
                    e = jnp.zeros_like(theta).at[i].set(step)
                    numeric = (estimate(theta + e, key) - estimate(theta - e, key)) / (2 * step)
                    np.testing.assert_allclose(jacobian[..., i], numeric, rtol=1e-5, atol=1e-8)
                self.assertGreater(float(jnp.abs(jacobian).max()), 1e-3)

    def test_surrogate_gradient_wrt_control_variate_and_f_parameters(self):
        """The value does not depend on the control variate: its gradient there is zero; what
        ``f`` closes over gets the gradient of ``f(b)``."""
        x = jnp.array([0.3, -0.2, 1.0])
        key = jax.random.key(8)
        params = init_mlp(jax.random.key(9), 3)

        def surrogate(params, w, eta, tau):
            f = lambda b: jnp.sum(jnp.sin(b * w), -1)
            cv = functools.partial(mlp, params)
            return estimators.relax(
                key, x, f, cv, eta=eta, temperature=tau, distribution="bernoulli"
            )

        grads = jax.grad(surrogate, argnums=(0, 1, 2, 3))(
            params, jnp.array([1.0, 2.0, -1.0]), 0.5, 0.4
        )
        chex.assert_trees_all_equal(grads[0], jax.tree.map(jnp.zeros_like, params))
        self.assertEqual(float(grads[2]), 0.0)
        self.assertEqual(float(grads[3]), 0.0)
        b = []
        estimators.relax(
            key, x, lambda s: b.append(s) or jnp.sum(s, -1), eta=0.0, distribution="bernoulli"
        )
        b = b[0][0]
        np.testing.assert_allclose(
            grads[1], b * jnp.cos(b * jnp.array([1.0, 2.0, -1.0])), rtol=1e-6
        )

    def test_training_the_control_variate_halves_the_variance(self):
        """Plain SGD on ``mean_keys sum(g ** 2)`` (Grathwohl et al., eq. 5) for the network (and
        the log-temperature), RELAX with ``eta = 0``: the network is the only control variate."""
        f = lambda b: jnp.sum((b - 0.49) ** 2, -1)
        params = (init_mlp(jax.random.key(0), 4, hidden=16, scale=0.1), jnp.log(0.5))

        def estimate(params, key):
            net, log_tau = params
            return jax.grad(
                lambda x: estimators.relax(
                    key,
                    x,
                    f,
                    functools.partial(mlp, net),
                    temperature=jnp.exp(log_tau),
                    eta=0.0,
                    distribution="bernoulli",
                )
            )(BINARY_LOGITS)

        def variance_loss(params, keys):
            return jnp.mean(jnp.sum(jax.vmap(estimate, in_axes=(None, 0))(params, keys) ** 2, -1))

        @jax.jit
        def step(params, key):
            grads = jax.grad(variance_loss)(params, jax.random.split(key, 64))
            return jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)

        def variance(params):
            keys = jax.random.split(jax.random.key(123), 20_000)
            grads = np.asarray(jax.jit(jax.vmap(estimate, in_axes=(None, 0)))(params, keys))
            return grads.var(0).sum()

        before = variance(params)
        for key in jax.random.split(jax.random.key(1), 300):
            params = step(params, key)
        after = variance(params)
        self.assertLess(after, before / 2, msg=f"variance {before:.4g} -> {after:.4g}")


@pytest.mark.slow
class IndecaterTest(chex.TestCase):
    @parameterized.named_parameters(("categorical", "categorical"), ("bernoulli", "bernoulli"))
    def test_one_variable_per_example_is_exact_on_every_draw(self, distribution):
        if distribution == "categorical":
            x = jnp.array([[0.3, -1.2, 0.8, -jnp.inf], [0.0, 2.0, -1.0, 0.5]])
            f = lambda z: jnp.sin(3.0 * z @ jnp.arange(4.0)) * jnp.array([1.0, -2.0])
        else:
            x = jnp.array([-0.7, 1.3])
            f = lambda b: (b - 0.3) ** 2 * jnp.array([1.0, 5.0])  # one value per variable
        exact = diagnostics.exact_gradient(
            lambda z: jnp.sum(f(z[None])), x, distribution=distribution
        )
        grads = draws(
            lambda k, x: jnp.sum(estimators.indecater(k, x, f, distribution=distribution)),
            x,
            num=50,
        )
        for grad in grads:
            np.testing.assert_allclose(grad, exact, rtol=1e-5, atol=1e-6)

    def test_lower_variance_than_reinforce_loo_at_equal_evaluations(self):
        x = jax.random.normal(jax.random.key(0), (4, 4))
        # Multiplicative coupling of the 4 variables. Not every f: for (sum(z @ VALUES) - 1.5)^2
        # or max(z @ VALUES), REINFORCE-LOO with 16 samples has about 0.7 times the variance.
        f = lambda z: jnp.prod(1.0 + z @ VALUES, -1)
        evaluations = estimators.spec("indecater").cost({}, x.shape)
        self.assertEqual(evaluations, 16)
        indecater = draws(lambda k, x: estimators.indecater(k, x, f), x, num=20_000)
        rloo = draws(
            lambda k, x: estimators.reinforce_loo(k, x, f, num_samples=evaluations), x, num=20_000
        )
        self.assertLess(indecater.var(0).sum(), rloo.var(0).sum() / 2)

    def test_value_is_the_mean_over_exact_samples_and_f_is_called_once(self):
        x = jnp.array([[0.3, -1.2, 0.8], [0.0, 2.0, -1.0]])
        calls = []

        def f(z):
            calls.append(z)
            return jnp.sum(z @ jnp.array([1.0, 10.0, 100.0]), -1)  # [n, 2, 3] -> [n]

        key = jax.random.key(3)
        value = estimators.indecater(key, x, f, num_samples=4)
        concrete = [z for z in calls if not isinstance(z, jax.core.Tracer)]
        self.assertLen(concrete, 1)  # and one abstract trace for the shape of P
        chex.assert_shape(concrete[0], (4 * 2 * 3, 2, 3))
        b = sample.gumbel_max(key, jnp.broadcast_to(x, (4, 2, 3)))
        np.testing.assert_allclose(value, jnp.mean(f(b)), rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(concrete[0]).sum(-1), 1.0)

    def test_batch_of_examples_changes_each_variable_in_every_example(self):
        """``P = (batch,)``: the variants cost ``S * latents * categories``, not times the batch,
        and the gradient is each example's own."""
        x = jax.random.normal(jax.random.key(1), (5, 3, 4))  # batch 5, 3 latents, 4 categories
        f = lambda z: (jnp.sum(z @ VALUES, -1) - 1.0) ** 2  # [n, 5, 3, 4] -> [n, 5]
        shapes = []
        value = estimators.indecater(
            jax.random.key(0), x, lambda z: shapes.append(z.shape) or f(z), num_samples=2
        )
        chex.assert_shape(value, (5,))
        self.assertIn((2 * 3 * 4, 5, 3, 4), shapes)
        exact = diagnostics.exact_gradient(lambda z: jnp.sum(f(z[None])), x[:2])
        grads = draws(
            lambda k, x: jnp.sum(estimators.indecater(k, x, f, num_samples=2)[:2]), x, num=20_000
        )
        np.testing.assert_array_equal(grads[:, 2:], 0.0)
        self.assertLess(np.abs(z_scores(grads[:, :2], exact)).max(), 5.0)


@pytest.mark.slow
class SurrogateContractTest(chex.TestCase):
    @parameterized.named_parameters(("categorical", "categorical"), ("bernoulli", "bernoulli"))
    def test_rebar_calls_f_once_and_returns_f_of_the_exact_sample(self, distribution):
        x = jnp.array([[0.3, -1.2, 0.8], [0.0, 2.0, -jnp.inf]])
        if distribution == "bernoulli":
            x = jnp.array([[0.3, -1.2, 0.8], [0.0, 2.0, -1.0]])
        calls, cv_calls = [], []  # the inputs' values (a callback: f runs inside jax.vjp)

        def f(z):
            jax.debug.callback(lambda z: calls.append(np.asarray(z)), z)
            return jnp.sum(z * jnp.array([1.0, 2.0, 4.0]), -1) ** 2  # [n, 2, 3] -> [n, 2]

        def cv(s):
            jax.debug.callback(lambda s: cv_calls.append(np.asarray(s)), s)
            return jnp.sum(s, -1)

        value = estimators.relax(jax.random.key(0), x, f, cv, distribution=distribution)
        self.assertLen(calls, 1)
        self.assertLen(cv_calls, 1)
        chex.assert_shape(calls[0], (3, 2, 3))
        chex.assert_shape(cv_calls[0], (2, 2, 3))
        b, relaxed = np.asarray(calls[0][0]), np.asarray(calls[0][1:])
        np.testing.assert_allclose(value, f(b[None])[0], rtol=1e-6)
        np.testing.assert_allclose(relaxed, np.asarray(cv_calls[0]))
        self.assertTrue(np.all((relaxed >= 0) & (relaxed <= 1)))
        if distribution == "categorical":
            np.testing.assert_array_equal(b.sum(-1), 1.0)
            np.testing.assert_allclose(relaxed.sum(-1), 1.0, rtol=1e-6)
            np.testing.assert_array_equal(relaxed[:, 1, 2], 0.0)  # masked
        else:
            self.assertTrue(np.all((b == 0) | (b == 1)))
        calls.clear()
        estimators.relax(jax.random.key(0), x, f, cv, eta=0.0, distribution=distribution)
        chex.assert_shape(calls[0], (1, 2, 3))  # eta = 0: f on the exact sample only

    @parameterized.named_parameters(
        ("rebar_categorical", "rebar", "categorical"),
        ("rebar_bernoulli", "rebar", "bernoulli"),
        ("relax_categorical", "relax", "categorical"),
        ("indecater_categorical", "indecater", "categorical"),
        ("indecater_bernoulli", "indecater", "bernoulli"),
    )
    def test_nan_logit_makes_its_example_nan(self, name, distribution):
        x = jnp.array([[0.5, jnp.nan, 0.1], [0.2, -0.3, 1.0]])
        f = lambda z: jnp.sum(z * jnp.array([1.0, 2.0, 3.0]), -1) ** 2
        fn = _call(name, f, distribution)

        def surrogate(x):
            value = fn(jax.random.key(0), x)
            return jnp.sum(value), value

        grad, value = jax.jit(jax.grad(surrogate, has_aux=True))(x)
        self.assertTrue(np.isnan(float(value[0])))
        self.assertTrue(np.isnan(np.asarray(grad[0])).any())
        chex.assert_tree_all_finite((value[1], grad[1]))

    @parameterized.named_parameters(
        ("rebar", "rebar"), ("relax", "relax"), ("indecater", "indecater")
    )
    def test_masked_categories_never_sampled_zero_gradient(self, name):
        x = jnp.array([[1e4, -1e4, 0.0, 3.0], [0.5, -jnp.inf, 2.0, -jnp.inf]])
        f = lambda z: jnp.sum((z @ jnp.arange(4.0) - 1.0) ** 2, -1)
        fn = _call(name, f, "categorical")
        grads = draws(lambda k, x: jnp.sum(fn(k, x)), x, num=200)
        chex.assert_tree_all_finite(grads)
        np.testing.assert_array_equal(grads[:, 1, [1, 3]], 0.0)

    @parameterized.named_parameters(
        ("rebar", "rebar"), ("relax", "relax"), ("indecater", "indecater")
    )
    def test_infinite_bernoulli_logits_are_certain(self, name):
        x = jnp.array([jnp.inf, -jnp.inf, 0.3])
        f = lambda b: jnp.sum((b - 0.4) ** 2, -1)
        fn = _call(name, f, "bernoulli")
        for key in jax.random.split(jax.random.key(0), 8):
            value, grad = jax.value_and_grad(fn, argnums=1)(key, x)
            chex.assert_tree_all_finite((value, grad))
            np.testing.assert_array_equal(np.asarray(grad[:2]), 0.0)
            self.assertNotEqual(float(grad[2]), 0.0)
            # b = (1, 0, b_2): f(b) = 0.36 + 0.16 + (b_2 - 0.4)^2, 0.68 or 0.88 (or their mean).
            self.assertTrue(np.isclose(float(value), [0.68, 0.78, 0.88]).any(), msg=float(value))

    @parameterized.named_parameters(
        ("rebar", "rebar"), ("relax", "relax"), ("indecater", "indecater")
    )
    def test_vmap_over_keys_matches_a_loop(self, name):
        x = jnp.array([[0.3, -0.2, 1.0], [0.1, 0.0, -0.5]])
        f = lambda z: jnp.sum(z * jnp.array([1.0, 2.0, 3.0]), -1) ** 2
        for distribution in ("categorical", "bernoulli"):
            fn = _call(name, f, distribution)
            grad = jax.jit(jax.grad(lambda k, x, fn=fn: jnp.sum(fn(k, x)), 1))
            keys = jax.random.split(jax.random.key(3), 4)
            batched = jax.vmap(grad, in_axes=(0, None))(keys, x)
            looped = jnp.stack([grad(k, x) for k in keys])
            np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-6)

    def test_traced_temperature_and_eta_under_jit(self):
        f = lambda b: jnp.sum((b - 0.45) ** 2, -1)

        @jax.jit
        def g(tau, eta, key):
            return jax.grad(
                lambda x: estimators.rebar(
                    key, x, f, temperature=tau, eta=eta, distribution="bernoulli"
                )
            )(BINARY_LOGITS)

        chex.assert_tree_all_finite(g(0.3, 0.5, jax.random.key(0)))
        np.testing.assert_allclose(
            g(0.3, 0.5, jax.random.key(0)),
            jax.grad(
                lambda x: estimators.rebar(
                    jax.random.key(0), x, f, temperature=0.3, eta=0.5, distribution="bernoulli"
                )
            )(BINARY_LOGITS),
            rtol=1e-5,
        )


def _call(name, f, distribution):
    if name == "rebar":
        return lambda k, x: estimators.rebar(k, x, f, distribution=distribution)
    if name == "relax":
        cv = lambda s: 0.3 * f(jnp.tanh(s))  # [2, *P], P as f's
        return lambda k, x: estimators.relax(k, x, f, cv, distribution=distribution)
    return lambda k, x: estimators.indecater(k, x, f, num_samples=2, distribution=distribution)


class ValidationAndRegistryTest(parameterized.TestCase):
    def test_registered_with_costs(self):
        self.assertEqual(estimators.names(kind="surrogate")[-3:], ("rebar", "relax", "indecater"))
        for name in ("rebar", "relax", "indecater"):
            spec = estimators.spec(name)
            self.assertTrue(spec.unbiased)
            self.assertEqual(spec.distributions, ("categorical", "bernoulli"))
        self.assertEqual(estimators.spec("rebar").cost({}, (20, 10)), 3)
        self.assertEqual(estimators.spec("rebar").cost({"eta": 0.0}, (20, 10)), 1)
        self.assertEqual(estimators.spec("relax").cost({"temperature": 1.0}, (20,)), 3)
        self.assertEqual(estimators.spec("indecater").cost({}, (20, 10)), 200)
        self.assertEqual(estimators.spec("indecater").cost({"num_samples": 2}, (8,)), 32)

    @pytest.mark.slow
    def test_bound_calls_match_the_functions(self):
        x = jnp.array([[0.3, -0.2, 1.0]])
        f = lambda z: jnp.sum(z * jnp.array([1.0, 2.0, 3.0]), -1) ** 2
        key = jax.random.key(0)
        bound = estimators.spec("rebar").bind({"temperature": 0.3, "eta": 0.5})
        np.testing.assert_allclose(
            jax.grad(lambda x: bound(key, x, f).sum())(x),
            jax.grad(lambda x: estimators.rebar(key, x, f, temperature=0.3, eta=0.5).sum())(x),
        )
        relax = estimators.spec("relax").fn
        cv = lambda s: jnp.sum(s, -1)
        np.testing.assert_allclose(
            jax.grad(lambda x: relax(key, x, f, cv, temperature=0.3).sum())(x),
            jax.grad(lambda x: estimators.relax(key, x, f, cv, temperature=0.3).sum())(x),
        )
        bound = estimators.spec("indecater").bind({"num_samples": 2})
        np.testing.assert_allclose(bound(key, x, f), estimators.indecater(key, x, f, num_samples=2))

    @pytest.mark.slow
    def test_bad_arguments(self):
        f = lambda z: z[..., 0]
        key, x = jax.random.key(0), jnp.zeros(3)
        with self.assertRaisesRegex(ValueError, "`temperature` must be > 0"):
            estimators.rebar(key, x, f, temperature=0.0)
        with self.assertRaisesRegex(ValueError, "`eta` must be finite"):
            estimators.rebar(key, x, f, eta=float("nan"))
        with self.assertRaisesRegex(TypeError, "`eta` must be a real number"):
            estimators.rebar(key, x, f, eta="one")
        with self.assertRaisesRegex(TypeError, "`control_variate` must be a function"):
            estimators.relax(key, x, f, 3.0)
        with self.assertRaisesRegex(ValueError, "`control_variate` must return the shape"):
            estimators.relax(key, jnp.zeros((2, 3)), lambda z: z[..., 0], lambda s: s[:, 0, 0])
        with self.assertRaisesRegex(ValueError, "`num_samples` must be >= 1"):
            estimators.indecater(key, x, f, num_samples=0)
        with self.assertRaisesRegex(ValueError, "`f` must return one value per sample"):
            estimators.indecater(key, x, lambda z: z)
        with self.assertRaisesRegex(ValueError, "`distribution` must be one of"):
            estimators.rebar(key, x, f, distribution="gaussian")


if __name__ == "__main__":
    absltest.main()
