"""Tests for gumbel_jax.sample: shapes, dtypes, exactness, statistics, gradients and errors.

The statistical tests use fixed keys and >= 1e5 samples; chi-square and Kolmogorov-Smirnov tests
must reach a p-value above ``P_MIN`` (a correct sampler fails one of them with probability 1e-4)
and moment tests allow 5 standard errors, so they fail only on real bugs.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized
from scipy import stats

from gumbel_jax import sample

P_MIN = 1e-4
NUM_SAMPLES = 200_000
FLOAT_DTYPES = (("float32", jnp.float32), ("bfloat16", jnp.bfloat16), ("float16", jnp.float16))


def assert_exact_one_hot(testcase, y, axis=-1):
    values = np.asarray(y.astype(jnp.float32))
    testcase.assertTrue(np.all((values == 0.0) | (values == 1.0)), "entries are not 0 or 1")
    np.testing.assert_array_equal(values.sum(axis=axis), 1.0)


def category_counts(one_hot):
    return np.asarray(jnp.sum(one_hot.astype(jnp.float32), axis=0), np.float64)


def chi_square_pvalue(counts, probs):
    """Chi-square goodness-of-fit p-value of ``counts`` against probabilities ``probs``."""
    counts = np.asarray(counts, np.float64)
    probs = np.asarray(probs, np.float64)
    return stats.chisquare(counts, probs / probs.sum() * counts.sum()).pvalue


class GumbelTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_shape_dtype_and_finite(self):
        draw = self.variant(
            lambda key: [sample.gumbel(key, (64, 3, 5), dtype) for _, dtype in FLOAT_DTYPES]
        )
        for noise, (_, dtype) in zip(draw(jax.random.key(0)), FLOAT_DTYPES, strict=True):
            chex.assert_shape(noise, (64, 3, 5))
            chex.assert_type(noise, dtype)
            chex.assert_tree_all_finite(noise)

    @parameterized.named_parameters(("bfloat16", jnp.bfloat16), ("float16", jnp.float16))
    @pytest.mark.slow
    def test_low_precision_is_float32_noise_rounded(self, dtype):
        key = jax.random.key(1)
        low = sample.gumbel(key, (10_000,), dtype)
        high = sample.gumbel(key, (10_000,), jnp.float32)
        np.testing.assert_array_equal(np.asarray(low), np.asarray(high.astype(dtype)))

    @pytest.mark.slow
    def test_moments_and_distribution(self):
        n = 1_000_000
        noise = np.asarray(jax.jit(lambda k: sample.gumbel(k, (n,)))(jax.random.key(2)), np.float64)
        self.assertTrue(np.all(np.isfinite(noise)))
        variance = np.pi**2 / 6
        # Mean: the Euler-Mascheroni constant, within 5 standard errors.
        self.assertLess(abs(noise.mean() - np.euler_gamma), 5 * np.sqrt(variance / n))
        # Variance: the Gumbel's excess kurtosis is 12/5, so Var(s^2) = (2 + 12/5) sigma^4 / n.
        self.assertLess(abs(noise.var() - variance), 5 * variance * np.sqrt(4.4 / n))
        self.assertGreater(stats.kstest(noise, stats.gumbel_r.cdf).pvalue, P_MIN)

    def test_integer_dtype_raises(self):
        with self.assertRaisesRegex(TypeError, "`dtype` must be a floating dtype.*int32"):
            sample.gumbel(jax.random.key(0), (3,), jnp.int32)


class GumbelSoftmaxTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("first", 0), ("middle", 1), ("last", -1))
    @pytest.mark.slow
    def test_shape_and_simplex(self, axis):
        logits = jax.random.normal(jax.random.key(0), (3, 4, 5))
        soft, hard = self.variant(
            lambda key, x: [
                sample.gumbel_softmax(key, x, 0.5, hard=hard, axis=axis) for hard in (False, True)
            ]
        )(jax.random.key(1), logits)
        chex.assert_shape([soft, hard], logits.shape)
        chex.assert_type([soft, hard], jnp.float32)
        assert_exact_one_hot(self, hard, axis)
        self.assertTrue(bool(jnp.all(soft >= 0.0)))
        np.testing.assert_allclose(np.asarray(soft.sum(axis=axis)), 1.0, rtol=0, atol=1e-5)
        # The hard sample is the one-hot of the soft sample's argmax.
        np.testing.assert_array_equal(
            np.asarray(jnp.argmax(hard, axis)), np.asarray(jnp.argmax(soft, axis))
        )

    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_hard_is_exact_one_hot_in_every_dtype(self):
        logits = jax.random.normal(jax.random.key(0), (256, 7))
        key = jax.random.key(3)

        def draw(k, x):
            return [
                (
                    sample.gumbel_softmax(k, x.astype(dtype), 0.3, hard=True),
                    sample.gumbel_max(k, x.astype(dtype)),
                )
                for _, dtype in FLOAT_DTYPES
            ]

        for (hard, exact), (_, dtype) in zip(
            self.variant(draw)(key, logits), FLOAT_DTYPES, strict=True
        ):
            chex.assert_type([hard, exact], dtype)
            assert_exact_one_hot(self, hard)
            # The hard sample is the Gumbel-max sample of the same key.
            np.testing.assert_array_equal(
                np.asarray(hard.astype(jnp.float32)), np.asarray(exact.astype(jnp.float32))
            )

    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_hard_gradient_equals_soft_gradient(self):
        logits = jax.random.normal(jax.random.key(0), (16, 6))
        cotangent = jax.random.normal(jax.random.key(1), (16, 6))
        key = jax.random.key(2)

        def vjp(hard):
            fn = lambda x, t: sample.gumbel_softmax(key, x, t, hard=hard)
            _, pullback = jax.vjp(fn, logits, jnp.float32(0.7))
            return pullback(cotangent)

        hard_grads = self.variant(lambda: vjp(True))()
        soft_grads = self.variant(lambda: vjp(False))()
        for hard_grad, soft_grad in zip(hard_grads, soft_grads, strict=True):
            np.testing.assert_allclose(hard_grad, soft_grad, rtol=1e-6, atol=1e-7)
        self.assertGreater(float(jnp.abs(hard_grads[0]).max()), 1e-3)  # not trivially zero

    @parameterized.named_parameters(("gumbel_max", False), ("hard_gumbel_softmax", True))
    @pytest.mark.slow
    def test_frequencies_match_softmax(self, via_softmax):
        logits = jnp.array([1.0, -0.5, 0.3, -jnp.inf, 2.0, 0.0])
        batch = jnp.broadcast_to(logits, (NUM_SAMPLES, logits.size))
        if via_softmax:
            draw = jax.jit(lambda k, x: sample.gumbel_softmax(k, x, 0.5, hard=True))
        else:
            draw = jax.jit(lambda k, x: sample.gumbel_max(k, x))
        counts = category_counts(draw(jax.random.key(4), batch))
        self.assertEqual(counts[3], 0.0)  # the masked category is never drawn
        probs = np.asarray(jax.nn.softmax(logits))
        unmasked = np.isfinite(np.asarray(logits))
        self.assertGreater(chi_square_pvalue(counts[unmasked], probs[unmasked]), P_MIN)

    @parameterized.named_parameters(("soft", False), ("hard", True))
    @pytest.mark.slow
    def test_masked_logits_no_nan(self, hard):
        logits = jnp.array([[0.5, -jnp.inf, 2.0, -jnp.inf, 0.0]] * 4)
        weights = jnp.arange(5.0)
        fn = lambda x, t: sample.gumbel_softmax(jax.random.key(5), x, t, hard=hard)
        value_and_grads = jax.jit(
            lambda x, t: (
                fn(x, t),
                jax.grad(lambda x, t: jnp.sum(fn(x, t) * weights), (0, 1))(x, t),
            )
        )
        for temperature in (1e-3, 1.0, 1e3):
            y, grads = value_and_grads(logits, jnp.float32(temperature))
            np.testing.assert_array_equal(np.asarray(y[:, [1, 3]]), 0.0)
            chex.assert_tree_all_finite(grads)
            np.testing.assert_array_equal(np.asarray(grads[0][:, [1, 3]]), 0.0)

    @parameterized.named_parameters(("soft", False), ("hard", True))
    @pytest.mark.slow
    def test_extreme_inputs_finite(self, hard):
        logits = jnp.array([[1e4, -1e4, 0.0, 3.0], [-1e4, -1e4, -1e4, -1e4]])

        def value_and_grads(x, t):
            fn = lambda x, t: sample.gumbel_softmax(jax.random.key(6), x, t, hard=hard)
            loss = lambda x, t: jnp.sum(fn(x, t).astype(jnp.float32) * jnp.arange(4.0))
            return fn(x, t), jax.grad(loss, (0, 1))(x, t)

        value_and_grads = jax.jit(value_and_grads)
        for _, dtype in FLOAT_DTYPES:
            for temperature in (1e-3, 1.0, 1e3):
                y, grads = value_and_grads(logits.astype(dtype), jnp.float32(temperature))
                chex.assert_type(y, dtype)
                chex.assert_tree_all_finite((y, grads))

    @pytest.mark.slow
    def test_traced_temperature_does_not_recompile(self):
        chex.clear_trace_counter()
        logits = jax.random.normal(jax.random.key(0), (8, 5))

        @jax.jit
        @chex.assert_max_traces(n=1)
        def loss_and_grad(key, x, temperature):
            fn = lambda x: jnp.sum(sample.gumbel_softmax(key, x, temperature, hard=True) ** 2)
            return jax.value_and_grad(fn)(x)

        for temperature in (2.0, 1.0, 0.5, 0.1):
            loss_and_grad(jax.random.key(1), logits, jnp.float32(temperature))

    @pytest.mark.slow
    def test_vmap_over_keys_matches_single_calls(self):
        keys = jax.random.split(jax.random.key(0), 4)
        logits = jax.random.normal(jax.random.key(1), (3, 5))
        draw = lambda k: sample.gumbel_softmax(k, logits, 0.5, hard=True)
        batched = jax.jit(jax.vmap(draw))(keys)
        single = jax.jit(draw)
        for i in range(4):
            np.testing.assert_array_equal(batched[i], single(keys[i]))

    @pytest.mark.slow
    def test_zero_traced_temperature_gives_nan(self):
        # Documented: a traced temperature is not checked; 0 gives NaN.
        y = jax.jit(lambda t: sample.gumbel_softmax(jax.random.key(0), jnp.zeros(3), t))(0.0)
        self.assertTrue(bool(jnp.all(jnp.isnan(y))))

    @parameterized.named_parameters(("zero", 0.0), ("negative", -1.0), ("nan", float("nan")))
    def test_bad_temperature_raises(self, temperature):
        with self.assertRaisesRegex(ValueError, "`temperature` must be"):
            sample.gumbel_softmax(jax.random.key(0), jnp.zeros(3), temperature)

    def test_integer_logits_raise(self):
        with self.assertRaisesRegex(TypeError, "`logits` must have a floating dtype.*int32"):
            sample.gumbel_softmax(jax.random.key(0), jnp.arange(3))

    @parameterized.named_parameters(("too_large", 2), ("too_small", -3))
    def test_axis_out_of_range_raises(self, axis):
        with self.assertRaisesRegex(ValueError, rf"`axis` must be in \[-2, 2\).*axis={axis}"):
            sample.gumbel_softmax(jax.random.key(0), jnp.zeros((2, 3)), axis=axis)

    def test_scalar_logits_raise(self):
        with self.assertRaisesRegex(ValueError, "at least one dimension"):
            sample.gumbel_softmax(jax.random.key(0), jnp.float32(1.0))


@pytest.mark.slow
class GumbelMaxTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_one_hot_shape_and_dtype(self):
        draw = lambda k: [
            sample.gumbel_max(k, jnp.zeros((5, 3, 4), dtype), axis=1) for _, dtype in FLOAT_DTYPES
        ]
        for y, (_, dtype) in zip(self.variant(draw)(jax.random.key(0)), FLOAT_DTYPES, strict=True):
            chex.assert_shape(y, (5, 3, 4))
            chex.assert_type(y, dtype)
            assert_exact_one_hot(self, y, axis=1)

    def test_gradient_is_zero(self):
        grad = jax.grad(lambda x: jnp.sum(sample.gumbel_max(jax.random.key(0), x) * 3.0))(
            jnp.ones(4)
        )
        np.testing.assert_array_equal(np.asarray(grad), 0.0)


class GumbelTopKTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("last", -1, (2, 6, 4)), ("middle", 1, (2, 4, 6)))
    @pytest.mark.slow
    def test_shape_dtype_and_distinct(self, axis, expected_shape):
        logits = jax.random.normal(jax.random.key(0), (2, 6, 6))
        indices = self.variant(lambda k, x: sample.gumbel_top_k(k, x, 4, axis=axis))(
            jax.random.key(1), logits
        )
        chex.assert_shape(indices, expected_shape)
        chex.assert_type(indices, jnp.int32)
        picks = np.moveaxis(np.asarray(indices), axis, -1).reshape(-1, 4)
        for row in picks:
            self.assertLen(set(row.tolist()), 4)

    @pytest.mark.slow
    def test_k_equal_to_num_categories_is_a_permutation(self):
        indices = sample.gumbel_top_k(jax.random.key(0), jnp.zeros((10, 5)), 5)
        np.testing.assert_array_equal(np.sort(np.asarray(indices), axis=-1), [list(range(5))] * 10)

    @pytest.mark.slow
    def test_first_and_second_picks_follow_plackett_luce(self):
        logits = jnp.array([0.8, -0.4, 0.0, 1.2])
        batch = jnp.broadcast_to(logits, (NUM_SAMPLES, 4))
        indices = np.asarray(
            jax.jit(lambda k, x: sample.gumbel_top_k(k, x, 2))(jax.random.key(7), batch)
        )
        p = np.asarray(jax.nn.softmax(logits), np.float64)
        # First picks follow softmax(logits).
        first = np.bincount(indices[:, 0], minlength=4)
        self.assertGreater(chi_square_pvalue(first, p), P_MIN)
        # Ordered pairs follow P(i, j) = p_i p_j / (1 - p_i): draws without replacement.
        pair_counts = np.zeros((4, 4))
        np.add.at(pair_counts, (indices[:, 0], indices[:, 1]), 1)
        pair_probs = p[:, None] * p[None, :] / (1.0 - p[:, None])
        off_diagonal = ~np.eye(4, dtype=bool)
        self.assertEqual(pair_counts[~off_diagonal].sum(), 0)
        self.assertGreater(
            chi_square_pvalue(pair_counts[off_diagonal], pair_probs[off_diagonal]), P_MIN
        )

    @pytest.mark.slow
    def test_masked_categories_never_picked_while_others_remain(self):
        logits = jnp.array([[0.0, -jnp.inf, 1.0, -jnp.inf, -2.0]] * 500)
        indices = np.asarray(sample.gumbel_top_k(jax.random.key(0), logits, 3))
        self.assertTrue(np.all((indices != 1) & (indices != 3)))

    @parameterized.named_parameters(
        ("zero", 0, "`k` must be >= 1"), ("too_many", 6, "`k` must be <=")
    )
    def test_bad_k_raises(self, k, message):
        with self.assertRaisesRegex(ValueError, message):
            sample.gumbel_top_k(jax.random.key(0), jnp.zeros((2, 5)), k)

    def test_non_integer_k_raises(self):
        with self.assertRaisesRegex(TypeError, "`k` must be a Python int"):
            sample.gumbel_top_k(jax.random.key(0), jnp.zeros(5), 2.0)

    def test_axis_out_of_range_raises(self):
        with self.assertRaisesRegex(ValueError, "`axis` must be in"):
            sample.gumbel_top_k(jax.random.key(0), jnp.zeros(5), 2, axis=1)


if __name__ == "__main__":
    absltest.main()
