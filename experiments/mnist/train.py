"""Training on the host: the run's state created, epochs scanned in chunks, and :func:`fit`.

Reproducibility: every random number derives from ``config.seed`` and the global step. The epoch
permutation is drawn from ``fold_in(data_key, epoch)``, each step's key is
``fold_in(state.key, state.step)`` and the temperature is ``schedule(state.step)``. A run can
therefore stop at any chunk boundary and continue from its train state alone (params, optimizer
state, step, key) with the same numbers as if it had not stopped.

Speed: the training images live on the device as uint8; an epoch is a few calls of the jitted
``lax.scan`` of :func:`experiments.mnist.update.train_chunk` (``config.chunk_steps`` steps each,
the state donated). The host only sees the chunk's losses, to update the progress bar, and reads
a chunk's losses only once the next one is dispatched. Chunks have one length (plus at most one
shorter remainder chunk per epoch when ``chunk_steps`` does not divide the steps of an epoch), so
at most two compilations happen per run.

Model: a Flax NNX module (:mod:`experiments.mnist.models`) created once from ``nnx.Rngs`` seeded by
``config.seed``, then kept split in the :class:`~experiments.mnist.update.TrainState`
(``nnx.split``); the jitted functions merge it (``nnx.merge``) at trace time only.

Control: :func:`fit` is a generator: it yields each epoch's result (or the part of an epoch a
stop request left), and its caller checkpoints, evaluates, writes and stops. A whole run (resume,
checkpoints, signals, evaluation and outputs around :func:`fit`) is
:func:`experiments.mnist.run.train_and_evaluate`. :func:`fit` is data parallel over a mesh of all
devices (:mod:`experiments.mnist.parallel`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
import optax
import tqdm
from flax import nnx

from experiments.mnist import latents, models, parallel, update
from experiments.mnist.config import Config
from gumbel_jax import estimators

# Evaluations of the decoder per example (``Spec.cost``) above which a run warns that its
# estimator is costly (IndeCateR makes latents x categories x num_samples of them).
COST_BUDGET = 64


@dataclasses.dataclass(frozen=True)
class EpochResult:
    """What one epoch of :func:`fit` measured.

    Attributes:
      epoch: 1-based number of the epoch just finished.
      step: global step after it.
      temperature: temperature of the epoch's last step.
      train_loss: mean training loss (relaxed or estimator-specific negative ELBO) of its steps.
      seconds: wall time of its training steps, compilation included.
      examples_per_second: training examples processed per second.
    """

    epoch: int
    step: int
    temperature: float
    train_loss: float
    seconds: float
    examples_per_second: float


@dataclasses.dataclass(frozen=True)
class PartialEpoch:
    """The part of an epoch trained before a stop, so that the resumed epoch reports all of it.

    Attributes:
      losses: training loss of each step done, in order.
      seconds: wall time of those steps.
    """

    losses: tuple[float, ...] = ()
    seconds: float = 0.0


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns the ``(init, data, train)`` keys of a run, all derived from ``seed``."""
    root = jax.random.key(seed)
    return tuple(jax.random.fold_in(root, i) for i in range(3))


def cost_warning(config: Config) -> str | None:
    """The warning of a run whose estimator evaluates the decoder more than :data:`COST_BUDGET`
    times per example (``spec.cost`` of the config's options and latent shape), else ``None``."""
    spec = estimators.spec(config.estimator)
    shape = latents.get(config.latent_type).shape(config.latents, config.categories)
    cost = spec.cost(dict(config.estimator_options), shape)
    if cost <= COST_BUDGET:
        return None
    return (
        f"warning: --estimator {spec.label(dict(config.estimator_options))} evaluates the decoder "
        f"{cost} times per example (budget {COST_BUDGET}), so a step costs about {cost} forward "
        f"passes of the decoder: expect slow epochs, or use fewer latents or categories"
    )


def learning_rate(config: Config, *, total_steps: int | None) -> float | optax.Schedule:
    """The optimizer's learning rate: ``config.learning_rate``, or its cosine decay to 0.

    Args:
      config: the run's settings.
      total_steps: the run's training steps (``epochs * steps_per_epoch``); needed for the
        cosine schedule, which reaches 0 after them.

    Raises:
      ValueError: the cosine schedule without ``total_steps``.
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    if total_steps is None or total_steps < 1:
        raise ValueError(
            f"the cosine learning-rate schedule needs the run's total_steps >= 1, got {total_steps}"
        )
    return optax.cosine_decay_schedule(config.learning_rate, decay_steps=total_steps)


def create_train_state(
    config: Config,
    *,
    image_shape: tuple[int, ...] = models.MNIST_SHAPE,
    total_steps: int | None = None,
) -> update.TrainState:
    """Initialises the model and its optimizer (``config.optimizer``) from ``config.seed``.

    Args:
      config: the run's settings.
      image_shape: one image's ``(rows, cols, channels)``.
      total_steps: the run's training steps, for ``config.lr_schedule == "cosine"``.
    """
    init_key, _, train_key = run_keys(config.seed)
    model = models.from_config(config, image_shape, rngs=nnx.Rngs(params=init_key))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = getattr(optax, config.optimizer)(learning_rate(config, total_steps=total_steps))
    control_variate = None
    spec = estimators.spec(config.estimator)
    if spec.control_variate:
        # Its own key (the model's init key is unchanged), the model's Adam and learning rate.
        control_variate = create_control_variate(
            config, model.latent_shape, key=jax.random.fold_in(init_key, 1), tx=tx
        )
    return update.TrainState.create(
        graphdef=graphdef, params=params, tx=tx, key=train_key, control_variate=control_variate
    )


def create_control_variate(
    config: Config | update.StepConfig,
    latent_shape: tuple[int, ...],
    *,
    key: jax.Array,
    tx: optax.GradientTransformation,
) -> update.ControlVariateState:
    """A fresh learned control variate for the config's estimator (its spec's ``tunable``
    options start at the config's values) with ``tx``'s state."""
    spec = estimators.spec(config.estimator)
    options = spec.check_options(dict(config.estimator_options))
    tuned = {name: (options[name], domain) for name, domain in spec.tunable.items()}
    module = models.ControlVariate(latent_shape, tuned=tuned, rngs=nnx.Rngs(params=key))
    graphdef, params = nnx.split(module, nnx.Param)
    return update.ControlVariateState(
        params=params, opt_state=tx.init(params), graphdef=graphdef, tx=tx
    )


class Diverged(Exception):
    """Training produced a non-finite loss or parameters. The message is one line.

    Attributes:
      step: the first step whose loss is not finite (or the chunk's last step when only the
        parameters are).
    """

    def __init__(self, losses: np.ndarray, *, first_step: int, learning_rate: float):
        bad = np.flatnonzero(~np.isfinite(losses))
        self.step = first_step + int(bad[0]) if bad.size else first_step + len(losses)
        what = f"the loss is {losses[bad[0]]}" if bad.size else "the parameters are not finite"
        super().__init__(
            f"training diverged: {what} at step {self.step}; the learning rate (--lr "
            f"{learning_rate:g}) is probably too high: rerun with a smaller --lr (and another "
            "--workdir); the checkpoints before the divergence are kept"
        )


@dataclasses.dataclass(frozen=True)
class _Trained:
    """What :func:`_train_epoch` did: the losses of its steps, their time, whether it stopped."""

    losses: np.ndarray  # float32, one per step
    temperature: float | None  # of the last step (None when no chunk ran)
    seconds: float
    stopped: bool


def fit(
    state: update.TrainState,
    train_images: np.ndarray,
    *,
    config: Config,
    mesh: jax.sharding.Mesh | None = None,
    should_stop: Callable[[], bool] | None = None,
    partial_epoch: PartialEpoch | None = None,
) -> Iterator[tuple[update.TrainState, EpochResult | PartialEpoch]]:
    """Trains from ``state`` (from its global step) to the end of epoch ``config.epochs``,
    yielding after each epoch; the caller checkpoints, evaluates, writes and stops.

    Starting from a state saved at any chunk boundary continues the run exactly: the position
    in the epoch, the permutation, the keys and the temperature all follow from ``state.step``.

    Data parallel over ``mesh``: the state and the images are replicated on its devices, each
    step's batch is split over them (every process feeds the shards of its own devices), and the
    gradients are averaged by XLA.

    Args:
      state: where to start (a fresh :func:`create_train_state` or a restored one).
      train_images: uint8 ``[num_examples, ...]`` training images, the same on every process
        (put on the devices here).
      config: the run's settings.
      mesh: the devices to train on (default: :func:`parallel.make_mesh`, all of them).
      should_stop: polled before each chunk; when it returns true (on any process), training
        stops at that chunk boundary.
      partial_epoch: the part of the current epoch trained before ``state`` was saved (from a
        checkpoint), so that the epoch's loss and seconds cover all of its steps.

    Yields:
      ``(state, EpochResult)`` after each epoch; after a stop, ``(state, PartialEpoch)`` with the
      part of the epoch in progress that was trained (all of it since its start, resumed part
      included), and nothing more. A run already at its end yields nothing.

    Raises:
      ValueError: ``config.batch_size`` exceeds the number of training examples or does not
        split evenly over the mesh's devices.
      Diverged: a chunk ended with a non-finite loss or parameters (its epoch is not yielded).
    """
    steps = steps_per_epoch(config, len(train_images))
    warning = cost_warning(config)
    if warning is not None and parallel.is_main_process():
        print(warning, file=sys.stderr, flush=True)
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_batch_size(config.batch_size, mesh)
    images = parallel.replicate(train_images, mesh)
    state = parallel.replicate(state, mesh)
    for epoch in range(int(state.step) // steps, config.epochs):
        position = int(state.step) - epoch * steps
        before = partial_epoch if position > 0 and partial_epoch else PartialEpoch()
        partial_epoch = None
        indices = _sharded_batch_indices(config, epoch, len(train_images), mesh)
        with _progress_bar(config, epoch, steps, position) as bar:
            state, trained = _train_epoch(
                state, images, indices, position, config=config, mesh=mesh,
                should_stop=should_stop, bar=bar,
            )  # fmt: skip
        losses = np.concatenate([np.asarray(before.losses, np.float32), trained.losses])
        seconds = before.seconds + trained.seconds
        if trained.stopped:
            yield state, PartialEpoch(tuple(float(x) for x in losses), seconds)
            return
        yield (
            state,
            EpochResult(
                epoch=epoch + 1,
                step=int(state.step),
                temperature=trained.temperature,
                train_loss=float(np.mean(losses)),
                seconds=seconds,
                examples_per_second=trained.losses.size * config.batch_size / trained.seconds,
            ),
        )


def steps_per_epoch(config: Config, num_examples: int) -> int:
    """``config.steps_per_epoch(num_examples)``, checked.

    Raises:
      ValueError: the batch size exceeds the number of training examples.
    """
    steps = config.steps_per_epoch(num_examples)
    if steps == 0:
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the {num_examples} training examples"
        )
    return steps


def _sharded_batch_indices(
    config: Config, epoch: int, num_examples: int, mesh: jax.sharding.Mesh
) -> jax.Array:
    """The epoch's ``[steps, batch_size]`` indices, each step's batch split over the mesh."""
    _, data_key, _ = run_keys(config.seed)
    indices = update.epoch_batch_indices(
        data_key,
        epoch,
        num_examples=num_examples,
        steps=config.steps_per_epoch(num_examples),
        batch_size=config.batch_size,
    )
    return parallel.shard_batches(np.asarray(indices), mesh, axis=1)


def _progress_bar(config: Config, epoch: int, steps: int, position: int) -> tqdm.tqdm:
    """The epoch's progress bar in examples, from ``position`` steps in."""
    return tqdm.tqdm(
        total=steps * config.batch_size,
        initial=position * config.batch_size,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        unit="ex",
        unit_scale=True,
        leave=False,
        # None: off when stderr is not a TTY; only process 0 shows progress.
        disable=None if config.progress and parallel.is_main_process() else True,
    )


def _finished_chunk(
    metrics: dict[str, jax.Array], *, first_step: int, config: Config
) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's losses and temperatures (waiting for it).

    Raises:
      Diverged: the chunk ended with a non-finite loss or parameters.
    """
    loss, temperature, finite = jax.device_get(
        (metrics["loss"], metrics["temperature"], metrics["finite"])
    )
    if not finite:
        raise Diverged(loss, first_step=first_step, learning_rate=config.learning_rate)
    return loss, temperature


def _train_epoch(
    state: update.TrainState,
    images: jax.Array,
    indices: jax.Array,
    position: int,
    *,
    config: Config,
    mesh: jax.sharding.Mesh,
    should_stop: Callable[[], bool] | None,
    bar: tqdm.tqdm,
) -> tuple[update.TrainState, _Trained]:
    """Trains the epoch from step ``position`` to its end, chunk by chunk, or until a stop.

    A chunk's metrics are read (which waits for it) only once the next chunk is dispatched, so
    the device never idles while the host updates the progress bar.

    Raises:
      Diverged: a chunk ended with a non-finite loss or parameters.
    """
    steps, step_config = indices.shape[0], update.StepConfig.from_config(config)
    global_step = int(state.step)
    started = time.perf_counter()
    losses, temperature, pending, examples = [np.zeros(0, np.float32)], None, None, 0
    shows_temperature = config.spec().anneals_temperature  # the others ignore it
    while True:
        dispatched = None
        if position < steps and not (
            should_stop is not None and parallel.any_process(should_stop())
        ):
            num_steps = min(config.chunk_steps, steps - position)
            state, metrics = update.train_chunk(
                state,
                images,
                indices,
                position,
                config=step_config,
                num_steps=num_steps,
                batch_sharding=parallel.batch_sharding(mesh),
            )
            position += num_steps
            dispatched = metrics
        if pending is not None:
            loss, temperature = _finished_chunk(pending, first_step=global_step, config=config)
            global_step += loss.size
            losses.append(loss)
            examples += loss.size * config.batch_size
            bar.update(loss.size * config.batch_size)
            postfix = {"loss": f"{float(np.mean(loss)):.2f}"}
            if shows_temperature:
                postfix["temperature"] = f"{float(temperature[-1]):.3f}"
            postfix["ex_per_s"] = f"{examples / (time.perf_counter() - started):.0f}"
            bar.set_postfix(postfix)
        if dispatched is None:
            break
        pending = dispatched
    return state, _Trained(
        losses=np.concatenate(losses),
        temperature=None if temperature is None else float(temperature[-1]),
        seconds=time.perf_counter() - started,
        stopped=position < steps,
    )
