"""The objective and the jitted update step: what runs on the device.

- :class:`TrainState` (the model split with ``nnx.split``, the optimizer state, the global step
  and the run's training key) and :class:`ControlVariateState` (RELAX's learned control variate);
- the objective of each kind of estimator: :func:`batch_loss` (a sample estimator: the negative
  ELBO of its sample), :func:`surrogate_loss` (a surrogate estimator) and :func:`variance_loss`
  (the learned control variate's);
- :func:`train_step` (one step on a batch) and :func:`train_chunk` (a ``lax.scan`` of steps, each
  gathering its batch from the device-resident uint8 images, binarizing it, and computing its key
  ``fold_in(state.key, state.step)`` and its temperature ``schedule(state.step)``).

The host's loop over epochs and chunks is :func:`experiments.mnist.train.fit`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from experiments.mnist import input_pipeline, latents, losses, models
from experiments.mnist.config import Config
from gumbel_jax import estimators, schedules

# ``fn(key, logits, temperature) -> sample``: a sample estimator with its options bound.
SampleEstimator = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


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
    :class:`~experiments.mnist.models.VAEModel` where an object is needed. The jitted
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

    def model(self, params: Any = None) -> models.VAEModel:
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


def batch_loss(
    model: models.VAEModel,
    x: jax.Array,
    z_sampler: Callable[[jax.Array], jax.Array],
    latent_type: str = "categorical",
) -> jax.Array:
    """The training objective of a pathwise estimator: the batch's mean negative ELBO, latents
    drawn by ``z_sampler``.

    Args:
      model: the VAE.
      x: the binarized (or grey-level) pixels ``[batch, rows, cols, channels]``, also the targets.
      z_sampler: the estimator with its key and temperature bound, ``logits -> sample``.
      latent_type: the model's latent type (its KL to the prior).

    Returns:
      A scalar, in nats per example.
    """
    posterior_logits = model.encode(x)
    pixel_logits = model.decode(z_sampler(posterior_logits))
    return jnp.mean(losses.negative_elbo(pixel_logits, x, posterior_logits, latent_type))


def surrogate_loss(
    model: models.VAEModel,
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
      x: pixels ``[batch, rows, cols, channels]``, also the targets.
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


def _reconstruction(model: models.VAEModel, x: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """The ``f`` of a surrogate: ``-log p(x|z)``, ``[S, batch, *latent] -> [S, batch]``."""

    def reconstruction(z: jax.Array) -> jax.Array:
        num, batch = z.shape[:2]
        pixel_logits = model.decode(z.reshape(num * batch, *z.shape[2:]))
        return losses.bernoulli_nll(pixel_logits.reshape(num, *x.shape), x)

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
    model: models.VAEModel,
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
      x: pixels ``[batch, rows, cols, channels]``.
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
  batch: uint8 images ``[batch, rows, cols]`` or ``[batch, rows, cols, channels]``, binarized
    here.
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
