"""The latent types of the experiment: binary KL, log-probabilities, exact and estimated samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.mnist import latents, losses, update
from experiments.mnist.config import Config
from gumbel_jax import estimators

BERNOULLI = latents.get("bernoulli")
CATEGORICAL = latents.get("categorical")


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def test_unknown_latent_type_is_refused():
    with pytest.raises(ValueError, match="latent type must be one of"):
        latents.get("gaussian")


def test_shapes_per_latent_type():
    assert CATEGORICAL.shape(20, 10) == (20, 10)
    assert BERNOULLI.shape(200, 10) == (200,)


@pytest.mark.slow
def test_binary_kl_matches_the_direct_formula():
    logits = jax.random.normal(jax.random.key(0), (5, 7)) * 3
    q = _sigmoid(logits)
    direct = np.sum(q * np.log(2 * q) + (1 - q) * np.log(2 * (1 - q)), axis=-1)
    np.testing.assert_allclose(BERNOULLI.kl_to_prior(logits), direct, rtol=1e-5)
    np.testing.assert_allclose(BERNOULLI.kl_to_prior(jnp.zeros((3, 7))), np.zeros(3), atol=1e-6)


@pytest.mark.slow
def test_binary_kl_of_certain_latents_is_log_2_each_with_finite_gradients():
    logits = jnp.array([[1e4, -1e4, 50.0, -50.0]])
    np.testing.assert_allclose(BERNOULLI.kl_to_prior(logits), [4 * np.log(2)], rtol=1e-6)
    grad = jax.grad(lambda x: BERNOULLI.kl_to_prior(x).sum())(logits)
    assert np.all(np.isfinite(grad))


def test_binary_log_posterior_matches_the_direct_formula():
    logits = jnp.array([[0.3, -2.0, 4.0]])
    z = jnp.array([[1.0, 0.0, 0.0]])
    q = _sigmoid(logits)
    direct = np.log(q[0, 0]) + np.log(1 - q[0, 1]) + np.log(1 - q[0, 2])
    np.testing.assert_allclose(BERNOULLI.log_posterior(logits, z), [direct], rtol=1e-6)


@pytest.mark.slow
def test_binary_importance_weights_give_the_exact_likelihood_for_one_latent():
    """sum_z q(z) w(z) = p(x) with p(z) = Bernoulli(0.5): the log-weights use the right prior."""
    logits = jnp.array([[0.7]])
    targets = jnp.array([[1.0, 0.0]]).reshape(1, 1, 2, 1)  # one image of 1x2 pixels
    # decoded from z = 0 and z = 1
    pixel_logits_of = jnp.array([[0.5, -0.2], [2.0, 1.0]]).reshape(2, 1, 2, 1)
    z = jnp.array([0.0, 1.0])[:, None, None]  # [2, 1, 1]
    log_w = losses.log_importance_weights(pixel_logits_of[:, None], targets, logits, z, "bernoulli")
    q1 = _sigmoid(0.7)
    estimate = np.log((1 - q1) * np.exp(log_w[0, 0]) + q1 * np.exp(log_w[1, 0]))
    log_px = jax.nn.logsumexp(-losses.bernoulli_nll(pixel_logits_of, targets)) - np.log(2)
    np.testing.assert_allclose(estimate, log_px, rtol=1e-6)


@pytest.mark.parametrize("kind", [CATEGORICAL, BERNOULLI])
@pytest.mark.slow
def test_exact_samples_have_the_posterior_frequencies(kind):
    logits = jnp.array([0.5, -1.0, 2.0]) if kind is BERNOULLI else jnp.array([[0.5, -1.0, 2.0]])
    draws = kind.exact_sample(jax.random.key(3), jnp.broadcast_to(logits, (40_000, *logits.shape)))
    expected = _sigmoid(logits) if kind is BERNOULLI else np.asarray(jax.nn.softmax(logits, -1))
    # 40,000 draws: standard error <= 0.0025; 0.012 is about 5 of them.
    np.testing.assert_allclose(np.mean(np.asarray(draws), axis=0), expected, atol=0.012)


@pytest.mark.parametrize("estimator", ["st", "gumbel-rao", "reinmax"])
@pytest.mark.slow
def test_binary_sample_estimators_give_exact_samples_and_gradients(estimator):
    """The experiment's estimator for binary latents is the library's, bound by the spec."""
    config = Config(latent_type="bernoulli", estimator=estimator, temperature_min=1.0)
    fn = update.estimator(config)
    logits = jnp.full((20_000,), -0.4)
    draws = np.asarray(fn(jax.random.key(6), logits, 1.0))
    assert set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_allclose(draws.mean(), _sigmoid(-0.4), atol=0.015)
    grad = jax.grad(lambda x: jnp.sum(fn(jax.random.key(6), x, 1.0) * jnp.arange(3.0)))(
        jnp.zeros(3)
    )
    library = estimators.spec(estimator).fn(
        jax.random.key(6), logits, 1.0, distribution="bernoulli"
    )
    np.testing.assert_array_equal(draws, np.asarray(library))
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
