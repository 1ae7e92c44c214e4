"""Tests for sample.relaxed_top_k, the relaxed k-subset of Xie & Ermon (2019).

The reference is written here from the paper, in float64 NumPy: with ``alpha = logits + G`` (the
noise that ``sample.gumbel`` draws for the key), ``a_j = softmax(alpha_j / t)``,
``alpha_{j+1} = alpha_j + log(1 - a_j)``, the sample is ``sum_j a_j``. The hard sample is checked
against the k-hot of ``gumbel_top_k``'s indices for the same key, whose own statistics
(Plackett-Luce) tests/test_sample.py checks.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from gumbel_jax import sample

FLOAT_DTYPES = (("float32", jnp.float32), ("bfloat16", jnp.bfloat16), ("float16", jnp.float16))
TEMPERATURES = (1e-3, 1.0, 1e3)


def reference_relaxed_top_k(key, logits, k, temperature):
    """Xie & Ermon's algorithm in float64 (categories on the last axis)."""
    noise = np.asarray(sample.gumbel(key, logits.shape), np.float64)
    alpha = np.asarray(logits, np.float64) + noise
    total = np.zeros_like(alpha)
    for _ in range(k):
        scores = alpha / temperature
        a = np.exp(scores - scores.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        total += a
        with np.errstate(divide="ignore"):
            alpha = alpha + np.log1p(-a)
    return total


def k_hot_of(indices, num_categories):
    return np.asarray(jax.nn.one_hot(indices, num_categories).sum(-2))


class RelaxedTopKTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("first", 0), ("middle", 1), ("last", -1))
    @pytest.mark.slow
    def test_shape_dtype_and_sums_to_k(self, axis):
        logits = jax.random.normal(jax.random.key(0), (6, 7, 6))
        soft, hard = self.variant(
            lambda key, x: [
                sample.relaxed_top_k(key, x, 3, 0.5, hard=hard, axis=axis) for hard in (False, True)
            ]
        )(jax.random.key(1), logits)
        chex.assert_shape([soft, hard], logits.shape)
        chex.assert_type([soft, hard], jnp.float32)
        self.assertTrue(bool(jnp.all(soft >= 0.0)))
        np.testing.assert_allclose(soft.sum(axis), 3.0, rtol=0, atol=1e-5)
        self.assertTrue(bool(jnp.all((hard == 0.0) | (hard == 1.0))))
        np.testing.assert_array_equal(np.asarray(hard.sum(axis)), 3.0)

    @parameterized.named_parameters(("cold", 0.3), ("warm", 1.0), ("hot", 5.0))
    @pytest.mark.slow
    def test_soft_matches_the_papers_algorithm(self, temperature):
        logits = jax.random.normal(jax.random.key(0), (200, 8)) * 2.0
        key = jax.random.key(2)
        soft = jax.jit(lambda x: sample.relaxed_top_k(key, x, 4, temperature))(logits)
        reference = reference_relaxed_top_k(key, logits, 4, temperature)
        np.testing.assert_allclose(soft, reference, rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("last", -1), ("first", 0))
    @pytest.mark.slow
    def test_hard_is_the_k_hot_of_gumbel_top_k_in_every_dtype(self, axis):
        logits = jax.random.normal(jax.random.key(0), (10, 256))
        logits = logits if axis == -1 else logits.T  # 256 categories on `axis`
        key = jax.random.key(3)

        def draw(k, x):
            return [
                (
                    sample.relaxed_top_k(k, x.astype(dtype), 5, 0.3, hard=True, axis=axis),
                    sample.gumbel_top_k(k, x.astype(dtype), 5, axis=axis),
                )
                for _, dtype in FLOAT_DTYPES
            ]

        for (hard, indices), (_, dtype) in zip(
            self.variant(draw)(key, logits), FLOAT_DTYPES, strict=True
        ):
            chex.assert_type(hard, dtype)
            expected = k_hot_of(jnp.moveaxis(indices, axis, -1), 256)
            np.testing.assert_array_equal(
                np.moveaxis(np.asarray(hard.astype(jnp.float32)), axis, -1), expected
            )

    @pytest.mark.slow
    def test_hard_frequencies_are_gumbel_top_k_frequencies(self):
        # Same key, same draws: the inclusion counts of the hard samples are gumbel_top_k's.
        logits = jnp.broadcast_to(jnp.array([0.8, -0.4, 0.0, 1.2, -jnp.inf]), (50_000, 5))
        key = jax.random.key(4)
        hard = jax.jit(lambda k, x: sample.relaxed_top_k(k, x, 2, 0.5, hard=True))(key, logits)
        indices = jax.jit(lambda k, x: sample.gumbel_top_k(k, x, 2))(key, logits)
        np.testing.assert_array_equal(
            np.asarray(hard.sum(0)), np.bincount(np.asarray(indices).ravel(), minlength=5)
        )
        self.assertEqual(float(hard[:, 4].sum()), 0.0)  # the masked category

    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.slow
    def test_hard_gradient_equals_soft_gradient(self):
        logits = jax.random.normal(jax.random.key(0), (16, 6))
        cotangent = jax.random.normal(jax.random.key(1), (16, 6))
        key = jax.random.key(2)

        def vjp(hard):
            fn = lambda x, t: sample.relaxed_top_k(key, x, 2, t, hard=hard)
            _, pullback = jax.vjp(fn, logits, jnp.float32(0.7))
            return pullback(cotangent)

        hard_grads = self.variant(lambda: vjp(True))()
        soft_grads = self.variant(lambda: vjp(False))()
        for hard_grad, soft_grad in zip(hard_grads, soft_grads, strict=True):
            np.testing.assert_allclose(hard_grad, soft_grad, rtol=1e-6, atol=1e-7)
        self.assertGreater(float(jnp.abs(hard_grads[0]).max()), 1e-3)  # not trivially zero

    @pytest.mark.slow
    def test_gradient_matches_finite_differences(self):
        fn = lambda x, t: sample.relaxed_top_k(jax.random.key(5), x, 3, t)
        logits = jnp.array([0.3, -1.0, 2.0, 0.5, -0.2])
        jax.test_util.check_grads(fn, (logits, 0.8), order=1, modes=("rev",), rtol=1e-2)

    @pytest.mark.slow
    def test_k_equal_to_the_number_of_categories(self):
        logits = jax.random.normal(jax.random.key(0), (20, 5))
        key = jax.random.key(6)
        soft = sample.relaxed_top_k(key, logits, 5, 0.5)
        hard = sample.relaxed_top_k(key, logits, 5, 0.5, hard=True)
        np.testing.assert_allclose(soft.sum(-1), 5.0, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(hard), 1.0)
        chex.assert_tree_all_finite(
            jax.grad(lambda x: jnp.sum(sample.relaxed_top_k(key, x, 5) * x))(logits)
        )

    @pytest.mark.slow
    def test_low_temperature_tends_to_the_k_hot(self):
        logits = jax.random.normal(jax.random.key(0), (100, 8))
        key = jax.random.key(7)
        soft = sample.relaxed_top_k(key, logits, 3, 1e-3)
        hard = sample.relaxed_top_k(key, logits, 3, 1e-3, hard=True)
        np.testing.assert_allclose(soft, hard, rtol=0, atol=1e-3)

    @parameterized.named_parameters(("soft", False), ("hard", True))
    @pytest.mark.slow
    def test_masked_categories_never_chosen_and_no_nan(self, hard):
        logits = jnp.array(
            [[0.5, -jnp.inf, 2.0, -jnp.inf, 0.0, 1e4], [-1e4, -jnp.inf, 1.0, 0.0, 3.0, -jnp.inf]]
        )
        weights = jnp.arange(6.0)
        fn = lambda x, t: sample.relaxed_top_k(jax.random.key(8), x, 3, t, hard=hard)
        value_and_grads = jax.jit(
            lambda x, t: (
                fn(x, t),
                jax.grad(lambda x, t: jnp.sum(fn(x, t) * weights), (0, 1))(x, t),
            )
        )
        for temperature in TEMPERATURES:
            y, grads = value_and_grads(logits, jnp.float32(temperature))
            np.testing.assert_array_equal(np.asarray(y[0, [1, 3]]), 0.0)
            np.testing.assert_array_equal(np.asarray(y[1, [1, 5]]), 0.0)
            np.testing.assert_allclose(y.sum(-1), 3.0, rtol=0, atol=1e-4)
            chex.assert_tree_all_finite((y, grads))
            np.testing.assert_array_equal(np.asarray(grads[0][0, [1, 3]]), 0.0)

    @parameterized.named_parameters(("soft", False), ("hard", True))
    @pytest.mark.slow
    def test_extreme_inputs_finite_in_every_dtype(self, hard):
        logits = jnp.array([[1e4, -1e4, 0.0, 3.0], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, 0.0, -1e4]])

        def value_and_grads(x, t):
            fn = lambda x, t: sample.relaxed_top_k(jax.random.key(9), x, 2, t, hard=hard)
            loss = lambda x, t: jnp.sum(fn(x, t).astype(jnp.float32) * jnp.arange(4.0))
            return fn(x, t), jax.grad(loss, (0, 1))(x, t)

        value_and_grads = jax.jit(value_and_grads)
        for _, dtype in FLOAT_DTYPES:
            for temperature in TEMPERATURES:
                y, grads = value_and_grads(logits.astype(dtype), jnp.float32(temperature))
                chex.assert_type(y, dtype)
                chex.assert_tree_all_finite((y, grads))
                np.testing.assert_allclose(
                    np.asarray(y.astype(jnp.float32)).sum(-1), 2.0, rtol=0, atol=2e-2
                )

    @pytest.mark.slow
    def test_a_dominant_logit_follows_the_exact_relaxation(self):
        # With a logit 1e4 above the others, 1 - a_1 rounds to 0 in any float, but the exact
        # down-weighted score alpha_2 = alpha_1 + log(1 - a_1) is (up to e^-25) the same as with
        # a logit 25 above them, where float64 still resolves 1 - a_1 (to 1e-5 relative).
        key = jax.random.key(10)
        soft = sample.relaxed_top_k(key, jnp.array([1e4, 0.0, 0.0, 0.0]), 3, 1.0)
        reference = reference_relaxed_top_k(key, np.array([25.0, 0.0, 0.0, 0.0]), 3, 1.0)
        np.testing.assert_allclose(soft, reference, rtol=1e-4, atol=1e-5)

    @pytest.mark.slow
    def test_invalid_rows_are_nan_and_leave_other_rows_alone(self):
        logits = jnp.array(
            [
                [0.0, -jnp.inf, -jnp.inf, 1.0],  # fewer finite logits than k = 3
                [jnp.nan, 0.0, 1.0, 2.0],
                [jnp.inf, 0.0, 1.0, 2.0],
                [0.0, 1.0, 2.0, -jnp.inf],  # exactly k finite: valid
            ]
        )
        key = jax.random.key(11)
        for hard in (False, True):
            fn = lambda x, hard=hard: sample.relaxed_top_k(key, x, 3, 0.5, hard=hard)
            y = fn(logits)
            self.assertTrue(bool(jnp.all(jnp.isnan(y[:3]))))
            valid = fn(logits.at[:3].set(0.0))  # the same noise for row 3
            np.testing.assert_allclose(y[3], valid[3], rtol=1e-6, atol=1e-6)
            grads = jax.grad(lambda x, fn=fn: jnp.nansum(fn(x) * jnp.arange(4.0)))(logits)
            # Invalid rows (too few finite logits, a NaN or +inf logit): NaN gradients.
            self.assertTrue(bool(jnp.all(jnp.isnan(grads[:3]))))
            chex.assert_tree_all_finite(grads[3])
            tau_grad = jax.grad(
                lambda t, hard=hard: jnp.nansum(sample.relaxed_top_k(key, logits, 3, t, hard=hard))
            )(0.5)
            self.assertTrue(bool(jnp.isnan(tau_grad)))  # a temperature shared with invalid rows

    @pytest.mark.slow
    def test_bfloat16_is_computed_in_float32(self):
        logits = jax.random.normal(jax.random.key(0), (50, 6)).astype(jnp.bfloat16)
        key = jax.random.key(12)
        low = sample.relaxed_top_k(key, logits, 2, 0.5)
        high = sample.relaxed_top_k(key, logits.astype(jnp.float32), 2, 0.5)
        chex.assert_type(low, jnp.bfloat16)
        np.testing.assert_array_equal(np.asarray(low), np.asarray(high.astype(jnp.bfloat16)))

    @pytest.mark.slow
    def test_zero_size_batch(self):
        logits = jnp.zeros((0, 4, 5))
        for hard in (False, True):
            fn = lambda x, hard=hard: sample.relaxed_top_k(jax.random.key(0), x, 2, hard=hard)
            chex.assert_shape(jax.jit(fn)(logits), (0, 4, 5))
            chex.assert_shape(jax.grad(lambda x, fn=fn: jnp.sum(fn(x)))(logits), (0, 4, 5))

    @pytest.mark.slow
    def test_traced_temperature_does_not_recompile(self):
        chex.clear_trace_counter()
        logits = jax.random.normal(jax.random.key(0), (8, 5))

        @jax.jit
        @chex.assert_max_traces(n=1)
        def loss_and_grad(key, x, temperature):
            fn = lambda x: jnp.sum(sample.relaxed_top_k(key, x, 2, temperature, hard=True) * x)
            return jax.value_and_grad(fn)(x)

        for temperature in (2.0, 1.0, 0.5, 0.1):
            loss_and_grad(jax.random.key(1), logits, jnp.float32(temperature))

    @pytest.mark.slow
    def test_vmap_over_keys_matches_single_calls(self):
        keys = jax.random.split(jax.random.key(0), 4)
        logits = jax.random.normal(jax.random.key(1), (3, 5))
        draw = lambda k: sample.relaxed_top_k(k, logits, 2, 0.5)
        batched = jax.jit(jax.vmap(draw))(keys)
        for i in range(4):
            np.testing.assert_allclose(batched[i], draw(keys[i]), rtol=1e-6, atol=1e-6)

    @parameterized.named_parameters(
        ("zero", 0, "`k` must be >= 1"), ("too_many", 6, "`k` must be <=")
    )
    def test_bad_k_raises(self, k, message):
        with self.assertRaisesRegex(ValueError, message):
            sample.relaxed_top_k(jax.random.key(0), jnp.zeros((2, 5)), k)

    def test_non_integer_k_raises(self):
        with self.assertRaisesRegex(TypeError, "`k` must be a Python int"):
            sample.relaxed_top_k(jax.random.key(0), jnp.zeros(5), 2.0)

    @parameterized.named_parameters(("zero", 0.0), ("negative", -1.0), ("nan", float("nan")))
    def test_bad_temperature_raises(self, temperature):
        with self.assertRaisesRegex(ValueError, "`temperature` must be"):
            sample.relaxed_top_k(jax.random.key(0), jnp.zeros(3), 2, temperature)

    def test_bad_logits_and_axis_raise(self):
        with self.assertRaisesRegex(TypeError, "`logits` must have a floating dtype"):
            sample.relaxed_top_k(jax.random.key(0), jnp.arange(3), 2)
        with self.assertRaisesRegex(ValueError, "`axis` must be in"):
            sample.relaxed_top_k(jax.random.key(0), jnp.zeros(5), 2, axis=1)
        with self.assertRaisesRegex(ValueError, "at least one dimension"):
            sample.relaxed_top_k(jax.random.key(0), jnp.float32(1.0), 1)


if __name__ == "__main__":
    absltest.main()
