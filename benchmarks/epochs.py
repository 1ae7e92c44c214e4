"""Steady-state timing of the MNIST VAE's training epoch, against the analytic FLOP count.

The epoch is timed through `experiments.mnist.train.fit`, the code path `python -m
experiments.mnist` runs, using the per-epoch wall time `fit` reports (compilation included in the
first epoch). The data are synthetic uint8 images of MNIST's shape: the speed of a step does not
depend on the pixel values.
"""

from __future__ import annotations

import itertools
import statistics

import numpy as np

from experiments.mnist import train
from experiments.mnist.config import Config

NUM_TRAIN = 60_000


def flops_per_example(config: Config, data_dim: int = 784) -> float:
    """Forward plus backward FLOPs of one example: 3 x 2 x the multiply-adds of the dense layers.

    For the default model (784-512-256-300-256-512-784) that is 3 x 2 x 1.22M = 7.3 MFLOP.
    """
    encoder = (data_dim, *config.hidden, config.latents * config.categories)
    decoder = (config.latents * config.categories, *reversed(config.hidden), data_dim)
    pairs = [*itertools.pairwise(encoder), *itertools.pairwise(decoder)]
    multiply_adds = sum(a * b for a, b in pairs)
    return 3 * 2 * multiply_adds


def epoch_benchmark(config: Config, *, repeats: int = 5) -> dict:
    """Trains ``1 + repeats`` epochs and reports the first (compiling) and the steady-state ones.

    Returns:
      A dict with the per-epoch seconds, ``steady_median_s``, ``steady_min_s``, ``compile_s``
      (first epoch minus the steady median), ``examples_per_s``, ``gflops`` (achieved, from the
      analytic count and the median epoch) and ``gflop_per_epoch``.
    """
    config = Config(**{**config.to_dict(), "epochs": 1 + repeats, "progress": False})
    images = np.random.default_rng(0).integers(0, 256, (NUM_TRAIN, 28, 28), dtype=np.uint8)
    state = train.create_train_state(config, data_dim=28 * 28)
    seconds: list[float] = []
    train.fit(state, images, config=config, on_epoch_end=lambda _, r: seconds.append(r.seconds))
    steady = seconds[1:]
    examples = config.steps_per_epoch(NUM_TRAIN) * config.batch_size
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
