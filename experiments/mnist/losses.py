"""The VAE's objective: Bernoulli log-likelihood from logits, analytic KL to the uniform prior.

All functions return one value per example (summed over pixels or latents); callers average.
Images and their pixel logits are ``[..., rows, cols, channels]``: the last :data:`IMAGE_AXES`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from experiments.mnist import latents

# The pixel axes of an image ``[..., rows, cols, channels]``.
IMAGE_AXES = (-3, -2, -1)


def bernoulli_nll(pixel_logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative Bernoulli log-likelihood of the pixels, computed stably from logits.

    Args:
      pixel_logits: decoder logits ``[..., rows, cols, channels]``.
      targets: pixels in ``[0, 1]`` (binary, or grey levels for ``--binarize none``), of the
        same shape.

    Returns:
      ``[...]`` sums over pixels of ``-[x log sigmoid(l) + (1 - x) log sigmoid(-l)]``.
    """
    # On flat pixels: XLA on CPU runs elementwise work on ``[..., 28, 28, 1]`` (a trailing axis
    # of size 1) several times slower than on ``[..., 784]``.
    targets = jnp.broadcast_to(targets, pixel_logits.shape)
    flat = (*pixel_logits.shape[: -len(IMAGE_AXES)], -1)
    return optax.sigmoid_binary_cross_entropy(
        pixel_logits.reshape(flat), targets.reshape(flat)
    ).sum(axis=-1)


def negative_elbo(
    pixel_logits: jax.Array,
    targets: jax.Array,
    posterior_logits: jax.Array,
    latent_type: str = "categorical",
) -> jax.Array:
    """Negative evidence lower bound ``-E_q[log p(x|z)] + KL(q(z|x) || p(z))`` per example.

    ``pixel_logits`` are decoded from one sample of ``q`` (an exact sample makes this an unbiased
    estimate of the discrete model's bound; a relaxed sample gives the relaxed objective). The KL
    to the uniform prior is in closed form (``LatentType.kl_to_prior`` of
    :mod:`experiments.mnist.latents`).

    Args:
      pixel_logits: ``[batch, rows, cols, channels]``.
      targets: ``[batch, rows, cols, channels]``.
      posterior_logits: ``[batch, latents, categories]`` or log-odds ``[batch, latents]``.
      latent_type: ``"categorical"`` or ``"bernoulli"``.

    Returns:
      ``[batch]`` values in nats.
    """
    kl = latents.get(latent_type).kl_to_prior(posterior_logits)
    return bernoulli_nll(pixel_logits, targets) + kl


def log_importance_weights(
    pixel_logits: jax.Array,
    targets: jax.Array,
    posterior_logits: jax.Array,
    z: jax.Array,
    latent_type: str = "categorical",
) -> jax.Array:
    """``log p(x|z) + log p(z) - log q(z|x)`` for exact samples ``z`` of ``q``.

    Args:
      pixel_logits: decoder logits of ``z``, ``[..., rows, cols, channels]``.
      targets: pixels of the same shape (or broadcast to it).
      posterior_logits: ``[..., latents, categories]`` or log-odds ``[..., latents]``.
      z: the samples (one-hot, or 0.0/1.0), of the shape of ``posterior_logits``.
      latent_type: ``"categorical"`` or ``"bernoulli"``.

    Returns:
      ``[...]`` log-weights; ``logsumexp`` over ``k`` of them minus ``log k`` is the IWAE bound.
    """
    kind = latents.get(latent_type)
    log_prior = kind.log_prior(posterior_logits.shape)
    return (
        -bernoulli_nll(pixel_logits, targets) + log_prior - kind.log_posterior(posterior_logits, z)
    )
