"""Tests for gumbel_jax.schedules: values against the formula, tracing, and errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from gumbel_jax import schedules


def reference(step, initial, rate, minimum, every):
    held = np.floor_divide(step, every) * every
    return np.maximum(minimum, initial * np.exp(-rate * held.astype(np.float64)))


class ExponentialTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("defaults", {}),
        ("paper", {"initial": 1.0, "rate": 1e-4, "minimum": 0.5, "every": 500}),
        ("hot_start", {"initial": 5.0, "rate": 1e-3, "minimum": 0.1, "every": 7}),
    )
    @pytest.mark.slow
    def test_matches_formula(self, params):
        schedule = schedules.exponential(**params)
        full = {"initial": 1.0, "rate": 3e-5, "minimum": 0.5, "every": 1, **params}
        steps = np.array([0, 1, 6, 7, 499, 500, 501, 10_000, 123_457, 2_000_000], np.int32)
        values = self.variant(schedule)(steps)
        chex.assert_shape(values, steps.shape)
        chex.assert_type(values, jnp.float32)
        np.testing.assert_allclose(values, reference(steps, **full), rtol=1e-6, atol=0)
        self.assertEqual(float(values[0]), full["initial"])
        self.assertEqual(float(values[-1]), np.float32(full["minimum"]))

    @pytest.mark.slow
    def test_holds_between_updates_and_never_goes_below_the_floor(self):
        schedule = schedules.exponential(2.0, rate=1e-3, minimum=0.3, every=100)
        values = np.asarray(schedule(np.arange(5_000)))
        self.assertTrue(np.all(values >= np.float32(0.3)))
        self.assertTrue(np.all(np.diff(values) <= 0.0))
        np.testing.assert_array_equal(values[:100], 2.0)
        self.assertLen(np.unique(values[100:200]), 1)
        self.assertLess(values[100], values[99])

    @pytest.mark.slow
    def test_traceable_in_scan_without_recompiling(self):
        chex.clear_trace_counter()
        schedule = schedules.exponential(1.0, rate=1e-2, minimum=0.5, every=3)

        def body(carry, step):
            return carry + schedule(step), schedule(step)

        _, values = jax.jit(lambda: jax.lax.scan(body, jnp.float32(0.0), jnp.arange(200)))()
        np.testing.assert_allclose(
            values, reference(np.arange(200), 1.0, 1e-2, 0.5, 3), rtol=1e-6, atol=0
        )

        @jax.jit
        @chex.assert_max_traces(n=1)
        def temperature_at(step):
            return schedule(step)

        for step in (0, 10, 1_000, 50_000):
            temperature_at(jnp.int32(step))

    @parameterized.named_parameters(
        ("zero_initial", {"initial": 0.0}, ValueError, "`initial` must be finite and > 0"),
        ("negative_rate", {"rate": -1e-3}, ValueError, "`rate` must be finite and >= 0"),
        ("zero_minimum", {"minimum": 0.0}, ValueError, "`minimum` must be finite and > 0"),
        ("nan_initial", {"initial": float("nan")}, ValueError, "`initial` must be finite"),
        ("zero_every", {"every": 0}, ValueError, "`every` must be >= 1"),
        ("float_every", {"every": 2.5}, TypeError, "`every` must be a Python int"),
        ("string_rate", {"rate": "fast"}, TypeError, "`rate` must be a real number"),
    )
    def test_bad_parameters_raise(self, params, error, message):
        with self.assertRaisesRegex(error, message):
            schedules.exponential(**params)


if __name__ == "__main__":
    absltest.main()


class DomainTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_every_integer_step_gives_a_value_in_the_range(self):
        schedule = schedules.exponential(2.0, rate=1e-3, minimum=0.3, every=7)
        steps = np.array([-(2**31), -(2**20), -8, -7, -1, 0, 1, 7, 2**20, 2**31 - 1], np.int32)
        values = np.asarray(self.variant(schedule)(steps))
        self.assertTrue(np.all((values >= np.float32(0.3)) & (values <= np.float32(2.0))))
        np.testing.assert_array_equal(values[:6], 2.0)  # negative steps are held at step 0

    def test_a_floor_above_the_start_is_refused(self):
        with self.assertRaisesRegex(ValueError, "`minimum` .* must not exceed `initial`"):
            schedules.exponential(0.3, minimum=0.5)
