"""The categorical VAE of the Gumbel-Softmax tutorial, as a Flax NNX module.

Encoder ``784 -> 512 -> 256 -> latents x categories`` logits (raw logits: the tutorial's ReLU on
the logits is a bug, it clips them at zero), decoder ``latents x categories -> 256 -> 512 -> 784``
Bernoulli logits (no sigmoid: the likelihood is computed from logits).

The layers are ``nnx.Linear`` with its defaults, those of Linen's ``Dense``: LeCun-normal kernels
(truncated normal, variance ``1 / fan_in``) and zero biases. ``nnx.Rngs`` is used only to create
the parameters; the latent samples are drawn by the ``z_sampler`` the caller passes, with a key the
caller holds explicitly (no random state lives in the module).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
from flax import nnx

from experiments.mnist.config import Config


def _layers(widths: Sequence[int], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)])


class CategoricalVAE(nnx.Module):
    """VAE with ``latents`` categorical latent variables of ``categories`` classes each.

    Args:
      latents: number of latent variables.
      categories: number of categories of each.
      hidden: encoder hidden widths; the decoder uses them reversed.
      data_dim: number of pixels.
      rngs: the ``params`` stream initialises the weights.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> model = CategoricalVAE(latents=30, categories=10, rngs=nnx.Rngs(params=0))
      >>> model.encode(jnp.zeros((2, 784))).shape
      (2, 30, 10)
      >>> model.decode(jnp.zeros((2, 30, 10))).shape
      (2, 784)
    """

    def __init__(
        self,
        *,
        latents: int = 30,
        categories: int = 10,
        hidden: Sequence[int] = (512, 256),
        data_dim: int = 784,
        rngs: nnx.Rngs,
    ):
        self.latents = latents
        self.categories = categories
        self.encoder_hidden = _layers((data_dim, *hidden), rngs)
        self.encoder_logits = nnx.Linear(hidden[-1], latents * categories, rngs=rngs)
        self.decoder_hidden = _layers((latents * categories, *reversed(hidden)), rngs)
        self.decoder_logits = nnx.Linear(hidden[0], data_dim, rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        """Posterior logits.

        Args:
          x: pixels in ``[0, 1]``, ``[batch, data_dim]``.

        Returns:
          Unnormalised log-probabilities ``[batch, latents, categories]``.
        """
        h = x
        for layer in self.encoder_hidden:
            h = jax.nn.relu(layer(h))
        return self.encoder_logits(h).reshape(x.shape[0], self.latents, self.categories)

    def decode(self, z: jax.Array) -> jax.Array:
        """Bernoulli logits of the pixels.

        Args:
          z: one-hot or relaxed latent samples, ``[batch, latents, categories]``.

        Returns:
          Pixel logits ``[batch, data_dim]``.
        """
        h = z.reshape(z.shape[0], self.latents * self.categories)
        for layer in self.decoder_hidden:
            h = jax.nn.relu(layer(h))
        return self.decoder_logits(h)

    def __call__(
        self, x: jax.Array, z_sampler: Callable[[jax.Array], jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        """Encodes, samples the latents with ``z_sampler`` and decodes.

        Args:
          x: pixels ``[batch, data_dim]``.
          z_sampler: maps posterior logits ``[batch, latents, categories]`` to samples of the
            same shape (a gradient estimator with its key and temperature bound).

        Returns:
          ``(pixel_logits [batch, data_dim], posterior_logits [batch, latents, categories])``.
        """
        logits = self.encode(x)
        return self.decode(z_sampler(logits)), logits


def from_config(config: Config, data_dim: int, *, rngs: nnx.Rngs) -> CategoricalVAE:
    """The model a run's config describes, for ``data_dim`` pixels, initialised from ``rngs``."""
    return CategoricalVAE(
        latents=config.latents,
        categories=config.categories,
        hidden=config.hidden,
        data_dim=data_dim,
        rngs=rngs,
    )
