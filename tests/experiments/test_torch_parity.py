"""The experiment computes what PyTorch computes: loss, activations and every gradient.

The golden file ``tests/data/torch_parity.npz`` was written by PyTorch
(``python -m benchmarks.torch_reference --golden tests/data/torch_parity.npz``); this test needs
no PyTorch. It loads the same weights into the NNX model (``nnx.Linear`` kernels are the
transposed ``[in, out]`` of ``nn.Linear``'s ``[out, in]`` weights) and runs the experiment's own
code: ``input_pipeline.binarize``, ``update.estimator``, ``update.batch_loss`` (the model's encode
and decode and ``losses.negative_elbo``) and, for a whole step, ``update._train_step`` with its
Adam. Both sides see the same random numbers: the library's Gumbel draw
(``gumbel_jax.sample.gumbel``) is replaced by the golden noise, and the binarization's 16-bit
uniforms (``input_pipeline._binarization_uniforms``) by the golden ones, so the binarization
rule itself (``u < round(level 65536 / 255)``) is compared too.

Tolerances: 1e-5 relative, plus an absolute ``1e-5 * max|reference|`` per array for entries near
zero (a gradient entry that is a sum of terms cancelling to ~0 keeps float32 rounding of the size
of its terms, which the two frameworks order differently).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments.mnist import input_pipeline, train, update
from experiments.mnist.config import Config
from gumbel_jax import sample

pytestmark = pytest.mark.slow  # compiles the model and a training step

GOLDEN = Path(__file__).parents[1] / "data" / "torch_parity.npz"
RTOL = 1e-5
CASES = [("st", "st", "dynamic"), ("relaxed", "relaxed", "dynamic"), ("st_grey", "st", "none")]


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        return dict(data)


@pytest.fixture
def golden_random_numbers(golden, monkeypatch):
    """Replaces the Gumbel noise and the binarization uniforms with the golden ones."""
    noise, uniform16 = golden["noise"], golden["uniform16"]

    def gumbel(key, shape=(), dtype=jnp.float32):
        assert tuple(shape) == noise.shape, shape
        return jnp.asarray(noise, dtype)

    def uniforms(key, shape):  # the golden [batch, 784], shaped as the images
        assert (shape[0], np.prod(shape[1:])) == uniform16.shape, shape
        return jnp.asarray(uniform16).reshape(shape)

    monkeypatch.setattr(sample, "gumbel", gumbel)
    monkeypatch.setattr(input_pipeline, "_binarization_uniforms", uniforms)


def _images(golden) -> jax.Array:
    """The golden batch ``[batch, 784]`` as the experiment holds images, ``[batch, 28, 28]``."""
    return jnp.asarray(golden["images"]).reshape(-1, 28, 28)


def _config(golden, **overrides) -> Config:
    return Config(
        hidden=tuple(int(h) for h in golden["hidden"]),
        latents=int(golden["latents"]),
        categories=int(golden["categories"]),
        **overrides,
    )


def _nnx_params(golden, params: nnx.State, prefix: str) -> nnx.State:
    """``params`` with the values of the torch arrays ``prefix/<layer>.weight|bias``."""

    def value(path, leaf):
        # (DictKey("encoder_hidden"), DictKey(0), DictKey("kernel")[, GetAttrKey("value")])
        names = [str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey)]
        layer, kind = ".".join(names[:-1]), names[-1]
        if kind == "kernel":
            return jnp.asarray(golden[f"{prefix}/{layer}.weight"].T)
        return jnp.asarray(golden[f"{prefix}/{layer}.bias"])

    return jax.tree_util.tree_map_with_path(value, params)


def _assert_close(actual, reference, name):
    reference = np.asarray(reference)
    atol = RTOL * float(np.max(np.abs(reference)))
    np.testing.assert_allclose(np.asarray(actual), reference, rtol=RTOL, atol=atol, err_msg=name)


def _model_and_params(golden, config: Config):
    state = train.create_train_state(config)
    return state, _nnx_params(golden, state.params, "params")


@pytest.mark.parametrize(("case", "estimator", "binarize"), CASES)
def test_loss_activations_and_gradients_match_pytorch(
    golden, golden_random_numbers, case, estimator, binarize
):
    config = _config(golden, estimator=estimator, binarize=binarize)
    state, params = _model_and_params(golden, config)
    key = jax.random.key(0)  # unused: the random numbers are the golden ones
    x = input_pipeline.binarize(key, _images(golden), binarize)
    sampler = update.estimator(config)
    temperature = jnp.float32(golden["temperature"])

    def z_sampler(logits):
        return sampler(key, logits, temperature)

    loss, grads = jax.value_and_grad(lambda p: update.batch_loss(state.model(p), x, z_sampler))(
        params
    )
    posterior_logits = state.model(params).encode(x)
    pixel_logits = state.model(params).decode(z_sampler(posterior_logits)).reshape(len(x), -1)

    _assert_close(loss, golden[f"{case}/loss"], "loss")
    _assert_close(posterior_logits, golden[f"{case}/posterior_logits"], "posterior logits")
    _assert_close(pixel_logits, golden[f"{case}/pixel_logits"], "pixel logits")
    expected = _nnx_params(golden, params, f"{case}/grads")
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert len(leaves) == 12
    for (path, actual), reference in zip(leaves, jax.tree_util.tree_leaves(expected), strict=True):
        _assert_close(actual, reference, f"gradient {jax.tree_util.keystr(path)}")


def test_a_training_step_with_adam_matches_pytorch(golden, golden_random_numbers):
    config = _config(golden, estimator="st", binarize="dynamic")
    state, params = _model_and_params(golden, config)
    state = state.replace(params=params)
    new_state, metrics = update._train_step(
        state,
        _images(golden),
        jax.random.key(0),
        update.StepConfig.from_config(config),
    )
    _assert_close(metrics["loss"], golden["train_step/loss"], "loss")
    expected = _nnx_params(golden, params, "train_step/params")
    for (path, actual), reference in zip(
        jax.tree_util.tree_leaves_with_path(new_state.params),
        jax.tree_util.tree_leaves(expected),
        strict=True,
    ):
        _assert_close(actual, reference, f"parameter {jax.tree_util.keystr(path)}")
