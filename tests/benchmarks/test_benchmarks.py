"""The benchmarks' arithmetic and a smoke run of their floors (no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks import epochs
from experiments.mnist.config import Config


def test_flops_of_the_tutorial_model_are_7_3_mflop_per_example():
    # 784x512 + 512x256 + 256x300 + 300x256 + 256x512 + 512x784 multiply-adds, x2 x3.
    macs = 784 * 512 + 512 * 256 + 256 * 300 + 300 * 256 + 256 * 512 + 512 * 784
    assert macs == 1_218_560
    assert epochs.flops_per_example(Config()) == 6 * macs
    assert epochs.layer_shapes(Config(latents=20))[2] == (256, 200)


@pytest.mark.parametrize("adam", [False, True])
@pytest.mark.slow
def test_matmul_floors_run_and_report_an_epoch(adam):
    config = Config(hidden=(8,), latents=2, categories=2, batch_size=1_000)
    result = epochs.matmul_floor_benchmark(config, adam=adam, repeats=1)
    assert result["epoch_s"] > 0
    gflop = epochs.flops_per_example(config) * epochs.NUM_TRAIN / 1e9
    assert result["gflops"] == pytest.approx(gflop / result["epoch_s"])


def test_threefry_partitionable_is_set_inside_the_block_and_restored():
    import jax

    before = jax.config.jax_threefry_partitionable
    with epochs.threefry_partitionable(not before):
        assert jax.config.jax_threefry_partitionable == (not before)
    assert jax.config.jax_threefry_partitionable == before


def test_estimator_epoch_variants_name_the_estimator_and_its_options():
    from benchmarks.estimator_epochs import variant_config

    assert variant_config("st").estimator == "st"
    config = variant_config("gumbel-rao[num_samples=100]")
    assert (config.estimator, config.options()) == ("gumbel-rao", {"num_samples": 100})
    assert variant_config("gumbel-rao").options() == {"num_samples": 10}
    # A spec's temperature floor is the run's temperature.
    floored = variant_config("reinmax")
    assert floored.temperature == floored.temperature_min == 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variants", "st", "nope"], "unknown estimator 'nope'"),
        (["--variants", "gumbel-rao[k=3]"], "estimator 'gumbel-rao' has no option 'k'"),
        (["--variants", "gumbel-rao[num_samples=x]"], "takes an integer"),
        (["--variants", "missing_module:SPEC"], "cannot import module 'missing_module'"),
    ],
)
def test_a_bad_estimator_variant_is_a_one_line_usage_error(argv, message, capsys):
    from benchmarks import estimator_epochs

    with pytest.raises(SystemExit) as exit_info:
        estimator_epochs.main(argv)
    assert exit_info.value.code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error) == 1 and message in error[0]


def test_the_step_profile_counts_only_fusions_with_a_dot_as_matrix_products():
    import jax
    import jax.numpy as jnp

    from benchmarks.profile_step import matmul_ops

    a = jnp.ones((64, 64))
    with_dot = jax.jit(lambda a, b: jnp.tanh(a @ b) + 1).lower(a, a).compile().as_text()
    assert len(matmul_ops(with_dot)) == 1
    # XLA:CPU fuses this one into a YNNPACK fusion too, with no matrix product in it.
    without = jax.jit(lambda a: jnp.sum(jnp.exp(a), axis=1)).lower(a).compile().as_text()
    assert " fusion(" in without
    assert matmul_ops(without) == set()
