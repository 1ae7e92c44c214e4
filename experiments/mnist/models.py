"""The VAE's models, their contract (:class:`VAEModel`) and the registry ``--model`` reads.

A model is any Flax NNX module with the four members of :class:`VAEModel`: it encodes images
``[batch, rows, cols, channels]`` to posterior logits and decodes latent samples to pixel logits of
the same image shape, so the objective, the training step and the evaluation never see how it
works. To add one, write its class with :data:`MODELS`' constructor keywords and add one line to
:data:`MODELS`.

- ``mlp`` (:class:`DiscreteVAE`), the tutorial's: encoder ``784 -> 512 -> 256 -> latents x
  categories`` logits (raw logits: the tutorial's ReLU on the logits is a bug, it clips them at
  zero), decoder ``latents x categories -> 256 -> 512 -> 784`` Bernoulli logits (no sigmoid: the
  likelihood is computed from logits). With binary latents the encoder gives one log-odds per
  latent and the decoder reads the 0/1 (or relaxed) values.
- ``conv`` (:class:`ConvVAE`): two stride-2 convolutions (32 and 64 channels, 3x3) and a dense
  layer to the logits; the decoder mirrors it with transposed convolutions.

The layers use Flax's defaults (LeCun-normal kernels, zero biases). ``nnx.Rngs`` is used only to
create the parameters; the latent samples are drawn by the caller's estimator, with a key the
caller holds explicitly (no random state lives in a module).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from experiments.mnist import latents as latent_types

if TYPE_CHECKING:  # config.py reads MODELS from here
    from experiments.mnist.config import Config

# The hidden layers' nonlinearity, by its ``Config.activation`` name (the keys of
# ``config.ACTIVATIONS``). ``leaky_relu`` has slope 0.3 below zero, as in the DisARM paper's code
# (Keras's default), not jax.nn's 0.01.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.3),
    "tanh": jax.nn.tanh,
}
# MNIST's image shape, ``(rows, cols, channels)``.
MNIST_SHAPE = (28, 28, 1)


class VAEModel(Protocol):
    """What the experiment needs of a model (any NNX module with these members).

    Attributes:
      latent_type: ``"categorical"`` or ``"bernoulli"``.
      latent_shape: one example's latents, ``(latents, categories)`` or ``(latents,)``.
    """

    latent_type: str
    latent_shape: tuple[int, ...]

    def encode(self, x: jax.Array) -> jax.Array:
        """Pixels in ``[0, 1]``, ``[batch, rows, cols, channels]``, to posterior logits
        ``[batch, *latent_shape]``."""
        ...

    def decode(self, z: jax.Array) -> jax.Array:
        """Latent samples ``[batch, *latent_shape]`` (exact or relaxed) to Bernoulli logits of the
        pixels, ``[batch, rows, cols, channels]``."""
        ...


def _layers(widths: Sequence[int], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)])


class DiscreteVAE(nnx.Module):
    """The tutorial's MLP VAE, with categorical (``[latents, categories]`` one-hot) or binary
    latents.

    Args:
      latent_type: ``"categorical"`` or ``"bernoulli"``
        (:data:`experiments.mnist.latents.LATENT_TYPES`).
      latents: number of latent variables.
      categories: classes of each categorical latent (unused for binary latents).
      hidden: encoder hidden widths; the decoder uses them reversed.
      image_shape: ``(rows, cols, channels)``; the MLP flattens the pixels.
      activation: the hidden layers' nonlinearity, a key of :data:`ACTIVATIONS`.
      rngs: the ``params`` stream initialises the weights.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> model = DiscreteVAE(latents=30, categories=10, rngs=nnx.Rngs(params=0))
      >>> model.encode(jnp.zeros((2, 28, 28, 1))).shape
      (2, 30, 10)
      >>> model.decode(jnp.zeros((2, 30, 10))).shape
      (2, 28, 28, 1)
      >>> binary = DiscreteVAE(latent_type="bernoulli", latents=200, rngs=nnx.Rngs(params=0))
      >>> binary.encode(jnp.zeros((2, 28, 28, 1))).shape
      (2, 200)
    """

    def __init__(
        self,
        *,
        latent_type: str = "categorical",
        latents: int = 30,
        categories: int = 10,
        hidden: Sequence[int] = (512, 256),
        image_shape: tuple[int, ...] = MNIST_SHAPE,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.latent_type = latent_type
        self.latent_shape = latent_types.get(latent_type).shape(latents, categories)
        self.image_shape = tuple(image_shape)
        self.activation = activation
        size, pixels = math.prod(self.latent_shape), math.prod(self.image_shape)
        self.encoder_hidden = _layers((pixels, *hidden), rngs)
        self.encoder_logits = nnx.Linear(hidden[-1], size, rngs=rngs)
        self.decoder_hidden = _layers((size, *reversed(hidden)), rngs)
        self.decoder_logits = nnx.Linear(hidden[0], pixels, rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        """Posterior logits ``[batch, *latent_shape]`` of pixels ``[batch, *image_shape]``."""
        h = x.reshape(x.shape[0], -1)
        for layer in self.encoder_hidden:
            h = ACTIVATIONS[self.activation](layer(h))
        return self.encoder_logits(h).reshape(x.shape[0], *self.latent_shape)

    def decode(self, z: jax.Array) -> jax.Array:
        """Pixel logits ``[batch, *image_shape]`` of latents ``[batch, *latent_shape]``."""
        h = z.reshape(z.shape[0], math.prod(self.latent_shape))
        for layer in self.decoder_hidden:
            h = ACTIVATIONS[self.activation](layer(h))
        return self.decoder_logits(h).reshape(z.shape[0], *self.image_shape)


class ConvVAE(nnx.Module):
    """A small convolutional VAE: two stride-2 3x3 convolutions (32 and 64 channels) and a dense
    layer of ``hidden[-1]`` units to the logits; the decoder mirrors it (dense, two stride-2
    transposed convolutions). The image's rows and columns must be multiples of 4.

    Args: those of :class:`DiscreteVAE` (``hidden``: only its last width is used).

    Examples:
      >>> model = ConvVAE(latents=30, categories=10, rngs=nnx.Rngs(params=0))
      >>> model.encode(jnp.zeros((2, 28, 28, 1))).shape
      (2, 30, 10)
      >>> model.decode(jnp.zeros((2, 30, 10))).shape
      (2, 28, 28, 1)
    """

    channels = (32, 64)

    def __init__(
        self,
        *,
        latent_type: str = "categorical",
        latents: int = 30,
        categories: int = 10,
        hidden: Sequence[int] = (512, 256),
        image_shape: tuple[int, ...] = MNIST_SHAPE,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        rows, cols, colours = image_shape
        if rows % 4 or cols % 4:
            raise ValueError(
                f"the conv model halves the image twice: rows and columns must be multiples of "
                f"4, got {rows}x{cols}; use the mlp model"
            )
        self.latent_type = latent_type
        self.latent_shape = latent_types.get(latent_type).shape(latents, categories)
        self.image_shape = tuple(image_shape)
        self.activation = activation
        small, wide = self.channels
        self.feature_shape = (rows // 4, cols // 4, wide)
        features, size = math.prod(self.feature_shape), math.prod(self.latent_shape)
        conv = functools.partial(nnx.Conv, kernel_size=(3, 3), strides=2, rngs=rngs)
        self.encoder_convs = nnx.List([conv(colours, small), conv(small, wide)])
        self.encoder_dense = nnx.Linear(features, hidden[-1], rngs=rngs)
        self.encoder_logits = nnx.Linear(hidden[-1], size, rngs=rngs)
        self.decoder_dense = _layers((size, hidden[-1], features), rngs)
        up = functools.partial(nnx.ConvTranspose, kernel_size=(3, 3), strides=2, rngs=rngs)
        self.decoder_convs = nnx.List([up(wide, small), up(small, colours)])

    def encode(self, x: jax.Array) -> jax.Array:
        """Posterior logits ``[batch, *latent_shape]`` of pixels ``[batch, *image_shape]``."""
        act = ACTIVATIONS[self.activation]
        h = x
        for layer in self.encoder_convs:
            h = act(layer(h))
        h = act(self.encoder_dense(h.reshape(x.shape[0], -1)))
        return self.encoder_logits(h).reshape(x.shape[0], *self.latent_shape)

    def decode(self, z: jax.Array) -> jax.Array:
        """Pixel logits ``[batch, *image_shape]`` of latents ``[batch, *latent_shape]``."""
        act = ACTIVATIONS[self.activation]
        h = z.reshape(z.shape[0], math.prod(self.latent_shape))
        for layer in self.decoder_dense:
            h = act(layer(h))
        h = act(self.decoder_convs[0](h.reshape(z.shape[0], *self.feature_shape)))
        return self.decoder_convs[1](h)


MODELS: dict[str, Callable[..., VAEModel]] = {"mlp": DiscreteVAE, "conv": ConvVAE}
"""The models ``--model`` names. Each is called with the keywords ``latent_type``, ``latents``,
``categories``, ``hidden``, ``image_shape``, ``activation`` and ``rngs``."""


def from_config(
    config: Config, image_shape: tuple[int, ...] = MNIST_SHAPE, *, rngs: nnx.Rngs
) -> VAEModel:
    """The model a run's config describes, for images of ``image_shape``, initialised from
    ``rngs``."""
    return MODELS[config.model](
        latent_type=config.latent_type,
        latents=config.latents,
        categories=config.categories,
        hidden=config.hidden,
        image_shape=image_shape,
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
