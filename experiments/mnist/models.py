"""The categorical VAE of the Gumbel-Softmax tutorial, as a Flax Linen module.

Encoder ``784 -> 512 -> 256 -> latents x categories`` logits (raw logits: the tutorial's ReLU on
the logits is a bug, it clips them at zero), decoder ``latents x categories -> 256 -> 512 -> 784``
Bernoulli logits (no sigmoid: the likelihood is computed from logits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

from experiments.mnist.config import Config


class CategoricalVAE(nn.Module):
    """VAE with ``latents`` categorical latent variables of ``categories`` classes each.

    Attributes:
      latents: number of latent variables.
      categories: number of categories of each.
      hidden: encoder hidden widths; the decoder uses them reversed.
      data_dim: number of pixels.

    Examples:
      >>> model = CategoricalVAE(latents=30, categories=10)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 784)), method=model.encode)
    """

    latents: int = 30
    categories: int = 10
    hidden: Sequence[int] = (512, 256)
    data_dim: int = 784

    def setup(self):
        self.encoder_layers = [
            nn.Dense(width, name=f"encoder_{i}") for i, width in enumerate(self.hidden)
        ]
        self.encoder_logits = nn.Dense(self.latents * self.categories, name="encoder_logits")
        self.decoder_layers = [
            nn.Dense(width, name=f"decoder_{i}") for i, width in enumerate(reversed(self.hidden))
        ]
        self.decoder_logits = nn.Dense(self.data_dim, name="decoder_logits")

    def encode(self, x: jax.Array) -> jax.Array:
        """Posterior logits.

        Args:
          x: pixels in ``[0, 1]``, ``[batch, data_dim]``.

        Returns:
          Unnormalised log-probabilities ``[batch, latents, categories]``.
        """
        h = x
        for layer in self.encoder_layers:
            h = nn.relu(layer(h))
        return self.encoder_logits(h).reshape(x.shape[0], self.latents, self.categories)

    def decode(self, z: jax.Array) -> jax.Array:
        """Bernoulli logits of the pixels.

        Args:
          z: one-hot or relaxed latent samples, ``[batch, latents, categories]``.

        Returns:
          Pixel logits ``[batch, data_dim]``.
        """
        h = z.reshape(z.shape[0], self.latents * self.categories)
        for layer in self.decoder_layers:
            h = nn.relu(layer(h))
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


def from_config(config: Config, data_dim: int) -> CategoricalVAE:
    """The model a run's config describes, for ``data_dim`` pixels."""
    return CategoricalVAE(
        latents=config.latents,
        categories=config.categories,
        hidden=config.hidden,
        data_dim=data_dim,
    )
