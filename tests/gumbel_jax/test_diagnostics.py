"""Tests for gumbel_jax.diagnostics: exact gradients against closed forms, and estimator statistics
on synthetic estimators of known bias and variance.

Statistical assertions use 5 standard errors of the statistic, computed from the known
distribution of the synthetic draws; the rest are exact up to float rounding.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from gumbel_jax import diagnostics


def softmax_jacobian(p):
    return np.diag(p) - np.outer(p, p)


class ExactGradientTest(parameterized.TestCase):
    @pytest.mark.slow
    def test_categorical_linear_function_on_another_axis_with_a_mask(self):
        # Categories on axis 0: column j is one categorical variable. E f = sum_j w_j . p_j.
        logits = np.array([[0.5, -1.0], [1.5, -np.inf], [-0.2, 0.3]])
        weights = np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]])
        with jax.enable_x64(True):
            grad = diagnostics.exact_gradient(
                lambda z: jnp.sum(z * weights), jnp.asarray(logits), axis=0
            )
            for column in range(2):
                p = np.asarray(jax.nn.softmax(jnp.asarray(logits[:, column])))
                expected = softmax_jacobian(p) @ weights[:, column]
                np.testing.assert_allclose(grad[:, column], expected, rtol=0, atol=1e-12)
        self.assertEqual(float(grad[1, 1]), 0.0)

    @pytest.mark.slow
    def test_categorical_nonlinear_matches_a_hand_enumeration(self):
        logits = np.array([[0.2, -0.4, 1.0], [0.0, 0.7, -0.3]])
        values = np.array([0.0, 0.5, 1.0])

        def f(z):  # couples the two variables
            return jnp.sin(3 * (z[0] @ values) * (z[1] @ values) + z[1] @ values)

        def expectation(x):
            p = jax.nn.softmax(x, axis=-1)
            total = 0.0
            for i in range(3):
                for j in range(3):
                    z = jnp.stack([jnp.eye(3)[i], jnp.eye(3)[j]])
                    total = total + p[0, i] * p[1, j] * f(z)
            return total

        with jax.enable_x64(True):
            x = jnp.asarray(logits)
            np.testing.assert_allclose(
                diagnostics.exact_gradient(f, x), jax.grad(expectation)(x), rtol=0, atol=1e-12
            )

    @pytest.mark.slow
    def test_bernoulli_quadratic_toy(self):
        # E sum (b - t)^2 = sum sigmoid(x) (1 - 2t) + const: gradient sigmoid'(x) (1 - 2t).
        logits = np.array([[0.0, 1.0, -2.0], [0.5, -0.5, 3.0]])
        t = 0.49
        with jax.enable_x64(True):
            grad = diagnostics.exact_gradient(
                lambda b: jnp.sum((b - t) ** 2), jnp.asarray(logits), distribution="bernoulli"
            )
        s = 1 / (1 + np.exp(-logits))
        np.testing.assert_allclose(grad, s * (1 - s) * (1 - 2 * t), rtol=1e-10, atol=0)

    @pytest.mark.slow
    def test_float32_and_bfloat16_return_the_input_dtype(self):
        for dtype in (jnp.float32, jnp.bfloat16):
            grad = diagnostics.exact_gradient(lambda z: z[0], jnp.zeros(2, dtype))
            chex.assert_type(grad, dtype)
            np.testing.assert_allclose(np.asarray(grad, np.float32), [0.25, -0.25], rtol=1e-6)

    @parameterized.named_parameters(
        ("bernoulli", (21,), "bernoulli", r"2\^21 = 2097152"),
        ("categorical", (7, 10), "categorical", r"10\^7 = 10000000"),
    )
    def test_too_many_configurations_raises(self, shape, distribution, message):
        with self.assertRaisesRegex(ValueError, f"{message}.*MAX_CONFIGURATIONS = 1048576"):
            diagnostics.exact_gradient(
                lambda z: jnp.sum(z), jnp.zeros(shape), distribution=distribution
            )

    @pytest.mark.slow
    def test_bad_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "to a scalar; got shape \\(3,\\)"):
            diagnostics.exact_gradient(lambda z: z, jnp.zeros(3))
        with self.assertRaisesRegex(ValueError, "`distribution` must be one of"):
            diagnostics.exact_gradient(lambda z: z.sum(), jnp.zeros(3), distribution="normal")
        with self.assertRaisesRegex(ValueError, "`axis` must be in"):
            diagnostics.exact_gradient(lambda z: z.sum(), jnp.zeros(3), axis=2)


@pytest.mark.slow
class GradientStatsTest(parameterized.TestCase):
    def test_synthetic_estimator_of_known_bias_and_variance(self):
        exact = jnp.array([0.3, -1.0, 2.0])
        offset = jnp.array([0.1, 0.0, -0.2])
        sigma, num_draws = 0.5, 50_000
        dim = exact.size

        def estimate(key):
            return exact + offset + sigma * jax.random.normal(key, exact.shape)

        stats = diagnostics.gradient_stats(jax.random.key(0), estimate, num_draws, exact=exact)
        self.assertEqual(stats.num_draws, num_draws)
        chex.assert_shape(stats.mean, (3,))
        mean_se = sigma / np.sqrt(num_draws)
        np.testing.assert_allclose(stats.mean, exact + offset, rtol=0, atol=5 * mean_se)
        # The trace of the sample covariance: variance 2 sigma^4 / (n - 1) per coordinate.
        variance_se = np.sqrt(dim * 2 * sigma**4 / (num_draws - 1))
        self.assertAlmostEqual(stats.variance, dim * sigma**2, delta=5 * variance_se)
        bias = float(np.linalg.norm(offset))
        self.assertAlmostEqual(stats.bias, bias, delta=5 * mean_se * np.sqrt(dim))
        self.assertAlmostEqual(stats.mse, bias**2 + dim * sigma**2, delta=5 * variance_se + 0.01)
        expected_cosine = float(
            jnp.dot(exact + offset, exact)
            / (jnp.linalg.norm(exact + offset) * jnp.linalg.norm(exact))
        )
        self.assertAlmostEqual(stats.cosine, expected_cosine, delta=1e-3)
        self.assertAlmostEqual(stats.noise_floor, np.sqrt(stats.variance / num_draws))

    def test_chunks_combine_to_the_statistics_of_all_draws(self):
        # 2500 draws: two full chunks of 1024 and one of 452, combined with Chan's formula,
        # equal the one-pass statistics of the same draws (the same keys) to float rounding.
        exact = jnp.array([[1.0, 2.0], [3.0, 4.0]])

        def estimate(key):
            return jnp.exp(jax.random.normal(key, (2, 2))) * exact

        num_draws = 2500
        key = jax.random.key(3)
        stats = diagnostics.gradient_stats(key, estimate, num_draws, exact=exact)
        draws = np.asarray(jax.vmap(estimate)(jax.random.split(key, num_draws)), np.float64)
        np.testing.assert_allclose(stats.mean, draws.mean(0), rtol=1e-6)
        self.assertAlmostEqual(stats.variance, draws.var(0, ddof=1).sum(), delta=1e-5)
        errors = np.sum((draws - np.asarray(exact)) ** 2, axis=(1, 2))
        self.assertAlmostEqual(stats.mse, errors.mean(), delta=1e-5 * errors.mean())

    def test_large_offset_keeps_the_variance(self):
        # A mean of 1e4 with noise 1e-2 in float32: a sum of squares would lose it entirely.
        def estimate(key):
            return 1e4 + 1e-2 * jax.random.normal(key, (4,))

        stats = diagnostics.gradient_stats(jax.random.key(1), estimate, 20_000)
        self.assertAlmostEqual(stats.variance, 4e-4, delta=0.05 * 4e-4)
        self.assertIsNone(stats.bias)
        self.assertIsNone(stats.cosine)

    def test_a_partial_compiles_once_for_many_argument_values(self):
        traces = []

        def estimate(scale, key):
            traces.append(scale)
            return scale * jax.random.normal(key, (2,))

        for scale in (1.0, 2.0, 3.0):
            stats = diagnostics.gradient_stats(
                jax.random.key(0), jax.tree_util.Partial(estimate, jnp.float32(scale)), 100
            )
            self.assertAlmostEqual(stats.variance, 2 * scale**2, delta=0.5 * 2 * scale**2)
        self.assertLen(traces, 1)

    def test_result_is_a_pytree(self):
        stats = diagnostics.gradient_stats(
            jax.random.key(0), lambda k: jax.random.normal(k, (2,)), 10, exact=jnp.zeros(2)
        )
        self.assertLen(jax.tree.leaves(stats), 6)
        self.assertIsInstance(stats, diagnostics.GradientStats)

    def test_bad_arguments_raise(self):
        estimate = lambda k: jax.random.normal(k, (2,))
        with self.assertRaisesRegex(ValueError, "`num_draws` must be >= 2"):
            diagnostics.gradient_stats(jax.random.key(0), estimate, 1)
        with self.assertRaisesRegex(TypeError, "`num_draws` must be a Python int"):
            diagnostics.gradient_stats(jax.random.key(0), estimate, 10.0)
        with self.assertRaisesRegex(ValueError, r"shape \(2,\); got shape \(3,\)"):
            diagnostics.gradient_stats(jax.random.key(0), estimate, 10, exact=jnp.zeros(3))


if __name__ == "__main__":
    absltest.main()
