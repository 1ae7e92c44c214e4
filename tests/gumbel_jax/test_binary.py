"""Tests for the binary relaxations: sample.relaxed_bernoulli, sample.hard_concrete, and the
binary Concrete densities and the L0 penalty of gumbel_jax.concrete.

The statistical tests use fixed keys and 200,000 samples per case; binomial, chi-square and
Kolmogorov-Smirnov tests must reach a p-value above ``P_MIN`` (a correct sampler fails one of them
with probability 1e-4), so they fail only on real bugs. The references are written here from the
papers, independently of the library: the binary Concrete CDF ``sigmoid(tau logit(y) - logits)``
and density (Maddison et al. 2017, section 3.3), and the hard concrete's ``P(z = 0)`` and
``P(z = 1)`` (Louizos et al. 2018, eq. 12).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized
from scipy import special, stats

from gumbel_jax import concrete, sample

P_MIN = 1e-4
NUM_SAMPLES = 200_000
FLOAT_DTYPES = (("float32", jnp.float32), ("bfloat16", jnp.bfloat16), ("float16", jnp.float16))
TEMPERATURES = (1e-3, 1.0, 1e3)


def binary_concrete_cdf(y, logits, temperature):
    """``P(Y <= y)`` for ``Y = sigmoid((logits + L) / temperature)``, ``L`` standard logistic."""
    y = np.asarray(y, np.float64)
    with np.errstate(divide="ignore"):
        return special.expit(temperature * (np.log(y) - np.log1p(-y)) - logits)


def binary_concrete_density(y, logits, temperature):
    """The paper's density: tau a y^(-tau-1) (1-y)^(-tau-1) / (a y^(-tau) + (1-y)^(-tau))^2."""
    y = np.asarray(y, np.float64)
    alpha, tau = np.exp(logits), temperature
    numerator = tau * alpha * y ** (-tau - 1) * (1 - y) ** (-tau - 1)
    return numerator / (alpha * y ** (-tau) + (1 - y) ** (-tau)) ** 2


def hard_concrete_probs(log_alpha, temperature, low, high):
    """``(P(z = 0), P(z = 1))`` of the hard concrete gate, from the logistic CDF."""
    p_zero = special.expit(temperature * np.log(-low / high) - log_alpha)
    p_one = special.expit(log_alpha - temperature * np.log((1 - low) / (high - 1)))
    return p_zero, p_one


class RelaxedBernoulliTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_shape_dtype_and_range(self):
        logits = jax.random.normal(jax.random.key(0), (3, 4, 5))

        def draw(key, x):
            return [
                sample.relaxed_bernoulli(key, x.astype(dtype), 0.5, hard=hard)
                for _, dtype in FLOAT_DTYPES
                for hard in (False, True)
            ]

        values = self.variant(draw)(jax.random.key(1), logits)
        dtypes = [dtype for _, dtype in FLOAT_DTYPES for _ in (False, True)]
        for i, (y, dtype) in enumerate(zip(values, dtypes, strict=True)):
            chex.assert_shape(y, (3, 4, 5))
            chex.assert_type(y, dtype)
            y = np.asarray(y.astype(jnp.float32))
            self.assertTrue(np.all((y >= 0.0) & (y <= 1.0)))
            if i % 2:  # hard
                self.assertTrue(np.all((y == 0.0) | (y == 1.0)))

    @pytest.mark.slow
    def test_hard_is_logits_plus_noise_positive_and_soft_above_half(self):
        logits = jax.random.normal(jax.random.key(0), (20_000,)) * 2.0
        key = jax.random.key(3)
        draw = jax.jit(
            lambda x, hard: sample.relaxed_bernoulli(key, x, 0.3, hard=hard), static_argnums=1
        )
        soft, hard = np.asarray(draw(logits, False)), np.asarray(draw(logits, True))
        decided = soft != 0.5  # within an ulp of 0.5 the soft sample cannot tell
        self.assertGreater(decided.mean(), 0.999)
        np.testing.assert_array_equal(hard[decided], (soft[decided] > 0.5).astype(np.float32))
        noise = np.asarray(jax.random.logistic(key, logits.shape))
        np.testing.assert_array_equal(hard, (np.asarray(logits) + noise > 0).astype(np.float32))

    @parameterized.named_parameters(("float32", jnp.float32), ("bfloat16", jnp.bfloat16))
    @pytest.mark.slow
    def test_hard_frequencies_match_sigmoid(self, dtype):
        logits = jnp.array([-3.0, -1.0, 0.0, 0.5, 2.0], dtype)
        batch = jnp.broadcast_to(logits, (NUM_SAMPLES, logits.size))
        draw = jax.jit(lambda k, x: sample.relaxed_bernoulli(k, x, 0.5, hard=True))
        ones = np.asarray(jnp.sum(draw(jax.random.key(4), batch).astype(jnp.float32), axis=0))
        probs = special.expit(np.asarray(logits.astype(jnp.float32), np.float64))
        for count, p in zip(ones.astype(int), probs, strict=True):
            self.assertGreater(stats.binomtest(int(count), NUM_SAMPLES, p).pvalue, P_MIN)

    @parameterized.named_parameters(("cold", 0.7, 0.5), ("hot", -1.2, 2.0), ("uniform", 0.0, 1.0))
    def test_soft_samples_follow_the_binary_concrete_cdf(self, logit, temperature):
        # Colder, float32 rounds many samples to exactly 0 or 1 and the KS test needs no ties.
        batch = jnp.full((NUM_SAMPLES,), logit)
        draw = jax.jit(lambda k, x: sample.relaxed_bernoulli(k, x, temperature))
        y = np.asarray(draw(jax.random.key(5), batch), np.float64)
        pvalue = stats.kstest(y, lambda v: binary_concrete_cdf(v, logit, temperature)).pvalue
        self.assertGreater(pvalue, P_MIN)

    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_hard_gradient_equals_soft_gradient(self):
        logits = jax.random.normal(jax.random.key(0), (16, 6))
        cotangent = jax.random.normal(jax.random.key(1), (16, 6))
        key = jax.random.key(2)

        def vjp(hard):
            fn = lambda x, t: sample.relaxed_bernoulli(key, x, t, hard=hard)
            _, pullback = jax.vjp(fn, logits, jnp.float32(0.7))
            return pullback(cotangent)

        hard_grads = self.variant(lambda: vjp(True))()
        soft_grads = self.variant(lambda: vjp(False))()
        for hard_grad, soft_grad in zip(hard_grads, soft_grads, strict=True):
            np.testing.assert_allclose(hard_grad, soft_grad, rtol=1e-6, atol=1e-7)
        self.assertGreater(float(jnp.abs(hard_grads[0]).max()), 1e-3)  # not trivially zero

    @pytest.mark.slow
    def test_soft_gradient_matches_finite_differences(self):
        fn = lambda x, t: sample.relaxed_bernoulli(jax.random.key(7), x, t)
        jax.test_util.check_grads(fn, (jnp.array([0.3, -1.0, 2.0]), 0.8), order=1, rtol=1e-2)

    @parameterized.named_parameters(("soft", False), ("hard", True))
    def test_infinite_logits_are_certain_outcomes_without_nan(self, hard):
        logits = jnp.array([[jnp.inf, -jnp.inf, 0.0, 1e4, -1e4]] * 3)
        weights = jnp.arange(1.0, 6.0)
        fn = lambda x, t: sample.relaxed_bernoulli(jax.random.key(8), x, t, hard=hard)
        grad = jax.jit(jax.grad(lambda x, t: jnp.sum(fn(x, t) * weights), (0, 1)))
        for temperature in TEMPERATURES:
            y = jax.jit(fn)(logits, jnp.float32(temperature))
            np.testing.assert_array_equal(np.asarray(y[:, 0]), 1.0)
            np.testing.assert_array_equal(np.asarray(y[:, 1]), 0.0)
            grads = grad(logits, jnp.float32(temperature))
            chex.assert_tree_all_finite(grads)
            np.testing.assert_array_equal(np.asarray(grads[0][:, :2]), 0.0)

    @parameterized.named_parameters(("soft", False), ("hard", True))
    def test_nan_logits_give_nan(self, hard):
        y = sample.relaxed_bernoulli(jax.random.key(0), jnp.array([jnp.nan, 0.0]), hard=hard)
        self.assertTrue(bool(jnp.isnan(y[0])))
        self.assertFalse(bool(jnp.isnan(y[1])))

    @parameterized.named_parameters(("soft", False), ("hard", True))
    @pytest.mark.slow
    def test_extreme_inputs_finite_in_every_dtype(self, hard):
        logits = jnp.array([1e4, -1e4, 0.0, 3.0, -2.0])

        def value_and_grads(x, t):
            fn = lambda x, t: sample.relaxed_bernoulli(jax.random.key(6), x, t, hard=hard)
            loss = lambda x, t: jnp.sum(fn(x, t).astype(jnp.float32) * jnp.arange(5.0))
            return fn(x, t), jax.grad(loss, (0, 1))(x, t)

        value_and_grads = jax.jit(value_and_grads)
        for _, dtype in FLOAT_DTYPES:
            for temperature in TEMPERATURES:
                y, grads = value_and_grads(logits.astype(dtype), jnp.float32(temperature))
                chex.assert_type(y, dtype)
                chex.assert_tree_all_finite((y, grads))

    @parameterized.named_parameters(("bfloat16", jnp.bfloat16), ("float16", jnp.float16))
    @pytest.mark.slow
    def test_low_precision_is_computed_in_float32(self, dtype):
        logits = jax.random.normal(jax.random.key(0), (1000,)).astype(dtype)
        key = jax.random.key(9)
        low = sample.relaxed_bernoulli(key, logits, 0.5)
        high = sample.relaxed_bernoulli(key, logits.astype(jnp.float32), 0.5)
        chex.assert_type(low, dtype)
        np.testing.assert_array_equal(np.asarray(low), np.asarray(high.astype(dtype)))

    @pytest.mark.slow
    def test_zero_size_batch(self):
        logits = jnp.zeros((0, 3))
        for fn in (
            lambda x: sample.relaxed_bernoulli(jax.random.key(0), x, 0.5, hard=True),
            lambda x: sample.hard_concrete(jax.random.key(0), x),
            lambda x: concrete.hard_concrete_l0(x),
        ):
            chex.assert_shape(jax.jit(fn)(logits), (0, 3))
            chex.assert_shape(jax.grad(lambda x, fn=fn: jnp.sum(fn(x)))(logits), (0, 3))

    @pytest.mark.slow
    def test_traced_temperature_does_not_recompile(self):
        chex.clear_trace_counter()
        logits = jax.random.normal(jax.random.key(0), (8, 5))

        @jax.jit
        @chex.assert_max_traces(n=1)
        def loss_and_grad(key, x, temperature):
            def fn(x):
                y = sample.relaxed_bernoulli(key, x, temperature, hard=True)
                z = sample.hard_concrete(key, x, temperature)
                return jnp.sum(y**2 + z) + jnp.sum(concrete.hard_concrete_l0(x, temperature))

            return jax.value_and_grad(fn)(x)

        for temperature in (2.0, 1.0, 0.5, 0.1):
            loss_and_grad(jax.random.key(1), logits, jnp.float32(temperature))

    @pytest.mark.slow
    def test_vmap_over_keys_matches_single_calls(self):
        keys = jax.random.split(jax.random.key(0), 4)
        logits = jax.random.normal(jax.random.key(1), (3, 5))
        draw = lambda k: sample.relaxed_bernoulli(k, logits, 0.5, hard=True)
        batched = jax.jit(jax.vmap(draw))(keys)
        for i in range(4):
            np.testing.assert_array_equal(batched[i], draw(keys[i]))

    @parameterized.named_parameters(("zero", 0.0), ("negative", -1.0), ("nan", float("nan")))
    def test_bad_temperature_raises(self, temperature):
        with self.assertRaisesRegex(ValueError, "`temperature` must be"):
            sample.relaxed_bernoulli(jax.random.key(0), jnp.zeros(3), temperature)

    def test_integer_logits_raise(self):
        with self.assertRaisesRegex(TypeError, "`logits` must have a floating dtype.*int32"):
            sample.relaxed_bernoulli(jax.random.key(0), jnp.arange(3))


class HardConcreteTest(chex.TestCase):
    @parameterized.named_parameters(
        ("paper", [-1.0, 0.0, 1.5], 2 / 3, -0.1, 1.1),
        ("wider_colder", [-0.5, 0.8], 0.4, -0.3, 1.2),
    )
    def test_exact_zeros_and_ones_have_the_closed_form_probabilities(
        self, log_alpha, temperature, low, high
    ):
        log_alpha = jnp.array(log_alpha)
        batch = jnp.broadcast_to(log_alpha, (NUM_SAMPLES, log_alpha.size))
        draw = jax.jit(lambda k, x: sample.hard_concrete(k, x, temperature, low=low, high=high))
        z = np.asarray(draw(jax.random.key(10), batch))
        self.assertTrue(np.all((z >= 0.0) & (z <= 1.0)))
        p_zero, p_one = hard_concrete_probs(
            np.asarray(log_alpha, np.float64), temperature, low, high
        )
        for i in range(log_alpha.size):
            counts = [np.sum(z[:, i] == 0.0), np.sum(z[:, i] == 1.0)]
            counts.append(NUM_SAMPLES - sum(counts))
            probs = [p_zero[i], p_one[i], 1.0 - p_zero[i] - p_one[i]]
            expected = np.asarray(probs) * NUM_SAMPLES
            self.assertGreater(stats.chisquare(counts, expected).pvalue, P_MIN)
        # The expected L0 penalty is P(z != 0).
        np.testing.assert_allclose(
            concrete.hard_concrete_l0(log_alpha, temperature, low=low, high=high),
            1.0 - p_zero,
            rtol=1e-6,
            atol=1e-7,
        )
        l0_frequency = np.mean(z != 0.0, axis=0)
        np.testing.assert_allclose(l0_frequency, 1.0 - p_zero, rtol=0, atol=5 * 0.5 / 447)

    def test_is_the_stretched_and_clipped_binary_concrete_of_the_same_key(self):
        log_alpha = jax.random.normal(jax.random.key(0), (1000,))
        key = jax.random.key(11)
        s = sample.relaxed_bernoulli(key, log_alpha, 0.5)
        z = sample.hard_concrete(key, log_alpha, 0.5, low=-0.2, high=1.3)
        np.testing.assert_allclose(z, jnp.clip(-0.2 + 1.5 * s, 0.0, 1.0), rtol=1e-6, atol=1e-6)

    @pytest.mark.slow
    def test_gradient_in_log_alpha(self):
        log_alpha = jax.random.normal(jax.random.key(0), (2000,))
        key, tau, low, high = jax.random.key(12), 2 / 3, -0.1, 1.1
        grad = jax.grad(lambda x: jnp.sum(sample.hard_concrete(key, x, tau)))(log_alpha)
        s = sample.relaxed_bernoulli(key, log_alpha, tau)
        z = sample.hard_concrete(key, log_alpha, tau)
        inside = (z > 0.0) & (z < 1.0)
        expected = jnp.where(inside, (high - low) * s * (1 - s) / tau, 0.0)
        np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
        self.assertGreater(float(inside.mean()), 0.3)

    @pytest.mark.slow
    def test_infinite_and_nan_log_alpha(self):
        log_alpha = jnp.array([jnp.inf, -jnp.inf, 0.0])
        fn = lambda x, t: sample.hard_concrete(jax.random.key(0), x, t)
        for temperature in TEMPERATURES:
            z = fn(log_alpha, jnp.float32(temperature))
            np.testing.assert_array_equal(np.asarray(z[:2]), [1.0, 0.0])
            grads = jax.grad(lambda x, t: jnp.sum(fn(x, t)), (0, 1))(log_alpha, temperature)
            chex.assert_tree_all_finite(grads)
            l0_grads = jax.grad(lambda x, t: jnp.sum(concrete.hard_concrete_l0(x, t)), (0, 1))(
                log_alpha, temperature
            )
            chex.assert_tree_all_finite(l0_grads)
        np.testing.assert_array_equal(
            np.asarray(concrete.hard_concrete_l0(log_alpha[:2])), [1.0, 0.0]
        )
        self.assertTrue(bool(jnp.isnan(fn(jnp.array([jnp.nan]), 1.0)[0])))
        self.assertTrue(bool(jnp.isnan(concrete.hard_concrete_l0(jnp.array([jnp.nan]))[0])))

    def test_bfloat16_and_traced_interval(self):
        log_alpha = jnp.zeros(5, jnp.bfloat16)
        draw = jax.jit(lambda k, x, lo, hi: sample.hard_concrete(k, x, low=lo, high=hi))
        z = draw(jax.random.key(0), log_alpha, jnp.float32(-0.1), jnp.float32(1.1))
        chex.assert_type(z, jnp.bfloat16)
        chex.assert_type(concrete.hard_concrete_l0(log_alpha), jnp.bfloat16)

    @parameterized.named_parameters(
        ("low_zero", {"low": 0.0}, "`low` must be finite and < 0"),
        ("low_positive", {"low": 0.1}, "`low` must be finite and < 0"),
        ("high_one", {"high": 1.0}, "`high` must be finite and > 1"),
        ("high_inside", {"high": 0.9}, "`high` must be finite and > 1"),
        ("high_nan", {"high": float("nan")}, "`high` must be finite and > 1"),
        ("temperature", {"temperature": 0.0}, "`temperature` must be > 0"),
    )
    def test_bad_options_raise(self, kwargs, message):
        for fn in (
            lambda **kw: sample.hard_concrete(jax.random.key(0), jnp.zeros(3), **kw),
            lambda **kw: concrete.hard_concrete_l0(jnp.zeros(3), **kw),
        ):
            with self.assertRaisesRegex(ValueError, message):
                fn(**kwargs)

    def test_complex_interval_raises(self):
        with self.assertRaisesRegex(TypeError, "`low` must be a real number"):
            concrete.hard_concrete_l0(jnp.zeros(3), low=-0.1j)

    def test_integer_log_alpha_raises(self):
        with self.assertRaisesRegex(TypeError, "`log_alpha` must have a floating dtype"):
            sample.hard_concrete(jax.random.key(0), jnp.arange(3))


class BernoulliDensityTest(chex.TestCase):
    @parameterized.named_parameters(
        ("cold", 0.3, 0.4), ("hot", -1.5, 3.0), ("uniform", 0.0, 1.0), ("very_hot", 2.0, 20.0)
    )
    def test_densities_match_independent_references(self, logit, temperature):
        x = np.linspace(-30.0, 30.0, 601) / min(temperature, 1.0)
        reference = stats.logistic.logpdf(x, loc=logit / temperature, scale=1.0 / temperature)
        np.testing.assert_allclose(
            jax.jit(concrete.bernoulli_log_prob_logit)(x, logit, temperature),
            reference,
            rtol=1e-5,
            atol=1e-4,
        )
        y = np.linspace(0.001, 0.999, 999)
        np.testing.assert_allclose(
            jax.jit(concrete.bernoulli_log_prob)(y, logit, temperature),
            np.log(binary_concrete_density(y, logit, temperature)),
            rtol=1e-4,
            atol=1e-3,
        )

    @parameterized.named_parameters(
        ("cold", 0.3, 0.4), ("hot", -1.5, 3.0), ("uniform", 0.0, 1.0), ("icy", 1.0, 1e-3)
    )
    def test_densities_integrate_to_one(self, logit, temperature):
        # In the logit coordinate x both are smooth and decay exponentially: dy = y (1 - y) dx.
        half_width = 40.0 / temperature
        x = np.linspace(-half_width, half_width, 200_001) + logit / temperature
        cell = x[1] - x[0]
        log_p_x = np.asarray(jax.jit(concrete.bernoulli_log_prob_logit)(x, logit, temperature))
        self.assertAlmostEqual(
            np.sum(np.exp(np.asarray(log_p_x, np.float64))) * cell, 1.0, delta=1e-4
        )
        # The density in y, over the y with |x| < 15 (float32 rounds sigmoid(x) to 1 beyond 17):
        # its mass there is the logistic's (scipy's CDF).
        inside = np.abs(x) < 15.0
        y = special.expit(x[inside])
        log_p_y = jax.jit(concrete.bernoulli_log_prob)(y, logit, temperature)
        mass = np.sum(np.exp(np.asarray(log_p_y, np.float64) + np.log(y) + np.log1p(-y))) * cell
        logistic = stats.logistic(loc=logit / temperature, scale=1.0 / temperature)
        self.assertAlmostEqual(mass, logistic.cdf(15.0) - logistic.cdf(-15.0), delta=1e-4)

    def test_density_in_y_integrates_to_one_directly(self):
        # At temperature >= 1 the density in y is bounded; integrate it over (0, 1) itself.
        y = np.linspace(1e-7, 1.0 - 1e-7, 400_001)
        for logit, temperature in ((0.5, 1.0), (-1.0, 2.0)):
            log_p = jax.jit(concrete.bernoulli_log_prob)(y, logit, temperature)
            mass = np.trapezoid(np.exp(np.asarray(log_p, np.float64)), y)
            self.assertAlmostEqual(mass, 1.0, delta=1e-3)

    @pytest.mark.slow
    def test_jacobian_relates_the_two_densities(self):
        # |x| <= ~8: beyond, float32 rounds 1 - sigmoid(x) (the reason for the logit form).
        x = jax.random.normal(jax.random.key(0), (200,)) * 2.0
        logits = jax.random.normal(jax.random.key(1), (200,))
        y = jax.nn.sigmoid(x)
        np.testing.assert_allclose(
            concrete.bernoulli_log_prob(y, logits, 0.7),
            concrete.bernoulli_log_prob_logit(x, logits, 0.7)
            - jnp.log(y)
            - jnp.log(jax.nn.sigmoid(-x)),
            rtol=1e-4,
            atol=1e-4,
        )

    def test_log_prob_logit_is_finite_where_y_rounds_to_zero_or_one(self):
        x = jnp.array([-200.0, 200.0, 1e4])
        chex.assert_tree_all_finite(concrete.bernoulli_log_prob_logit(x, 0.0, 0.01))
        self.assertTrue(
            bool(jnp.all(jnp.isnan(concrete.bernoulli_log_prob(jnp.array([0.0, 1.0]), 0.0, 0.5))))
        )

    @pytest.mark.slow
    def test_infinite_logits_give_minus_inf_with_finite_gradients(self):
        logits = jnp.array([jnp.inf, -jnp.inf])
        value = concrete.bernoulli_log_prob_logit(jnp.zeros(2), logits, 0.5)
        np.testing.assert_array_equal(np.asarray(value), -np.inf)
        grads = jax.grad(
            lambda x, z, t: jnp.sum(concrete.bernoulli_log_prob_logit(x, z, t)), (0, 1, 2)
        )(jnp.zeros(2), logits, 0.5)
        chex.assert_tree_all_finite(grads)

    @chex.variants(with_jit=True, without_jit=True)
    def test_broadcasting_and_dtype(self):
        y = jnp.full((3, 1), 0.25, jnp.bfloat16)
        logits = jnp.zeros(4, jnp.bfloat16)
        values = self.variant(lambda y, x: concrete.bernoulli_log_prob(y, x, 0.5))(y, logits)
        chex.assert_shape(values, (3, 4))
        chex.assert_type(values, jnp.bfloat16)
        logit_values = self.variant(lambda y, x: concrete.bernoulli_log_prob_logit(y, x, 0.5))(
            y.astype(jnp.float32), logits
        )
        chex.assert_type(logit_values, jnp.float32)

    def test_shape_mismatch_and_bad_inputs_raise(self):
        with self.assertRaisesRegex(ValueError, "`y` of shape \\(3,\\) and `logits` of shape"):
            concrete.bernoulli_log_prob(jnp.full(3, 0.5), jnp.zeros(4), 1.0)
        with self.assertRaisesRegex(TypeError, "`x` must have a floating dtype"):
            concrete.bernoulli_log_prob_logit(jnp.arange(3), jnp.zeros(3), 1.0)
        with self.assertRaisesRegex(ValueError, "`temperature` must be > 0"):
            concrete.bernoulli_log_prob_logit(0.0, 0.0, -1.0)


if __name__ == "__main__":
    absltest.main()
