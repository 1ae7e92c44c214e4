"""Honest evaluation of the discrete model: exact samples, analytic KL, and the IWAE bound.

- :func:`evaluate` gives the negative ELBO of the discrete model on the test set, with one exact
  sample per example (one-hot categorical, or 0/1 binary) and the KL of the posterior to the
  uniform prior in closed form; with ``num_samples=k`` also the importance-weighted bound
  (Burda et al. 2016, https://arxiv.org/abs/1509.00519)
  ``-log mean_k exp(log p(x|z) + log p(z) - log q(z|x))``.
- :func:`pixels_binarized_once` binarizes the test set (and, for the last epoch's training-set
  bound, the training set) once with a fixed key, the same for every run.
- :func:`reconstruct` and :func:`sample_prior` give the pictures' pixels.

All use fixed keys, so successive epochs are evaluated on the same noise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.mnist import input_pipeline, latents, losses, models
from experiments.mnist.config import Config

# Keys independent of the run's seed, so that every run is measured on the same test pixels.
TEST_BINARIZATION_SEED = 20_240_601
EVAL_SEED = 20_240_602


def pixels_binarized_once(images: np.ndarray, mode: str) -> jax.Array:
    """Images as float32 pixels ``[n, rows, cols, channels]``, binarized once with a fixed key
    (the same for every run): the test set, and the training set for its final bound."""
    return input_pipeline.binarize(
        jax.random.key(TEST_BINARIZATION_SEED), jnp.asarray(images), mode
    )


# The jitted functions below take the model split (``nnx.split``): its graphdef is a static argument
# (hashable, equal for models of the same shapes), its parameters a traced one. They are static in
# the model's structure and sizes only, not in the whole Config: runs that differ in seed, learning
# rate or workdir share the compilation. Each call is one chunk of the evaluation (a batch of test
# examples, and for the IWAE bound a chunk of at most IWAE_SAMPLE_CHUNK samples of it), so that
# memory does not grow with the number of samples and a stop request is answered between chunks.

IWAE_SAMPLE_CHUNK = 32


class Stopped(Exception):
    """The evaluation stopped between two chunks because ``should_stop`` said so."""


@functools.partial(jax.jit, static_argnames="size")
def _padded(x: jax.Array, *, size: int) -> jax.Array:
    """``x`` with zero examples appended up to ``size`` (each example keeps its shape)."""
    return jnp.pad(x, ((0, size - x.shape[0]), *[(0, 0)] * (x.ndim - 1)))


def _batch_keys(key: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The ``(elbo, iwae)`` keys of test batch ``index``."""
    return tuple(jax.random.split(jax.random.fold_in(key, index)))


@functools.partial(jax.jit, static_argnames=("graphdef", "batch_size"))
def _neg_elbo_batch(graphdef, params, x, index, key, *, batch_size: int) -> jax.Array:
    """Negative ELBO ``[batch_size]`` of batch ``index`` of ``x``, one exact sample each."""
    model = nnx.merge(graphdef, params)
    xb = jax.lax.dynamic_slice_in_dim(x, index * batch_size, batch_size)
    logits = model.encode(xb)
    z = latents.get(model.latent_type).exact_sample(_batch_keys(key, index)[0], logits)
    return losses.negative_elbo(model.decode(z), xb, logits, model.latent_type)


@functools.partial(jax.jit, static_argnames=("graphdef", "batch_size", "chunk", "num_samples"))
def _iwae_chunk(
    graphdef, params, x, index, chunk_index, key, running, *, batch_size, chunk, num_samples
):
    """Adds samples ``chunk_index * chunk ...`` (< ``num_samples``) to the running log-sum-exp.

    ``running`` is ``(max, sum)`` per example: ``logsumexp = max + log(sum)``. With a single chunk
    the samples are drawn from the batch's IWAE key itself, as a one-shot bound would.
    """
    model = nnx.merge(graphdef, params)
    xb = jax.lax.dynamic_slice_in_dim(x, index * batch_size, batch_size)
    iwae_key = _batch_keys(key, index)[1]
    if num_samples > chunk:
        iwae_key = jax.random.fold_in(iwae_key, chunk_index)
    logits = model.encode(xb)
    z_k = latents.get(model.latent_type).exact_sample(
        iwae_key, jnp.broadcast_to(logits, (chunk, *logits.shape))
    )
    pixel_logits_k = model.decode(z_k.reshape(-1, *logits.shape[1:])).reshape(chunk, *xb.shape)
    log_w = losses.log_importance_weights(pixel_logits_k, xb, logits, z_k, model.latent_type)
    valid = chunk_index * chunk + jnp.arange(chunk) < num_samples
    return logsumexp_update(running, jnp.where(valid[:, None], log_w, -jnp.inf))


def logsumexp_update(
    running: tuple[jax.Array, jax.Array], values: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A running log-sum-exp over axis 0: ``(max, sum)`` after adding ``values`` ``[m, ...]``.

    Start from ``(-inf, 0)``; ``max + log(sum)`` is the log-sum-exp of everything added.
    """
    peak, total = running
    new_peak = jnp.maximum(peak, jnp.max(values, axis=0))
    total = total * jnp.exp(peak - new_peak) + jnp.sum(jnp.exp(values - new_peak), axis=0)
    return new_peak, total


def _check(should_stop, last: jax.Array | None) -> None:
    """Waits for the chunk ``last`` and raises :class:`Stopped` if a stop was requested."""
    if should_stop is None:
        return
    if last is not None:
        jax.block_until_ready(last)
    if should_stop():
        raise Stopped


def _nll_iwae_batch(graphdef, params, x, index, key, *, batch_size, num_samples, should_stop):
    """IWAE bound ``[batch_size]`` of batch ``index``, over chunks of samples."""
    chunk = min(num_samples, IWAE_SAMPLE_CHUNK)
    running = (jnp.full(batch_size, -jnp.inf), jnp.zeros(batch_size))
    for chunk_index in range(-(-num_samples // chunk)):
        _check(should_stop, running[1])
        running = _iwae_chunk(
            graphdef,
            params,
            x,
            index,
            chunk_index,
            key,
            running,
            batch_size=batch_size,
            chunk=chunk,
            num_samples=num_samples,
        )
    peak, total = running
    return -(peak + jnp.log(total) - jnp.log(num_samples))


def evaluate(
    model: models.VAEModel,
    x: jax.Array,
    *,
    config: Config,
    num_samples: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    split: str = "test",
) -> dict[str, float]:
    """Bounds of the discrete model on held-out pixels, in nats per example.

    Memory is bounded by one chunk (``config.eval_batch_size`` examples times at most
    :data:`IWAE_SAMPLE_CHUNK` samples), whatever ``num_samples``.

    Args:
      model: the model (``TrainState.model()``).
      x: test pixels ``[n, rows, cols, channels]`` (see :func:`pixels_binarized_once`).
      config: the run's settings (its evaluation batch size).
      num_samples: k of the IWAE bound, or ``None`` to skip it.
      should_stop: polled between chunks (after each has finished); when it returns true the
        evaluation stops with :class:`Stopped`.
      split: what ``x`` is, the prefix of the result's names (``test``, ``valid``, ``train``).

    Returns:
      ``{"<split>/neg_elbo": ...}``, plus ``"<split>/nll_iwae"`` when ``num_samples`` is given.

    Raises:
      Stopped: ``should_stop`` returned true.
    """
    graphdef, params = nnx.split(model)
    # A batch is never larger than the data: a huge --eval-batch-size pads nothing.
    n, key = x.shape[0], jax.random.key(EVAL_SEED)
    batch_size = min(config.eval_batch_size, n)
    num_batches = -(-n // batch_size)
    padded = _padded(x, size=num_batches * batch_size)
    neg_elbo, nll_iwae = [], []
    for index in range(num_batches):
        _check(should_stop, neg_elbo[-1] if neg_elbo else None)
        args = (graphdef, params, padded, index, key)
        neg_elbo.append(_neg_elbo_batch(*args, batch_size=batch_size))
        if num_samples:
            nll_iwae.append(
                _nll_iwae_batch(
                    *args,
                    batch_size=batch_size,
                    num_samples=num_samples,
                    should_stop=should_stop,
                )
            )
    result = {f"{split}/neg_elbo": float(jnp.mean(jnp.concatenate(neg_elbo)[:n]))}
    if num_samples:
        result[f"{split}/nll_iwae"] = float(jnp.mean(jnp.concatenate(nll_iwae)[:n]))
    return result


def reconstruct(model: models.VAEModel, x: jax.Array) -> jax.Array:
    """Pixel probabilities ``[n, rows, cols, channels]`` decoded from one exact posterior sample
    of ``x``."""
    return _reconstruct(*nnx.split(model), x)


@functools.partial(jax.jit, static_argnames="graphdef")
def _reconstruct(graphdef, params, x: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, params)
    kind = latents.get(model.latent_type)
    z = kind.exact_sample(jax.random.key(EVAL_SEED), model.encode(x))
    return jax.nn.sigmoid(model.decode(z))


def sample_prior(model: models.VAEModel, *, num: int) -> jax.Array:
    """Pixel probabilities ``[num, rows, cols, channels]`` decoded from ``num`` samples of the
    uniform prior."""
    return _sample_prior(*nnx.split(model), num=num)


@functools.partial(jax.jit, static_argnames=("graphdef", "num"))
def _sample_prior(graphdef, params, *, num: int) -> jax.Array:
    model = nnx.merge(graphdef, params)
    uniform = jnp.zeros((num, *model.latent_shape))  # the uniform prior's logits, either type
    z = latents.get(model.latent_type).exact_sample(jax.random.key(EVAL_SEED), uniform)
    return jax.nn.sigmoid(model.decode(z))
