"""Steady-state timing of the MNIST VAE's training epoch, against the analytic FLOP count.

The epoch is timed through `experiments.mnist.train.fit`, the code path `python -m
experiments.mnist` runs, using the per-epoch wall time `fit` reports (compilation included in the
first epoch). The data are synthetic uint8 images of MNIST's shape: the speed of a step does not
depend on the pixel values.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.timing import time_call
from experiments.mnist import train
from experiments.mnist.config import Config
from gumbel_jax import estimators

NUM_TRAIN = 60_000
# How the benchmarks' flags write an estimator (``--variants``, ``--estimator``).
ESTIMATOR_SYNTAX = "NAME[OPTION=VALUE,...]"


def estimator_config(text: str, **settings) -> Config:
    """The default run's :class:`Config` with the estimator ``text`` names.

    ``text`` is a registered estimator's name or a plug-in ``MODULE:ATTRIBUTE``, with options in
    brackets: ``st``, ``gumbel-rao[num_samples=100]``, ``my_module:MY_SPEC[gap=2.0]``
    (``gumbel_jax.estimators.parse_variant``). A spec's temperature floor (``min_temperature``)
    becomes the temperature and its minimum unless ``settings`` set them.

    Raises:
      ValueError: an unknown estimator or option, or a plug-in that cannot be loaded (one line).
    """
    spec, options = estimators.parse_variant(text)
    floor = spec.min_temperature
    if floor is not None and min(Config.temperature, Config.temperature_min) < floor:
        settings = {"temperature": floor, "temperature_min": floor, **settings}
    estimator = text.partition("[")[0].strip()
    return Config(estimator=estimator, estimator_options=options, **settings)


def estimator_flag(text: str) -> str:
    """The ``argparse`` type of an estimator flag: checks ``text`` (a bad one is a usage error,
    one line) and returns it."""
    try:
        estimator_config(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None
    return text


def estimator_help(what: str) -> str:
    """A flag's help listing the registered estimators and the syntax."""
    return (
        f"{what}: {', '.join(estimators.names())}, or MODULE:ATTRIBUTE (a Spec in your own "
        f"module); options as {ESTIMATOR_SYNTAX}, e.g. gumbel-rao[num_samples=100]"
    )


def synthetic_images(num: int = NUM_TRAIN) -> np.ndarray:
    """Random uint8 images of MNIST's shape ``[num, 28, 28]``: a step's speed ignores the pixels."""
    return np.random.default_rng(0).integers(0, 256, (num, 28, 28), dtype=np.uint8)


def layer_shapes(config: Config, data_dim: int = 784) -> list[tuple[int, int]]:
    """``(inputs, outputs)`` of the model's six dense layers, encoder then decoder."""
    encoder = (data_dim, *config.hidden, config.latents * config.categories)
    decoder = (config.latents * config.categories, *reversed(config.hidden), data_dim)
    return [*itertools.pairwise(encoder), *itertools.pairwise(decoder)]


def flops_per_example(config: Config, data_dim: int = 784) -> float:
    """Forward plus backward FLOPs of one example: 3 x 2 x the multiply-adds of the dense layers.

    For the default model (784-512-256-300-256-512-784) that is 3 x 2 x 1.22M = 7.3 MFLOP.
    """
    return 3 * 2 * sum(a * b for a, b in layer_shapes(config, data_dim))


def matmul_floor_benchmark(config: Config, *, adam: bool = False, repeats: int = 3) -> dict:
    """Times an epoch of nothing but the model's matrix products: a practical floor.

    The same six layer shapes at the same batch size, forward and backward, with a plain SGD
    update and no bias, sampling, binarization or loss: the time XLA needs for the epoch's
    matmuls alone at this batch size, which no implementation of the model can beat by much on
    this machine. With ``adam=True`` the update is the experiment's ``optax.adam`` instead of
    SGD: the floor of any implementation that trains these weights with Adam.

    Returns:
      ``{"epoch_s", "gflops"}`` for a 60,000-example epoch (the min over ``repeats``).
    """
    steps = config.steps_per_epoch(NUM_TRAIN)
    keys = jax.random.split(jax.random.key(0), len(layer_shapes(config)))
    shapes = layer_shapes(config)
    weights = [0.01 * jax.random.normal(k, s) for k, s in zip(keys, shapes, strict=True)]
    inputs = jax.random.normal(jax.random.key(1), (steps, config.batch_size, 784))

    def loss(weights, x):
        for w in weights:
            x = jnp.tanh(x @ w)
        return jnp.sum(x)

    optimizer = optax.adam(1e-3) if adam else optax.sgd(1e-3)

    @jax.jit
    def epoch(weights, opt_state, inputs):
        def step(carry, x):
            weights, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(loss)(weights, x), opt_state)
            return (optax.apply_updates(weights, updates), opt_state), None

        return jax.lax.scan(step, (weights, opt_state), inputs)[0]

    opt_state = optimizer.init(weights)
    seconds = time_call(epoch, weights, opt_state, inputs, repeats=repeats)["min_s"]
    gflop = flops_per_example(config) * steps * config.batch_size / 1e9
    return {"epoch_s": seconds, "gflops": gflop / seconds}


@contextlib.contextmanager
def threefry_partitionable(value: bool) -> Iterator[None]:
    """Sets ``jax_threefry_partitionable`` inside the block (jitted functions retrace for it)."""
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", value)
    try:
        yield
    finally:
        jax.config.update("jax_threefry_partitionable", before)


def epoch_benchmark(config: Config, *, repeats: int = 5, images: np.ndarray | None = None) -> dict:
    """Trains ``1 + repeats`` epochs and reports the first (compiling) and the steady-state ones.

    Args:
      config: the run's settings (``epochs`` and ``progress`` are overridden).
      repeats: steady-state epochs to time.
      images: uint8 training images ``[n, 28, 28]``; default :func:`synthetic_images`.

    Returns:
      A dict with the per-epoch seconds, ``steady_median_s``, ``steady_min_s``, ``compile_s``
      (first epoch minus the steady median), ``examples_per_s``, ``gflops`` (achieved, from the
      analytic count and the median epoch) and ``gflop_per_epoch``.
    """
    config = Config(**{**config.to_dict(), "epochs": 1 + repeats, "progress": False})
    images = synthetic_images() if images is None else images
    state = train.create_train_state(config)
    seconds = [result.seconds for _, result in train.fit(state, images, config=config)]
    steady = seconds[1:]
    examples = config.steps_per_epoch(len(images)) * config.batch_size
    gflop = flops_per_example(config) * examples / 1e9
    median = statistics.median(steady)
    return {
        "epoch_seconds": seconds,
        "steady_median_s": median,
        "steady_min_s": min(steady),
        "compile_s": seconds[0] - median,
        "examples_per_s": examples / median,
        "gflop_per_epoch": gflop,
        "gflops": gflop / median,
    }
