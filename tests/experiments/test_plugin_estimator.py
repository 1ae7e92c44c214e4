"""An estimator of the user's own (a ``Spec`` in a module, ``MODULE:ATTRIBUTE``) runs through the
experiment, the campaign and the benchmarks; a bad plug-in is a one-line usage error.

The plug-in module is the one ``docs/library.md`` ("Your own estimator") shows, written to a
temporary folder on ``sys.path``, plus a few specs that exercise what the tools read from a spec.
"""

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
from idx_files import write_random_idx

from experiments.mnist import cli, outputs
from experiments.mnist.config import Config
from experiments.reproduce import cli as reproduce_cli
from experiments.reproduce import grid

LIBRARY_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "library.md"
MODULE = "gumbel_jax_test_plugin"

EXTRA_SPECS = textwrap.dedent(
    """
    FLOORED = estimators.Spec("floored-st", my_st, min_temperature=2.0, summary="ST, t >= 2")
    WITHOUT_TEMPERATURE = estimators.Spec(
        "untempered-st",
        lambda key, logits, **kw: my_st(key, logits, 1.0, **kw),
        uses_temperature=False,
        summary="ST at temperature 1",
    )
    NOT_A_SPEC = 42
    """
)


def _documented_module() -> str:
    """The ``my_module.py`` block of the library guide."""
    blocks = re.findall(r"```python\n(.*?)```", LIBRARY_GUIDE.read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if b.startswith("# my_module.py")]
    return block


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin")
    (folder / f"{MODULE}.py").write_text(_documented_module() + EXTRA_SPECS)
    sys.path.insert(0, str(folder))
    yield MODULE
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_random_idx(tmp_path_factory.mktemp("data"), 64, 16)


def _args(data_dir, workdir, *extra):
    return [
        *("--data-dir", str(data_dir), "--allow-unverified-data", "--workdir", str(workdir)),
        *("--latents", "3", "--categories", "4", "--hidden", "16", "--batch-size", "16"),
        *("--eval-samples", "2", "--eval-batch-size", "16", "--no-progress", "--epochs", "1"),
        *extra,
    ]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.slow
def test_a_plugin_spec_trains_one_epoch_through_the_command_line(plugin, data_dir, tmp_path):
    # A folder named like the campaign names a plug-in's runs (a colon and brackets).
    workdir = tmp_path / f"{plugin}:MY_SPEC[sharpness=2.0]"
    argv = _args(data_dir, workdir, "--estimator", f"{plugin}:MY_SPEC")
    assert cli.main([*argv, "--estimator-option", "sharpness=2.0"]) == 0
    config = Config.from_json((workdir / outputs.CONFIG_FILE).read_text())
    assert (config.estimator, config.options()) == (f"{plugin}:MY_SPEC", {"sharpness": 2.0})
    final = outputs.read_metrics(workdir)[-1]
    assert final["epoch"] == 1 and final["test/neg_elbo"] > 0
    saved = json.loads((workdir / outputs.CONFIG_FILE).read_text())
    assert saved["estimator_options"] == {"sharpness": 2.0}


@pytest.mark.slow
def test_binary_latents_train_with_a_bernoulli_only_surrogate(data_dir, tmp_path):
    argv = _args(data_dir, tmp_path / "disarm", "--latent-type", "bernoulli")
    assert cli.main([*argv, "--estimator", "disarm"]) == 0
    assert outputs.read_metrics(tmp_path / "disarm")[-1]["epoch"] == 1


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (
            "gumbel_jax_no_such_module:MY_SPEC",
            "plug-in estimator 'gumbel_jax_no_such_module:MY_SPEC': cannot import module "
            "'gumbel_jax_no_such_module' (ModuleNotFoundError",
        ),
        (
            f"{MODULE}:NO_SUCH_SPEC",
            f"plug-in estimator '{MODULE}:NO_SUCH_SPEC': module '{MODULE}' has no attribute "
            "'NO_SUCH_SPEC'",
        ),
        (
            f"{MODULE}:NOT_A_SPEC",
            f"plug-in estimator '{MODULE}:NOT_A_SPEC': {MODULE}.NOT_A_SPEC must be a "
            "gumbel_jax.estimators.Spec",
        ),
        (":MY_SPEC", "a plug-in estimator is written MODULE:ATTRIBUTE"),
    ],
)
def test_a_bad_plugin_is_a_one_line_usage_error_before_the_data(
    plugin, estimator, message, tmp_path, capsys
):
    missing_data = tmp_path / "no-data"  # never read: the error comes first
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_args(missing_data, tmp_path / "run", "--estimator", estimator))
    assert exit_info.value.code == 2
    line = _one_error_line(capsys)
    assert message in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--estimator-option", "gap=2"], "error: --estimator-option estimator 'my-st' has no"),
        (["--estimator-option", "sharpness=sharp"], "takes a number (default 1.0); got 'sharp'"),
        (
            ["--latent-type", "bernoulli", "--estimator", "disarm", "--estimator-option", "k=1"],
            "error: --estimator-option estimator 'disarm' has no option 'k'; its options (with "
            "defaults): none",
        ),
    ],
)
def test_estimator_options_are_checked_by_the_spec(plugin, extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            _args(
                tmp_path / "no-data", tmp_path / "run", "--estimator", f"{plugin}:MY_SPEC", *extra
            )
        )
    assert exit_info.value.code == 2
    assert message in _one_error_line(capsys)


def test_the_latent_type_must_be_one_the_spec_supports(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(_args(tmp_path / "no-data", tmp_path / "run", "--estimator", "disarm"))
    line = _one_error_line(capsys)
    assert "--estimator disarm does not support --latent-type categorical" in line
    assert "for categorical latents use one of: relaxed, st," in line


def test_a_spec_temperature_floor_refuses_a_lower_temperature_min(plugin, tmp_path, capsys):
    argv = _args(tmp_path / "no-data", tmp_path / "run", "--estimator", f"{plugin}:FLOORED")
    with pytest.raises(SystemExit):
        cli.main([*argv, "--temperature", "2", "--temperature-min", "1.5"])
    assert (
        f"error: --estimator {plugin}:FLOORED needs a temperature >= 2 throughout (its authors' "
        "condition), got --temperature 2 and --temperature-min 1.5: pass both >= 2"
    ) in _one_error_line(capsys)
    config = Config(estimator=f"{plugin}:FLOORED", temperature=2.0, temperature_min=2.0)
    assert config.spec().min_temperature == 2.0


def test_the_campaign_takes_plugins_and_registered_estimators_with_their_grids(plugin, tmp_path):
    argv = ["--root", str(tmp_path), "--tune-lrs", "1e-3", "--floored-temperatures", "2.0"]
    argv += ["--tune-lr-schedules", "constant"]
    argv += ["--estimators", "st", f"{plugin}:MY_SPEC[sharpness=2.0]", f"{plugin}:FLOORED"]
    argv += [f"{plugin}:WITHOUT_TEMPERATURE", "gumbel-rao[num_samples=100]", "reinforce-loo"]
    argv += ["gumbel-rao[num_samples=7]"]
    plan = reproduce_cli.plan_from_args(reproduce_cli.build_parser().parse_args(argv))
    names = [v.name for v in plan.variants]
    assert names == [
        "st",
        f"{plugin}:MY_SPEC[sharpness=2.0]",
        f"{plugin}:FLOORED",
        f"{plugin}:WITHOUT_TEMPERATURE",
        "gumbel-rao-100",  # the table's variant of that estimator and options
        "reinforce-loo",
        "gumbel-rao[num_samples=7]",
    ]
    slugs = {}
    for run in plan.tune_runs:
        slugs.setdefault(run.variant.name, []).append(run.candidate.slug)
        config = run.config(eval_samples=1, data_dir=None, progress=False)
        assert config.estimator == run.variant.estimator
        assert run.workdir.parent.name == run.variant.name
    assert slugs[f"{plugin}:MY_SPEC[sharpness=2.0]"] == slugs["st"]
    assert slugs[f"{plugin}:FLOORED"] == ["lr0.001-t2-const"]  # --floored-temperatures
    assert slugs[f"{plugin}:WITHOUT_TEMPERATURE"] == ["lr0.001"]  # no temperature to tune
    assert slugs["reinforce-loo"] == ["lr0.001"]
    by_name = {run.variant.name: run for run in plan.tune_runs}
    options = by_name["gumbel-rao[num_samples=7]"].config(
        eval_samples=1, data_dir=None, progress=False
    )
    assert options.options() == {"num_samples": 7}
    assert grid.CATEGORICAL.variant_title(f"{plugin}:FLOORED") == f"{plugin}:FLOORED"
    # One folder per estimator and options.
    assert len({run.workdir for run in plan.tune_runs}) == len(plan.tune_runs)


def test_the_campaign_refuses_a_schedule_below_a_plugins_floor(plugin, tmp_path, capsys):
    argv = ["--root", str(tmp_path), "--estimators", f"{plugin}:FLOORED"]
    with pytest.raises(SystemExit):
        reproduce_cli.main(argv)
    assert (
        f"--floored-temperatures must stay >= 2 for {plugin}:FLOORED (its spec's "
        "min_temperature), got 1.0 1.5"
    ) in _one_error_line(capsys)
