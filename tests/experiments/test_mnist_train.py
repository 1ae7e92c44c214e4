"""Tests of experiments.mnist.train on a tiny model and synthetic images (no MNIST needed)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.mnist import train, update
from experiments.mnist.config import Config
from gumbel_jax import estimators

TINY = Config(
    latents=3,
    categories=4,
    hidden=(16,),
    batch_size=8,
    epochs=2,
    chunk_steps=3,
    anneal_rate=0.05,
    anneal_every=2,
    estimator="st",
    progress=False,
)
NUM_EXAMPLES = 44  # 5 steps of 8 per epoch; 4 examples left out each epoch.


@pytest.fixture(scope="module")
def images():
    return np.asarray(
        jax.random.randint(jax.random.key(7), (NUM_EXAMPLES, 28, 28), 0, 256), np.uint8
    )


def _fit(config, images, state=None):
    """The final state and every epoch's result of :func:`train.fit` (at least one epoch)."""
    state = train.create_train_state(config) if state is None else state
    epochs = list(train.fit(state, images, config=config))
    return epochs[-1][0], [result for _, result in epochs]


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_temperature_of_each_scanned_step_is_the_schedule_of_its_global_step(images):
    config = TINY
    state = train.create_train_state(config)
    _, data_key, _ = train.run_keys(config.seed)
    indices = update.epoch_batch_indices(
        data_key, 0, num_examples=NUM_EXAMPLES, steps=5, batch_size=config.batch_size
    )
    schedule = update.temperature_schedule(config)
    step_config = update.StepConfig.from_config(config)
    state, first = update.train_chunk(state, images, indices, 0, config=step_config, num_steps=3)
    state, second = update.train_chunk(state, images, indices, 3, config=step_config, num_steps=2)
    temperatures = np.concatenate([first["temperature"], second["temperature"]])
    np.testing.assert_array_equal(temperatures, np.asarray(schedule(np.arange(5))))
    # The schedule holds for 2 steps, then decays: the values are not all equal.
    np.testing.assert_allclose(
        temperatures, [1, 1, np.exp(-0.1), np.exp(-0.1), np.exp(-0.2)], rtol=1e-6
    )
    assert int(state.step) == 5


@pytest.mark.slow
def test_scanned_step_equals_the_jitted_train_step(images):
    config = TINY
    state = train.create_train_state(config)
    _, data_key, _ = train.run_keys(config.seed)
    indices = update.epoch_batch_indices(
        data_key, 0, num_examples=NUM_EXAMPLES, steps=5, batch_size=config.batch_size
    )
    key = jax.random.fold_in(state.key, state.step)
    step_config = update.StepConfig.from_config(config)
    batch = images[np.asarray(indices[0])]
    stepped, metrics = update.train_step(state, batch, key, config=step_config)
    scanned, chunk_metrics = update.train_chunk(
        state, images, indices, 0, config=step_config, num_steps=1
    )
    np.testing.assert_allclose(chunk_metrics["loss"][0], metrics["loss"], rtol=1e-5)
    for x, y in zip(jax.tree.leaves(stepped.params), jax.tree.leaves(scanned.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_epoch_permutation_uses_each_example_at_most_once_and_changes_by_epoch():
    _, data_key, _ = train.run_keys(0)
    epochs = [
        np.asarray(update.epoch_batch_indices(data_key, e, num_examples=44, steps=5, batch_size=8))
        for e in (0, 1)
    ]
    for indices in epochs:
        assert indices.shape == (5, 8)
        assert len(np.unique(indices)) == 40
    assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.slow
def test_fit_trains_and_reports_each_epoch(images):
    state, results = _fit(TINY, images)
    assert [r.epoch for r in results] == [1, 2]
    assert [r.step for r in results] == [5, 10]
    assert int(state.step) == 10
    assert all(np.isfinite(r.train_loss) and r.seconds > 0 for r in results)
    np.testing.assert_allclose(results[-1].temperature, np.exp(-0.05 * 8), rtol=1e-6)


@pytest.mark.slow
def test_chunking_does_not_change_the_result_and_compiles_at_most_twice(images):
    """Chunk boundaries are invisible: keys, permutation and temperature follow the global step."""
    before = update.train_chunk._cache_size()
    in_threes, _ = _fit(TINY, images)  # chunks of 3 + 2 steps per epoch
    compiled = update.train_chunk._cache_size() - before
    assert compiled <= 2, f"train_chunk compiled {compiled} times for one run"
    whole, _ = _fit(Config(**{**TINY.to_dict(), "chunk_steps": 5}), images)
    _assert_same_params(in_threes.params, whole.params)


@pytest.mark.slow
def test_fit_continues_a_stopped_run_exactly(images):
    """A state saved after epoch 1 continues to the same parameters as an uninterrupted run."""
    straight, _ = _fit(TINY, images)
    half, _ = _fit(Config(**{**TINY.to_dict(), "epochs": 1}), images)
    resumed, results = _fit(TINY, images, state=half)
    assert [r.epoch for r in results] == [2]
    _assert_same_params(straight.params, resumed.params)
    _assert_same_params(straight.opt_state, resumed.opt_state)


@pytest.mark.slow
def test_a_stop_request_yields_the_part_of_the_epoch_trained_and_nothing_more(images):
    polls = []  # polled before each chunk of 3 steps: the second poll stops
    epochs = list(
        train.fit(
            train.create_train_state(TINY),
            images,
            config=TINY,
            should_stop=lambda: polls.append(1) or len(polls) > 1,
        )
    )
    ((state, partial),) = epochs
    assert isinstance(partial, train.PartialEpoch) and len(partial.losses) == 3
    assert int(state.step) == 3 and partial.seconds > 0


@pytest.mark.slow  # builds a model
def test_fit_refuses_a_batch_larger_than_the_data(images):
    config = Config(**{**TINY.to_dict(), "batch_size": 64})
    with pytest.raises(ValueError, match="batch_size 64 exceeds the 44 training examples"):
        next(train.fit(train.create_train_state(config), images, config=config))


# One of each kind of spec: no option, an option, a temperature floor, a surrogate.
@pytest.mark.parametrize("estimator", ["relaxed", "gumbel-rao", "reinmax", "reinforce-loo"])
@pytest.mark.slow
def test_every_kind_of_estimator_trains(images, estimator):
    floor = estimators.spec(estimator).min_temperature
    extra = {"temperature": floor, "temperature_min": floor} if floor else {}
    config = Config(**{**TINY.to_dict(), "estimator": estimator, "epochs": 1, **extra})
    state, results = _fit(config, images)
    assert np.isfinite(results[0].train_loss)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))


@pytest.mark.slow
def test_the_step_runs_the_library_estimator_with_the_configs_options():
    """Bitwise the library's function with the options bound: sample and gradient."""
    config = Config(estimator="gumbel-rao", estimator_options={"num_samples": 3})
    assert update.StepConfig.from_config(config).estimator_options == (("num_samples", 3),)
    logits = jax.random.normal(jax.random.key(1), (4, 5, 6))
    weights = jax.random.normal(jax.random.key(2), (4, 5, 6))

    def objective(fn):
        return lambda x: jnp.sum(fn(jax.random.key(3), x, 0.7) * weights)

    ours = update.estimator(config)
    library = functools.partial(estimators.gumbel_rao, num_samples=3)
    np.testing.assert_array_equal(
        ours(jax.random.key(3), logits, 0.7), library(jax.random.key(3), logits, 0.7)
    )
    np.testing.assert_array_equal(
        jax.grad(objective(ours))(logits), jax.grad(objective(library))(logits)
    )
    default = functools.partial(estimators.gumbel_rao, num_samples=10)
    assert not np.array_equal(
        jax.grad(objective(ours))(logits), jax.grad(objective(default))(logits)
    )
    with pytest.raises(ValueError, match="reinforce-loo is a surrogate estimator"):
        update.estimator(Config(estimator="reinforce-loo"))


@pytest.mark.parametrize("name", ["adam", "radam"])
@pytest.mark.slow
def test_the_optimizer_is_the_one_the_config_names(name):
    config = Config(**{**TINY.to_dict(), "optimizer": name, "learning_rate": 0.01})
    state = train.create_train_state(config)
    grads = jax.tree.map(jnp.ones_like, state.params)
    expected = getattr(optax, name)(0.01)
    updates, _ = expected.update(grads, expected.init(state.params), state.params)
    ours, _ = state.tx.update(grads, state.opt_state, state.params)
    jax.tree.map(np.testing.assert_array_equal, ours, updates)
    other = optax.radam(0.01) if name == "adam" else optax.adam(0.01)
    theirs, _ = other.update(grads, other.init(state.params), state.params)
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, ours, theirs)))


def test_learning_rate_is_constant_or_a_cosine_decay_to_zero_over_the_run():
    assert train.learning_rate(TINY, total_steps=None) == TINY.learning_rate
    cosine = Config(**{**TINY.to_dict(), "lr_schedule": "cosine", "learning_rate": 0.01})
    schedule = train.learning_rate(cosine, total_steps=10)
    np.testing.assert_allclose(
        [schedule(0), schedule(5), schedule(10)], [0.01, 0.005, 0.0], rtol=1e-6, atol=1e-9
    )
    with pytest.raises(ValueError, match="needs the run's total_steps"):
        train.learning_rate(cosine, total_steps=None)


@pytest.mark.slow
def test_with_the_cosine_schedule_the_last_step_barely_moves_the_parameters(images):
    config = Config(**{**TINY.to_dict(), "lr_schedule": "cosine", "epochs": 1})
    steps = config.steps_per_epoch(NUM_EXAMPLES)
    state = train.create_train_state(config, total_steps=steps)
    _, data_key, _ = train.run_keys(config.seed)
    indices = update.epoch_batch_indices(
        data_key, 0, num_examples=NUM_EXAMPLES, steps=steps, batch_size=config.batch_size
    )
    step_config = update.StepConfig.from_config(config)

    def change(state, start):  # The chunk donates ``state``: read its parameters first.
        before = jax.tree.map(np.asarray, state.params)
        after, _ = update.train_chunk(
            state, images, indices, start, config=step_config, num_steps=1
        )
        diffs = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), after.params, before)
        return max(jax.tree.leaves(diffs)), after

    first, state = change(state, 0)
    for start in range(1, steps - 1):
        _, state = change(state, start)
    last, _ = change(state, steps - 1)
    # Adam moves every parameter by about the learning rate: 1e-3 at the first step, and
    # 1e-3 * (1 + cos(pi * 4 / 5)) / 2 = 9.5e-5 at the last of 5 steps.
    assert first > 5e-4
    assert last < 2e-4


@pytest.mark.slow  # builds a model
def test_parameters_start_as_linen_dense_defaults():
    """nnx.Linear's defaults, those of Linen's Dense: LeCun-normal kernels, zero biases."""
    config = Config()
    params = train.create_train_state(config).params
    layers = [*params["encoder_hidden"].values(), params["encoder_logits"]]
    layers += [*params["decoder_hidden"].values(), params["decoder_logits"]]
    shapes = [tuple(layer["kernel"][...].shape) for layer in layers]
    assert shapes == [(784, 512), (512, 256), (256, 300), (300, 256), (256, 512), (512, 784)]
    for layer, (fan_in, _) in zip(layers, shapes, strict=True):
        kernel = np.asarray(layer["kernel"][...])
        std = np.sqrt(1 / fan_in)  # variance 1 / fan_in: a normal truncated at 2 of its sigmas
        np.testing.assert_allclose(kernel.std(), std, rtol=0.03)
        np.testing.assert_allclose(kernel.mean(), 0.0, atol=0.02 * std)
        assert np.abs(kernel).max() <= 2 * std / 0.87962566103423978 + 1e-6
        assert np.abs(kernel).max() > 1.9 * std / 0.87962566103423978  # truncated, not clipped
        np.testing.assert_array_equal(np.asarray(layer["bias"][...]), 0.0)


def _one_shot_iwae(model, x, *, batch_size, num_samples):
    """The evaluation's IWAE bound before it was chunked: all k samples of a batch at once."""
    from experiments.mnist import evaluate, losses
    from gumbel_jax import sample

    key, values, n = jax.random.key(evaluate.EVAL_SEED), [], x.shape[0]
    num_batches = -(-n // batch_size)
    x = np.pad(x, ((0, num_batches * batch_size - n), (0, 0), (0, 0), (0, 0)))  # As evaluated.
    for index in range(num_batches):
        xb = x[index * batch_size : (index + 1) * batch_size]
        _, iwae_key = jax.random.split(jax.random.fold_in(key, index))
        logits = model.encode(xb)
        z_k = sample.gumbel_max(
            iwae_key, jax.numpy.broadcast_to(logits, (num_samples, *logits.shape))
        )
        pixel_logits = model.decode(z_k.reshape(-1, *logits.shape[1:])).reshape(
            num_samples, *xb.shape
        )
        log_w = losses.log_importance_weights(pixel_logits, xb, logits, z_k)
        values.append(-(jax.nn.logsumexp(log_w, axis=0) - np.log(num_samples)))
    return float(np.mean(np.concatenate(values)[:n]))


@pytest.mark.slow
def test_the_chunked_iwae_bound_equals_the_one_shot_bound(images):
    """Within one chunk of samples the bound is the one-shot formula's, on the same samples."""
    from experiments.mnist import evaluate

    config = Config(**{**TINY.to_dict(), "eval_batch_size": 16})
    model = train.create_train_state(config).model()
    x = (images[:40, ..., None] > 127).astype(np.float32)  # 16 + 16 + 8 (padded)
    for k in (1, 5, evaluate.IWAE_SAMPLE_CHUNK):
        chunked = evaluate.evaluate(model, x, config=config, num_samples=k)["test/nll_iwae"]
        expected = _one_shot_iwae(model, x, batch_size=16, num_samples=k)
        np.testing.assert_allclose(chunked, expected, rtol=1e-6)


@pytest.mark.slow
def test_the_running_log_sum_exp_equals_the_one_shot_one():
    from experiments.mnist import evaluate

    values = np.array(jax.random.normal(jax.random.key(0), (10, 7)) * 300, np.float32)
    values[3:5, 2] = -np.inf  # Masked samples.
    running = (np.full(7, -np.inf, np.float32), np.zeros(7, np.float32))
    for chunk in np.split(values, [3, 4, 8]):  # Chunks of 3, 1, 4 and 2 samples.
        running = evaluate.logsumexp_update(running, chunk)
    np.testing.assert_allclose(
        running[0] + np.log(running[1]), jax.nn.logsumexp(values, axis=0), rtol=1e-6
    )


@pytest.mark.slow
def test_many_samples_are_evaluated_in_chunks_of_bounded_size(images, monkeypatch):
    """k = 5 in chunks of 2 (the last one masked): the bound is tighter than k = 1 and shapes,
    hence memory, never depend on k; a stop request ends it between chunks."""
    from experiments.mnist import evaluate

    monkeypatch.setattr(evaluate, "IWAE_SAMPLE_CHUNK", 2)
    config = Config(**{**TINY.to_dict(), "eval_batch_size": 16})
    model = train.create_train_state(config).model()
    x = (images[:32, ..., None] > 127).astype(np.float32)
    sizes = []
    chunk = evaluate._iwae_chunk
    monkeypatch.setattr(
        evaluate, "_iwae_chunk", lambda *a, **k: sizes.append(k["chunk"]) or chunk(*a, **k)
    )
    many = evaluate.evaluate(model, x, config=config, num_samples=5)["test/nll_iwae"]
    one = evaluate.evaluate(model, x, config=config, num_samples=1)["test/nll_iwae"]
    assert sizes == [2] * 6 + [1] * 2  # 3 chunks per batch of 16, then 1 sample per batch.
    assert np.isfinite(many) and many < one
    polls = []
    with pytest.raises(evaluate.Stopped):
        evaluate.evaluate(
            model,
            x,
            config=config,
            num_samples=5,
            should_stop=lambda: polls.append(1) or len(polls) > 2,
        )


@pytest.mark.parametrize(
    ("estimator", "shown"), [("st", True), ("zgr", False), ("reinforce-loo", False)]
)
def test_the_epoch_line_shows_the_temperature_only_where_the_estimator_uses_it(estimator, shown):
    from experiments.mnist import run  # The printed line after each epoch.

    record = {
        "epoch": 1,
        "step": 5,
        "temperature": 0.9,
        "train/loss": 150.0,
        "test/neg_elbo": 140.0,
        "seconds": 1.0,
        "examples_per_second": 40.0,
    }
    line = run.epoch_line(record, dataclasses.replace(TINY, estimator=estimator))
    assert ("temperature 0.900" in line) == shown
    assert "train/loss 150.00  test/neg_elbo 140.00" in line
