"""The VAE's objective: Bernoulli log-likelihood from logits, analytic KL to a uniform prior.

All functions return one value per example (summed over pixels or latents); callers average.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def bernoulli_nll(pixel_logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative Bernoulli log-likelihood of the pixels, computed stably from logits.

    Args:
      pixel_logits: decoder logits ``[batch, data_dim]``.
      targets: pixels in ``[0, 1]`` (binary, or grey levels for ``--binarize none``),
        ``[batch, data_dim]``.

    Returns:
      ``[batch]`` sums over pixels of ``-[x log sigmoid(l) + (1 - x) log sigmoid(-l)]``.
    """
    return optax.sigmoid_binary_cross_entropy(pixel_logits, targets).sum(axis=-1)


def kl_to_uniform(posterior_logits: jax.Array) -> jax.Array:
    """KL divergence of the categorical posterior from the uniform prior, in closed form.

    ``KL(q || U) = sum_c q_c log q_c + log C`` for each latent, summed over latents.

    Args:
      posterior_logits: ``[batch, latents, categories]``.

    Returns:
      ``[batch]`` KL divergences in nats (zero for a uniform posterior).
    """
    log_q = jax.nn.log_softmax(posterior_logits, axis=-1)
    num_categories = posterior_logits.shape[-1]
    per_latent = jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + jnp.log(num_categories)
    return per_latent.sum(axis=-1)


def negative_elbo(
    pixel_logits: jax.Array, targets: jax.Array, posterior_logits: jax.Array
) -> jax.Array:
    """Negative evidence lower bound ``-E_q[log p(x|z)] + KL(q(z|x) || p(z))`` per example.

    ``pixel_logits`` are decoded from one sample of ``q`` (a one-hot sample makes this an unbiased
    estimate of the discrete model's bound; a relaxed sample gives the relaxed objective).

    Returns:
      ``[batch]`` values in nats.
    """
    return bernoulli_nll(pixel_logits, targets) + kl_to_uniform(posterior_logits)


def log_importance_weights(
    pixel_logits: jax.Array,
    targets: jax.Array,
    posterior_logits: jax.Array,
    one_hot_z: jax.Array,
) -> jax.Array:
    """``log p(x|z) + log p(z) - log q(z|x)`` for one-hot samples ``z`` of ``q``.

    Args:
      pixel_logits: decoder logits of ``z``, ``[..., data_dim]``.
      targets: pixels ``[..., data_dim]``.
      posterior_logits: ``[..., latents, categories]``.
      one_hot_z: the samples ``[..., latents, categories]``.

    Returns:
      ``[...]`` log-weights; ``logsumexp`` over ``k`` of them minus ``log k`` is the IWAE bound.
    """
    log_q = jnp.sum(one_hot_z * jax.nn.log_softmax(posterior_logits, axis=-1), axis=(-2, -1))
    latents, categories = posterior_logits.shape[-2:]
    log_prior = -latents * jnp.log(categories)
    return -bernoulli_nll(pixel_logits, targets) + log_prior - log_q
