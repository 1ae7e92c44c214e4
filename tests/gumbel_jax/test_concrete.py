"""Tests for gumbel_jax.concrete: the densities are normalised and match samples and references.

Normalisation is checked by quadrature in the logit coordinates ``u_k = log(x_k / x_n)``, where
the Concrete density times ``prod_k x_k`` (the Jacobian of ``u -> softmax(u)``) and the
ExpConcrete density are smooth, exponentially decaying functions, so a uniform trapezoid grid is
very accurate. For two categories ``u`` is Logistic(``(logit_1 - logit_2) / tau``,
``1 / tau``), which gives an independent reference (scipy) for both densities and the sampler.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized
from scipy import stats

from gumbel_jax import concrete, sample

P_MIN = 1e-4
NUM_SAMPLES = 200_000


def logit_grid(half_width, num_points, num_dims):
    """A uniform grid over ``[-half_width, half_width]^num_dims`` and its cell volume."""
    axis = np.linspace(-half_width, half_width, num_points)
    mesh = np.stack(np.meshgrid(*[axis] * num_dims, indexing="ij"), axis=-1)
    return mesh.reshape(-1, num_dims), (axis[1] - axis[0]) ** num_dims


def with_reference_category(u):
    """Appends ``u_n = 0``: the logit coordinates of a point of the simplex."""
    return np.concatenate([u, np.zeros((u.shape[0], 1))], axis=-1).astype(np.float32)


class SampleLogTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("first", 0), ("last", -1))
    @pytest.mark.slow
    def test_shape_dtype_and_normalised(self, axis):
        logits = jax.random.normal(jax.random.key(0), (6, 5))
        y = self.variant(lambda k, x: concrete.sample_log(k, x, 0.4, axis=axis))(
            jax.random.key(1), logits
        )
        chex.assert_shape(y, (6, 5))
        chex.assert_type(y, jnp.float32)
        np.testing.assert_allclose(jax.nn.logsumexp(y, axis=axis), 0.0, rtol=0, atol=1e-5)

    @pytest.mark.slow
    def test_exp_is_the_gumbel_softmax_sample_of_the_same_key(self):
        logits = jax.random.normal(jax.random.key(0), (32, 6))
        key = jax.random.key(2)
        np.testing.assert_allclose(
            jnp.exp(concrete.sample_log(key, logits, 0.7)),
            sample.gumbel_softmax(key, logits, 0.7),
            rtol=1e-5,
            atol=1e-7,
        )

    @parameterized.named_parameters(("bfloat16", jnp.bfloat16), ("float32", jnp.float32))
    @pytest.mark.slow
    def test_low_temperature_and_extreme_logits_finite(self, dtype):
        # softmax underflows to exact zeros here; the log-space sample stays finite.
        logits = jnp.array([[1e4, -1e4, 0.0, 3.0], [0.0, -jnp.inf, 1.0, 2.0]], dtype)
        fn = jax.jit(lambda x, t: concrete.sample_log(jax.random.key(3), x, t))
        grad = jax.jit(jax.grad(lambda x, t: jnp.sum(fn(x, t) * jnp.arange(4.0)), (0, 1)))
        for temperature in (1e-3, 1.0, 1e3):
            y = fn(logits, jnp.float32(temperature))
            chex.assert_type(y, dtype)
            chex.assert_tree_all_finite(y[0])
            self.assertEqual(float(y[1, 1]), -np.inf)  # masked
            chex.assert_tree_all_finite(grad(logits, jnp.float32(temperature)))

    def test_bad_temperature_raises(self):
        with self.assertRaisesRegex(ValueError, "`temperature` must be > 0; got -0.5"):
            concrete.sample_log(jax.random.key(0), jnp.zeros(3), -0.5)


class DensityTest(chex.TestCase):
    @parameterized.named_parameters(
        ("cold", [0.3, -0.8], 0.6),
        ("hot", [2.0, -1.0], 2.5),
        ("uniform", [0.0, 0.0], 1.7),
    )
    @pytest.mark.slow
    def test_two_categories_match_logistic_reference(self, logits, temperature):
        logits = np.array(logits, np.float32)
        u = np.linspace(-15.0, 15.0, 301)
        reference = stats.logistic.logpdf(
            u, loc=(logits[0] - logits[1]) / temperature, scale=1.0 / temperature
        )
        log_y = jax.nn.log_softmax(with_reference_category(u[:, None]))
        np.testing.assert_allclose(
            jax.jit(concrete.log_prob_log)(log_y, logits, temperature),
            reference,
            rtol=1e-5,
            atol=1e-5,
        )
        # Concrete: the density of x_1 = sigmoid(u) is the logistic density / (x_1 x_2).
        x = jnp.exp(log_y)
        np.testing.assert_allclose(
            jax.jit(concrete.log_prob)(x, logits, temperature),
            reference - np.sum(np.asarray(log_y, np.float64), axis=-1),
            rtol=1e-5,
            atol=1e-4,
        )

    @parameterized.named_parameters(
        ("two_cold", [0.3, -0.8], 0.6),
        ("two_hot", [2.0, -1.0], 2.5),
        ("three_cold", [0.5, -1.0, 0.2], 0.8),
        ("three_hot", [1.5, 0.0, -0.7], 1.5),
    )
    @pytest.mark.slow
    def test_densities_integrate_to_one(self, logits, temperature):
        # A wrong sign of the (n - 1) log(tau) term would give tau^(2 - 2n) != 1 here.
        num_dims = len(logits) - 1
        half_width = 30.0 / temperature + 3.0
        u, cell = logit_grid(half_width, 20_001 if num_dims == 1 else 801, num_dims)
        log_y = jax.nn.log_softmax(with_reference_category(u))
        log_prob = jax.jit(concrete.log_prob)(jnp.exp(log_y), jnp.array(logits), temperature)
        log_prob_log = jax.jit(concrete.log_prob_log)(log_y, jnp.array(logits), temperature)
        # Concrete: d x_{1..n-1} = prod_k x_k d u.
        jacobian = np.sum(np.asarray(log_y, np.float64), axis=-1)
        concrete_mass = np.sum(np.exp(np.asarray(log_prob, np.float64) + jacobian)) * cell
        exp_concrete_mass = np.sum(np.exp(np.asarray(log_prob_log, np.float64))) * cell
        self.assertAlmostEqual(concrete_mass, 1.0, delta=1e-4)
        self.assertAlmostEqual(exp_concrete_mass, 1.0, delta=1e-4)

    def test_log_prob_log_base_measure_is_the_documented_one(self):
        # The paper's ExpConcrete density is normalised over the log-ratio u = y_1 - y_2; over
        # y_1 itself (Lebesgue) the density is log_prob_log - y_2, as the docstring says.
        logits, temperature = jnp.array([0.3, -0.8]), 0.6
        u = np.linspace(-60.0, 60.0, 40_001)
        log_y = np.stack([-np.logaddexp(0.0, -u), -np.logaddexp(0.0, u)], axis=-1)
        log_density = jax.jit(concrete.log_prob_log)(log_y, logits, temperature)
        density = np.exp(np.asarray(log_density, np.float64))
        lebesgue_mass = np.trapezoid(density * np.exp(-log_y[:, 1]), log_y[:, 0])
        self.assertAlmostEqual(lebesgue_mass, 1.0, delta=1e-3)
        # Without the correction the mass over y_1 is E[x_2] (about 0.29 here), not 1.
        self.assertLess(np.trapezoid(density, log_y[:, 0]), 0.5)

    @pytest.mark.slow
    def test_density_matches_histogram_of_samples(self):
        logits, temperature = jnp.array([0.4, -0.3]), 0.7
        batch = jnp.broadcast_to(logits, (NUM_SAMPLES, 2))
        log_y = jax.jit(lambda k, x: concrete.sample_log(k, x, temperature))(
            jax.random.key(5), batch
        )
        u_samples = np.asarray(log_y[:, 0] - log_y[:, 1], np.float64)
        # 40 bins of u; the outer ones open-ended. Expected mass per bin from the density.
        edges = np.linspace(-8.0, 8.0, 39)
        counts = np.bincount(np.searchsorted(edges, u_samples), minlength=40)
        u_grid = np.linspace(-80.0, 80.0, 160_001)
        grid_log_y = jax.nn.log_softmax(with_reference_category(u_grid[:, None]))
        log_density = jax.jit(concrete.log_prob_log)(grid_log_y, logits, temperature)
        density = np.exp(np.asarray(log_density, np.float64))
        cell_mass = density * (u_grid[1] - u_grid[0])
        expected = np.bincount(np.searchsorted(edges, u_grid), weights=cell_mass, minlength=40)
        self.assertAlmostEqual(expected.sum(), 1.0, delta=1e-4)
        pvalue = stats.chisquare(counts, expected / expected.sum() * NUM_SAMPLES).pvalue
        self.assertGreater(pvalue, P_MIN)

    @pytest.mark.slow
    def test_change_of_variables(self):
        logits = jax.random.normal(jax.random.key(0), (100, 5))

        @jax.jit
        def both_sides(key, x):
            log_y = concrete.sample_log(key, x, 0.8)
            return (
                concrete.log_prob(jnp.exp(log_y), x, 0.8),
                concrete.log_prob_log(log_y, x, 0.8) - jnp.sum(log_y, axis=-1),
            )

        concrete_side, exp_concrete_side = both_sides(jax.random.key(1), logits)
        np.testing.assert_allclose(concrete_side, exp_concrete_side, rtol=1e-5, atol=1e-4)

    @parameterized.named_parameters(("log_prob", False), ("log_prob_log", True))
    @pytest.mark.slow
    def test_masked_category_is_left_out(self, in_log_space):
        logits = jnp.array([0.5, -jnp.inf, -0.2, 1.0])
        reduced_logits = logits[jnp.array([0, 2, 3])]
        log_y = concrete.sample_log(jax.random.key(0), jnp.broadcast_to(logits, (50, 4)), 0.9)
        reduced = log_y[:, jnp.array([0, 2, 3])]
        if in_log_space:
            fn, point, reduced_point = concrete.log_prob_log, log_y, reduced
        else:
            fn, point, reduced_point = concrete.log_prob, jnp.exp(log_y), jnp.exp(reduced)
        fn = jax.jit(fn)
        np.testing.assert_allclose(
            fn(point, logits, 0.9), fn(reduced_point, reduced_logits, 0.9), rtol=1e-5, atol=1e-5
        )
        grads = jax.jit(jax.grad(lambda p, x, t: jnp.sum(fn(p, x, t)), (0, 1, 2)))(
            point, logits, 0.9
        )
        chex.assert_tree_all_finite(grads)
        np.testing.assert_array_equal(np.asarray(grads[1][1]), 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_broadcasting_axis_and_dtype(self):
        logits = jax.random.normal(jax.random.key(0), (5,))
        log_y = concrete.sample_log(jax.random.key(1), jnp.broadcast_to(logits, (3, 5)), 0.5)
        values = self.variant(lambda y, x: concrete.log_prob_log(y, x, 0.5))(log_y, logits)
        chex.assert_shape(values, (3,))
        transposed = self.variant(lambda y, x: concrete.log_prob_log(y, x, 0.5, axis=0))(
            log_y.T, logits[:, None]
        )
        np.testing.assert_allclose(values, transposed, rtol=1e-6, atol=1e-6)
        low = self.variant(lambda y, x: concrete.log_prob(y, x, 0.5))(
            jnp.exp(log_y).astype(jnp.bfloat16), logits.astype(jnp.bfloat16)
        )
        chex.assert_type(low, jnp.bfloat16)
        chex.assert_shape(low, (3,))

    def test_category_mismatch_raises(self):
        with self.assertRaisesRegex(
            ValueError, "same number of categories.*\\(2, 1\\) and \\(2, 3\\)"
        ):
            concrete.log_prob(jnp.ones((2, 1)), jnp.zeros((2, 3)), 1.0)
        with self.assertRaisesRegex(ValueError, "do not broadcast"):
            concrete.log_prob(jnp.ones(3) / 3, jnp.zeros(4), 1.0)

    def test_integer_logits_raise(self):
        with self.assertRaisesRegex(TypeError, "`logits` must have a floating dtype"):
            concrete.log_prob_log(jnp.zeros(3), jnp.arange(3), 1.0)

    def test_axis_out_of_range_raises(self):
        with self.assertRaisesRegex(ValueError, "`axis` must be in"):
            concrete.log_prob(jnp.ones((2, 3)) / 3, jnp.zeros(3), 1.0, axis=2)


class KLRelaxedTest(chex.TestCase):
    @pytest.mark.slow
    def test_same_distribution_gives_zero(self):
        logits = jax.random.normal(jax.random.key(0), (10, 4))
        kl = jax.jit(concrete.kl_relaxed)(jax.random.key(1), logits, 0.5, logits, 0.5)
        np.testing.assert_allclose(kl, 0.0, rtol=0, atol=1e-6)

    @pytest.mark.slow
    def test_monte_carlo_mean_matches_numerical_kl(self):
        logits_q, tau_q = jnp.array([1.0, -0.5]), 0.5
        logits_p, tau_p = jnp.array([0.0, 0.0]), 0.8
        u = np.linspace(-120.0, 120.0, 200_001)
        log_q = stats.logistic.logpdf(u, loc=1.5 / tau_q, scale=1.0 / tau_q)
        log_p = stats.logistic.logpdf(u, loc=0.0, scale=1.0 / tau_p)
        exact = np.trapezoid(np.exp(log_q) * (log_q - log_p), u)
        batch = jnp.broadcast_to(logits_q, (NUM_SAMPLES, 2))
        estimates = np.asarray(
            jax.jit(lambda k, x: concrete.kl_relaxed(k, x, tau_q, logits_p, tau_p))(
                jax.random.key(2), batch
            ),
            np.float64,
        )
        chex.assert_shape(estimates, (NUM_SAMPLES,))
        standard_error = estimates.std() / np.sqrt(NUM_SAMPLES)
        self.assertLess(abs(estimates.mean() - exact), 5 * standard_error)

    @pytest.mark.slow
    def test_gradients_finite_with_masks_and_prior_broadcast(self):
        logits_q = jnp.array([[2.0, -jnp.inf, 0.0, -1.0]] * 3)
        prior = jnp.array([0.0, -jnp.inf, 0.0, 0.0])

        def loss(x, t):
            return jnp.sum(concrete.kl_relaxed(jax.random.key(0), x, t, prior, 0.5))

        grads = jax.jit(jax.grad(loss, (0, 1)))(logits_q, jnp.float32(0.5))
        chex.assert_tree_all_finite(grads)
        np.testing.assert_array_equal(np.asarray(grads[0][:, 1]), 0.0)

    def test_bad_prior_temperature_raises(self):
        with self.assertRaisesRegex(ValueError, "`temperature_p` must be > 0"):
            concrete.kl_relaxed(jax.random.key(0), jnp.zeros(3), 1.0, jnp.zeros(3), 0.0)


if __name__ == "__main__":
    absltest.main()
