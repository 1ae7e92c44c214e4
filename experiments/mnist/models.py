"""The VAE of the Gumbel-Softmax tutorial, for categorical or binary latents, as a Flax NNX module.

Encoder ``784 -> 512 -> 256 -> latents x categories`` logits (raw logits: the tutorial's ReLU on
the logits is a bug, it clips them at zero), decoder ``latents x categories -> 256 -> 512 -> 784``
Bernoulli logits (no sigmoid: the likelihood is computed from logits). With binary latents the
encoder gives one log-odds per latent and the decoder reads the 0/1 (or relaxed) values.

The layers are ``nnx.Linear`` with its defaults, those of Linen's ``Dense``: LeCun-normal kernels
(truncated normal, variance ``1 / fan_in``) and zero biases. ``nnx.Rngs`` is used only to create
the parameters; the latent samples are drawn by the ``z_sampler`` the caller passes, with a key the
caller holds explicitly (no random state lives in the module).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.mnist import latents as latent_types
from experiments.mnist.config import Config

# The hidden layers' nonlinearity, by its ``Config.activation`` name (the keys of
# ``config.ACTIVATIONS``). ``leaky_relu`` has slope 0.3 below zero, as in the DisARM paper's code
# (Keras's default), not jax.nn's 0.01.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.3),
    "tanh": jax.nn.tanh,
}


def _layers(widths: Sequence[int], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)])


class DiscreteVAE(nnx.Module):
    """VAE whose latents are categorical (``[latents, categories]`` one-hot) or binary.

    Args:
      latent_type: ``"categorical"`` or ``"bernoulli"``
        (:data:`experiments.mnist.latents.LATENT_TYPES`).
      latents: number of latent variables.
      categories: classes of each categorical latent (unused for binary latents).
      hidden: encoder hidden widths; the decoder uses them reversed.
      data_dim: number of pixels.
      activation: the hidden layers' nonlinearity, a key of :data:`ACTIVATIONS`.
      rngs: the ``params`` stream initialises the weights.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> model = DiscreteVAE(latents=30, categories=10, rngs=nnx.Rngs(params=0))
      >>> model.encode(jnp.zeros((2, 784))).shape
      (2, 30, 10)
      >>> model.decode(jnp.zeros((2, 30, 10))).shape
      (2, 784)
      >>> binary = DiscreteVAE(latent_type="bernoulli", latents=200, rngs=nnx.Rngs(params=0))
      >>> binary.encode(jnp.zeros((2, 784))).shape
      (2, 200)
    """

    def __init__(
        self,
        *,
        latent_type: str = "categorical",
        latents: int = 30,
        categories: int = 10,
        hidden: Sequence[int] = (512, 256),
        data_dim: int = 784,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.latent_type = latent_type
        # One example's latent sample: ``(latents, categories)`` or ``(latents,)``.
        self.latent_shape = latent_types.get(latent_type).shape(latents, categories)
        self.activation = activation
        size = math.prod(self.latent_shape)
        self.encoder_hidden = _layers((data_dim, *hidden), rngs)
        self.encoder_logits = nnx.Linear(hidden[-1], size, rngs=rngs)
        self.decoder_hidden = _layers((size, *reversed(hidden)), rngs)
        self.decoder_logits = nnx.Linear(hidden[0], data_dim, rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        """Posterior logits.

        Args:
          x: pixels in ``[0, 1]``, ``[batch, data_dim]``.

        Returns:
          Unnormalised log-probabilities ``[batch, latents, categories]`` (log-odds
          ``[batch, latents]`` for binary latents).
        """
        h = x
        for layer in self.encoder_hidden:
            h = ACTIVATIONS[self.activation](layer(h))
        return self.encoder_logits(h).reshape(x.shape[0], *self.latent_shape)

    def decode(self, z: jax.Array) -> jax.Array:
        """Bernoulli logits of the pixels.

        Args:
          z: exact or relaxed latent samples, ``[batch, *latent_shape]``.

        Returns:
          Pixel logits ``[batch, data_dim]``.
        """
        h = z.reshape(z.shape[0], math.prod(self.latent_shape))
        for layer in self.decoder_hidden:
            h = ACTIVATIONS[self.activation](layer(h))
        return self.decoder_logits(h)

    def __call__(
        self, x: jax.Array, z_sampler: Callable[[jax.Array], jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        """Encodes, samples the latents with ``z_sampler`` and decodes.

        Args:
          x: pixels ``[batch, data_dim]``.
          z_sampler: maps posterior logits ``[batch, *latent_shape]`` to samples of the same
            shape (a gradient estimator with its key and temperature bound).

        Returns:
          ``(pixel_logits [batch, data_dim], posterior_logits [batch, *latent_shape])``.
        """
        logits = self.encode(x)
        return self.decode(z_sampler(logits)), logits


def from_config(config: Config, data_dim: int, *, rngs: nnx.Rngs) -> DiscreteVAE:
    """The model a run's config describes, for ``data_dim`` pixels, initialised from ``rngs``."""
    return DiscreteVAE(
        latent_type=config.latent_type,
        latents=config.latents,
        categories=config.categories,
        hidden=config.hidden,
        data_dim=data_dim,
        activation=config.activation,
        rngs=rngs,
    )


# The hidden width of RELAX's learned control variate (Grathwohl et al. use a small MLP of the
# relaxed latents in their VAE experiments).
CONTROL_VARIATE_HIDDEN = 100


class ControlVariate(nnx.Module):
    """A learned control variate of the relaxed latents, and the estimator's tuned options.

    The network is RELAX's ``r(sigma(z))``: one tanh hidden layer of the flattened relaxed
    latents (``2 sigma - 1``, centred), one value per example, ``[2, batch, *latent_shape] ->
    [2, batch]``. Its output layer starts at zero, so that an untrained control variate is
    REBAR's. ``tuned`` holds the estimator's tunable options (``Spec.tunable``) as parameters,
    a positive one as its logarithm: ``options()`` gives their values.

    Args:
      latent_shape: one example's latent shape, ``(latents, categories)`` or ``(latents,)``.
      tuned: the tunable options' initial values and domains, ``{name: (value, domain)}``
        with domain ``"real"`` or ``"positive"``.
      hidden: the hidden layer's width.
      rngs: the ``params`` stream initialises the hidden layer.

    Examples:
      >>> cv = ControlVariate((4, 3), tuned={"eta": (1.0, "real")}, rngs=nnx.Rngs(params=0))
      >>> cv(jnp.full((2, 5, 4, 3), 1 / 3)).shape
      (2, 5)
      >>> cv.options()
      {'eta': Array(1., dtype=float32)}
    """

    def __init__(
        self,
        latent_shape: tuple[int, ...],
        *,
        tuned: Mapping[str, tuple[float, str]] | None = None,
        hidden: int = CONTROL_VARIATE_HIDDEN,
        rngs: nnx.Rngs,
    ):
        self.latent_shape = tuple(latent_shape)
        self.hidden = nnx.Linear(math.prod(self.latent_shape), hidden, rngs=rngs)
        self.output = nnx.Linear(hidden, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)
        tuned = dict(tuned or {})
        self.domains = {name: domain for name, (_, domain) in sorted(tuned.items())}
        self.tuned = nnx.Dict(
            {
                name: nnx.Param(
                    jnp.log(jnp.float32(value)) if domain == "positive" else jnp.float32(value)
                )
                for name, (value, domain) in sorted(tuned.items())
            }
        )

    def __call__(self, relaxed: jax.Array) -> jax.Array:
        """``r(sigma)``: ``[2, batch, *latent_shape]`` relaxed latents to ``[2, batch]``."""
        h = 2.0 * relaxed.reshape(*relaxed.shape[:2], -1) - 1.0
        return self.output(jnp.tanh(self.hidden(h)))[..., 0]

    def options(self) -> dict[str, jax.Array]:
        """The tuned options' values (a positive one is the exponential of its parameter)."""
        return {
            name: jnp.exp(self.tuned[name][...]) if domain == "positive" else self.tuned[name][...]
            for name, domain in self.domains.items()
        }
