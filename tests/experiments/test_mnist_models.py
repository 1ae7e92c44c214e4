"""The models' contract (``experiments.mnist.models.VAEModel``) and the ``--model`` registry.

Every registered model maps images ``[batch, rows, cols, channels]`` to posterior logits and latent
samples back to pixel logits of the image's shape; the convolutional one trains through the
command line with no other change (random IDX digits, a tiny budget).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from idx_files import write_random_idx

from experiments.mnist import cli, models, outputs
from experiments.mnist.config import Config


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize(
    ("latent_type", "latent_shape"), [("categorical", (6, 4)), ("bernoulli", (6,))]
)
@pytest.mark.slow
def test_every_model_keeps_the_image_and_latent_shapes(name, latent_type, latent_shape):
    config = Config(model=name, latent_type=latent_type, latents=6, categories=4, hidden=(32,))
    model = models.from_config(config, (12, 8, 3), rngs=nnx.Rngs(params=0))
    assert (model.latent_type, model.latent_shape) == (latent_type, latent_shape)
    logits = model.encode(jnp.zeros((5, 12, 8, 3)))
    assert logits.shape == (5, *latent_shape)
    pixel_logits = model.decode(jnp.ones((5, *latent_shape)))
    assert pixel_logits.shape == (5, 12, 8, 3) and pixel_logits.dtype == jnp.float32
    # The decoder reads the latents: two different codes give two different images.
    other = model.decode(jnp.zeros((5, *latent_shape)))
    assert not np.allclose(pixel_logits, other)


def test_the_config_offers_every_registered_model():
    assert Config.__dataclass_fields__["model"].metadata["choices"] == tuple(models.MODELS)
    with pytest.raises(ValueError, match="model must be one of"):
        Config(model="transformer")


def test_the_conv_model_refuses_images_it_cannot_halve_twice():
    with pytest.raises(ValueError, match="multiples of 4, got 30x28; use the mlp model"):
        models.ConvVAE(image_shape=(30, 28, 1), rngs=nnx.Rngs(params=0))


@pytest.mark.slow
def test_the_parameter_count_is_the_models(tmp_path):
    for name in models.MODELS:
        config = Config(model=name)
        state = nnx.state(models.from_config(config, rngs=nnx.Rngs(params=0)), nnx.Param)
        assert cli.parameter_count(config) == sum(x.size for x in jax.tree.leaves(state))


@pytest.mark.slow
def test_the_conv_model_trains_from_the_command_line_and_its_resume_keeps_the_model(
    tmp_path, capsys
):
    data = write_random_idx(tmp_path / "data", 64 + 3, 16)
    workdir = tmp_path / "conv"
    argv = [
        *("--data-dir", str(data), "--allow-unverified-data", "--workdir", str(workdir)),
        *("--model", "conv", "--latents", "4", "--categories", "3", "--hidden", "16"),
        *("--batch-size", "16", "--epochs", "1", "--estimator", "st", "--eval-samples", "2"),
        *("--eval-batch-size", "16", "--no-progress"),
    ]
    assert cli.main(argv) == 0
    record = outputs.read_metrics(workdir)[-1]
    assert np.isfinite(record["test/neg_elbo"]) and np.isfinite(record["test/nll_iwae"])
    assert json.loads((workdir / outputs.CONFIG_FILE).read_text())["model"] == "conv"
    assert (workdir / outputs.RECONSTRUCTIONS_FILE).exists()
    capsys.readouterr()
    mlp = [*argv[: argv.index("--model")], *argv[argv.index("--latents") :]]
    assert cli.main([*mlp, "--epochs", "2"]) == 2  # the last --epochs counts
    assert "model: 'conv' -> 'mlp'" in capsys.readouterr().err
