"""Honest evaluation of the discrete model: one-hot samples, analytic KL, and the IWAE bound.

- :func:`evaluate` gives the negative ELBO of the discrete model on the test set, with one exact
  categorical (one-hot) sample per example and the KL of the posterior to the uniform prior in
  closed form; with ``num_samples=k`` also the importance-weighted bound (Burda et al. 2016,
  https://arxiv.org/abs/1509.00519) ``-log mean_k exp(log p(x|z) + log p(z) - log q(z|x))``.
- :func:`test_pixels` binarizes the test set once with a fixed key, the same for every run.
- :func:`reconstruct` and :func:`sample_prior` give the pictures' pixels.

All use fixed keys, so successive epochs are evaluated on the same noise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.mnist import input_pipeline, losses, models
from experiments.mnist.config import Config
from gumbel_jax import sample

# Keys independent of the run's seed, so that every run is measured on the same test pixels.
TEST_BINARIZATION_SEED = 20_240_601
EVAL_SEED = 20_240_602


def test_pixels(images: np.ndarray, mode: str) -> jax.Array:
    """The test set as float32 pixels ``[n, data_dim]``, binarized once with a fixed key."""
    return input_pipeline.binarize(
        jax.random.key(TEST_BINARIZATION_SEED), jnp.asarray(images), mode
    )


# The jitted functions below take the model split (``nnx.split``): its graphdef is a static argument
# (hashable, equal for models of the same shapes), its parameters a traced one. They are static in
# the model's structure and sizes only, not in the whole Config: runs that differ in seed, learning
# rate or workdir share the compilation.


@functools.partial(jax.jit, static_argnames=("graphdef", "batch_size", "num_samples"))
def _per_example(graphdef, params, x, key, *, batch_size: int, num_samples: int):
    """``(neg_elbo [n], nll_iwae [n] or None)`` over ``x`` in batches of ``batch_size``."""
    model = nnx.merge(graphdef, params)
    n = x.shape[0]
    num_batches = -(-n // batch_size)
    padded = jnp.pad(x, ((0, num_batches * batch_size - n), (0, 0)))
    batches = padded.reshape(num_batches, batch_size, x.shape[-1])

    def one_batch(args):
        index, xb = args
        elbo_key, iwae_key = jax.random.split(jax.random.fold_in(key, index))
        logits = model.encode(xb)
        z = sample.gumbel_max(elbo_key, logits)
        neg_elbo = losses.negative_elbo(model.decode(z), xb, logits)
        if not num_samples:
            return neg_elbo, None
        z_k = sample.gumbel_max(iwae_key, jnp.broadcast_to(logits, (num_samples, *logits.shape)))
        pixel_logits_k = model.decode(z_k.reshape(-1, *logits.shape[1:])).reshape(
            num_samples, batch_size, -1
        )
        log_w = losses.log_importance_weights(pixel_logits_k, xb, logits, z_k)
        nll_iwae = -(jax.nn.logsumexp(log_w, axis=0) - jnp.log(num_samples))
        return neg_elbo, nll_iwae

    neg_elbo, nll_iwae = jax.lax.map(one_batch, (jnp.arange(num_batches), batches))
    if nll_iwae is not None:
        nll_iwae = nll_iwae.reshape(-1)[:n]
    return neg_elbo.reshape(-1)[:n], nll_iwae


def evaluate(
    model: models.CategoricalVAE,
    x: jax.Array,
    *,
    config: Config,
    num_samples: int | None = None,
) -> dict[str, float]:
    """Test-set bounds of the discrete model, in nats per example.

    Args:
      model: the model (``TrainState.model()``).
      x: test pixels ``[n, data_dim]`` (see :func:`test_pixels`).
      config: the run's settings (its evaluation batch size).
      num_samples: k of the IWAE bound, or ``None`` to skip it.

    Returns:
      ``{"test/neg_elbo": ...}``, plus ``"test/nll_iwae"`` when ``num_samples`` is given.
    """
    neg_elbo, nll_iwae = _per_example(
        *nnx.split(model),
        x,
        jax.random.key(EVAL_SEED),
        batch_size=config.eval_batch_size,
        num_samples=num_samples or 0,
    )
    result = {"test/neg_elbo": float(jnp.mean(neg_elbo))}
    if nll_iwae is not None:
        result["test/nll_iwae"] = float(jnp.mean(nll_iwae))
    return result


def reconstruct(model: models.CategoricalVAE, x: jax.Array) -> jax.Array:
    """Pixel probabilities ``[n, data_dim]`` decoded from one one-hot posterior sample of ``x``."""
    return _reconstruct(*nnx.split(model), x)


@functools.partial(jax.jit, static_argnames="graphdef")
def _reconstruct(graphdef, params, x: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, params)
    z = sample.gumbel_max(jax.random.key(EVAL_SEED), model.encode(x))
    return jax.nn.sigmoid(model.decode(z))


def sample_prior(model: models.CategoricalVAE, *, num: int) -> jax.Array:
    """Pixel probabilities ``[num, data_dim]`` decoded from ``num`` samples of the uniform prior."""
    return _sample_prior(*nnx.split(model), num=num)


@functools.partial(jax.jit, static_argnames=("graphdef", "num"))
def _sample_prior(graphdef, params, *, num: int) -> jax.Array:
    model = nnx.merge(graphdef, params)
    uniform = jnp.zeros((num, model.latents, model.categories))
    z = sample.gumbel_max(jax.random.key(EVAL_SEED), uniform)
    return jax.nn.sigmoid(model.decode(z))
