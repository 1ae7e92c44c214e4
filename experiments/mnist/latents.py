"""The two kinds of latent variable the VAE can have: categorical and Bernoulli.

A :class:`LatentType` gathers everything that depends on the kind of latent: the shape of a
sample, exact samples (for evaluation and pictures), the closed-form KL to the uniform prior, the
log-probability of a sample under the posterior and the log-prior. Its name is the
``distribution`` every ``gumbel_jax`` estimator takes, so the estimators need nothing from here.

- **categorical**: ``latents`` variables of ``categories`` classes, samples one-hot
  ``[..., latents, categories]``, prior uniform over the classes.
- **bernoulli**: ``latents`` binary variables, samples 0.0/1.0 ``[..., latents]``, prior
  ``Bernoulli(0.5)``; the encoder gives their log-odds, which every estimator takes with
  ``distribution="bernoulli"``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import optax

from gumbel_jax import sample
from gumbel_jax.estimators import DISTRIBUTIONS as LATENT_TYPES


@dataclasses.dataclass(frozen=True)
class LatentType:
    """What depends on the kind of latent variable. Use :func:`get` for the two kinds.

    Attributes:
      name: ``"categorical"`` or ``"bernoulli"`` (``gumbel_jax.estimators.DISTRIBUTIONS``).
    """

    name: str

    def shape(self, latents: int, categories: int) -> tuple[int, ...]:
        """The shape of one example's sample: ``(latents, categories)`` or ``(latents,)``."""
        return (latents, categories) if self.name == "categorical" else (latents,)

    def exact_sample(self, key: jax.Array, logits: jax.Array) -> jax.Array:
        """An exact sample of the posterior: one-hot along the last axis, or 0.0/1.0.

        Args:
          key: a PRNG key.
          logits: ``[..., latents, categories]`` or log-odds ``[..., latents]``.
        """
        if self.name == "categorical":
            return sample.gumbel_max(key, logits)
        return jax.lax.stop_gradient(sample.relaxed_bernoulli(key, logits, hard=True))

    def kl_to_prior(self, logits: jax.Array) -> jax.Array:
        """``KL(q || uniform prior)`` in closed form, summed over latents, ``[...]`` in nats.

        Categorical: ``sum_c q_c log q_c + log C`` per latent; Bernoulli: ``log 2 - H(q)`` per
        latent, with the entropy ``H`` computed from the log-odds (stable for large ones).
        """
        if self.name == "categorical":
            log_q = jax.nn.log_softmax(logits, axis=-1)
            per_latent = jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + jnp.log(logits.shape[-1])
        else:
            entropy = optax.sigmoid_binary_cross_entropy(logits, jax.nn.sigmoid(logits))
            per_latent = math.log(2.0) - entropy
        return per_latent.sum(axis=-1)

    def log_posterior(self, logits: jax.Array, z: jax.Array) -> jax.Array:
        """``log q(z | x)`` of exact samples ``z``, summed over latents, ``[...]``."""
        if self.name == "categorical":
            return jnp.sum(z * jax.nn.log_softmax(logits, axis=-1), axis=(-2, -1))
        return -optax.sigmoid_binary_cross_entropy(logits, z).sum(axis=-1)

    def log_prior(self, logits_shape: tuple[int, ...]) -> jax.Array:
        """``log p(z)`` of every sample under the uniform prior (a scalar), for logits of
        ``logits_shape``."""
        if self.name == "categorical":
            latents, categories = logits_shape[-2:]
            return -latents * jnp.log(categories)
        return -logits_shape[-1] * jnp.log(2.0)


@functools.cache
def get(name: str) -> LatentType:
    """The latent type ``name``, one of :data:`LATENT_TYPES`.

    Raises:
      ValueError: an unknown name.
    """
    if name not in LATENT_TYPES:
        raise ValueError(f"latent type must be one of {LATENT_TYPES}, got {name!r}")
    return LatentType(name)
