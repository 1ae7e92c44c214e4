"""Invalid inputs: one semantics for every sampler, estimator and density, and checked options.

The rule (``gumbel_jax``'s docstring, "Invalid inputs"): a row of logits with a ``NaN`` or ``+inf``
logit, or with no finite logit, is ``NaN`` in values and in gradients, never a plausible sample,
and the other rows are unaffected; ``-inf`` masks a category as long as the row has a finite logit.
Options whose value is known before tracing (Python, NumPy and concrete JAX values alike) are
checked, and wrong types raise ``TypeError`` naming the argument and what it received.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from gumbel_jax import _checks, _ops, concrete, estimators, sample, schedules

NAN, INF = float("nan"), float("inf")
VALID_ROW = (0.5, -INF, 2.0, 0.0)
INVALID_ROWS = (
    ("nan_first", (NAN, 0.0, 1.0, 2.0)),
    ("nan_middle", (0.0, NAN, 1.0, 2.0)),
    ("nan_last", (0.0, 1.0, 2.0, NAN)),
    ("nan_among_masked", (-INF, NAN, -INF, -INF)),
    ("pos_inf", (0.0, INF, 1.0, -INF)),
    ("all_neg_inf", (-INF, -INF, -INF, -INF)),
)
KEY = jax.random.key(0)
WEIGHTS = jnp.array([1.0, -2.0, 0.5, 3.0])

# Every categorical sampler and estimator whose value is differentiable in the logits.
DIFFERENTIABLE = {
    "relaxed": lambda x, t: sample.gumbel_softmax(KEY, x, t),
    "hard": lambda x, t: sample.gumbel_softmax(KEY, x, t, hard=True),
    "estimators.relaxed": lambda x, t: estimators.gumbel_softmax(KEY, x, t),
    "st": lambda x, t: estimators.straight_through(KEY, x, t),
    "gumbel_rao": lambda x, t: estimators.gumbel_rao(KEY, x, t, num_samples=4),
    "reinmax": lambda x, t: estimators.reinmax(KEY, x, t),
    "sample_log": lambda x, t: concrete.sample_log(KEY, x, t),
}
# Those that pass a gradient to the temperature (reinmax does not, by design).
TEMPERATURE_GRADIENT = ("relaxed", "hard", "estimators.relaxed", "st", "gumbel_rao", "sample_log")


LARGE_ROW = (1e4, -1e4, 0.0, 3.0)
# Every kind of invalid row at once, between valid ones: rows are independent.
LOGITS = jnp.array([VALID_ROW, *dict(INVALID_ROWS).values(), LARGE_ROW, VALID_ROW], jnp.float32)
# The same with every invalid row replaced by a valid one: the reference for the valid rows.
REFERENCE_LOGITS = jnp.array([VALID_ROW] * (len(INVALID_ROWS) + 1) + [LARGE_ROW, VALID_ROW])
INVALID = np.arange(1, len(INVALID_ROWS) + 1)
VALID = np.array([0, len(INVALID_ROWS) + 1, len(INVALID_ROWS) + 2])


def batch_with(row):
    """Four rows: valid ones around ``row`` (row 1), so neighbours can be seen to be unaffected."""
    return jnp.array([VALID_ROW, row, LARGE_ROW, VALID_ROW], jnp.float32)


def finite_part(y):
    """``y`` with ``-inf`` (masked categories of ``sample_log``) replaced by 0, for comparisons."""
    return jnp.where(jnp.isneginf(y), 0.0, y)


class HelpersTest(parameterized.TestCase):
    @parameterized.named_parameters(*INVALID_ROWS)
    @pytest.mark.slow
    def test_invalid_rows_finds_the_invalid_row_on_any_axis(self, row):
        logits = batch_with(row)
        np.testing.assert_array_equal(
            np.asarray(_ops.invalid_rows(logits, 1)), [[False], [True], [False], [False]]
        )
        np.testing.assert_array_equal(
            np.asarray(_ops.invalid_rows(logits.T, 0)), [[False, True, False, False]]
        )

    def test_masked_and_large_finite_rows_are_valid(self):
        logits = jnp.array([VALID_ROW, (1e4, -1e4, 0.0, 3.0), (-INF, -INF, -1e4, -INF)])
        self.assertFalse(bool(jnp.any(_ops.invalid_rows(logits, -1))))

    def test_nan_where_invalid_values(self):
        x = jnp.array([[1.5, -INF, 0.0], [2.0, -1.0, 3.0]])
        invalid = jnp.array([[False], [True]])
        for fn in (_ops.nan_where_invalid, jax.jit(_ops.nan_where_invalid)):
            y = fn(x, invalid)
            np.testing.assert_array_equal(np.asarray(y[0]), np.asarray(x[0]))  # exact, -inf kept
            self.assertTrue(bool(jnp.all(jnp.isnan(y[1]))))
        # Even on a one-hot under jit (XLA would turn ``one_hot * nan`` into a select).
        one_hot = jax.jit(
            lambda x: _ops.nan_where_invalid(jax.nn.one_hot(jnp.argmax(x, -1), 3), invalid)
        )(x)
        self.assertTrue(bool(jnp.all(jnp.isnan(one_hot[1]))))

    @pytest.mark.slow
    def test_the_pair_makes_every_gradient_nan(self):
        # In: logits and temperature; a where in between that zeroes masked entries; out.
        def fn(x, t):
            invalid = _ops.invalid_rows(x, -1)
            x = _ops.nan_gradient_where_invalid(x, invalid)
            t = _ops.nan_gradient_where_invalid(t, invalid)
            y = jnp.where(jnp.isneginf(x), 0.0, jnp.where(jnp.isneginf(x), 0.0, x) * t)
            return _ops.nan_where_invalid(y, invalid)

        x = jnp.array([[1.5, -INF, 0.0], [-INF, -INF, -INF]])
        y, pullback = jax.vjp(fn, x, jnp.float32(2.0))
        grad_x, grad_t = jax.jit(pullback)(jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        np.testing.assert_array_equal(np.asarray(y[0]), [3.0, 0.0, 0.0])
        self.assertTrue(bool(jnp.all(jnp.isnan(y[1]))))
        np.testing.assert_array_equal(np.asarray(grad_x[0]), [2.0, 0.0, 2.0])
        self.assertTrue(bool(jnp.all(jnp.isnan(grad_x[1]))))
        self.assertTrue(bool(jnp.isnan(grad_t)))

    @pytest.mark.slow
    def test_nan_gradient_where_invalid_keeps_values(self):
        x = jnp.array([[1.5, -INF, 0.0], [-INF, NAN, INF]])
        invalid = jnp.array([[False], [True]])
        y, pullback = jax.vjp(lambda x: _ops.nan_gradient_where_invalid(x, invalid), x)
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))  # values untouched
        (grad,) = jax.jit(pullback)(jnp.array([[0.5, -2.0, 0.0], [0.0, 0.0, 0.0]]))
        np.testing.assert_array_equal(np.asarray(grad[0]), [0.5, -2.0, 0.0])
        self.assertTrue(bool(jnp.all(jnp.isnan(grad[1]))))
        _, tangent = jax.jvp(
            lambda x: _ops.nan_gradient_where_invalid(x, invalid), (x,), (jnp.ones_like(x),)
        )
        np.testing.assert_array_equal(np.asarray(tangent[0]), 1.0)
        self.assertTrue(bool(jnp.all(jnp.isnan(tangent[1]))))


@pytest.mark.slow
class CategoricalInvalidRowsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name.replace(".", "_"), name) for name in DIFFERENTIABLE])
    def test_invalid_rows_are_nan_in_values_and_gradients(self, name):
        fn = DIFFERENTIABLE[name]
        temperature = 1.5  # >= 1, so reinmax accepts it too

        def values_and_grads(x):
            y, pullback = jax.vjp(lambda x: fn(x, temperature), x)
            # Only the valid rows reach the loss: the invalid rows' gradients must still be NaN.
            cotangent = jnp.zeros_like(y).at[VALID].set(WEIGHTS)
            # A one-hot cotangent made inside the computation, as a loss against labels gives.
            labels = jax.nn.one_hot(jnp.arange(y.shape[0]) % 4, 4, dtype=y.dtype)
            return y, pullback(cotangent)[0], pullback(labels)[0]

        y, grad, label_grad = self.variant(values_and_grads)(LOGITS)
        reference_y, reference_grad, _ = self.variant(values_and_grads)(REFERENCE_LOGITS)
        for i in INVALID:
            self.assertTrue(bool(jnp.all(jnp.isnan(y[i]))), f"row {i}: values {y[i]}")
            self.assertTrue(bool(jnp.all(jnp.isnan(grad[i]))), f"row {i}: gradient {grad[i]}")
            self.assertTrue(bool(jnp.all(jnp.isnan(label_grad[i]))), f"row {i}: {label_grad[i]}")
        # The valid rows are exactly what they are without invalid rows beside them.
        np.testing.assert_array_equal(finite_part(y[VALID]), finite_part(reference_y[VALID]))
        np.testing.assert_array_equal(grad[VALID], reference_grad[VALID])
        chex.assert_tree_all_finite((grad[VALID], label_grad[VALID]))

    @parameterized.product(
        name=TEMPERATURE_GRADIENT,
        row=(dict(INVALID_ROWS)["nan_middle"], dict(INVALID_ROWS)["pos_inf"], (-INF,) * 4),
    )
    def test_temperature_gradient_is_nan(self, name, row):
        fn = DIFFERENTIABLE[name]
        loss = lambda t, x: jnp.sum(finite_part(fn(x, t)) * WEIGHTS)
        grad = jax.jit(jax.grad(loss))(jnp.float32(1.5), batch_with(row))
        self.assertTrue(bool(jnp.isnan(grad)))
        chex.assert_tree_all_finite(
            jax.jit(jax.grad(loss))(jnp.float32(1.5), batch_with(VALID_ROW))
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_gumbel_max_rows_are_nan(self):
        for dtype in (jnp.float32, jnp.bfloat16):
            y = self.variant(lambda x: sample.gumbel_max(KEY, x))(LOGITS.astype(dtype))
            reference = sample.gumbel_max(KEY, REFERENCE_LOGITS.astype(dtype))
            chex.assert_type(y, dtype)
            self.assertTrue(bool(jnp.all(jnp.isnan(y[INVALID]))), f"{y[INVALID]}")
            np.testing.assert_array_equal(y[VALID], reference[VALID])

    def test_low_precision_inputs_follow_the_rule(self):
        for dtype in (jnp.bfloat16, jnp.float16):
            for name in ("relaxed", "hard", "gumbel_rao", "reinmax"):
                y = DIFFERENTIABLE[name](LOGITS.astype(dtype), 1.5)
                chex.assert_type(y, dtype)
                self.assertTrue(bool(jnp.all(jnp.isnan(y[INVALID]))), f"{name} {dtype}")
                chex.assert_tree_all_finite(y[VALID])

    def test_masked_categories_are_still_never_sampled_with_zero_gradient(self):
        logits = jnp.broadcast_to(jnp.array(VALID_ROW), (2000, 4))
        for name in ("hard", "st", "gumbel_rao", "reinmax"):
            fn = DIFFERENTIABLE[name]
            y, pullback = jax.vjp(lambda x, fn=fn: fn(x, 1.5), logits)
            (grad,) = pullback(jnp.broadcast_to(WEIGHTS, y.shape))
            np.testing.assert_array_equal(np.asarray(y[:, 1]), 0.0)
            np.testing.assert_array_equal(np.asarray(grad[:, 1]), 0.0)
            chex.assert_tree_all_finite((y, grad))


@pytest.mark.slow
class TopKInvalidRowsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_unfilled_slots_hold_num_categories(self):
        logits = jnp.array(
            [
                VALID_ROW,  # three unmasked categories
                (NAN, 0.0, 1.0, 2.0),
                (0.0, INF, 1.0, 2.0),
                (-INF, -INF, -INF, -INF),
                (-INF, 0.3, -INF, -INF),  # one unmasked category
                (1e4, -1e4, 0.0, 3.0),
            ]
        )
        indices = np.asarray(self.variant(lambda x: sample.gumbel_top_k(KEY, x, 3))(logits))
        np.testing.assert_array_equal(indices[1:4], 4)
        np.testing.assert_array_equal(indices[4], [1, 4, 4])
        self.assertEqual(sorted(indices[0].tolist()), [0, 2, 3])
        self.assertLen(set(indices[5].tolist()), 3)
        self.assertTrue(np.all(indices[5] < 4))

    def test_sentinel_on_another_axis(self):
        logits = jnp.array([(0.0, 1.0, 2.0), (0.0, NAN, 1.0)]).T  # categories on axis 0
        indices = np.asarray(sample.gumbel_top_k(KEY, logits, 2, axis=0))
        chex.assert_shape(indices, (2, 2))
        np.testing.assert_array_equal(indices[:, 1], 3)
        self.assertTrue(np.all(indices[:, 0] < 3))

    def test_valid_rows_unchanged(self):
        # With every category unmasked, the k-hot is a plain top-k of the perturbed logits.
        logits = jax.random.normal(jax.random.key(1), (64, 6))
        indices = sample.gumbel_top_k(KEY, logits, 6)
        np.testing.assert_array_equal(
            np.sort(np.asarray(indices), axis=-1), np.broadcast_to(np.arange(6), (64, 6))
        )


@pytest.mark.slow
class DensityInvalidRowsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_densities_and_kl_are_nan(self):
        log_y = jax.nn.log_softmax(jnp.array([0.3, -0.2, 0.1, 0.5]))
        functions = {
            "log_prob_log": lambda x: concrete.log_prob_log(log_y, x, 0.7),
            "log_prob": lambda x: concrete.log_prob(jnp.exp(log_y), x, 0.7),
            "kl_q": lambda x: concrete.kl_relaxed(KEY, x, 0.7, jnp.zeros(4), 0.5),
            "kl_p": lambda x: concrete.kl_relaxed(KEY, REFERENCE_LOGITS, 0.7, x, 0.5),
        }
        # Only the valid rows reach the loss: the invalid rows' gradients must still be NaN.
        cotangent = jnp.zeros(LOGITS.shape[0]).at[VALID].set(1.0)
        for name, fn in functions.items():

            def values_and_grads(x, fn=fn):
                value, pullback = jax.vjp(fn, x)
                return value, pullback(cotangent)[0]

            value, grad = self.variant(values_and_grads)(LOGITS)
            reference_value, reference_grad = self.variant(values_and_grads)(REFERENCE_LOGITS)
            self.assertTrue(bool(jnp.all(jnp.isnan(value[INVALID]))), f"{name}: {value}")
            self.assertTrue(bool(jnp.all(jnp.isnan(grad[INVALID]))), f"{name}: gradient {grad}")
            if name == "kl_q":  # q masks a category that p does not: documented NaN, skip
                continue
            np.testing.assert_array_equal(value[VALID], reference_value[VALID])
            np.testing.assert_array_equal(grad[VALID], reference_grad[VALID])
            chex.assert_tree_all_finite((value[VALID], grad[VALID]))

    def test_density_gradients_with_respect_to_the_point_and_temperature_are_nan(self):
        log_y = jnp.broadcast_to(jax.nn.log_softmax(jnp.array([0.3, -0.2, 0.1, 0.5])), (4, 4))
        logits = batch_with((-INF,) * 4)
        for fn in (
            lambda y, t: concrete.log_prob_log(y, logits, t),
            lambda y, t: concrete.log_prob(jnp.exp(y), logits, t),
        ):
            grad_y, grad_t = jax.jit(jax.grad(lambda y, t, fn=fn: fn(y, t)[0], (0, 1)))(log_y, 0.7)
            self.assertTrue(bool(jnp.all(jnp.isnan(grad_y[1]))), f"{grad_y}")
            self.assertTrue(bool(jnp.isnan(grad_t)))
            chex.assert_tree_all_finite(grad_y[jnp.array([0, 2, 3])])


ALL_TEMPERATURE_TAKERS = {
    "gumbel_softmax": lambda t: sample.gumbel_softmax(KEY, jnp.zeros(3), t),
    "hard": lambda t: sample.gumbel_softmax(KEY, jnp.zeros(3), t, hard=True),
    "st": lambda t: estimators.straight_through(KEY, jnp.zeros(3), t),
    "gumbel_rao": lambda t: estimators.gumbel_rao(KEY, jnp.zeros(3), t),
    "reinmax": lambda t: estimators.reinmax(KEY, jnp.zeros(3), t),
    "sample_log": lambda t: concrete.sample_log(KEY, jnp.zeros(3), t),
    "log_prob_log": lambda t: concrete.log_prob_log(jnp.log(jnp.ones(3) / 3), jnp.zeros(3), t),
    "log_prob": lambda t: concrete.log_prob(jnp.ones(3) / 3, jnp.zeros(3), t),
}


class ConcreteOptionsTest(chex.TestCase):
    @parameterized.product(
        name=tuple(ALL_TEMPERATURE_TAKERS),
        temperature=(
            ("zero", 0.0),
            ("negative", -1.0),
            ("nan", NAN),
            ("inf", INF),
            ("vector_with_zero", (1.5, 0.0, 2.0)),
        ),
    )
    def test_concrete_jax_temperature_checked_like_a_python_number(self, name, temperature):
        label, value = temperature
        fn = ALL_TEMPERATURE_TAKERS[name]
        for wrap in (jnp.asarray, np.asarray, lambda v: jnp.asarray(v, jnp.bfloat16)):
            with self.assertRaisesRegex(ValueError, "`temperature` must be", msg=label):
                fn(wrap(value))

    def test_reinmax_concrete_temperature_below_one_raises(self):
        with self.assertRaisesRegex(ValueError, "`temperature` must be >= 1.0.*recommend"):
            estimators.reinmax(KEY, jnp.zeros(3), jnp.array(0.5))

    def test_kl_names_the_temperature(self):
        for name in ("temperature_q", "temperature_p"):
            temperatures = {"temperature_q": 0.5, "temperature_p": 0.5, name: jnp.array(0.0)}
            with self.assertRaisesRegex(ValueError, f"`{name}` must be > 0"):
                concrete.kl_relaxed(
                    KEY,
                    jnp.zeros(3),
                    temperatures["temperature_q"],
                    jnp.zeros(3),
                    temperatures["temperature_p"],
                )

    @pytest.mark.slow
    def test_traced_temperature_is_still_unchecked_and_does_not_recompile(self):
        # Under jit the temperature is a tracer: no check, 0 gives NaN as documented.
        y = jax.jit(lambda t: sample.gumbel_softmax(KEY, jnp.zeros(3), t))(jnp.array(0.0))
        self.assertTrue(bool(jnp.all(jnp.isnan(y))))
        grad = jax.grad(
            lambda t: jnp.sum(sample.gumbel_softmax(KEY, jnp.zeros(3), t) * WEIGHTS[:3])
        )
        chex.assert_tree_all_finite(grad(jnp.array(0.7)))  # a JVP tracer: not checked, no error
        chex.clear_trace_counter()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def draw(t):
            return estimators.gumbel_rao(KEY, jnp.zeros(3), t)

        for t in (2.0, 1.0, 0.5):
            draw(jnp.float32(t))

    def test_static_value(self):
        np.testing.assert_array_equal(_checks.static_value(jnp.array([0.5, 2.0])), [0.5, 2.0])
        self.assertIsInstance(_checks.static_value(jnp.array(0.5)), np.ndarray)
        self.assertIsNone(_checks.static_value(True))
        seen = []
        jax.jit(lambda t: seen.append(_checks.static_value(t)))(jnp.array(0.5))
        self.assertEqual(seen, [None])

    @pytest.mark.slow
    def test_schedule_accepts_concrete_arrays_and_checks_them(self):
        schedule = schedules.exponential(jnp.array(1.0), rate=np.float32(0.0), minimum=0.5)
        self.assertEqual(float(schedule(10)), 1.0)
        with self.assertRaisesRegex(ValueError, "`minimum` must be finite and > 0"):
            schedules.exponential(1.0, minimum=jnp.array(0.0))


class WrongTypesTest(chex.TestCase):
    @parameterized.product(
        name=tuple(ALL_TEMPERATURE_TAKERS),
        temperature=(
            ("string", ".5", r"'\.5' of type str"),
            ("bool", True, "True of type bool"),
            ("none", None, "None of type NoneType"),
            ("complex", 1j, "1j of type complex"),
            ("list", [0.5], r"\[0\.5\] of type list"),
            ("jax_bool", jnp.array(True), "bool"),
            ("jax_complex", jnp.array(1.0 + 1.0j), "complex"),
        ),
    )
    def test_temperature_of_the_wrong_type_raises_type_error(self, name, temperature):
        _, value, received = temperature
        with self.assertRaisesRegex(TypeError, f"`temperature` must be a real.*got .*{received}"):
            ALL_TEMPERATURE_TAKERS[name](value)

    def test_traced_bool_temperature_raises_type_error(self):
        with self.assertRaisesRegex(TypeError, "`temperature` must be a real.*traced.*bool"):
            jax.jit(lambda t: sample.gumbel_softmax(KEY, jnp.zeros(3), t))(True)

    def test_kl_temperatures_of_the_wrong_type(self):
        with self.assertRaisesRegex(TypeError, "`temperature_p` must be a real.*'1' of type str"):
            concrete.kl_relaxed(KEY, jnp.zeros(3), 0.5, jnp.zeros(3), "1")

    @parameterized.named_parameters(("string", "abc"), ("none", None), ("object", object()))
    def test_logits_of_the_wrong_type_raise_type_error(self, logits):
        with self.assertRaisesRegex(TypeError, "`logits` must be a floating array.*got"):
            sample.gumbel_softmax(KEY, logits)
        with self.assertRaisesRegex(TypeError, "`log_y` must be a floating array.*got"):
            concrete.log_prob_log(logits, jnp.zeros(3), 1.0)

    @parameterized.named_parameters(("string", ".5"), ("none_string", "nothing"))
    def test_bad_dtype_names_the_argument(self, dtype):
        with self.assertRaisesRegex(TypeError, f"`dtype` must be a floating dtype.*'{dtype}'"):
            sample.gumbel(KEY, (3,), dtype)

    def test_other_integer_options(self):
        with self.assertRaisesRegex(TypeError, "`num_samples` must be a Python int.*'3'"):
            estimators.gumbel_rao(KEY, jnp.zeros(3), num_samples="3")
        with self.assertRaisesRegex(TypeError, "`k` must be a Python int.*None"):
            sample.gumbel_top_k(KEY, jnp.zeros(3), None)
        with self.assertRaisesRegex(TypeError, "`axis` must be an int; got 'x'"):
            sample.gumbel_softmax(KEY, jnp.zeros(3), axis="x")
        with self.assertRaisesRegex(TypeError, "`initial` must be a real number; got '1'"):
            schedules.exponential("1")


if __name__ == "__main__":
    absltest.main()
