"""Tests for the noise-free straight-through estimators: st-softmax, gapped-st and zgr.

Each gradient is checked against its paper's formula written here independently, in NumPy
float64, from the one-hot sample the estimator returned:

- st-softmax (Bengio et al. 2013): ``s * (g - <s, g>) / tau`` with ``s = softmax(logits / tau)``.
- gapped-st (Fan et al. 2022, the authors' ``gst_mover``): the same with ``s`` the softmax of the
  perturbed logits, the sample at ``max(logits)`` and every other category at
  ``min(logit, max(logits) - gap)``.
- zgr (Shekhovtsov 2023, equation (50) of the author's code): ``(p * (g - g_D) - D <p, g - g_D>)
  / 2``; for Bernoulli log-odds ``g * (b (1 - q) + (1 - b) q) / 2``.

Statistical tests use fixed keys, >= 1e5 draws and a chi-square / binomial p-value threshold
``P_MIN``, or 5 standard errors for means, so they fail only on real bugs.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized
from scipy import special, stats

from gumbel_jax import estimators
from gumbel_jax.estimators import _binary

P_MIN = 1e-4
NUM_SAMPLES = 100_000
NAMES = ("st-softmax", "gapped-st", "zgr")
WITH_TEMPERATURE = ("st-softmax", "gapped-st")
FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
NAN, INF = float("nan"), float("inf")


def call(name, key, logits, temperature=1.0, **kwargs):
    """``name``'s function; the temperature is dropped for zgr, which takes none."""
    fn = estimators.get(name)
    if name == "zgr":
        return fn(key, logits, **kwargs)
    return fn(key, logits, temperature, **kwargs)


def np_softmax(z):
    """Softmax along the last axis in float64; ``-inf`` entries get exactly 0."""
    z = np.asarray(z, np.float64)
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def gapped_logits(logits, d, gap):
    """The paper's perturbed logits: the sample at the maximum, the rest ``gap`` below it."""
    logits = np.asarray(logits, np.float64)
    top = np.max(logits, axis=-1, keepdims=True)
    return np.where(d > 0, top, np.minimum(logits, top - gap))


def expected_gradients(name, logits, d, g, tau, gap=1.0):
    """``(d/dlogits, d/dtau)`` of the estimator for cotangent ``g`` (categories last)."""
    logits, d, g = (np.asarray(a, np.float64) for a in (logits, d, g))
    if name == "zgr":  # Shekhovtsov's equation (50)
        p = np_softmax(logits)
        g_d = np.sum(d * g, axis=-1, keepdims=True)
        inner = np.sum(p * (g - g_d), axis=-1, keepdims=True)
        return 0.5 * (p * (g - g_d) - d * inner), None
    z = logits if name == "st-softmax" else gapped_logits(logits, d, gap)
    s = np_softmax(z / tau)
    vjp = s * (g - np.sum(s * g, axis=-1, keepdims=True))
    # d softmax(z / tau) / d tau = J(s) (-z / tau^2); masked entries (s = 0) contribute nothing.
    d_tau = -np.sum(vjp * np.where(s > 0, z, 0.0)) / tau**2
    return vjp / tau, d_tau


def expected_bernoulli_gradients(name, logits, b, g, tau, gap=1.0):
    """``(d/dlogits, d/dtau)`` of the Bernoulli form for cotangent ``g`` (elementwise)."""
    logits, b, g = (np.asarray(a, np.float64) for a in (logits, b, g))
    if name == "zgr":  # ZGR_binary: J = (b (1 - q) + (1 - b) q) / 2
        q = special.expit(logits)
        return g * (b * (1 - q) + (1 - b) * q) / 2, None
    if name == "st-softmax":
        delta = logits
    else:  # the perturbed difference of the two categories (0, l)
        delta = np.where(b > 0, np.maximum(logits, gap), np.minimum(logits, -gap))
    s = special.expit(delta / tau)
    slope = s * (1 - s)
    return g * slope / tau, -np.sum(g * slope * delta) / tau**2


def chi_square_pvalue(counts, probs):
    counts = np.asarray(counts, np.float64)
    probs = np.asarray(probs, np.float64)
    return stats.chisquare(counts, probs / probs.sum() * counts.sum()).pvalue


class RegistryTest(parameterized.TestCase):
    def test_specs(self):
        for name, fn in (
            ("st-softmax", estimators.st_softmax),
            ("gapped-st", estimators.gapped_st),
            ("zgr", estimators.zgr),
        ):
            spec = estimators.spec(name)
            self.assertIs(spec.fn, fn)
            self.assertIs(estimators.get(name), fn)
            self.assertIn(name, estimators.names(kind="sample", distribution="bernoulli"))
            self.assertEqual(spec.kind, "sample")
            self.assertIn("bernoulli", spec.distributions)
            self.assertIn("categorical", spec.distributions)
            self.assertIn("https://arxiv.org/abs/", spec.reference)
            self.assertTrue(spec.summary)
            self.assertFalse(spec.unbiased)
            self.assertIsNone(spec.min_temperature)
        self.assertIs(estimators.spec("zgr").uses_temperature, False)
        self.assertIs(estimators.spec("st-softmax").uses_temperature, True)
        self.assertIs(estimators.spec("gapped-st").uses_temperature, True)
        self.assertEqual(dict(estimators.spec("gapped-st").options), {"gap": 1.0})
        self.assertEqual(dict(estimators.spec("zgr").options), {})
        self.assertEqual(dict(estimators.spec("st-softmax").options), {})

    @pytest.mark.slow
    def test_bind_drops_zgr_temperature_and_passes_the_gap(self):
        key, logits = jax.random.key(0), jax.random.normal(jax.random.key(1), (3, 4))
        bound = estimators.spec("zgr").bind()(key, logits, 0.5)
        np.testing.assert_array_equal(bound, estimators.zgr(key, logits))
        bound = estimators.spec("gapped-st").bind({"gap": 3})
        grad = jax.grad(lambda x: jnp.sum(bound(key, x, 0.5) * jnp.arange(4.0)))(logits)
        direct = jax.grad(
            lambda x: jnp.sum(estimators.gapped_st(key, x, 0.5, gap=3.0) * jnp.arange(4.0))
        )(logits)
        np.testing.assert_array_equal(grad, direct)


@pytest.mark.slow
class GradientTest(parameterized.TestCase):
    """The gradients against the papers' formulas, from the sample the estimator returned."""

    @parameterized.named_parameters(
        *[
            (f"{name}_axis{axis}_tau{tau}_gap{gap}".replace("-", "_"), name, axis, tau, gap)
            for name, tau, gap in (
                ("st-softmax", 0.4, 1.0),
                ("st-softmax", 2.5, 1.0),
                ("gapped-st", 0.4, 1.0),
                ("gapped-st", 2.5, 0.3),
                ("gapped-st", 1.0, 4.0),
                ("zgr", 1.0, 1.0),
            )
            for axis in (2, 1)
        ]
    )
    def test_categorical_gradient_is_the_papers(self, name, axis, temperature, gap):
        logits = 1.5 * jax.random.normal(jax.random.key(1), (16, 3, 6))
        logits = logits.at[:, 0, 2].set(-jnp.inf).at[:5, 1, :4].set(-jnp.inf)
        logits = jnp.moveaxis(logits, 2, axis)
        cotangent = jnp.moveaxis(jax.random.normal(jax.random.key(2), (16, 3, 6)), 2, axis)
        options = {"gap": gap} if name == "gapped-st" else {}
        key = jax.random.key(3)

        @jax.jit
        def value_and_vjp(x, t, g):
            y, pullback = jax.vjp(lambda x, t: call(name, key, x, t, axis=axis, **options), x, t)
            return y, pullback(g)

        y, (grad, grad_t) = value_and_vjp(logits, jnp.float32(temperature), cotangent)
        d = np.moveaxis(np.asarray(y), axis, -1)
        np.testing.assert_array_equal(np.sum(d, axis=-1), 1.0)
        self.assertTrue(np.all(d[np.isneginf(np.moveaxis(np.asarray(logits), axis, -1))] == 0))
        expected, expected_t = expected_gradients(
            name,
            np.moveaxis(np.asarray(logits), axis, -1),
            d,
            np.moveaxis(np.asarray(cotangent), axis, -1),
            temperature,
            gap,
        )
        actual = np.moveaxis(np.asarray(grad), axis, -1)
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(actual[np.isneginf(np.moveaxis(logits, axis, -1))], 0.0)
        if expected_t is None:
            np.testing.assert_array_equal(grad_t, 0.0)
        else:
            np.testing.assert_allclose(grad_t, expected_t, rtol=1e-4, atol=1e-5)

    def test_gapped_st_differs_from_st_softmax_only_where_logits_move(self):
        # A sample at the maximum with every other logit >= gap below it: nothing moves.
        logits = jnp.array([[3.0, 1.0, -jnp.inf, 0.5]] * 64)
        cotangent = jax.random.normal(jax.random.key(4), logits.shape)
        key = jax.random.key(5)

        @jax.jit
        def value_and_vjp(x, g):
            results = []
            for name in ("st-softmax", "gapped-st"):
                y, pullback = jax.vjp(lambda x, name=name: call(name, key, x, 0.7), x)
                results.append((y, pullback(g)[0]))
            return results

        (y_st, grad_st), (y_gap, grad_gap) = value_and_vjp(logits, cotangent)
        np.testing.assert_array_equal(y_st, y_gap)  # the same sample from the same key
        at_max = np.asarray(y_st[:, 0]) == 1.0
        self.assertTrue(0 < at_max.sum() < 64)
        np.testing.assert_allclose(grad_gap[at_max], grad_st[at_max], rtol=1e-6, atol=1e-7)
        unmasked = np.array([0, 1, 3])
        moved = np.abs(grad_gap[~at_max] - grad_st[~at_max])[:, unmasked]
        self.assertGreater(moved.max(axis=1).min(), 1e-3)

    @parameterized.named_parameters(
        *[
            (f"{name}_tau{tau}_gap{gap}".replace("-", "_"), name, tau, gap)
            for name, tau, gap in (
                ("st-softmax", 0.4, 1.0),
                ("st-softmax", 2.5, 1.0),
                ("gapped-st", 0.4, 1.0),
                ("gapped-st", 2.5, 0.3),
                ("gapped-st", 1.0, 4.0),
                ("zgr", 1.0, 1.0),
            )
        ]
    )
    def test_bernoulli_gradient_is_the_closed_form(self, name, temperature, gap):
        logits = 3.0 * jax.random.normal(jax.random.key(6), (4, 50))
        cotangent = jax.random.normal(jax.random.key(7), (4, 50))
        options = {"gap": gap} if name == "gapped-st" else {}
        key = jax.random.key(8)

        @jax.jit
        def value_and_vjp(x, t, g):
            fn = lambda x, t: call(name, key, x, t, distribution="bernoulli", **options)
            y, pullback = jax.vjp(fn, x, t)
            return y, pullback(g)

        b, (grad, grad_t) = value_and_vjp(logits, jnp.float32(temperature), cotangent)
        self.assertTrue(np.all((np.asarray(b) == 0.0) | (np.asarray(b) == 1.0)))
        self.assertTrue(0 < np.asarray(b).mean() < 1)
        expected, expected_t = expected_bernoulli_gradients(
            name, logits, b, cotangent, temperature, gap
        )
        # float32 rounds s (1 - s) near s = 1: absolute error ~1e-7 for |g| ~ 1.
        np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=2e-6)
        if expected_t is None:
            np.testing.assert_array_equal(grad_t, 0.0)
        else:
            np.testing.assert_allclose(grad_t, expected_t, rtol=1e-4, atol=1e-5)

    @parameterized.parameters("st-softmax", "gapped-st")
    def test_bernoulli_is_the_two_category_form(self, name):
        # The definition: the categorical estimator on the categories (0, l), entry 1.
        logits = 3.0 * jax.random.normal(jax.random.key(9), (200,))
        cotangent = jax.random.normal(jax.random.key(10), (200,))
        key = jax.random.key(11)
        options = {"gap": 2.0} if name == "gapped-st" else {}

        def bernoulli(x):
            return call(name, key, x, 0.6, distribution="bernoulli", **options)

        def pair(x):
            both = jnp.stack([jnp.zeros_like(x), x], axis=-1)
            return call(name, key, both, 0.6, **options)[..., 1]

        y_b, pullback_b = jax.vjp(bernoulli, logits)
        y_p, pullback_p = jax.vjp(pair, logits)
        np.testing.assert_array_equal(y_b, y_p)
        # float32 rounding differs between the pair (0, l) and the shifted pair two_categories
        # builds; the gradients are O(1), a wrong formula is off by O(0.01) or more.
        np.testing.assert_allclose(
            pullback_b(cotangent)[0], pullback_p(cotangent)[0], rtol=1e-5, atol=2e-6
        )

    def test_zgr_binary_is_the_two_category_zgr(self):
        # The author's binary form equals the categorical ZGR on (0, l) given the same sample.
        logits = 3.0 * jax.random.normal(jax.random.key(12), (300,))
        cotangent = jax.random.normal(jax.random.key(13), (300,))

        @jax.jit
        def value_and_vjp(x, g):
            pair = lambda x: _binary.two_categories(estimators.zgr, jax.random.key(14), x)
            b, pullback = jax.vjp(pair, x)
            return b, pullback(g)[0]

        b, grad = value_and_vjp(logits, cotangent)
        expected, _ = expected_bernoulli_gradients("zgr", logits, b, cotangent, 1.0)
        self.assertTrue(0 < np.asarray(b).mean() < 1)
        np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=2e-6)

    def test_zgr_binary_sample_is_straight_through_s(self):
        logits = 2.0 * jax.random.normal(jax.random.key(15), (1000,))
        key = jax.random.key(16)
        np.testing.assert_array_equal(
            estimators.zgr(key, logits, distribution="bernoulli"),
            estimators.straight_through(key, logits, distribution="bernoulli"),
        )

    def test_zgr_is_the_mean_of_straight_through_and_darn(self):
        # (J(p) g + <D - p, g> (D - p)) / 2, the paper's definition, written another way than
        # equation (50) above; the ST half is st-softmax's gradient at temperature 1.
        logits = jnp.array([[0.3, -1.2, jnp.inf * -1, 2.0, 0.0]] * 32)
        cotangent = jax.random.normal(jax.random.key(17), logits.shape)
        key = jax.random.key(18)

        @jax.jit
        def value_and_vjps(x, g):
            d, pullback = jax.vjp(lambda x: estimators.zgr(key, x), x)
            _, pullback_st = jax.vjp(lambda x: estimators.st_softmax(key, x, 1.0), x)
            return d, pullback(g)[0], pullback_st(g)[0]

        d, grad, grad_st = value_and_vjps(logits, cotangent)
        p = np_softmax(logits)
        darn = np.sum((d - p) * cotangent, -1, keepdims=True) * (d - p)
        expected = 0.5 * (np.asarray(grad_st) + darn)
        np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)

    @parameterized.parameters("categorical", "bernoulli")
    def test_zgr_is_unbiased_for_linear_functions(self, distribution):
        # For f(D) = <w, D> both halves have expectation J(p) w, the exact gradient.
        if distribution == "categorical":
            logits, weights = jnp.array([0.5, -0.3, 0.1, -jnp.inf]), jnp.array([1.0, -2.0, 0.5, 3])
            p = np_softmax(logits)
            exact = p * (weights - np.dot(p, weights))
        else:
            logits, weights = jnp.array([-1.5, 0.0, 0.8]), jnp.array([1.0, -2.0, 0.5])
            q = special.expit(np.asarray(logits, np.float64))
            exact = q * (1 - q) * weights

        def grad(key):
            f = lambda x: jnp.dot(estimators.zgr(key, x, distribution=distribution), weights)
            return jax.grad(f)(logits)

        keys = jax.random.split(jax.random.key(19), NUM_SAMPLES)
        grads = np.asarray(jax.jit(jax.vmap(grad))(keys), np.float64)
        standard_error = grads.std(0) / np.sqrt(NUM_SAMPLES) + 1e-12
        np.testing.assert_array_less(np.abs(grads.mean(0) - exact), 5 * standard_error)

    @parameterized.parameters(*NAMES)
    def test_forward_and_reverse_mode_agree(self, name):
        # hard_with_soft_gradient is a custom JVP: jacfwd works and matches jacrev.
        logits = jnp.array([[0.2, -jnp.inf, 1.0, -0.5], [1.0, 0.0, 0.3, 2.0]])
        fn = lambda x: call(name, jax.random.key(20), x, 0.8)
        forward, reverse = jax.jit(lambda x: (jax.jacfwd(fn)(x), jax.jacrev(fn)(x)))(logits)
        np.testing.assert_allclose(forward, reverse, rtol=1e-6, atol=1e-7)


class ForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(name=NAMES, axis=(0, -1))
    @pytest.mark.slow
    def test_exact_one_hot_in_every_dtype(self, name, axis):
        logits = jax.random.normal(jax.random.key(0), (4, 6, 5))

        def draw(key, x):
            return [call(name, key, x.astype(dtype), 1.5, axis=axis) for dtype in FLOAT_DTYPES]

        samples = self.variant(draw)(jax.random.key(1), logits)
        for y, dtype in zip(samples, FLOAT_DTYPES, strict=True):
            chex.assert_shape(y, (4, 6, 5))
            chex.assert_type(y, dtype)
            values = np.asarray(y.astype(jnp.float32))
            self.assertTrue(np.all((values == 0.0) | (values == 1.0)))
            np.testing.assert_array_equal(values.sum(axis=axis), 1.0)

    @parameterized.parameters(*NAMES)
    @pytest.mark.slow
    def test_categorical_frequencies_match_softmax(self, name):
        logits = jnp.array([1.0, -0.5, -jnp.inf, 0.3, 2.0])
        batch = jnp.broadcast_to(logits, (NUM_SAMPLES, 5))
        draw = jax.jit(lambda k, x: call(name, k, x, 0.3))
        y = np.asarray(draw(jax.random.key(8), batch))
        np.testing.assert_array_equal(y.sum(-1), 1.0)
        counts = y.sum(0).astype(np.float64)
        self.assertEqual(counts[2], 0.0)
        unmasked = np.array([0, 1, 3, 4])
        probs = np_softmax(logits)[unmasked]
        self.assertGreater(chi_square_pvalue(counts[unmasked], probs), P_MIN)

    @parameterized.parameters(*NAMES)
    @pytest.mark.slow
    def test_bernoulli_frequencies_match_sigmoid(self, name):
        logits = jnp.array([-3.0, -0.5, 0.0, 0.7, 2.5, -jnp.inf, jnp.inf])
        batch = jnp.broadcast_to(logits, (NUM_SAMPLES, 7))
        draw = jax.jit(lambda k, x: call(name, k, x, 0.3, distribution="bernoulli"))
        b = np.asarray(draw(jax.random.key(9), batch))
        self.assertTrue(np.all((b == 0.0) | (b == 1.0)))
        np.testing.assert_array_equal(b[:, 5], 0.0)
        np.testing.assert_array_equal(b[:, 6], 1.0)
        for i, q in enumerate(special.expit(np.asarray(logits[:5], np.float64))):
            ones = int(b[:, i].sum())
            pvalue = stats.binomtest(ones, NUM_SAMPLES, q).pvalue
            self.assertGreater(pvalue, P_MIN, f"log-odds {logits[i]}: {ones} ones")

    @parameterized.parameters(*NAMES)
    @pytest.mark.slow
    def test_jit_vmap_and_grad(self, name):
        logits = jax.random.normal(jax.random.key(0), (3, 5)).at[0, 1].set(-jnp.inf)
        weights = jnp.arange(5.0)
        keys = jax.random.split(jax.random.key(1), 2)

        def loss(x, key):
            return jnp.sum(call(name, key, x, 0.7) * weights)

        def value_and_grad(x, key):
            return call(name, key, x, 0.7), jax.grad(loss)(x, key)

        singles = [value_and_grad(logits, key) for key in keys]
        batched = jax.jit(jax.vmap(value_and_grad, in_axes=(None, 0)))(logits, keys)
        for i, (y, grad) in enumerate(singles):
            np.testing.assert_array_equal(batched[0][i], y)
            np.testing.assert_allclose(batched[1][i], grad, rtol=1e-6, atol=1e-7)
        jitted = jax.jit(value_and_grad)(logits, keys[0])
        np.testing.assert_array_equal(jitted[0], singles[0][0])
        np.testing.assert_allclose(jitted[1], singles[0][1], rtol=1e-6, atol=1e-7)
        # vmap over the logits, the category axis last in each example.
        per_row = jax.vmap(lambda x: call(name, keys[0], x, 0.7))(logits)
        chex.assert_shape(per_row, (3, 5))
        np.testing.assert_array_equal(per_row.sum(-1), 1.0)

    @parameterized.parameters(*WITH_TEMPERATURE)
    @pytest.mark.slow
    def test_traced_temperature_does_not_recompile(self, name):
        chex.clear_trace_counter()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def loss_and_grad(key, x, temperature):
            return jax.value_and_grad(lambda x: jnp.sum(call(name, key, x, temperature) ** 2))(x)

        logits = jax.random.normal(jax.random.key(0), (8, 5))
        for temperature in (5.0, 3.0, 1.0, 0.2):
            loss_and_grad(jax.random.key(1), logits, jnp.float32(temperature))

    @parameterized.parameters(*NAMES)
    def test_empty_batch(self, name):
        logits = jnp.zeros((0, 5))
        y = call(name, jax.random.key(0), logits)
        grad = jax.grad(lambda x: jnp.sum(call(name, jax.random.key(0), x)))(logits)
        chex.assert_shape([y, grad], (0, 5))


@pytest.mark.slow
class MaskedAndExtremeTest(chex.TestCase):
    @parameterized.parameters(*NAMES)
    def test_masked_and_extreme_inputs_finite_in_every_dtype(self, name):
        weights = jnp.arange(4.0)

        @jax.jit
        def values_and_grads(logits_by_dtype, t):
            def loss(x, t):
                return jnp.sum(call(name, jax.random.key(0), x, t).astype(jnp.float32) * weights)

            return [
                (call(name, jax.random.key(0), x, t), jax.grad(loss, (0, 1))(x, t))
                for x in logits_by_dtype
            ]

        logits = jnp.array(
            [[1e4, -1e4, 0.0, 3.0], [0.5, -jnp.inf, 2.0, -jnp.inf], [-jnp.inf, 0.3, -jnp.inf, -1]]
        )
        logits_by_dtype = [logits.astype(dtype) for dtype in FLOAT_DTYPES]
        for temperature in (1e-3, 1.0, 1e3):
            results = values_and_grads(logits_by_dtype, jnp.float32(temperature))
            for (y, grads), dtype in zip(results, FLOAT_DTYPES, strict=True):
                chex.assert_type(y, dtype)
                chex.assert_type(grads[0], dtype)
                chex.assert_tree_all_finite((y, grads))
                masked = np.isneginf(np.asarray(logits))
                np.testing.assert_array_equal(np.asarray(y, np.float32)[masked], 0.0)
                np.testing.assert_array_equal(np.asarray(grads[0], np.float32)[masked], 0.0)

    @parameterized.parameters(*NAMES)
    def test_a_single_unmasked_category_is_certain_with_zero_gradient(self, name):
        logits = jnp.array([-jnp.inf, 0.3, -jnp.inf, -jnp.inf])
        y, grad = jax.value_and_grad(lambda x: call(name, jax.random.key(0), x, 0.5)[1])(logits)
        self.assertEqual(float(y), 1.0)
        np.testing.assert_array_equal(grad, 0.0)

    @parameterized.parameters(*NAMES)
    def test_infinite_log_odds_are_certain_with_zero_gradient(self, name):
        logits = jnp.array([-jnp.inf, jnp.inf, 0.5])

        def loss(x, t):
            return jnp.sum(call(name, jax.random.key(1), x, t, distribution="bernoulli"))

        grad_x, grad_t = jax.jit(jax.grad(loss, (0, 1)))(logits, 0.5)
        np.testing.assert_array_equal(
            call(name, jax.random.key(1), logits, 0.5, distribution="bernoulli")[:2], [0.0, 1.0]
        )
        np.testing.assert_array_equal(grad_x[:2], 0.0)
        chex.assert_tree_all_finite((grad_x, grad_t))

    @parameterized.parameters(*NAMES)
    def test_low_precision_is_computed_in_float32(self, name):
        logits = (2.0 * jax.random.normal(jax.random.key(2), (6, 5))).at[1, 3].set(-jnp.inf)
        cotangent = jax.random.normal(jax.random.key(3), (6, 5))
        key = jax.random.key(4)
        for dtype in (jnp.bfloat16, jnp.float16):
            for distribution in ("categorical", "bernoulli"):
                rounded = logits.astype(dtype)

                @jax.jit
                def vjp(x, g, distribution=distribution):
                    y, pullback = jax.vjp(
                        lambda x: call(name, key, x, 0.7, distribution=distribution), x
                    )
                    return y, pullback(g)[0]

                g = cotangent.astype(dtype)
                y, grad = vjp(rounded, g)
                y32, grad32 = vjp(rounded.astype(jnp.float32), g.astype(jnp.float32))
                chex.assert_type([y, grad], dtype)
                np.testing.assert_array_equal(np.asarray(y, np.float32), y32)
                np.testing.assert_array_equal(
                    np.asarray(grad, np.float32), np.asarray(grad32.astype(dtype), np.float32)
                )


@pytest.mark.slow
class InvalidInputsTest(chex.TestCase):
    VALID_ROW = (0.5, -INF, 2.0, 0.0)
    INVALID_ROWS = (
        (NAN, 0.0, 1.0, 2.0),
        (-INF, NAN, -INF, -INF),
        (0.0, INF, 1.0, -INF),
        (-INF, -INF, -INF, -INF),
    )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*NAMES)
    def test_invalid_rows_are_nan_in_values_and_gradients(self, name):
        rows = [self.VALID_ROW, *self.INVALID_ROWS, (1e4, -1e4, 0.0, 3.0), self.VALID_ROW]
        logits = jnp.array(rows, jnp.float32)
        reference = jnp.array([self.VALID_ROW] * 5 + rows[5:], jnp.float32)
        invalid, valid = np.arange(1, 5), np.array([0, 5, 6])

        def values_and_grads(x):
            y, pullback = jax.vjp(lambda x: call(name, jax.random.key(0), x, 1.5), x)
            # Only the valid rows reach the loss: the invalid rows' gradients must still be NaN.
            cotangent = jnp.zeros_like(y).at[valid].set(jnp.array([1.0, -2.0, 0.5, 3.0]))
            return y, pullback(cotangent)[0]

        y, grad = self.variant(values_and_grads)(logits)
        reference_y, reference_grad = self.variant(values_and_grads)(reference)
        self.assertTrue(bool(jnp.all(jnp.isnan(y[invalid]))))
        self.assertTrue(bool(jnp.all(jnp.isnan(grad[invalid]))))
        np.testing.assert_array_equal(y[valid], reference_y[valid])
        np.testing.assert_array_equal(grad[valid], reference_grad[valid])
        chex.assert_tree_all_finite(grad[valid])

    @parameterized.product(name=WITH_TEMPERATURE, row=(1, 2, 3))
    def test_temperature_gradient_is_nan(self, name, row):
        loss = lambda t, x: jnp.sum(
            jnp.nan_to_num(call(name, jax.random.key(0), x, t)) * jnp.arange(4.0)
        )
        batch = jnp.array([self.VALID_ROW, self.INVALID_ROWS[row], self.VALID_ROW])
        self.assertTrue(bool(jnp.isnan(jax.jit(jax.grad(loss))(jnp.float32(1.5), batch))))
        valid = jnp.array([self.VALID_ROW] * 3)
        chex.assert_tree_all_finite(jax.jit(jax.grad(loss))(jnp.float32(1.5), valid))

    @parameterized.parameters(*NAMES)
    def test_nan_log_odds_give_nan(self, name):
        logits = jnp.array([0.5, NAN, -1.0])
        b, pullback = jax.vjp(
            lambda x: call(name, jax.random.key(0), x, distribution="bernoulli"), logits
        )
        grad = pullback(jnp.ones(3))[0]
        self.assertTrue(bool(jnp.isnan(b[1])))
        self.assertTrue(bool(jnp.isnan(grad[1])))
        chex.assert_tree_all_finite((b[::2], grad[::2]))


class BadInputsTest(parameterized.TestCase):
    @parameterized.parameters(0.0, -1.0, NAN, INF, -INF)
    def test_bad_gap_raises(self, gap):
        for distribution in ("categorical", "bernoulli"):
            with self.assertRaisesRegex(ValueError, "`gap` must be finite and > 0"):
                estimators.gapped_st(
                    jax.random.key(0), jnp.zeros(3), gap=gap, distribution=distribution
                )

    @parameterized.parameters(("1.0",), (True,), (None,), ([1.0],))
    def test_gap_of_the_wrong_type_raises(self, gap):
        with self.assertRaisesRegex(TypeError, "`gap` must be a real number"):
            estimators.gapped_st(jax.random.key(0), jnp.zeros(3), gap=gap)

    @pytest.mark.slow
    def test_gap_as_a_concrete_array_is_accepted(self):
        key, logits = jax.random.key(0), jnp.zeros(3)
        np.testing.assert_array_equal(
            estimators.gapped_st(key, logits, gap=np.float32(2.0)),
            estimators.gapped_st(key, logits, gap=2.0),
        )
        with self.assertRaisesRegex(ValueError, "`gap` must be finite and > 0"):
            estimators.gapped_st(key, logits, gap=jnp.float32(-1.0))

    @parameterized.parameters(*NAMES)
    def test_unknown_distribution_raises(self, name):
        for distribution in ("gaussian", "Bernoulli", None):
            with self.assertRaisesRegex(ValueError, "`distribution` must be one of"):
                call(name, jax.random.key(0), jnp.zeros(3), distribution=distribution)

    @parameterized.parameters(*NAMES)
    def test_bad_logits_and_axis_raise(self, name):
        key = jax.random.key(0)
        with self.assertRaisesRegex(TypeError, "`logits` must have a floating dtype.*int32"):
            call(name, key, jnp.arange(3))
        with self.assertRaisesRegex(TypeError, "`logits` must have a floating dtype.*int32"):
            call(name, key, jnp.arange(3), distribution="bernoulli")
        with self.assertRaisesRegex(ValueError, r"`axis` must be in \[-1, 1\).*axis=1"):
            call(name, key, jnp.zeros(3), axis=1)
        with self.assertRaisesRegex(ValueError, "at least one dimension"):
            call(name, key, jnp.float32(0.0))

    @parameterized.parameters(*WITH_TEMPERATURE)
    def test_bad_temperature_raises(self, name):
        key = jax.random.key(0)
        for temperature in (0.0, -2.0, NAN):
            for distribution in ("categorical", "bernoulli"):
                with self.assertRaisesRegex(ValueError, "`temperature` must be"):
                    call(name, key, jnp.zeros(3), temperature, distribution=distribution)
        with self.assertRaisesRegex(TypeError, "`temperature` must be a real number"):
            call(name, key, jnp.zeros(3), "hot")

    def test_zgr_takes_no_temperature(self):
        with self.assertRaises(TypeError):
            estimators.zgr(jax.random.key(0), jnp.zeros(3), 0.5)

    def test_gapped_st_gap_option_is_checked_by_the_spec(self):
        spec = estimators.spec("gapped-st")
        self.assertEqual(spec.parse_options(["gap=2.5"]), {"gap": 2.5})
        with self.assertRaises(TypeError):
            spec.check_options({"gap": "wide"})
        with self.assertRaisesRegex(ValueError, "no option 'temperature'"):
            spec.check_options({"temperature": 1.0})


if __name__ == "__main__":
    absltest.main()
