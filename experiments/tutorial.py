"""The PyTorch "Categorical VAE with Gumbel-Softmax" tutorial, in one readable JAX file.

The model, optimizer and schedule of YongfeiYan/Gumbel_Softmax_VAE (``gumbel_softmax_vae.py``):
encoder 784-512-256-(30x10) logits, decoder (30x10)-256-512-784, Adam 1e-3, batch 100, 10 epochs,
temperature 1.0 annealed as ``max(0.5, exp(-3e-5 * step))`` every 100 steps, ``--hard`` for
straight-through. Written with ``gumbel_jax``, Flax NNX and optax; the tutorial's mistakes are
fixed, each at a line starting ``# Fix:``. The full experiment is ``python -m experiments.mnist``.

Run ``python -m experiments.tutorial --hard --data-dir /path/to/mnist_idx_folder``. It prints one
line per epoch (the temperature of the epoch's last step, the mean training loss and the test
negative ELBO of the discrete model, in nats per digit), such as
``epoch 1/10  temperature 0.99  train loss 188.53  test negative ELBO 156.85``, and saves 8 test
digits over their reconstructions in ``--out``/reconstructions.png.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments.mnist import input_pipeline, workdir
from gumbel_jax import sample, schedules

# Settings: the tutorial's.
LATENTS, CATEGORIES = 30, 10
PIXELS = 28 * 28
BATCH_SIZE = 100
LEARNING_RATE = 1e-3
# Fix: a function of the global step (the tutorial's restarts every epoch, and compounds).
TEMPERATURE = schedules.exponential(1.0, rate=3e-5, minimum=0.5, every=100)
TEST_BINARIZATION_SEED = 0  # the same binary test digits for every run, epoch and seed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    data_help = "MNIST IDX folder (default: $GUMBEL_JAX_MNIST_DIR, else tensorflow-datasets)"
    parser.add_argument("--data-dir", help=data_help)
    parser.add_argument("--hard", action="store_true", help="straight-through Gumbel-Softmax")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", default="tutorial_out", help="folder of the picture")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    # Fix: the picture's folder is checked before training, not after it.
    if (problem := workdir.folder_problem(Path(args.out), writable=True)) is not None:
        parser.error(f"--out {args.out} {problem}: pass a folder you can write")
    return args


def binarize(key: jax.Array, images: jax.Array) -> jax.Array:
    """uint8 images ``[n, 28, 28]`` to float32 pixels ``[n, 784]`` drawn as Bernoulli(grey / 255).

    Dynamic binarization (a new draw every step) is the standard for reporting a bound in nats.
    """
    # Fix: binary pixels, for a true likelihood (the tutorial's BCE fits grey levels).
    grey = images.reshape(images.shape[0], PIXELS) / 255.0
    return jax.random.bernoulli(key, grey).astype(jnp.float32)


class VAE(nnx.Module):
    """Encoder 784-512-256-(30x10) logits, decoder (30x10)-256-512-784 pixel logits, ReLU."""

    def __init__(self, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(PIXELS, 512, rngs=rngs)
        self.fc2 = nnx.Linear(512, 256, rngs=rngs)
        self.fc3 = nnx.Linear(256, LATENTS * CATEGORIES, rngs=rngs)
        self.fc4 = nnx.Linear(LATENTS * CATEGORIES, 256, rngs=rngs)
        self.fc5 = nnx.Linear(256, 512, rngs=rngs)
        self.fc6 = nnx.Linear(512, PIXELS, rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.fc2(jax.nn.relu(self.fc1(x))))
        # Fix: the logits are the last layer's output (the tutorial clips them with a ReLU).
        return self.fc3(h).reshape(-1, LATENTS, CATEGORIES)

    def decode(self, z: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.fc5(jax.nn.relu(self.fc4(z.reshape(-1, LATENTS * CATEGORIES)))))
        return self.fc6(h)  # logits; sigmoid(logits) are the pixels' probabilities


def negative_elbo(model: VAE, x: jax.Array, logits: jax.Array, z: jax.Array) -> jax.Array:
    """Per-digit negative ELBO ``[n]``: BCE summed over pixels plus KL(q || uniform), in nats."""
    # Fix: BCE from the decoder's logits (the tutorial's sigmoid-then-BCE clips log 0 to -100).
    reconstruction = optax.sigmoid_binary_cross_entropy(model.decode(z), x).sum(-1)
    # Fix: log q from log_softmax, exact, instead of the tutorial's log(q * K + 1e-20).
    log_q = jax.nn.log_softmax(logits)
    kl = (jnp.exp(log_q) * log_q).sum((-2, -1)) + LATENTS * jnp.log(CATEGORIES)
    return reconstruction + kl


def train_step(graphdef, params, opt_state, key, images, temperature, hard: bool):
    """One Adam step on a batch of uint8 images; returns new ``params``, ``opt_state``, loss.

    A pure function of the model's state (Flax's fast pattern): ``nnx.merge`` rebuilds the model
    from ``graphdef``, split once, so no NNX graph is traversed outside of tracing.
    """
    binarize_key, sample_key = jax.random.split(key)
    x = binarize(binarize_key, images)

    def loss_fn(params):
        model = nnx.merge(graphdef, params)
        logits = model.encode(x)
        # Fix: exact noise (no -log(-log(U + eps) + eps)), exact one-hot hard samples (no rounding).
        z = sample.gumbel_softmax(sample_key, logits, temperature, hard=hard)
        return negative_elbo(model, x, logits, z).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optax.adam(LEARNING_RATE).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@jax.jit(static_argnames="hard")
def train_epoch(graphdef, params, opt_state, key, images, first_step, hard: bool):
    """One epoch, a ``lax.scan`` of ``train_step`` over shuffled batches, compiled once.

    Returns the new ``params`` and ``opt_state``, the epoch's mean loss and its last temperature.
    """
    shuffle_key, key = jax.random.split(key)
    order = jax.random.permutation(shuffle_key, images.shape[0])
    batches = order[: len(order) // BATCH_SIZE * BATCH_SIZE].reshape(-1, BATCH_SIZE)
    steps = first_step + jnp.arange(len(batches))

    def body(carry, inputs):
        step, batch, step_key = inputs
        params, opt_state, loss = train_step(
            graphdef, *carry, step_key, images[batch], TEMPERATURE(step), hard
        )
        return (params, opt_state), loss

    inputs = (steps, batches, jax.random.split(key, len(batches)))
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), inputs)
    return params, opt_state, losses.mean(), TEMPERATURE(steps[-1])


@jax.jit
def evaluate(graphdef, params, key, x):
    """The discrete model's negative ELBO, averaged, and the first 8 digits' reconstructions."""
    model = nnx.merge(graphdef, params)
    logits = model.encode(x)
    # Fix: the discrete model's bound, one exact one-hot sample a digit (the tutorial's is relaxed).
    z = sample.gumbel_max(key, logits)
    return negative_elbo(model, x, logits, z).mean(), jax.nn.sigmoid(model.decode(z[:8]))


def save_reconstructions(path: Path, digits: jax.Array, reconstructions: jax.Array) -> None:
    """Saves digits (top row) over their reconstructions' pixel probabilities (bottom row)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 2.2))
    FigureCanvasAgg(figure)  # Agg, without pyplot's global state
    axes = figure.subplots(2, len(digits))
    for row, images in enumerate((digits, reconstructions)):
        for ax, image in zip(axes[row], np.asarray(images), strict=True):
            ax.imshow(image.reshape(28, 28), cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
    figure.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    """Trains and evaluates the VAE; returns the exit status (2 when MNIST cannot be loaded)."""
    args = parse_args(argv)
    try:
        mnist = input_pipeline.load(input_pipeline.resolve_data_dir(args.data_dir))
    except input_pipeline.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    init_key, train_key, test_key = jax.random.split(jax.random.key(args.seed), 3)
    graphdef, params = nnx.split(VAE(nnx.Rngs(init_key)))
    opt_state = optax.adam(LEARNING_RATE).init(params)
    train_images = jnp.asarray(mnist.train_images)  # uint8 on the device; binarized per step
    test_x = binarize(jax.random.key(TEST_BINARIZATION_SEED), jnp.asarray(mnist.test_images))
    steps_per_epoch = len(train_images) // BATCH_SIZE
    for epoch in range(1, args.epochs + 1):
        params, opt_state, train_loss, temperature = train_epoch(
            graphdef, params, opt_state, jax.random.fold_in(train_key, epoch), train_images,
            (epoch - 1) * steps_per_epoch, args.hard,
        )  # fmt: skip
        test_loss, reconstructions = evaluate(graphdef, params, test_key, test_x)
        print(
            f"epoch {epoch}/{args.epochs}  temperature {float(temperature):.2f}  "
            f"train loss {float(train_loss):.2f}  test negative ELBO {float(test_loss):.2f}",
            flush=True,
        )
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_reconstructions(out / "reconstructions.png", test_x[:8], reconstructions)
    except OSError as error:  # a full disk, a folder made read-only since the start
        print(f"error: cannot write {error.filename or out} ({error.strerror})", file=sys.stderr)
        return 2
    print(f"saved {out / 'reconstructions.png'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
