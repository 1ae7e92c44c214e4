"""Unit tests of experiments.mnist.losses and of the run config."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.mnist import latents, losses
from experiments.mnist.config import Config

kl_to_uniform = latents.get("categorical").kl_to_prior


def test_kl_of_uniform_posterior_is_zero():
    logits = jnp.full((4, 30, 10), 3.7)
    np.testing.assert_allclose(kl_to_uniform(logits), np.zeros(4), atol=1e-5)


@pytest.mark.slow
def test_kl_matches_direct_formula_and_is_positive():
    logits = jax.random.normal(jax.random.key(0), (5, 3, 7)) * 3
    q = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    direct = np.sum(q * np.log(q * 7), axis=(-2, -1))
    np.testing.assert_allclose(kl_to_uniform(logits), direct, rtol=1e-5)
    assert np.all(direct > 0)


@pytest.mark.slow
def test_kl_of_a_certain_posterior_is_log_categories():
    logits = jnp.zeros((1, 2, 10)).at[..., 3].set(1e4)
    np.testing.assert_allclose(kl_to_uniform(logits), [2 * np.log(10)], rtol=1e-6)


@pytest.mark.slow
def test_bernoulli_nll_matches_direct_formula():
    key_l, key_x = jax.random.split(jax.random.key(1))
    logits = jax.random.normal(key_l, (6, 28, 28, 1)) * 4
    targets = jax.random.uniform(key_x, (6, 28, 28, 1))  # grey levels as in --binarize none
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    t = np.asarray(targets, np.float64)
    direct = -np.sum(t * np.log(p) + (1 - t) * np.log(1 - p), axis=(1, 2, 3))
    np.testing.assert_allclose(losses.bernoulli_nll(logits, targets), direct, rtol=1e-5)


@pytest.mark.slow
def test_bernoulli_nll_is_finite_for_extreme_logits():
    logits = jnp.array([[1e4, -1e4, 1e4, -1e4]]).reshape(1, 2, 2, 1)
    targets = jnp.array([[1.0, 0.0, 0.0, 1.0]]).reshape(1, 2, 2, 1)
    value = losses.bernoulli_nll(logits, targets)
    np.testing.assert_allclose(value, [2e4], rtol=1e-6)
    grad = jax.grad(lambda lo: losses.bernoulli_nll(lo, targets).sum())(logits)
    assert np.all(np.isfinite(grad))


@pytest.mark.slow
def test_all_half_model_costs_784_log_2():
    """A decoder predicting 0.5 everywhere pays log 2 per binary pixel: 543.4 nats."""
    targets = jax.random.bernoulli(jax.random.key(2), 0.3, (3, 28, 28, 1)).astype(jnp.float32)
    value = losses.negative_elbo(jnp.zeros((3, 28, 28, 1)), targets, jnp.zeros((3, 30, 10)))
    # float32 sums of 784 terms: within 1e-5.
    np.testing.assert_allclose(value, np.full(3, 784 * np.log(2)), rtol=1e-5)


@pytest.mark.slow
def test_importance_weights_give_the_exact_likelihood_for_one_latent():
    """With one latent, sum_z q(z) w(z) = p(x): the log-weights are consistent with the prior."""
    logits = jnp.array([[[0.3, -1.0, 2.0]]])
    targets = jnp.array([[1.0, 0.0]]).reshape(1, 1, 2, 1)  # one image of 1x2 pixels
    pixel_logits_of = jnp.array([[0.5, -0.2], [2.0, 1.0], [-1.0, 0.0]]).reshape(3, 1, 2, 1)
    z = jnp.eye(3)[:, None, None, :]  # [3, 1, 1, 3]: the three one-hot values
    log_w = losses.log_importance_weights(pixel_logits_of[:, None], targets, logits, z)
    q = np.asarray(jax.nn.softmax(logits[0, 0]))
    log_px = jax.nn.logsumexp(-losses.bernoulli_nll(pixel_logits_of, targets)) - np.log(3)
    np.testing.assert_allclose(
        np.log(np.sum(q * np.exp(np.asarray(log_w[:, 0])))), log_px, rtol=1e-6
    )


def test_config_round_trips_through_json():
    config = Config(
        latents=4,
        hidden=(32, 16),
        estimator="gumbel-rao",
        estimator_options={"num_samples": 3},
        data_dir="/x",
    )
    assert json.loads(config.to_json())["estimator_options"] == {"num_samples": 3}
    assert Config.from_json(config.to_json()) == config
    assert hash(Config.from_json(config.to_json())) == hash(config)
    # Every option is recorded, the defaults included: one config per training.
    assert Config(estimator="gumbel-rao").estimator_options == (("num_samples", 10),)
    assert Config(estimator="gumbel-rao", estimator_options={"num_samples": 10}) == Config(
        estimator="gumbel-rao"
    )


def test_a_config_saved_before_the_estimator_options_reads_its_sample_counts():
    saved = Config(estimator="gumbel-rao").to_dict()
    del saved["estimator_options"]
    saved.update(gumbel_rao_samples=100, num_samples=2)
    now = Config(estimator="gumbel-rao", estimator_options={"num_samples": 100})
    assert now.fixed_on_resume_differences(saved) == []
    loo = {**Config(estimator="reinforce-loo").to_dict(), "gumbel_rao_samples": 10}
    loo.pop("estimator_options")
    loo["num_samples"] = 3
    assert Config(estimator="reinforce-loo").fixed_on_resume_differences(loo) == [
        "estimator_options: {'num_samples': 3} -> {'num_samples': 2}"
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latents": 0}, "latents must be a positive integer"),
        ({"categories": 1}, "categories must be at least 2"),
        ({"estimator": "nope"}, "unknown estimator 'nope'"),
        ({"estimator": "missing_module:SPEC"}, "cannot import module 'missing_module'"),
        ({"estimator_options": {"k": 1}}, "estimator 'relaxed' has no option 'k'"),
        ({"binarize": "static"}, "binarize must be one of"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"estimator": "reinmax"}, "--estimator reinmax needs a temperature >= 1"),
    ],
)
def test_config_rejects_bad_settings(changes, message):
    with pytest.raises(ValueError, match=message):
        Config(**changes)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown config keys"):
        Config.from_dict({"latent": 3})
