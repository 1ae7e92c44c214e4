"""Tests for gumbel_jax.estimators: forward samples, gradients against references, and errors.

Statistical tests use fixed keys, >= 1e5 draws and a chi-square / Kolmogorov-Smirnov p-value
threshold ``P_MIN``, or 5 standard errors for means, so they fail only on real bugs.
"""

from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized
from scipy import stats

from gumbel_jax import _ops, _random, estimators, sample
from gumbel_jax.estimators import _gumbel_rao, _straight_through

P_MIN = 1e-4
NUM_SAMPLES = 100_000
HARD_NAMES = ("st", "gumbel-rao", "reinmax")
FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def chi_square_pvalue(counts, probs):
    counts = np.asarray(counts, np.float64)
    probs = np.asarray(probs, np.float64)
    return stats.chisquare(counts, probs / probs.sum() * counts.sum()).pvalue


def softmax_jacobian(p):
    return np.diag(p) - np.outer(p, p)


class RegistryTest(parameterized.TestCase):
    def test_names_and_functions(self):
        self.assertEqual(estimators.NAMES, estimators.names(kind="sample"))
        self.assertContainsSubset(("relaxed", "st", "gumbel-rao", "reinmax"), estimators.NAMES)
        self.assertIs(estimators.get("relaxed"), estimators.gumbel_softmax)
        self.assertIs(estimators.get("st"), estimators.straight_through)
        self.assertIs(estimators.get("gumbel-rao"), estimators.gumbel_rao)
        self.assertIs(estimators.get("reinmax"), estimators.reinmax)

    @parameterized.named_parameters(("typo", "gumbel_rao"), ("not_a_string", 3))
    def test_unknown_name_lists_the_known_ones(self, name):
        with self.assertRaisesRegex(ValueError, "Unknown estimator") as raised:
            estimators.get(name)
        for known in estimators.NAMES:
            self.assertIn(repr(known), str(raised.exception))


@pytest.mark.slow
class ForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_exact_one_hot_in_every_dtype(self):
        axis = 0  # a non-default category axis
        logits = jax.random.normal(jax.random.key(0), (4, 6))

        def draw(key, x):
            return {
                (name, jnp.dtype(dtype).name): estimators.get(name)(
                    key, x.astype(dtype), 1.5, axis=axis
                )
                for name in HARD_NAMES
                for dtype in FLOAT_DTYPES
            }

        for (_, dtype), y in self.variant(draw)(jax.random.key(1), logits).items():
            chex.assert_shape(y, (4, 6))
            chex.assert_type(y, jnp.dtype(dtype))
            values = np.asarray(y.astype(jnp.float32))
            self.assertTrue(np.all((values == 0.0) | (values == 1.0)))
            np.testing.assert_array_equal(values.sum(axis=axis), 1.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_relaxed_is_on_the_simplex(self):
        y = self.variant(lambda k: estimators.gumbel_softmax(k, jnp.zeros((3, 5)), 0.5))(
            jax.random.key(0)
        )
        chex.assert_shape(y, (3, 5))
        np.testing.assert_allclose(np.asarray(y.sum(-1)), 1.0, rtol=0, atol=1e-5)

    @parameterized.named_parameters(("gumbel_rao", "gumbel-rao"), ("reinmax", "reinmax"))
    def test_forward_frequencies_match_softmax(self, name):
        logits = jnp.array([1.0, -0.5, -jnp.inf, 0.3, 2.0])
        batch = jnp.broadcast_to(logits, (NUM_SAMPLES, 5))
        draw = jax.jit(lambda k, x: estimators.get(name)(k, x, 1.5))
        counts = np.asarray(jnp.sum(draw(jax.random.key(8), batch), axis=0), np.float64)
        self.assertEqual(counts[2], 0.0)
        unmasked = np.array([0, 1, 3, 4])
        probs = np.asarray(jax.nn.softmax(logits))[unmasked]
        self.assertGreater(chi_square_pvalue(counts[unmasked], probs), P_MIN)

    def test_straight_through_is_hard_gumbel_softmax(self):
        logits = jax.random.normal(jax.random.key(0), (8, 5))
        cotangent = jax.random.normal(jax.random.key(1), (8, 5))
        key = jax.random.key(2)

        @jax.jit
        def values_and_vjps(x, g):
            outputs = []
            for fn in (
                lambda x: estimators.straight_through(key, x, 0.6),
                lambda x: sample.gumbel_softmax(key, x, 0.6, hard=True),
            ):
                y, pullback = jax.vjp(fn, x)
                outputs.append((y, pullback(g)[0]))
            return outputs

        outputs = values_and_vjps(logits, cotangent)
        np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
        np.testing.assert_array_equal(outputs[0][1], outputs[1][1])


class GumbelRaoTest(chex.TestCase):
    @pytest.mark.slow
    def test_conditional_noise_keeps_the_sample_and_is_gumbel(self):
        logits = jnp.array([1.0, -0.5, 0.3, -jnp.inf, 2.0])
        batch = jnp.broadcast_to(logits, (NUM_SAMPLES, 5))

        @jax.jit
        def draw(key):
            key_sample, key_noise = jax.random.split(key)
            hard = sample.gumbel_max(key_sample, batch)
            noise = _gumbel_rao._conditional_gumbel(key_noise, batch, hard, 2, 1)
            return hard, noise

        hard, noise = draw(jax.random.key(3))
        chex.assert_shape(noise, (2, NUM_SAMPLES, 5))
        np.testing.assert_array_equal(np.asarray(noise[:, :, 3]), 0.0)
        perturbed = np.asarray(batch + noise)
        at_sample = np.sum(np.where(np.asarray(hard) > 0, perturbed, 0.0), axis=-1)
        # Every conditional sample has its maximum at the drawn category.
        self.assertTrue(np.all(perturbed <= at_sample[..., None]))
        # Averaged over the drawn category, the noise is standard Gumbel again.
        for category in (0, 1, 2, 4):
            pvalue = stats.kstest(np.asarray(noise[0, :, category]), stats.gumbel_r.cdf).pvalue
            self.assertGreater(pvalue, P_MIN, f"category {category}")
        self.assertFalse(np.array_equal(noise[0], noise[1]))

    @pytest.mark.slow
    def test_same_expected_gradient_as_straight_through_and_lower_variance(self):
        logits = jnp.array([0.5, -0.3, 0.1])
        weights = jnp.array([1.0, -2.0, 0.5])
        num_keys = 20_000

        def gradients(estimator):
            def loss(x, key):
                return (jnp.dot(estimator(key, x), weights) - 0.3) ** 2

            keys = jax.random.split(jax.random.key(4), num_keys)
            grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(logits, keys)
            return np.asarray(grads, np.float64)

        straight = gradients(lambda k, x: estimators.straight_through(k, x, 0.7))
        rao = gradients(lambda k, x: estimators.gumbel_rao(k, x, 0.7, num_samples=64))
        standard_error = np.sqrt((straight.var(0) + rao.var(0)) / num_keys)
        np.testing.assert_array_less(np.abs(straight.mean(0) - rao.mean(0)), 5 * standard_error)
        self.assertGreater(np.abs(straight.mean(0)).max(), 10 * standard_error.max())
        # Rao-Blackwellisation lowers the total variance; each total is a mean of squared
        # deviations, whose standard error comes from the same draws.
        totals, errors = [], []
        for grads in (rao, straight):
            squared_deviations = np.sum((grads - grads.mean(0)) ** 2, axis=1)
            totals.append(squared_deviations.mean())
            errors.append(squared_deviations.std() / np.sqrt(num_keys))
        self.assertLess(totals[0] + 5 * errors[0], totals[1] - 5 * errors[1])

    @parameterized.named_parameters(
        ("k10_scalar_temperature", 10, 0.7),
        ("k3_odd", 3, 1.3),
        ("k1", 1, 0.5),
        ("per_row", 4, None),
        # The backward pass in chunks of rows (16 * 3 = 48 rows of 6 categories, 2 * ceil(k / 2)
        # variates per logit): 9 scan steps of 5 rows, then 3 rows (k odd: the last block's
        # second word unused); 48 steps of 1 row; 3 steps of 16 rows.
        ("k9_scan_then_rows", 9, 0.7, 5 * 60),
        ("k8_one_row_per_step", 8, None, 1),
        ("k10_scan_only", 10, 1.3, 16 * 60),
        # The category axis in the middle: rows gathered across it, per-row temperatures along
        # the last axis.
        ("axis1", 5, None, None, 1),
        ("axis1_chunked", 6, 0.7, 7 * 36, 1),
    )
    @pytest.mark.slow
    def test_backward_is_the_rao_blackwellised_softmax_of_the_conditional_noise(
        self, num_samples, temperature, chunk_variates=None, axis=2
    ):
        # The custom VJP (noise drawn again in the backward pass, closed form) against autodiff
        # of the direct formula: mean_k softmax((logits + G_k) / tau), G_k = _conditional_gumbel
        # with the same key, treated as constants.
        if chunk_variates is not None:
            self.enter_context(
                mock.patch.object(_gumbel_rao, "_chunk_variates", lambda: chunk_variates)
            )
        logits = 2.0 * jax.random.normal(jax.random.key(5), (16, 3, 6))
        logits = jnp.moveaxis(logits.at[:, 0, 2].set(-jnp.inf), 2, axis)
        cotangent = jnp.moveaxis(jax.random.normal(jax.random.key(6), (16, 3, 6)), 2, axis)
        per_row = jnp.linspace(0.5, 2.0, 3)
        tau = (
            jnp.float32(temperature) if temperature else per_row[:, None] if axis == 2 else per_row
        )
        key = jax.random.key(7)

        def direct(x, t):
            key_sample, key_noise = jax.random.split(key)
            hard = _straight_through.one_hot_sample(key_sample, x, axis)
            noise = _gumbel_rao._conditional_gumbel(key_noise, x, hard, num_samples, axis)
            soft = jax.nn.softmax(_ops.tempered_logits(x, noise, t), axis=axis + 1)
            return _ops.hard_with_soft_gradient(jnp.mean(soft, axis=0), hard)

        def rao(x, t):
            return estimators.gumbel_rao(key, x, t, num_samples=num_samples, axis=axis)

        outputs = []
        for fn in (direct, rao):
            value, pullback = jax.vjp(fn, logits, tau)
            outputs.append((value, *pullback(cotangent)))
        (expected_value, expected_x, expected_t), (value, grad_x, grad_t) = outputs
        np.testing.assert_array_equal(value, expected_value)
        np.testing.assert_allclose(grad_x, expected_x, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.moveaxis(np.asarray(grad_x), axis, 2)[:, 0, 2], 0.0)
        chex.assert_shape(grad_t, jnp.shape(tau))
        np.testing.assert_allclose(grad_t, expected_t, rtol=1e-4, atol=1e-5)

    @pytest.mark.slow
    def test_a_zero_uniform_gives_a_finite_exponential_under_jit(self):
        # U = 0 (23 zero bits, one draw in 2**23) must give -log(tiny), not inf: XLA folds
        # (x - 1) + tiny into x - 1 under jit.
        words = jnp.array([0, 511, 512, 2**32 - 1], jnp.uint32)
        for fn in (_random.uniform_to_exponential, jax.jit(_random.uniform_to_exponential)):
            e = np.asarray(fn(words))
            np.testing.assert_allclose(e[:2], -np.log(np.finfo(np.float32).tiny), rtol=1e-6)
            self.assertTrue(np.all(np.isfinite(e)) and np.all(e > 0))

    @pytest.mark.slow
    def test_gradient_finite_when_every_uniform_is_zero_and_a_probability_underflows(self):
        # All conditional exponentials at their largest value, and a category whose probability
        # underflows (1 / p = inf): the jitted backward pass once gave NaN here.
        def zero_bits(key0, key1, x0, x1):  # 0 for these counters, not a constant XLA could fold
            return x0 >> jnp.uint32(31), x1 >> jnp.uint32(31)

        self.enter_context(mock.patch.object(_random, "threefry_2x32", zero_bits))
        logits = jnp.array([[0.0, -100.0, 5.0, 1.0]] * 8)

        def loss(x):
            y = estimators.gumbel_rao(jax.random.key(0), x, 0.5, num_samples=4)
            return jnp.sum(y * jnp.arange(4.0))

        chex.assert_tree_all_finite(jax.jit(jax.grad(loss))(logits))

    @pytest.mark.slow
    def test_unrolled_threefry_is_jax_threefry(self):
        from jax.extend.random import threefry_2x32

        seed = jax.random.bits(jax.random.key(9), (2,), jnp.uint32)
        counters = jnp.arange(1001, dtype=jnp.uint32) * jnp.uint32(2654435761)
        zeros = jnp.zeros_like(counters)
        expected = threefry_2x32(seed, jnp.concatenate([counters, zeros]))
        unrolled = jax.jit(_random.threefry_2x32)(seed[0], seed[1], counters, zeros)
        np.testing.assert_array_equal(jnp.concatenate(unrolled), expected)

    @pytest.mark.slow
    def test_masked_logits_no_nan(self):
        logits = jnp.array([[0.5, -jnp.inf, 2.0, 0.0]] * 3)

        def loss(x, t):
            return jnp.sum(estimators.gumbel_rao(jax.random.key(0), x, t) * jnp.arange(4.0))

        value_and_grads = jax.jit(jax.value_and_grad(loss, (0, 1)))
        for temperature in (1e-3, 1.0, 1e3):
            _, grads = value_and_grads(logits, jnp.float32(temperature))
            chex.assert_tree_all_finite(grads)
            np.testing.assert_array_equal(np.asarray(grads[0][:, 1]), 0.0)

    @parameterized.named_parameters(("zero", 0, ValueError), ("float", 2.5, TypeError))
    def test_bad_num_samples_raises(self, num_samples, error):
        with self.assertRaisesRegex(error, "`num_samples` must be"):
            estimators.gumbel_rao(jax.random.key(0), jnp.zeros(3), num_samples=num_samples)


class ReinMaxTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_gradient_matches_the_formula(self):
        logits = np.array([0.5, -1.0, 2.0, 0.2])
        incoming = np.array([0.3, -1.2, 0.7, 2.0])
        temperature = 2.0
        keys = jax.random.split(jax.random.key(5), 12)

        def sample_and_gradient(key):
            y, pullback = jax.vjp(
                lambda x: estimators.reinmax(key, x, temperature), jnp.asarray(logits, jnp.float32)
            )
            return y, pullback(jnp.asarray(incoming, jnp.float32))[0]

        samples, grads = self.variant(jax.vmap(sample_and_gradient))(keys)
        pi0 = np.asarray(jax.nn.softmax(logits), np.float64)
        tempered = np.asarray(jax.nn.softmax(logits / temperature), np.float64)
        seen = set()
        for one_hot, grad in zip(np.asarray(samples), np.asarray(grads), strict=True):
            pi1 = (tempered + one_hot) / 2
            expected = 2 * softmax_jacobian(pi1) @ incoming - softmax_jacobian(pi0) @ incoming / 2
            np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
            seen.add(int(one_hot.argmax()))
        self.assertGreater(len(seen), 1)  # the check covered several sampled categories

    @pytest.mark.slow
    def test_gradient_along_another_axis_and_in_bfloat16(self):
        logits = jax.random.normal(jax.random.key(0), (4, 3))
        incoming = jax.random.normal(jax.random.key(1), (4, 3))
        key = jax.random.key(2)

        @jax.jit
        def vjp(x, g):
            y, pullback = jax.vjp(lambda x: estimators.reinmax(key, x, 1.5, axis=0), x)
            return y, pullback(g)[0]

        samples, grads = vjp(logits, incoming)
        for column in range(3):  # the categories are on axis 0: one distribution per column
            x, g = np.asarray(logits[:, column], np.float64), np.asarray(incoming[:, column])
            pi0 = np.asarray(jax.nn.softmax(x), np.float64)
            pi1 = (np.asarray(jax.nn.softmax(x / 1.5), np.float64) + samples[:, column]) / 2
            expected = 2 * softmax_jacobian(pi1) @ g - softmax_jacobian(pi0) @ g / 2
            np.testing.assert_allclose(grads[:, column], expected, rtol=1e-5, atol=1e-6)
        # bfloat16 inputs are computed in float32: the same as float32 on the rounded inputs.
        logits_low, incoming_low = logits.astype(jnp.bfloat16), incoming.astype(jnp.bfloat16)
        _, low = vjp(logits_low, incoming_low)
        _, reference = vjp(logits_low.astype(jnp.float32), incoming_low.astype(jnp.float32))
        chex.assert_type(low, jnp.bfloat16)
        np.testing.assert_allclose(low.astype(jnp.float32), reference, rtol=1e-2, atol=1e-3)

    def test_temperature_below_one_raises_with_the_recommendation(self):
        with self.assertRaisesRegex(ValueError, "`temperature` must be >= 1.0; got 0.5.*recommend"):
            estimators.reinmax(jax.random.key(0), jnp.zeros(3), 0.5)

    @pytest.mark.slow
    def test_traced_temperature_below_one_is_used_as_given(self):
        grad = jax.jit(
            jax.grad(lambda x, t: jnp.sum(estimators.reinmax(jax.random.key(0), x, t) ** 2))
        )(jnp.array([0.1, 0.2, 0.3]), jnp.float32(0.5))
        chex.assert_tree_all_finite(grad)


class SharedBehaviourTest(chex.TestCase):
    @parameterized.named_parameters(*[(name.replace("-", "_"), name) for name in estimators.NAMES])
    @pytest.mark.slow
    def test_an_empty_batch_has_empty_samples_and_gradients(self, name):
        estimator = estimators.spec(name).bind()  # the temperature dropped where it has none
        logits = jnp.zeros((0, 5))
        y = estimator(jax.random.key(0), logits, 1.5)
        grad = jax.grad(lambda x: jnp.sum(estimator(jax.random.key(0), x, 1.5)))(logits)
        chex.assert_shape([y, grad], (0, 5))

    @parameterized.named_parameters(*[(name.replace("-", "_"), name) for name in estimators.NAMES])
    @pytest.mark.slow
    def test_masked_and_extreme_inputs_finite(self, name):
        estimator = estimators.spec(name).bind()
        weights = jnp.arange(4.0)

        @jax.jit
        def values_and_grads(logits_by_dtype, t):
            def loss(x, t):
                return jnp.sum(estimator(jax.random.key(0), x, t).astype(jnp.float32) * weights)

            return [
                (estimator(jax.random.key(0), x, t), jax.grad(loss, (0, 1))(x, t))
                for x in logits_by_dtype
            ]

        logits = jnp.array([[1e4, -1e4, 0.0, 3.0], [0.5, -jnp.inf, 2.0, -jnp.inf]])
        logits_by_dtype = [logits.astype(dtype) for dtype in FLOAT_DTYPES]
        floor = estimators.spec(name).min_temperature
        temperatures = (1e-3, 1.0, 1e3) if floor is None else (floor, 1e3)
        for temperature in temperatures:
            results = values_and_grads(logits_by_dtype, jnp.float32(temperature))
            for (y, grads), dtype in zip(results, FLOAT_DTYPES, strict=True):
                chex.assert_type(y, dtype)
                chex.assert_tree_all_finite((y, grads))
                np.testing.assert_array_equal(np.asarray(y[1, [1, 3]], np.float32), 0.0)
                np.testing.assert_array_equal(np.asarray(grads[0][1, [1, 3]], np.float32), 0.0)

    @parameterized.named_parameters(*[(name.replace("-", "_"), name) for name in estimators.NAMES])
    @pytest.mark.slow
    def test_annealing_does_not_recompile(self, name):
        estimator = estimators.spec(name).bind()
        chex.clear_trace_counter()  # the counter is keyed by code, shared by the parameters

        @jax.jit
        @chex.assert_max_traces(n=1)
        def loss_and_grad(key, x, temperature):
            return jax.value_and_grad(lambda x: jnp.sum(estimator(key, x, temperature) ** 2))(x)

        logits = jax.random.normal(jax.random.key(0), (8, 5))
        for temperature in (5.0, 3.0, 2.0, 1.0):
            loss_and_grad(jax.random.key(1), logits, jnp.float32(temperature))

    @parameterized.named_parameters(*[(name.replace("-", "_"), name) for name in estimators.NAMES])
    def test_bad_inputs_raise(self, name):
        estimator = estimators.get(name)
        key = jax.random.key(0)
        with self.assertRaisesRegex(TypeError, "`logits` must have a floating dtype.*int32"):
            estimator(key, jnp.arange(3))
        with self.assertRaisesRegex(ValueError, r"`axis` must be in \[-1, 1\).*axis=1"):
            estimator(key, jnp.zeros(3), axis=1)
        if estimators.spec(name).uses_temperature:
            with self.assertRaisesRegex(ValueError, "`temperature` must be"):
                estimator(key, jnp.zeros(3), 0.0)
            with self.assertRaisesRegex(ValueError, "`temperature` must be"):
                estimator(key, jnp.zeros(3), -2.0)


if __name__ == "__main__":
    absltest.main()
