"""The control-variate surrogates (REBAR, RELAX, IndeCateR) in the MNIST experiment.

An epoch of each on categorical and on Bernoulli latents of a small model (random IDX digits),
RELAX's learned control variate (it changes, and its variance falls on a tiny problem), its exact
resume from a checkpoint, and IndeCateR's cost warning.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from idx_files import write_random_idx

from experiments.mnist import checkpoints, cli, outputs, train, update
from experiments.mnist.config import Config

pytestmark = pytest.mark.slow  # every test trains or builds models

STEPS_PER_EPOCH = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_random_idx(tmp_path_factory.mktemp("data"), 64, 16)


def _args(data_dir, workdir, estimator: str, latent_type: str, *extra: str) -> list[str]:
    return [
        *("--data-dir", str(data_dir), "--allow-unverified-data", "--workdir", str(workdir)),
        *("--estimator", estimator, "--latent-type", latent_type),
        *("--latents", "4", "--categories", "3", "--hidden", "16", "--batch-size", "16"),
        *("--chunk-steps", "2", "--eval-samples", "2", "--eval-batch-size", "16"),
        *("--no-progress", *extra),
    ]


@pytest.mark.parametrize("latent_type", ["categorical", "bernoulli"])
@pytest.mark.parametrize("estimator", ["rebar", "relax", "indecater"])
def test_an_epoch_of_each_control_variate_estimator_trains(
    data_dir, tmp_path, capsys, estimator, latent_type
):
    workdir = tmp_path / "run"
    assert cli.main(_args(data_dir, workdir, estimator, latent_type, "--epochs", "1")) == 0
    (record,) = outputs.read_metrics(workdir)
    numbers = {k: v for k, v in record.items() if isinstance(v, float)}
    assert numbers and np.isfinite(list(numbers.values())).all(), record
    # 4 latents x 3 categories (or 2 outcomes): below IndeCateR's budget, so no warning.
    assert "warning" not in capsys.readouterr().err


def _cv_config(**changes) -> Config:
    settings = dict(estimator="relax", latents=4, categories=3, hidden=(16,), batch_size=16, seed=0)
    return Config(**{**settings, **changes})


def test_relax_has_a_learned_control_variate_and_the_others_none():
    relax = train.create_train_state(_cv_config())
    assert relax.control_variate is not None
    assert sorted(relax.control_variate.module().options()) == ["eta", "temperature"]
    np.testing.assert_allclose(relax.control_variate.module().options()["temperature"], 0.5)
    for name in ("rebar", "indecater", "reinforce-loo", "st"):
        assert train.create_train_state(_cv_config(estimator=name)).control_variate is None


def test_relax_train_steps_move_the_control_variate_eta_and_temperature():
    config = _cv_config(latent_type="bernoulli")
    step_config = update.StepConfig.from_config(config)
    state = train.create_train_state(config)
    initial = state.control_variate
    batch = jax.random.randint(jax.random.key(1), (16, 28, 28), 0, 256).astype(jnp.uint8)
    for t in range(3):
        state, metrics = update.train_step(state, batch, jax.random.key(t), config=step_config)
        assert np.isfinite(float(metrics["cv_variance"]))
    before, after = initial.module().options(), state.control_variate.module().options()
    assert float(before["eta"]) != float(after["eta"])
    assert float(before["temperature"]) != float(after["temperature"])
    kernel = state.control_variate.params["output"]["kernel"][...]
    assert np.abs(np.asarray(kernel - initial.params["output"]["kernel"][...])).max() > 0


@pytest.mark.parametrize("latent_type", ["categorical", "bernoulli"])
def test_the_variance_gradient_lowers_relax_variance_on_a_tiny_problem(latent_type):
    """The model held at its initialisation and one batch: 100 Adam steps of the control
    variate on the variance gradient (a fresh key each) lower the estimator's variance, measured
    over other keys, below that of the initial control variate (REBAR's)."""
    config = _cv_config(latent_type=latent_type, learning_rate=3e-3)
    step_config = update.StepConfig.from_config(config)
    state = train.create_train_state(config)
    model, initial = state.model(), state.control_variate
    x = jax.random.bernoulli(jax.random.key(1), 0.3, (16, 28, 28, 1)).astype(jnp.float32)

    def variance(cv_params, key):
        cv = initial.module(cv_params)
        return update.variance_loss(model, x, key, step_config, cv)

    @jax.jit
    def step(cv_state, key):
        grads = jax.grad(variance)(cv_state.params, key)
        return cv_state.apply_gradients(grads=grads)

    @jax.jit
    def mean_variance(cv_params, keys):
        return jnp.mean(jax.vmap(lambda key: variance(cv_params, key))(keys))

    trained = initial
    for t in range(100):
        trained = step(trained, jax.random.key(t))
    keys = jax.random.split(jax.random.key(1234), 100)
    after, before = mean_variance(trained.params, keys), mean_variance(initial.params, keys)
    assert np.isfinite([after, before]).all()
    assert after < 0.9 * before, (after, before)


def _arrays(workdir) -> tuple[int, list[np.ndarray]]:
    config = Config.from_json((workdir / outputs.CONFIG_FILE).read_text())
    target = train.create_train_state(config)
    with checkpoints.RunCheckpoints(workdir) as saved:
        restored = saved.restore_latest(target)
    state = restored.state
    cv = state.control_variate
    leaves = jax.tree.leaves((state.params, state.opt_state, state.step, cv.params, cv.opt_state))
    return restored.step, [np.asarray(x) for x in leaves]


@pytest.mark.parametrize("latent_type", ["categorical", "bernoulli"])
def test_a_resumed_relax_run_is_bitwise_identical(data_dir, tmp_path, capsys, latent_type):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cli.main(_args(data_dir, straight, "relax", latent_type, "--epochs", "2")) == 0
    assert cli.main(_args(data_dir, resumed, "relax", latent_type, "--epochs", "1")) == 0
    capsys.readouterr()
    assert cli.main(_args(data_dir, resumed, "relax", latent_type, "--epochs", "2")) == 0
    assert "Resuming from the checkpoint at step 4" in capsys.readouterr().out
    step, arrays = _arrays(resumed)
    reference_step, reference = _arrays(straight)
    assert step == reference_step == 2 * STEPS_PER_EPOCH
    assert len(arrays) == len(reference) > 10
    for x, y in zip(arrays, reference, strict=True):
        np.testing.assert_array_equal(x, y)  # bit for bit, the control variate's state included
    losses = [r["train/loss"] for r in outputs.read_metrics(resumed)]
    assert losses == [r["train/loss"] for r in outputs.read_metrics(straight)]


def test_indecater_above_the_budget_warns_once_with_its_cost(data_dir, tmp_path, capsys):
    config = _cv_config(estimator="indecater", latents=8, categories=10)
    assert train.cost_warning(config) is not None and "80 times" in train.cost_warning(config)
    assert train.cost_warning(_cv_config(estimator="indecater")) is None  # 4 x 3 = 12
    assert train.cost_warning(_cv_config(estimator="relax")) is None
    args = _args(data_dir, tmp_path / "run", "indecater", "categorical", "--epochs", "1")
    args[args.index("--latents") + 1] = "8"
    args[args.index("--categories") + 1] = "10"
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "budget" in line]
    assert len(warnings) == 1
    assert warnings[0] == train.cost_warning(config)
    assert f"80 times per example (budget {train.COST_BUDGET})" in warnings[0]
