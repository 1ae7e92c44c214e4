"""Tests for ReinMax-Rao and ReinMax-CV (Wang and Bui, 2026): gradients against the formula
written out here, their statistics, the forward samples, transformations, and errors.

The reference gradients are computed in NumPy (``float64``) from the explicit Jacobians, on the
same conditional Gumbel noise as the estimators draw (``_gumbel_rao._conditional_gumbel``, the
direct formula, from the seed the estimators use), so a wrong ``theta'``, factor, temperature or
noise fails them. Statistical tests use fixed keys and 5 standard errors.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized
from scipy import stats

from gumbel_jax import diagnostics, estimators, sample
from gumbel_jax.estimators import _gumbel_rao

P_MIN = 1e-4
NAMES = ("reinmax-rao", "reinmax-cv")


def softmax(x, axis=-1):
    x = np.asarray(x, np.float64)
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


def jacobian_times(p, g):
    """``(diag(p) - p p^T) g`` for ``p``, ``g`` of shape ``[..., K]``, by explicit matrices."""
    eye = np.eye(p.shape[-1])
    jac = p[..., :, None] * eye - p[..., :, None] * p[..., None, :]
    return np.einsum("...ij,...j->...i", jac, g)


def conditional_noise(key, theta, hard, num_samples, axis):
    """The estimators' ``G_r`` (``[R, ..., K]``), conditioned on ``argmax(theta + G_r) = hard``.

    Drawn by the direct formula (``_gumbel_rao._conditional_gumbel``) from the seed the
    estimators derive from ``key``, in the layout of the logits (the noise is indexed by the
    logits' flat index), then with the category axis moved last.
    """
    noise_key = jax.random.fold_in(key, 1)
    theta = jnp.asarray(np.moveaxis(theta, -1, axis), jnp.float32)
    hard = jnp.asarray(np.moveaxis(hard, -1, axis))
    axis = axis % theta.ndim
    noise = _gumbel_rao._conditional_gumbel(noise_key, theta, hard, num_samples, axis)
    return np.moveaxis(np.asarray(noise, np.float64), axis + 1, -1)


def reference_vjp(name, key, logits, g, temperature, num_samples, eta=1.0, axis=-1):
    """The estimator's gradient, written out: NumPy, explicit Jacobians, category axis last."""
    x = np.moveaxis(np.asarray(logits, np.float64), axis, -1)
    g = np.moveaxis(np.asarray(g, np.float64), axis, -1)
    fn = estimators.get(name)
    options = {"eta": eta} if name == "reinmax-cv" else {}
    hard = fn(key, logits, temperature, num_samples=num_samples, axis=axis, **options)
    hard = np.moveaxis(np.asarray(hard, np.float64), axis, -1)
    pi = softmax(x)
    with np.errstate(divide="ignore"):
        theta = np.log((pi + hard) / 2.0)  # -inf at masked categories
    noise = conditional_noise(key, theta, hard, num_samples, axis)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(
            np.argmax(theta + noise, -1), np.broadcast_to(np.argmax(hard, -1), noise.shape[:-1])
        )
    soft = softmax((theta + noise) / temperature)  # [R, ..., K]
    rao = np.mean(jacobian_times(soft, g), axis=0) / temperature
    if name == "reinmax-rao":
        grad = 2.0 * rao - 0.5 * jacobian_times(pi, g)
    else:
        gumbel = np.moveaxis(
            np.asarray(sample.gumbel(key, np.shape(logits), jnp.float32), np.float64), axis, -1
        )
        np.testing.assert_array_equal(np.argmax(x + gumbel, -1), np.argmax(hard, -1))
        single = jacobian_times(softmax((theta + gumbel) / temperature), g) / temperature
        reinmax = 2.0 * jacobian_times((pi + hard) / 2.0, g) - 0.5 * jacobian_times(pi, g)
        grad = reinmax + eta * (rao - single)
    return np.moveaxis(grad, -1, axis)


def estimator_vjp(name, key, logits, g, temperature, num_samples, eta=1.0, axis=-1):
    fn = estimators.get(name)
    options = {"eta": eta} if name == "reinmax-cv" else {}
    _, vjp = jax.vjp(
        lambda x: fn(key, x, temperature, num_samples=num_samples, axis=axis, **options), logits
    )
    return np.asarray(vjp(jnp.asarray(g, logits.dtype))[0], np.float64)


class RegistryTest(parameterized.TestCase):
    def test_specs(self):
        rao, cv = estimators.spec("reinmax-rao"), estimators.spec("reinmax-cv")
        self.assertIs(rao.fn, estimators.reinmax_rao)
        self.assertIs(cv.fn, estimators.reinmax_cv)
        self.assertIs(estimators.get("reinmax-rao"), estimators.reinmax_rao)
        self.assertIs(estimators.get("reinmax-cv"), estimators.reinmax_cv)
        self.assertEqual(dict(rao.options), {"num_samples": 100})
        self.assertEqual(dict(cv.options), {"eta": 1.0, "num_samples": 100})
        for s in (rao, cv):
            self.assertEqual(s.kind, "sample")
            self.assertEqual(s.distributions, ("categorical", "bernoulli"))
            self.assertIsNone(s.min_temperature)
            self.assertFalse(s.unbiased)
            self.assertIn("https://arxiv.org/abs/2603.08257", s.reference)
            self.assertIn(s.name, estimators.names(kind="sample"))

    @parameterized.named_parameters(*[(n.replace("-", "_"), n) for n in NAMES])
    @pytest.mark.slow
    def test_bound_call_runs(self, name):
        call = estimators.spec(name).bind({"num_samples": 4})
        y = call(jax.random.key(0), jnp.zeros((3, 4)), 0.5)
        chex.assert_trees_all_equal(y.sum(-1), jnp.ones(3))


@pytest.mark.slow
class GradientTest(parameterized.TestCase):
    @parameterized.product(name=NAMES, axis_and_temperature=((-1, 1.0), (1, 0.5), (0, 2.0)))
    def test_vjp_matches_the_formula(self, name, axis_and_temperature):
        axis, temperature = axis_and_temperature
        key = jax.random.key(3)
        logits = 1.5 * jax.random.normal(jax.random.key(1), (3, 5, 4))  # categories: 4 or 5
        g = jax.random.normal(jax.random.key(2), logits.shape)
        got = estimator_vjp(name, key, logits, g, temperature, 7, eta=1.3, axis=axis)
        want = reference_vjp(name, key, logits, g, temperature, 7, eta=1.3, axis=axis)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)

    @parameterized.named_parameters(*[(n.replace("-", "_"), n) for n in NAMES])
    def test_masked_logits(self, name):
        logits = jnp.array(
            [[0.3, -jnp.inf, 1.0, -0.5], [-jnp.inf, -jnp.inf, 2.0, 0.0], [1e4, 0.0, -1e4, 3.0]]
        )
        g = jax.random.normal(jax.random.key(2), logits.shape)
        masked = np.isneginf(np.asarray(logits))
        for seed in range(5):
            key = jax.random.key(seed)
            y = estimators.get(name)(key, logits, 0.7, num_samples=5)
            self.assertTrue(np.all(np.asarray(y)[masked] == 0.0))
            got = estimator_vjp(name, key, logits, g, 0.7, 5)
            self.assertTrue(np.all(np.isfinite(got)), got)
            np.testing.assert_array_equal(got[masked], 0.0)
            want = reference_vjp(name, key, logits, g, 0.7, 5)
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)

    @parameterized.named_parameters(*[(n.replace("-", "_"), n) for n in NAMES])
    def test_bernoulli_is_two_categories(self, name):
        key = jax.random.key(4)
        log_odds = jnp.array([[-1.0, 0.5, 2.0], [jnp.inf, -jnp.inf, -0.3]])
        pair = jnp.stack([jnp.minimum(0.0, -log_odds), jnp.minimum(0.0, log_odds)], axis=-1)
        fn = estimators.get(name)
        weights = jax.random.normal(jax.random.key(5), log_odds.shape)

        def binary(x):
            return jnp.sum(weights * fn(key, x, 0.8, num_samples=6, distribution="bernoulli"))

        def categorical(x):
            return jnp.sum(weights * fn(key, x, 0.8, num_samples=6)[..., 1])

        y_binary = fn(key, log_odds, 0.8, num_samples=6, distribution="bernoulli")
        np.testing.assert_array_equal(y_binary, fn(key, pair, 0.8, num_samples=6)[..., 1])
        np.testing.assert_array_equal(y_binary[1, :2], [1.0, 0.0])  # certain outcomes
        grad_binary = jax.grad(binary)(log_odds)
        # d pair / d log_odds: (-1, 0) where log_odds > 0, (0, 1) where < 0
        grad_pair = jax.grad(categorical)(pair)
        chain = jnp.where(log_odds > 0, -grad_pair[..., 0], grad_pair[..., 1])
        np.testing.assert_allclose(grad_binary, chain, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(grad_binary[1, :2], [0.0, 0.0])

    def test_cv_with_eta_zero_is_reinmax_at_temperature_one(self):
        logits = jax.random.normal(jax.random.key(1), (6, 5))
        g = jax.random.normal(jax.random.key(2), logits.shape)
        for seed in range(3):
            cv = functools.partial(estimators.reinmax_cv, jax.random.key(seed), eta=0.0)
            rm = functools.partial(estimators.reinmax, jax.random.key(seed))
            y_cv, vjp_cv = jax.vjp(lambda x, cv=cv: cv(x, 2.0), logits)
            y_rm, vjp_rm = jax.vjp(lambda x, rm=rm: rm(x, 1.0), logits)
            np.testing.assert_array_equal(y_cv, y_rm)
            np.testing.assert_allclose(vjp_cv(g)[0], vjp_rm(g)[0], rtol=1e-6, atol=1e-7)

    def test_rao_and_cv_share_reinmax_sample(self):
        logits = jax.random.normal(jax.random.key(1), (20, 6))
        key = jax.random.key(7)
        y = estimators.reinmax(key, logits, 1.0)
        np.testing.assert_array_equal(estimators.reinmax_rao(key, logits), y)
        np.testing.assert_array_equal(estimators.reinmax_cv(key, logits), y)

    @parameterized.named_parameters(*[(n.replace("-", "_"), n) for n in NAMES])
    def test_bfloat16_is_computed_in_float32(self, name):
        key = jax.random.key(0)
        logits = jax.random.normal(jax.random.key(1), (4, 6)).astype(jnp.bfloat16)
        g = jax.random.normal(jax.random.key(2), logits.shape).astype(jnp.bfloat16)
        got = estimator_vjp(name, key, logits, g, 0.5, 9)
        self.assertEqual(estimators.get(name)(key, logits, 0.5, num_samples=9).dtype, jnp.bfloat16)
        want = estimator_vjp(name, key, logits.astype(jnp.float32), g.astype(jnp.float32), 0.5, 9)
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)

    @parameterized.named_parameters(*[(n.replace("-", "_"), n) for n in NAMES])
    def test_no_gradient_to_the_temperature(self, name):
        logits = jax.random.normal(jax.random.key(1), (3, 4))
        fn = estimators.get(name)

        def loss(t):
            return jnp.sum(fn(jax.random.key(0), logits, t, num_samples=3) * logits)

        self.assertEqual(float(jax.grad(loss)(0.8)), 0.0)


@pytest.mark.slow
class StatisticsTest(parameterized.TestCase):
    def _problem(self):
        logits = jnp.array([[0.4, -0.3, 1.1], [-1.0, 0.2, 0.0]])
        c = jnp.array([[1.0, -2.0, 0.5], [0.3, 1.0, -1.5]])

        def f(z):
            return jnp.sum((jnp.sum(z * c, -1) - 0.7) ** 2)

        return logits, c, f

    def test_rao_mean_over_draws_is_its_expectation(self):
        # E[grad] = sum_D pi_D (2 E[J(softmax((theta'(D) + G) / tau)) | D] g(D) / tau
        #                       - J(pi) g(D) / 2),
        # with the conditional expectation by rejection sampling: plain Gumbels, kept where
        # argmax(theta' + G) = D (probability (pi_D + 1) / 2 >= 1/2).
        logits, c, f = self._problem()
        tau = 0.7
        x = np.asarray(logits, np.float64)
        cc = np.asarray(c, np.float64)
        pi = softmax(x)
        rng = np.random.default_rng(0)
        expected = np.zeros_like(x)
        std_err = np.zeros_like(x)
        for row in range(2):
            for d in range(3):
                hard = np.eye(3)[d]
                theta = np.log((pi[row] + hard) / 2)
                noise = rng.gumbel(size=(400_000, 3))
                noise = noise[np.argmax(theta + noise, -1) == d]
                g = 2.0 * (hard @ cc[row] - 0.7) * cc[row]
                terms = 2.0 * jacobian_times(softmax((theta + noise) / tau), g) / tau
                terms = terms - 0.5 * jacobian_times(pi[row], g)
                expected[row] += pi[row, d] * terms.mean(0)
                std_err[row] += pi[row, d] * terms.std(0) / np.sqrt(len(terms))

        def estimate(key):
            return jax.grad(lambda x: f(estimators.reinmax_rao(key, x, tau, num_samples=200)))(
                logits
            )

        stats_ = diagnostics.gradient_stats(jax.random.key(11), estimate, 20_000)
        per_coordinate = np.sqrt(stats_.variance / stats_.num_draws)
        np.testing.assert_allclose(stats_.mean, expected, atol=5 * (per_coordinate + std_err.max()))

    def test_rao_variance_not_above_reinmax(self):
        logits, _, f = self._problem()
        exact = diagnostics.exact_gradient(f, logits)

        def grad_of(fn):
            return lambda key: jax.grad(lambda x: f(fn(key, x, 1.0)))(logits)

        rm = diagnostics.gradient_stats(jax.random.key(5), grad_of(estimators.reinmax), 4096)
        rao = diagnostics.gradient_stats(
            jax.random.key(5), grad_of(estimators.reinmax_rao), 4096, exact=exact
        )
        self.assertLessEqual(rao.variance, rm.variance)
        self.assertGreater(rao.cosine, 0.9)


class ForwardTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_exact_one_hot_in_every_dtype(self):
        logits = jax.random.normal(jax.random.key(0), (4, 6))
        for name in NAMES:
            estimator = functools.partial(estimators.get(name), num_samples=3, axis=0)
            for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
                fn = self.variant(lambda key, x, e=estimator: e(key, x, 1.5))
                y = fn(jax.random.key(1), logits.astype(dtype))
                self.assertEqual(y.dtype, dtype)
                self.assertTrue(np.all((np.asarray(y) == 0) | (np.asarray(y) == 1)))
                np.testing.assert_array_equal(np.asarray(y, np.float32).sum(0), np.ones(6))

    @parameterized.named_parameters(*[(n.replace("-", "_"), n) for n in NAMES])
    @pytest.mark.slow
    def test_forward_frequencies_match_softmax(self, name):
        logits = jnp.array([0.5, -1.0, 0.0, 1.2, -jnp.inf])
        fn = jax.jit(jax.vmap(lambda k: estimators.get(name)(k, logits, 0.5, num_samples=2)))
        counts = np.asarray(fn(jax.random.split(jax.random.key(0), 100_000))).sum(0)
        self.assertEqual(counts[-1], 0)
        probs = np.asarray(jax.nn.softmax(logits))
        expected = probs[:-1] / probs[:-1].sum() * counts.sum()
        self.assertGreater(stats.chisquare(counts[:-1], expected).pvalue, P_MIN)

    @parameterized.named_parameters(*[(n.replace("-", "_"), n) for n in NAMES])
    @pytest.mark.slow
    def test_jit_and_vmap(self, name):
        fn = estimators.get(name)
        logits = jax.random.normal(jax.random.key(1), (3, 5))
        weights = jax.random.normal(jax.random.key(2), (3, 5))

        def grad(key, x):
            return jax.grad(lambda x: jnp.sum(weights * fn(key, x, 0.6, num_samples=4)))(x)

        keys = jax.random.split(jax.random.key(0), 4)
        batched = jax.jit(jax.vmap(grad, in_axes=(0, None)))(keys, logits)
        for i in range(4):
            np.testing.assert_allclose(batched[i], grad(keys[i], logits), rtol=1e-5, atol=1e-6)
        # A traced temperature under jit, and a vmapped batch of logits.
        traced = jax.jit(lambda t: fn(keys[0], logits, t, num_samples=4))(0.6)
        np.testing.assert_array_equal(traced, fn(keys[0], logits, 0.6, num_samples=4))
        rows = jax.vmap(lambda x: fn(keys[0], x, 0.6, num_samples=4))(logits)
        chex.assert_trees_all_equal(rows.sum(-1), jnp.ones(3))

    @parameterized.named_parameters(*[(n.replace("-", "_"), n) for n in NAMES])
    @pytest.mark.slow
    def test_invalid_rows_are_nan(self, name):
        fn = estimators.get(name)
        logits = jnp.array(
            [[0.1, jnp.nan, 0.3], [0.1, jnp.inf, 0.3], [-jnp.inf] * 3, [0.2, -0.1, -jnp.inf]]
        )
        y = fn(jax.random.key(0), logits, 0.5, num_samples=3)
        self.assertTrue(np.all(np.isnan(y[:3])))
        self.assertEqual(float(jnp.sum(y[3])), 1.0)
        grad = jax.grad(lambda x: jnp.nansum(fn(jax.random.key(0), x, 0.5, num_samples=3)))(logits)
        self.assertTrue(np.all(np.isnan(grad[:3])))
        self.assertTrue(np.all(np.isfinite(grad[3])))

    @parameterized.named_parameters(
        ("num_samples_zero", {"num_samples": 0}, ValueError),
        ("num_samples_float", {"num_samples": 1.5}, TypeError),
        ("num_samples_bool", {"num_samples": True}, TypeError),
        ("temperature_zero", {"temperature": 0.0}, ValueError),
        ("temperature_string", {"temperature": "1"}, TypeError),
        ("axis", {"axis": 2}, ValueError),
        ("distribution", {"distribution": "poisson"}, ValueError),
        ("integer_logits", {"logits": jnp.zeros((2, 3), jnp.int32)}, TypeError),
    )
    def test_bad_inputs_raise(self, overrides, error):
        for name in NAMES:
            arguments = {"logits": jnp.zeros((2, 3)), "temperature": 1.0, **overrides}
            with self.assertRaises(error):
                estimators.get(name)(jax.random.key(0), **arguments)

    @parameterized.named_parameters(
        ("negative", -0.5, ValueError),
        ("nan", float("nan"), ValueError),
        ("infinite", float("inf"), ValueError),
        ("string", "1", TypeError),
        ("bool", True, TypeError),
    )
    def test_bad_eta_raises(self, eta, error):
        with self.assertRaisesRegex(error, "eta"):
            estimators.reinmax_cv(jax.random.key(0), jnp.zeros(3), eta=eta)

    def test_bad_options_are_rejected_by_the_spec(self):
        with self.assertRaisesRegex(ValueError, "no option"):
            estimators.spec("reinmax-rao").check_options({"eta": 1.0})
        with self.assertRaises(TypeError):
            estimators.spec("reinmax-cv").check_options({"num_samples": 2.0})
        self.assertEqual(estimators.spec("reinmax-cv").check_options({"eta": 1})["eta"], 1.0)


if __name__ == "__main__":
    absltest.main()
