"""Traced parameters outside their domain give NaN, never a plausible sample.

A concrete temperature <= 0 raises before tracing (``test_invalid_inputs``); a traced one cannot
be checked, so every sampler, estimator and density makes the values and gradients it touches
``NaN`` (``help(gumbel_jax)``, "Invalid inputs"). The estimators come from the registry, so a
newly registered one is held to the rule too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from gumbel_jax import concrete, estimators, sample

KEY = jax.random.key(0)
LOGITS = jnp.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]], jnp.float32)
LOG_ODDS = jnp.array([-1.0, 0.0, 2.0], jnp.float32)
OUTSIDE = (("zero", 0.0), ("negative", -0.7), ("nan", float("nan")))

# name -> (fn(x, temperature), x): every sampler and density with a temperature.
SAMPLERS = {
    "gumbel_softmax": (lambda x, t: sample.gumbel_softmax(KEY, x, t), LOGITS),
    "gumbel_softmax_hard": (lambda x, t: sample.gumbel_softmax(KEY, x, t, hard=True), LOGITS),
    "relaxed_top_k_hard": (lambda x, t: sample.relaxed_top_k(KEY, x, 2, t, hard=True), LOGITS),
    "sample_log": (lambda x, t: concrete.sample_log(KEY, x, t), LOGITS),
    "log_prob": (lambda x, t: concrete.log_prob(jax.nn.softmax(x), x, t), LOGITS),
    "kl_relaxed_q": (lambda x, t: concrete.kl_relaxed(KEY, x, t, jnp.zeros_like(x), 1.0), LOGITS),
    "kl_relaxed_p": (lambda x, t: concrete.kl_relaxed(KEY, x, 1.0, jnp.zeros_like(x), t), LOGITS),
    "relaxed_bernoulli_hard": (
        lambda x, t: sample.relaxed_bernoulli(KEY, x, t, hard=True),
        LOG_ODDS,
    ),
    "hard_concrete": (lambda x, t: sample.hard_concrete(KEY, x, t), LOG_ODDS),
    "bernoulli_log_prob": (lambda x, t: concrete.bernoulli_log_prob(0.3 + 0 * x, x, t), LOG_ODDS),
    "hard_concrete_l0": (lambda x, t: concrete.hard_concrete_l0(x, t), LOG_ODDS),
}


def _sample_estimator_cases():
    for name in estimators.names(kind="sample"):
        spec = estimators.spec(name)
        if not spec.uses_temperature:
            continue
        for distribution in spec.distributions:
            yield f"{name}_{distribution}", name, distribution


@pytest.mark.slow
class TracedTemperatureTest(parameterized.TestCase):
    def assert_nan_values_and_gradients(self, fn, x, temperature):
        value = jax.jit(fn)(x, temperature)
        self.assertTrue(np.all(np.isnan(np.asarray(value))), f"value {value}")
        gradient = jax.jit(jax.grad(lambda x, t: jnp.sum(fn(x, t))))(x, temperature)
        self.assertTrue(np.all(np.isnan(np.asarray(gradient))), f"gradient {gradient}")

    @parameterized.named_parameters(
        (f"{sampler}_{label}", sampler, t) for sampler in SAMPLERS for label, t in OUTSIDE
    )
    def test_samplers_and_densities_give_nan(self, sampler, temperature):
        self.assert_nan_values_and_gradients(*SAMPLERS[sampler], temperature)

    @parameterized.named_parameters(
        (f"{case}_{label}", name, distribution, t)
        for case, name, distribution in _sample_estimator_cases()
        for label, t in OUTSIDE
    )
    def test_every_registered_sample_estimator_gives_nan(self, name, distribution, temperature):
        call = estimators.spec(name).bind()
        x = LOGITS if distribution == "categorical" else LOG_ODDS
        self.assert_nan_values_and_gradients(
            lambda x, t: call(KEY, x, t, distribution=distribution), x, temperature
        )

    @parameterized.named_parameters(_sample_estimator_cases())
    def test_a_valid_traced_temperature_gives_a_finite_sample(self, name, distribution):
        spec = estimators.spec(name)
        call = spec.bind()
        temperature = max(1.5, spec.min_temperature or 0.0)
        x = LOGITS if distribution == "categorical" else LOG_ODDS
        value = jax.jit(lambda t: call(KEY, x, t, distribution=distribution))(temperature)
        self.assertTrue(np.all(np.isfinite(np.asarray(value))))


if __name__ == "__main__":
    absltest.main()
