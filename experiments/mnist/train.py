"""Training: the train state, the jitted step, epochs scanned in chunks, and the loop over them.

Reproducibility: every random number derives from ``config.seed`` and the global step. The epoch
permutation is drawn from ``fold_in(data_key, epoch)``, each step's key is
``fold_in(state.key, state.step)`` and the temperature is ``schedule(state.step)``. A run can
therefore stop at any chunk boundary and continue from its :class:`TrainState` alone (params,
optimizer state, step, key) with the same numbers as if it had not stopped.

Speed: the training images live on the device as uint8; an epoch is a few calls of a jitted
``lax.scan`` over steps (``config.chunk_steps`` each, the state donated), each step gathering its
batch, binarizing it and computing the temperature on the device. The host only sees the chunk's
losses, to update the progress bar. Chunks have one length (plus at most one shorter remainder
chunk per epoch when ``chunk_steps`` does not divide the steps of an epoch), so at most two
compilations happen per run.

Model: a Flax NNX module (:mod:`experiments.mnist.models`) created once from ``nnx.Rngs`` seeded by
``config.seed``, then kept split in the :class:`TrainState` (``nnx.split``); the jitted functions
merge it (``nnx.merge``) at trace time only.

Devices: :func:`fit` is data parallel over a mesh of all devices
(:mod:`experiments.mnist.parallel`). A whole run (resume, checkpoints, signals, evaluation and
outputs around :func:`fit`) is :func:`experiments.mnist.run.train_and_evaluate`.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import nnx, struct

from experiments.mnist import (
    input_pipeline,
    latents,
    losses,
    models,
    parallel,
)
from experiments.mnist.config import Config
from gumbel_jax import estimators, schedules

# ``fn(key, logits, temperature) -> sample``: a sample estimator with its options bound.
SampleEstimator = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

# Evaluations of the decoder per example (``Spec.cost``) above which a run warns that its
# estimator is costly (IndeCateR makes latents x categories x num_samples of them).
COST_BUDGET = 64


@struct.dataclass
class ControlVariateState:
    """A learned control variate (:class:`~experiments.mnist.models.ControlVariate`) and its
    own Adam state, for an estimator whose spec has ``control_variate`` (RELAX).

    Like the model, the module is kept split: ``graphdef`` and ``params`` (the network and the
    tuned options, such as ``eta`` and the log-temperature); ``tx`` is its optimizer, stepped on
    the variance gradient (:func:`variance_loss`).
    """

    params: nnx.State
    opt_state: optax.OptState
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def module(self, params: Any = None) -> models.ControlVariate:
        """The control variate with ``params`` (default: this state's)."""
        return nnx.merge(self.graphdef, self.params if params is None else params)

    def apply_gradients(self, *, grads: Any) -> ControlVariateState:
        """One optimizer update of ``params`` with ``grads``."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state)


@struct.dataclass
class TrainState:
    """Everything a run's training needs between steps, as one pytree of arrays.

    The model lives here split (``nnx.split``): ``graphdef`` is its static structure and
    ``params`` its ``nnx.State`` of parameters; :meth:`model` merges them into a
    :class:`~experiments.mnist.models.DiscreteVAE` where an object is needed. The jitted
    training chunks take this pure state, not the module, so no Python graph traversal happens per
    step (the pattern of Flax's performance guide). Adam is plain optax on ``params`` rather than
    ``nnx.Optimizer``: its state is a pytree of the structure of ``params``, updated inside the same
    jitted scan, with no object graph to split or merge.

    ``key`` is a typed PRNG key (``jax.random.key``) that never changes: the key of step ``t`` is
    ``fold_in(key, t)``. Together with ``params``, ``opt_state``, ``step`` and ``control_variate``
    it is everything a checkpoint must hold.

    ``control_variate`` is the learned control variate's :class:`ControlVariateState` for an
    estimator whose spec has one (RELAX), else ``None`` (no leaves: the other estimators' state
    and checkpoints are those they always had).
    """

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    key: jax.Array
    graphdef: nnx.GraphDef | None = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    control_variate: ControlVariateState | None = None

    @classmethod
    def create(
        cls,
        *,
        graphdef: nnx.GraphDef | None,
        params: Any,
        tx: optax.GradientTransformation,
        key: jax.Array,
        control_variate: ControlVariateState | None = None,
    ) -> TrainState:
        """A state at step 0 (an int32 array, so the first chunk compiles like the others)."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            key=key,
            graphdef=graphdef,
            tx=tx,
            control_variate=control_variate,
        )

    def model(self, params: Any = None) -> models.DiscreteVAE:
        """The model with ``params`` (default: this state's), merged from the split state."""
        return nnx.merge(self.graphdef, self.params if params is None else params)

    def apply_gradients(self, *, grads: Any) -> TrainState:
        """One optimizer update of ``params`` with ``grads``; the step advances by one."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            opt_state=opt_state,
        )


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


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The settings a training step depends on: the static argument of the jitted functions.

    Kept apart from :class:`Config` so that settings the step does not use (epochs, workdir,
    evaluation...) never cause a recompilation. The estimator is its name (or plug-in) and its
    options; :meth:`spec` gives what the step does with it.
    """

    latent_type: str
    estimator: str
    estimator_options: tuple[tuple[str, Any], ...]
    temperature: float
    temperature_min: float
    anneal_rate: float
    anneal_every: int
    binarize: str

    @classmethod
    def from_config(cls, config: Config) -> StepConfig:
        """Picks the step's settings out of a run's config."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def spec(self) -> estimators.Spec:
        """The estimator's spec (its kind decides the step's loss)."""
        return estimators.spec(self.estimator)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns the ``(init, data, train)`` keys of a run, all derived from ``seed``."""
    root = jax.random.key(seed)
    return tuple(jax.random.fold_in(root, i) for i in range(3))


def temperature_schedule(config: Config | StepConfig) -> Callable[[jax.Array], jax.Array]:
    """``gumbel_jax.schedules.exponential`` with the config's settings."""
    return schedules.exponential(
        config.temperature,
        rate=config.anneal_rate,
        minimum=config.temperature_min,
        every=config.anneal_every,
    )


def estimator(config: Config | StepConfig) -> SampleEstimator:
    """The config's sample estimator with its options, for its latent type:
    ``fn(key, logits, temperature) -> sample`` (an estimator without a temperature ignores it).

    Raises:
      ValueError: the config's estimator is a surrogate (see :func:`surrogate_loss`).
    """
    spec = estimators.spec(config.estimator)
    if spec.kind != "sample":
        raise ValueError(
            f"{config.estimator} is a {spec.kind} estimator: it has no sample to differentiate, "
            "use surrogate_loss"
        )
    return functools.partial(
        spec.bind(dict(config.estimator_options)), distribution=config.latent_type
    )


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
    config: Config, *, data_dim: int, total_steps: int | None = None
) -> TrainState:
    """Initialises the model and its optimizer (``config.optimizer``) from ``config.seed``.

    Args:
      config: the run's settings.
      data_dim: pixels per image (784).
      total_steps: the run's training steps, for ``config.lr_schedule == "cosine"``.
    """
    init_key, _, train_key = run_keys(config.seed)
    model = models.from_config(config, data_dim, rngs=nnx.Rngs(params=init_key))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = getattr(optax, config.optimizer)(learning_rate(config, total_steps=total_steps))
    control_variate = None
    spec = estimators.spec(config.estimator)
    if spec.control_variate:
        # Its own key (the model's init key is unchanged), the model's Adam and learning rate.
        control_variate = create_control_variate(
            config, model.latent_shape, key=jax.random.fold_in(init_key, 1), tx=tx
        )
    return TrainState.create(
        graphdef=graphdef, params=params, tx=tx, key=train_key, control_variate=control_variate
    )


def create_control_variate(
    config: Config | StepConfig,
    latent_shape: tuple[int, ...],
    *,
    key: jax.Array,
    tx: optax.GradientTransformation,
) -> ControlVariateState:
    """A fresh learned control variate for the config's estimator (its spec's ``tunable``
    options start at the config's values) with ``tx``'s state."""
    spec = estimators.spec(config.estimator)
    options = spec.check_options(dict(config.estimator_options))
    tuned = {name: (options[name], domain) for name, domain in spec.tunable.items()}
    module = models.ControlVariate(latent_shape, tuned=tuned, rngs=nnx.Rngs(params=key))
    graphdef, params = nnx.split(module, nnx.Param)
    return ControlVariateState(params=params, opt_state=tx.init(params), graphdef=graphdef, tx=tx)


def batch_loss(
    model: models.DiscreteVAE,
    x: jax.Array,
    z_sampler: Callable[[jax.Array], jax.Array],
    latent_type: str = "categorical",
) -> jax.Array:
    """The training objective of a pathwise estimator: the batch's mean negative ELBO, latents
    drawn by ``z_sampler``.

    Args:
      model: the VAE.
      x: the binarized (or grey-level) pixels ``[batch, data_dim]``, also the targets.
      z_sampler: the estimator with its key and temperature bound, ``logits -> sample``.
      latent_type: the model's latent type (its KL to the prior).

    Returns:
      A scalar, in nats per example.
    """
    pixel_logits, posterior_logits = model(x, z_sampler)
    return jnp.mean(losses.negative_elbo(pixel_logits, x, posterior_logits, latent_type))


def surrogate_loss(
    model: models.DiscreteVAE,
    x: jax.Array,
    key: jax.Array,
    config: Config | StepConfig,
    control_variate: models.ControlVariate | None = None,
) -> jax.Array:
    """The training objective of a surrogate (score-function) estimator.

    The reconstruction term ``-log p(x|z)`` is the ``f`` of the estimator's surrogate (its spec's
    ``bind``): the decoder is evaluated on all of the estimator's exact samples at once (as many
    as its options ask, ``spec.cost``), its mean is the forward value, and the encoder's gradient
    is the estimator's while the decoder's is the ordinary pathwise one. The KL to the prior
    stays analytic and pathwise.

    Args:
      model: the VAE.
      x: pixels ``[batch, data_dim]``, also the targets.
      key: the step's sampling key.
      config: the run's (or step's) settings.
      control_variate: for an estimator whose spec has ``control_variate`` (RELAX), the learned
        control variate, whose tuned options replace the config's; its parameters get no
        gradient from this loss (see :func:`variance_loss`).

    Returns:
      A scalar: the batch's mean negative ELBO, averaged over the estimator's samples.
    """
    logits = model.encode(x)
    reconstruction = _reconstruction(model, x)
    if control_variate is None:
        surrogate = estimators.spec(config.estimator).bind(dict(config.estimator_options))
        recon = surrogate(key, logits, reconstruction, distribution=config.latent_type)
    else:
        recon = _learned_surrogate(config, control_variate)(key, logits, reconstruction)
    return jnp.mean(recon + latents.get(config.latent_type).kl_to_prior(logits))


def _reconstruction(model: models.DiscreteVAE, x: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """The ``f`` of a surrogate: ``-log p(x|z)``, ``[S, batch, *latent] -> [S, batch]``."""

    def reconstruction(z: jax.Array) -> jax.Array:
        num, batch = z.shape[:2]
        pixel_logits = model.decode(z.reshape(num * batch, *z.shape[2:])).reshape(num, batch, -1)
        return losses.bernoulli_nll(pixel_logits, jnp.broadcast_to(x, pixel_logits.shape))

    return reconstruction


def _learned_surrogate(
    config: Config | StepConfig, control_variate: models.ControlVariate
) -> Callable[[jax.Array, jax.Array, Callable], jax.Array]:
    """``(key, logits, f) -> surrogate`` with the learned control variate and tuned options."""
    call = estimators.spec(config.estimator).bind_learned(dict(config.estimator_options))
    return functools.partial(
        call,
        control_variate=control_variate,
        tuned=control_variate.options(),
        distribution=config.latent_type,
    )


def variance_loss(
    model: models.DiscreteVAE,
    x: jax.Array,
    key: jax.Array,
    config: Config | StepConfig,
    control_variate: models.ControlVariate,
) -> jax.Array:
    """The single-sample variance objective of a learned control variate (Grathwohl et al. eq. 5).

    With ``g`` the estimator's gradient of the batch's summed reconstruction term with respect
    to the encoder's logits (one example's gradient in each row; the model held fixed), this is
    the mean over the batch of ``sum g ** 2``. The estimator being unbiased whatever the control
    variate and tuned options, its gradient with respect to them is that of the estimator's
    variance, which the control variate's optimizer descends.

    Args:
      model: the VAE (constant here).
      x: pixels ``[batch, data_dim]``.
      key: the step's sampling key (the model's loss uses the same).
      config: the run's (or step's) settings.
      control_variate: the learned control variate, the argument to differentiate.

    Returns:
      A scalar.
    """
    logits = jax.lax.stop_gradient(model.encode(x))
    surrogate = _learned_surrogate(config, control_variate)
    reconstruction = _reconstruction(model, x)
    grads = jax.grad(lambda at: jnp.sum(surrogate(key, at, reconstruction)))(logits)
    return jnp.sum(grads**2) / x.shape[0]


def _train_step(
    state: TrainState, batch: jax.Array, key: jax.Array, config: StepConfig
) -> tuple[TrainState, dict[str, jax.Array]]:
    temperature = temperature_schedule(config)(state.step)
    binarize_key, sample_key = jax.random.split(key)
    x = input_pipeline.binarize(binarize_key, batch, config.binarize)

    if state.control_variate is not None:
        return _train_step_with_control_variate(state, x, sample_key, config, temperature)
    if config.spec().kind == "surrogate":

        def loss_fn(params):
            return surrogate_loss(state.model(params), x, sample_key, config)
    else:
        sample = estimator(config)

        def loss_fn(params):
            return batch_loss(
                state.model(params),
                x,
                lambda logits: sample(sample_key, logits, temperature),
                config.latent_type,
            )

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, "temperature": temperature}


def _train_step_with_control_variate(
    state: TrainState, x: jax.Array, key: jax.Array, config: StepConfig, temperature: jax.Array
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One step of the model on the loss and of the control variate on :func:`variance_loss`,
    both gradients taken at the step's parameters with the step's key."""
    cv_state = state.control_variate
    control_variate = cv_state.module()

    def loss_fn(params):
        return surrogate_loss(state.model(params), x, key, config, control_variate)

    def cv_loss_fn(cv_params):
        return variance_loss(state.model(), x, key, config, cv_state.module(cv_params))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    variance, cv_grads = jax.value_and_grad(cv_loss_fn)(cv_state.params)
    state = state.apply_gradients(grads=grads)
    state = state.replace(control_variate=cv_state.apply_gradients(grads=cv_grads))
    return state, {"loss": loss, "temperature": temperature, "cv_variance": variance}


train_step = jax.jit(_train_step, static_argnames="config")
train_step.__doc__ = """One Adam step on the negative ELBO of a batch.

Args:
  state: the train state.
  batch: uint8 images ``[batch, 28, 28]`` (or ``[batch, data_dim]``), binarized here.
  key: the step's key (:func:`fit` uses ``fold_in(state.key, state.step)``).
  config: the step's static settings (:class:`StepConfig`).

Returns:
  ``(new_state, {"loss": scalar, "temperature": scalar})``; the temperature is
  ``schedule(state.step)``, the one the step used. With a learned control variate (RELAX) the
  step also updates it by the variance gradient and reports its ``"cv_variance"``
  (:func:`variance_loss` before the update).
"""


@functools.partial(jax.jit, static_argnames=("num_examples", "steps", "batch_size"))
def epoch_batch_indices(
    data_key: jax.Array, epoch: jax.Array, *, num_examples: int, steps: int, batch_size: int
) -> jax.Array:
    """Shuffled example indices of an epoch, ``[steps, batch_size]``, from ``fold_in(key, epoch)``.

    The ``num_examples - steps * batch_size`` examples left at the end of the permutation are not
    used in that epoch.
    """
    permutation = jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
    return permutation[: steps * batch_size].reshape(steps, batch_size)


@functools.partial(
    jax.jit, static_argnames=("config", "num_steps", "batch_sharding"), donate_argnums=0
)
def train_chunk(
    state: TrainState,
    images: jax.Array,
    batch_indices: jax.Array,
    first: jax.Array,
    *,
    config: StepConfig,
    num_steps: int,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """``num_steps`` training steps as one ``lax.scan``, on device-resident data.

    Args:
      state: the train state (donated: do not use it after the call).
      images: all training images, uint8 ``[num_examples, ...]``, on the device.
      batch_indices: the epoch's ``[steps_per_epoch, batch_size]`` indices.
      first: index in ``batch_indices`` of the chunk's first step (traced: no recompilation).
      config: the step's static settings.
      num_steps: the chunk's length (static).
      batch_sharding: where each step's batch lives (static): with
        :func:`parallel.batch_sharding`, every device gathers and trains on its share of the
        batch and XLA averages the gradients over devices; ``None`` leaves it to XLA.

    Returns:
      ``(state, metrics)`` with ``metrics["loss"]`` and ``metrics["temperature"]`` of shape
      ``[num_steps]``, and ``metrics["finite"]``: whether the losses and the new parameters are
      all finite.
    """
    chunk = jax.lax.dynamic_slice_in_dim(batch_indices, first, num_steps)

    def body(state, indices):
        key = jax.random.fold_in(state.key, state.step)
        batch = images[indices]
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return _train_step(state, batch, key, config)

    state, metrics = jax.lax.scan(body, state, chunk)
    # One flag per chunk, read with its losses: no extra synchronisation per step.
    metrics["finite"] = all_finite((metrics["loss"], state.params, state.control_variate))
    return state, metrics


def all_finite(tree: Any) -> jax.Array:
    """Whether every element of every array of ``tree`` is finite, as one boolean scalar."""
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


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
    state: TrainState,
    train_images: np.ndarray,
    *,
    config: Config,
    mesh: jax.sharding.Mesh | None = None,
    on_epoch_end: Callable[[TrainState, EpochResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_stop: Callable[[TrainState, PartialEpoch], None] | None = None,
    partial_epoch: PartialEpoch | None = None,
) -> TrainState:
    """Trains from ``state`` (from its global step) to the end of epoch ``config.epochs``.

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
      on_epoch_end: called after every epoch with the state and the epoch's measurements.
      should_stop: polled before each chunk; when it returns true (on any process), training
        stops at that chunk boundary.
      on_stop: called when ``should_stop`` stopped training, with the state and the part of the
        epoch in progress that was trained.
      partial_epoch: the part of the current epoch trained before ``state`` was saved (from a
        checkpoint), so that the epoch's loss and seconds cover all of its steps.

    Returns:
      The final train state (at the stop, if one was requested).

    Raises:
      ValueError: ``config.batch_size`` exceeds the number of training examples or does not
        split evenly over the mesh's devices.
      Diverged: a chunk ended with a non-finite loss or parameters (``on_epoch_end`` is not
        called for its epoch).
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
                state,
                images,
                indices,
                position,
                config=config,
                mesh=mesh,
                should_stop=should_stop,
                bar=bar,
            )
        losses = np.concatenate([np.asarray(before.losses, np.float32), trained.losses])
        if trained.stopped:
            if on_stop is not None:
                seconds = before.seconds + trained.seconds
                on_stop(state, PartialEpoch(tuple(float(x) for x in losses), seconds))
            return state
        if on_epoch_end is not None:
            on_epoch_end(
                state,
                EpochResult(
                    epoch=epoch + 1,
                    step=int(state.step),
                    temperature=trained.temperature,
                    train_loss=float(np.mean(losses)),
                    seconds=before.seconds + trained.seconds,
                    examples_per_second=trained.losses.size * config.batch_size / trained.seconds,
                ),
            )
    return state


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
    indices = epoch_batch_indices(
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
    state: TrainState,
    images: jax.Array,
    indices: jax.Array,
    position: int,
    *,
    config: Config,
    mesh: jax.sharding.Mesh,
    should_stop: Callable[[], bool] | None,
    bar: tqdm.tqdm,
) -> tuple[TrainState, _Trained]:
    """Trains the epoch from step ``position`` to its end, chunk by chunk, or until a stop.

    A chunk's metrics are read (which waits for it) only once the next chunk is dispatched, so
    the device never idles while the host updates the progress bar.

    Raises:
      Diverged: a chunk ended with a non-finite loss or parameters.
    """
    steps, step_config = indices.shape[0], StepConfig.from_config(config)
    step = int(state.step)
    started = time.perf_counter()
    losses, temperature, pending, examples = [np.zeros(0, np.float32)], None, None, 0
    while True:
        dispatched = None
        if position < steps and not (
            should_stop is not None and parallel.any_process(should_stop())
        ):
            num_steps = min(config.chunk_steps, steps - position)
            state, metrics = train_chunk(
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
            loss, temperature = _finished_chunk(pending, first_step=step, config=config)
            step += loss.size
            losses.append(loss)
            examples += loss.size * config.batch_size
            bar.update(loss.size * config.batch_size)
            bar.set_postfix(
                loss=f"{float(np.mean(loss)):.2f}",
                temperature=f"{float(temperature[-1]):.3f}",
                ex_per_s=f"{examples / (time.perf_counter() - started):.0f}",
            )
        if dispatched is None:
            break
        pending = dispatched
    return state, _Trained(
        losses=np.concatenate(losses),
        temperature=None if temperature is None else float(temperature[-1]),
        seconds=time.perf_counter() - started,
        stopped=position < steps,
    )
