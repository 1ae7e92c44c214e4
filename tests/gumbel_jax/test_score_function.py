"""Tests for the score-function estimators ``estimators.reinforce_loo`` and ``estimators.disarm``.

Unbiasedness is checked exactly, in float64: the estimators' gradient code is run on every joint
configuration of their randomness (every tuple of samples for REINFORCE-LOO; every region of the
uniform noise, inside which the pair is constant, for DisARM), weighted by its probability, and
compared with ``diagnostics.exact_gradient`` to 1e-9. The sampling itself is checked through the
public functions with fixed keys and 40,000 draws against 5 standard errors per coordinate
(estimated from the same draws), so the tests fail only on real bugs.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from gumbel_jax import diagnostics, estimators
from gumbel_jax.estimators import _score_function

NUM_DRAWS = 40_000
EXACT_TOL = 1e-9


def categorical_configurations(logits):
    """Every one-hot configuration of ``[n, K]`` logits over its unmasked categories, and q."""
    choices = [np.flatnonzero(np.isfinite(row)) for row in logits]
    configurations, probs = [], []
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float64), axis=-1))
    for picks in itertools.product(*choices):
        z = np.zeros(logits.shape)
        z[np.arange(len(picks)), picks] = 1.0
        configurations.append(z)
        probs.append(np.prod(p[np.arange(len(picks)), picks]))
    return np.stack(configurations), np.asarray(probs)


def bernoulli_configurations(logits):
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    configurations, probs = [], []
    for bits in itertools.product((0.0, 1.0), repeat=logits.size):
        b = np.asarray(bits).reshape(logits.shape)
        configurations.append(b)
        probs.append(np.prod(np.where(b > 0, p, 1 - p)))
    return np.stack(configurations), np.asarray(probs)


def expected_over_tuples(surrogate_of, x, configurations, probs, num_samples):
    """``E[(value, grad)]`` of ``surrogate_of(x, z)`` over i.i.d. ``num_samples``-tuples ``z``."""
    tuples = list(itertools.product(range(len(probs)), repeat=num_samples))
    z = jnp.asarray(np.stack([configurations[list(t)] for t in tuples]))
    weights = jnp.asarray([np.prod(probs[list(t)]) for t in tuples])
    values, grads = jax.jit(jax.vmap(jax.value_and_grad(surrogate_of), in_axes=(None, 0)))(x, z)
    return jnp.tensordot(weights, values, 1), jnp.tensordot(weights, grads, 1)


@pytest.mark.slow
class ReinforceLooExactTest(parameterized.TestCase):
    @parameterized.named_parameters(("two_samples", 2), ("three_samples", 3))
    def test_categorical_unbiased_per_example_with_masked_category(self, num_samples):
        logits = np.array([[0.3, -1.2, 0.8], [-jnp.inf, 0.5, -0.4]])
        targets = jnp.array([0.2, 0.7])
        values = jnp.array([0.0, 0.5, 1.0])

        def f_batch(z):  # [S, 2, 3] -> [S, 2]: one value per example
            return (z @ values - targets) ** 2 + 0.1 * jnp.sum(z, -1)

        with jax.enable_x64(True):
            x = jnp.asarray(logits, jnp.float64)
            configurations, probs = categorical_configurations(logits)

            def surrogate(x, z):
                return jnp.sum(
                    _score_function._reinforce_loo_surrogate(x, z, f_batch, "categorical", 1)
                )

            value, grad = expected_over_tuples(surrogate, x, configurations, probs, num_samples)
            exact = diagnostics.exact_gradient(lambda z: jnp.sum(f_batch(z[None])), x)
            exact_value = sum(
                q * jnp.sum(f_batch(z[None])) for z, q in zip(configurations, probs, strict=True)
            )
            np.testing.assert_allclose(grad, exact, rtol=0, atol=EXACT_TOL)
            np.testing.assert_allclose(value, exact_value, rtol=0, atol=EXACT_TOL)
            self.assertEqual(float(grad[1, 0]), 0.0)  # the masked category
            self.assertGreater(float(jnp.abs(exact).max()), 0.05)

    @parameterized.named_parameters(
        ("per_row", (2, 2), lambda b: jnp.sum((b - 0.45) ** 2, -1) * jnp.array([1.0, -2.0])),
        ("whole", (3,), lambda b: jnp.sum((b - jnp.array([0.49, 0.2, 0.9])) ** 2, -1)),
    )
    def test_bernoulli_unbiased(self, shape, f_batch):
        logits = np.linspace(-1.0, 1.5, int(np.prod(shape))).reshape(shape)
        with jax.enable_x64(True):
            x = jnp.asarray(logits, jnp.float64)
            configurations, probs = bernoulli_configurations(logits)
            for num_samples in (2, 3):

                def surrogate(x, z):
                    return jnp.sum(
                        _score_function._reinforce_loo_surrogate(x, z, f_batch, "bernoulli", 0)
                    )

                _, grad = expected_over_tuples(surrogate, x, configurations, probs, num_samples)
                exact = diagnostics.exact_gradient(
                    lambda b: jnp.sum(f_batch(b[None])), x, distribution="bernoulli"
                )
                np.testing.assert_allclose(grad, exact, rtol=0, atol=EXACT_TOL)

    def test_pathwise_gradient_of_f_parameters_is_unbiased(self):
        logits = np.array([[0.1, 0.9, -0.5]])
        with jax.enable_x64(True):
            x = jnp.asarray(logits, jnp.float64)
            w = jnp.array([0.3, -1.0, 2.0])
            configurations, probs = categorical_configurations(logits)

            def f_of(w):
                return lambda z: jnp.sum(jnp.sin(z @ w) * w[0], -1)  # [S, 1, 3] -> [S]

            def surrogate(w, z):
                return _score_function._reinforce_loo_surrogate(x, z, f_of(w), "categorical", 1)

            _, grad_w = expected_over_tuples(surrogate, w, configurations, probs, 3)
            exact_w = jax.grad(
                lambda w: sum(
                    q * f_of(w)(z[None])[0] for z, q in zip(configurations, probs, strict=True)
                )
            )(w)
            np.testing.assert_allclose(grad_w, exact_w, rtol=0, atol=EXACT_TOL)


def disarm_regions(logits):
    """Midpoints and probabilities of the regions of ``u`` in which DisARM's pair is constant."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64).ravel()))
    per_coordinate = []
    for p_d in p:
        cuts = np.array([0.0, min(p_d, 1 - p_d), max(p_d, 1 - p_d), 1.0])
        per_coordinate.append([((a + b) / 2, b - a) for a, b in itertools.pairwise(cuts)])
    midpoints, weights = [], []
    for combo in itertools.product(*per_coordinate):
        midpoints.append(np.array([m for m, _ in combo]).reshape(np.shape(logits)))
        weights.append(np.prod([w for _, w in combo]))
    return np.stack(midpoints), np.asarray(weights)


@pytest.mark.slow
class DisarmExactTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("quadratic_toy", (4,), lambda b: jnp.sum((b - 0.49) ** 2, -1)),
        (
            "per_row_nonlinear",
            (2, 3),
            lambda b: jnp.sin(b @ jnp.array([1.0, -2.0, 0.5])) * jnp.array([1.0, 3.0]),
        ),
    )
    def test_unbiased_over_every_noise_region(self, shape, f_batch):
        logits = np.linspace(-2.0, 1.0, int(np.prod(shape))).reshape(shape)
        with jax.enable_x64(True):
            x = jnp.asarray(logits, jnp.float64)
            midpoints, weights = disarm_regions(logits)

            def surrogate(x, u):
                return jnp.sum(_score_function._disarm_surrogate(x, u, f_batch))

            values, grads = jax.jit(jax.vmap(jax.value_and_grad(surrogate), in_axes=(None, 0)))(
                x, jnp.asarray(midpoints)
            )
            grad = jnp.tensordot(jnp.asarray(weights), grads, 1)
            exact = diagnostics.exact_gradient(
                lambda b: jnp.sum(f_batch(b[None])), x, distribution="bernoulli"
            )
            np.testing.assert_allclose(grad, exact, rtol=0, atol=EXACT_TOL)
            configurations, probs = bernoulli_configurations(logits)
            exact_value = sum(
                q * jnp.sum(f_batch(b[None])) for b, q in zip(configurations, probs, strict=True)
            )
            value = jnp.tensordot(jnp.asarray(weights), values, 1)
            np.testing.assert_allclose(value, exact_value, rtol=0, atol=EXACT_TOL)

    def test_formula_for_one_coordinate(self):
        # With sigmoid(0.8) = 0.69: u < 0.31 gives b = 1, b~ = 0, and u >= 0.69 gives b = 0,
        # b~ = 1: both the gradient (f(1) - f(0)) / 2 * sigmoid(0.8); in between b = b~ = 1: 0.
        f_batch = lambda b: jnp.sum(3.0 * b + 1.0, -1)
        x = jnp.array([0.8])
        sigmoid = float(jax.nn.sigmoid(0.8))
        for u, expected in ((0.2, 1.5 * sigmoid), (0.5, 0.0), (0.9, 1.5 * sigmoid)):
            grad = jax.grad(_score_function._disarm_surrogate)(x, jnp.array([u]), f_batch)
            np.testing.assert_allclose(grad, [expected], rtol=1e-6)
        # For -0.8, sigmoid = 0.31: u = 0.1 gives b = 1, b~ = 1[0.9 < 0.31] = 0.
        grad = jax.grad(_score_function._disarm_surrogate)(-x, jnp.array([0.1]), f_batch)
        np.testing.assert_allclose(grad, [1.5 * sigmoid], rtol=1e-6)


@pytest.mark.slow
class SamplingTest(chex.TestCase):
    """The public functions draw the right samples: their mean gradient is the exact one."""

    @parameterized.named_parameters(
        ("reinforce_categorical", "reinforce", "categorical", 4),
        ("reinforce_bernoulli", "reinforce", "bernoulli", 2),
        ("disarm", "disarm", "bernoulli", 2),
    )
    def test_mean_gradient_within_five_standard_errors(self, name, distribution, num_samples):
        if distribution == "categorical":
            logits = jnp.array([[0.5, -0.3, 0.1, -jnp.inf], [1.0, 0.0, -1.0, 0.2]])
            f_batch = lambda z: jnp.sum((z @ jnp.arange(4.0) - 1.3) ** 2, -1)
        else:
            logits = jnp.array([[0.5, -0.3, 1.2], [0.0, 2.0, -1.0]])
            f_batch = lambda b: jnp.sum((b - 0.3) ** 2 * jnp.arange(1.0, 4.0), (-2, -1))

        def estimate(key):
            if name == "disarm":
                return jax.grad(lambda x: estimators.disarm(key, x, f_batch))(logits)
            return jax.grad(
                lambda x: estimators.reinforce_loo(
                    key, x, f_batch, num_samples=num_samples, distribution=distribution
                ).sum()
            )(logits)

        keys = jax.random.split(jax.random.key(11), NUM_DRAWS)
        draws = np.asarray(jax.jit(jax.vmap(estimate))(keys), np.float64)
        exact = diagnostics.exact_gradient(
            lambda z: jnp.sum(f_batch(z[None])), logits, distribution=distribution
        )
        standard_error = draws.std(0) / np.sqrt(NUM_DRAWS)
        error = np.abs(draws.mean(0) - np.asarray(exact))
        np.testing.assert_array_less(error, 5 * standard_error + 1e-6)
        self.assertGreater(np.abs(np.asarray(exact)).max(), 10 * standard_error.max())
        if distribution == "categorical":
            np.testing.assert_array_equal(draws[:, 0, 3], 0.0)  # masked: zero gradient

    @chex.variants(with_jit=True, without_jit=True)
    def test_samples_are_valid_and_masked_never_drawn(self):
        logits = jnp.array([[0.5, -jnp.inf, 2.0, 0.0]] * 3)
        f_batch = lambda z: jnp.max(z, -1)

        value = self.variant(
            lambda k: estimators.reinforce_loo(k, logits, f_batch, num_samples=500)
        )(jax.random.key(0))
        np.testing.assert_array_equal(value, np.ones(3))  # one-hot: max is 1 everywhere

        def check(key):
            z = []
            estimators.reinforce_loo(
                key, logits, lambda s: z.append(s) or s[..., 0], num_samples=500
            )
            return z[0]

        z = jax.jit(check)(jax.random.key(1))
        chex.assert_shape(z, (500, 3, 4))
        np.testing.assert_array_equal(np.asarray(z).sum(-1), 1.0)
        np.testing.assert_array_equal(np.asarray(z)[..., 1], 0.0)
        self.assertGreater(float(z[..., 3].sum()), 0)

    def test_vmap_over_keys_matches_a_loop(self):
        logits = jnp.array([0.3, -0.2, 1.0])
        f_batch = lambda b: jnp.sum(b * jnp.array([1.0, 2.0, 3.0]), -1)
        keys = jax.random.split(jax.random.key(3), 4)
        for fn in (
            lambda k, x: estimators.disarm(k, x, f_batch),
            lambda k, x: estimators.reinforce_loo(k, x, f_batch, num_samples=3),
            lambda k, x: estimators.reinforce_loo(
                k, x, f_batch, num_samples=3, distribution="bernoulli"
            ),
        ):
            grad = jax.jit(jax.grad(fn, argnums=1))
            batched = jax.vmap(grad, in_axes=(0, None))(keys, logits)
            looped = jnp.stack([grad(k, logits) for k in keys])
            np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
class PerExampleAndInvalidValuesTest(chex.TestCase):
    @parameterized.named_parameters(
        ("reinforce_categorical", "reinforce", "categorical"),
        ("reinforce_bernoulli", "reinforce", "bernoulli"),
        ("disarm", "disarm", "bernoulli"),
    )
    def test_constant_example_gets_exactly_zero_gradient(self, name, distribution):
        logits = jax.random.normal(jax.random.key(0), (3, 5))

        def f_batch(z):  # example 1 is constant, the others depend strongly on the sample
            varying = jnp.sum(z * jnp.arange(5.0) * 10.0, -1)
            return varying.at[:, 1].set(7.0)

        @jax.jit
        def value_and_grad(key):
            def surrogate(x):
                if name == "disarm":
                    value = estimators.disarm(key, x, f_batch)
                else:
                    value = estimators.reinforce_loo(
                        key, x, f_batch, num_samples=4, distribution=distribution
                    )
                return jnp.sum(value), value

            return jax.grad(surrogate, has_aux=True)(logits)

        for key in jax.random.split(jax.random.key(1), 5):
            grad, value = value_and_grad(key)
            np.testing.assert_array_equal(np.asarray(grad[1]), 0.0)
            self.assertEqual(float(value[1]), 7.0)
            self.assertGreater(float(jnp.abs(grad).sum()), 0.0)

    @parameterized.named_parameters(
        ("reinforce_categorical", "reinforce", "categorical"),
        ("reinforce_bernoulli", "reinforce", "bernoulli"),
        ("disarm", "disarm", "bernoulli"),
    )
    def test_nan_logit_makes_its_example_nan(self, name, distribution):
        logits = jnp.array([[0.5, jnp.nan, 0.1], [0.2, -0.3, 1.0]])
        f_batch = lambda z: jnp.sum(z * jnp.array([1.0, 2.0, 3.0]), -1)

        def surrogate(x):
            if name == "disarm":
                value = estimators.disarm(jax.random.key(0), x, f_batch)
            else:
                value = estimators.reinforce_loo(
                    jax.random.key(0), x, f_batch, num_samples=3, distribution=distribution
                )
            return jnp.sum(value), value

        grad, value = jax.jit(jax.grad(surrogate, has_aux=True))(logits)
        self.assertTrue(np.isnan(float(value[0])))
        self.assertTrue(np.isnan(np.asarray(grad[0])).any())
        chex.assert_tree_all_finite((value[1], grad[1]))

    @parameterized.named_parameters(("reinforce", "reinforce"), ("disarm", "disarm"))
    def test_infinite_bernoulli_logits_are_certain(self, name):
        logits = jnp.array([jnp.inf, -jnp.inf, 0.3])
        samples = []

        def f_batch(b):
            samples.append(b)
            return jnp.sum((b - 0.4) ** 2, -1)

        def surrogate(x):
            if name == "disarm":
                return estimators.disarm(jax.random.key(0), x, f_batch)
            return estimators.reinforce_loo(
                jax.random.key(0), x, f_batch, num_samples=64, distribution="bernoulli"
            )

        value, grad = jax.value_and_grad(surrogate)(logits)
        chex.assert_tree_all_finite((value, grad))
        np.testing.assert_array_equal(np.asarray(grad[:2]), 0.0)
        b = np.asarray(samples[0])
        np.testing.assert_array_equal(b[:, 0], 1.0)
        np.testing.assert_array_equal(b[:, 1], 0.0)

    def test_masked_categorical_logits_zero_gradient_every_dtype(self):
        logits = jnp.array([[1e4, -1e4, 0.0, 3.0], [0.5, -jnp.inf, 2.0, -jnp.inf]])
        f_batch = lambda z: jnp.sum(z * jnp.arange(4.0), -1)
        for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):

            def surrogate(x):
                return estimators.reinforce_loo(jax.random.key(2), x, f_batch, num_samples=8).sum()

            grad = jax.jit(jax.grad(surrogate))(logits.astype(dtype))
            chex.assert_type(grad, dtype)
            chex.assert_tree_all_finite(grad)
            np.testing.assert_array_equal(np.asarray(grad[1, [1, 3]], np.float32), 0.0)

    def test_value_is_the_monte_carlo_mean_in_f_dtype(self):
        logits = jnp.zeros((2, 3), jnp.bfloat16)
        f_batch = lambda z: jnp.sum(z * jnp.arange(3.0), -1).astype(jnp.float16)
        value = estimators.reinforce_loo(jax.random.key(0), logits, f_batch, num_samples=4)
        chex.assert_type(value, jnp.float16)
        chex.assert_shape(value, (2,))
        self.assertTrue(np.all(np.isin(np.asarray(value, np.float32) * 4, np.arange(9.0))))


class ValidationAndRegistryTest(parameterized.TestCase):
    def test_registries_are_separate(self):
        self.assertEqual(estimators.SURROGATE_NAMES[:2], ("reinforce-loo", "disarm"))
        self.assertIs(estimators.get_surrogate("reinforce-loo"), estimators.reinforce_loo)
        self.assertIs(estimators.get_surrogate("disarm"), estimators.disarm)
        self.assertFalse(set(estimators.NAMES) & set(estimators.SURROGATE_NAMES))
        with self.assertRaisesRegex(ValueError, r"Unknown estimator 'disarm'.*get_surrogate"):
            estimators.get("disarm")
        with self.assertRaisesRegex(ValueError, "Unknown score-function estimator 'st'"):
            estimators.get_surrogate("st")

    @parameterized.named_parameters(
        ("one", 1, ValueError, "`num_samples` must be >= 2"),
        ("zero", 0, ValueError, "`num_samples` must be >= 1"),
        ("float", 2.0, TypeError, "`num_samples` must be a Python int"),
    )
    def test_bad_num_samples(self, num_samples, error, message):
        with self.assertRaisesRegex(error, message):
            estimators.reinforce_loo(
                jax.random.key(0), jnp.zeros(3), lambda z: z[..., 0], num_samples=num_samples
            )

    def test_bad_distribution_and_axis(self):
        f = lambda z: z[..., 0]
        with self.assertRaisesRegex(ValueError, "`distribution` must be one of.*'gaussian'"):
            estimators.reinforce_loo(jax.random.key(0), jnp.zeros(3), f, distribution="gaussian")
        with self.assertRaisesRegex(ValueError, r"`axis` must be in \[-1, 1\)"):
            estimators.reinforce_loo(jax.random.key(0), jnp.zeros(3), f, axis=1)
        with self.assertRaisesRegex(TypeError, "`logits` must have a floating dtype"):
            estimators.disarm(jax.random.key(0), jnp.arange(3), f)

    @pytest.mark.slow
    def test_f_output_shape_names_expected_and_received(self):
        key, logits = jax.random.key(0), jnp.zeros((4, 2, 3))
        # Per (example, latent) is fine; including the category axis is not.
        chex.assert_shape(estimators.reinforce_loo(key, logits, lambda z: z.sum(-1)), (4, 2))
        with self.assertRaisesRegex(ValueError, r"\(2, 4, 2\).*got shape \(2, 4, 2, 3\)"):
            estimators.reinforce_loo(key, logits, lambda z: z)
        with self.assertRaisesRegex(ValueError, r"one of \(2,\), \(2, 4\)\.*.*got shape \(2, 3\)"):
            estimators.reinforce_loo(key, logits, lambda z: z[:, 0, 0], axis=1)
        with self.assertRaisesRegex(ValueError, r"got shape \(3, 4\)"):
            estimators.disarm(key, logits, lambda b: jnp.zeros((3, 4)))
        # Bernoulli: every axis can be a prefix, also the full shape.
        full = estimators.disarm(key, logits, lambda b: b)
        chex.assert_shape(full, (4, 2, 3))


if __name__ == "__main__":
    absltest.main()
