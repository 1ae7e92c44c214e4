"""The rules behind the hostile cases: contradictory settings, paths of the wrong kind, sizes that
exhaust memory, cheap checks first, plug-ins that fail on their first step. Every mistake is one
line and exit status 2, before the data loads and before anything is written."""

import fcntl
import os
import sys
import textwrap

import jax
import pytest
from idx_files import write_random_idx

from experiments import tutorial
from experiments.mnist import cli, evaluate, input_pipeline, train, workdir
from experiments.mnist.config import Config
from experiments.reproduce import cli as reproduce_cli
from gumbel_jax import estimators

MODULE = "gumbel_jax_hostile_plugin"
PLUGIN = textwrap.dedent(
    """
    import jax.numpy as jnp
    from gumbel_jax import estimators, sample

    def raises(key, logits, temperature, *, axis=-1, distribution="categorical"):
        raise RuntimeError("my estimator is broken")

    def wrong_shape(key, logits, temperature, *, axis=-1, distribution="categorical"):
        return jnp.sum(logits, axis=-1)

    def wrong_dtype(key, logits, temperature, *, axis=-1, distribution="categorical"):
        return (logits > 0).astype(jnp.int32)

    RAISES = estimators.Spec("raises", raises, distributions=("categorical", "bernoulli"))
    WRONG_SHAPE = estimators.Spec("wrong-shape", wrong_shape)
    WRONG_DTYPE = estimators.Spec("wrong-dtype", wrong_dtype)
    """
)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin")
    (folder / f"{MODULE}.py").write_text(PLUGIN)
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


def _usage_error(argv, capsys, main=cli.main) -> str:
    """Runs a command line that must stop with a usage error; returns its one error line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


def _one_line(status, capsys) -> str:
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# Rule 1: contradictory or meaningless settings, named by both flags, before the data.


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--temperature", "0.3", "--temperature-min", "0.5"],
            "--temperature-min 0.5 is above --temperature 0.3",
        ),
        (["--temperature", "0.3"], "--temperature-min 0.5 is above --temperature 0.3"),
        (
            ["--estimator", "zgr", "--anneal-rate", "1e-4"],
            "--anneal-rate has no effect with --estimator zgr (it uses no temperature)",
        ),
        (
            ["--estimator", "rebar", "--temperature", "0.7"],
            "--temperature has no effect with --estimator rebar (a surrogate estimator",
        ),
        (
            ["--estimator", "reinforce-loo", "--anneal-every", "5"],
            "--anneal-every has no effect with --estimator reinforce-loo",
        ),
        (
            ["--anneal-rate", "0", "--temperature-min", "0.2"],
            "--temperature-min has no effect with --anneal-rate 0",
        ),
    ],
)
def test_contradictory_settings_are_refused_before_the_data(extra, message, tmp_path, capsys):
    line = _usage_error(_args(tmp_path / "no-data", tmp_path / "run", *extra), capsys)
    assert message in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("estimator", ["zgr", "rebar", "reinforce-loo", "st"])
def test_the_defaults_never_contradict(estimator):
    argv = ["--estimator", estimator, "--workdir", "w"]
    args = cli.build_parser().parse_args(argv)
    cli.check_contradictions(cli.config_from_args(args), cli.given_flags(argv))


def test_the_campaign_refuses_an_anneal_rate_nothing_uses(tmp_path, capsys):
    argv = ["--root", str(tmp_path), "--estimators", "zgr", "reinforce-loo"]
    line = _usage_error([*argv, "--anneal-rate", "1e-3"], capsys, reproduce_cli.main)
    assert "--anneal-rate would change nothing" in line
    argv = ["--root", str(tmp_path), "--estimators", "st", "--tune-temperatures", "1.0"]
    line = _usage_error([*argv, "--anneal-every", "7"], capsys, reproduce_cli.main)
    assert "--anneal-every would change nothing" in line


# Rule 2: a path of the wrong kind is named as what it is.


def test_a_file_given_as_the_data_folder_is_named_a_file(tmp_path, monkeypatch, capsys):
    file = tmp_path / "mnist.gz"
    file.write_text("x")
    status = cli.main(_args(file, tmp_path / "run"))
    assert f"MNIST data folder '{file}' is a file, not a folder" in _one_line(status, capsys)
    monkeypatch.setenv("GUMBEL_JAX_MNIST_DIR", str(file))
    argv = _args(file, tmp_path / "run")
    del argv[:2]  # from the environment variable
    assert "is a file, not a folder" in _one_line(cli.main(argv), capsys)
    assert not (tmp_path / "run").exists()


def test_a_folder_where_an_idx_file_is_expected_is_named_a_folder(tmp_path, data_dir, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    for path in data_dir.iterdir():
        (folder / path.name).symlink_to(path)
    name = next(p.name for p in folder.iterdir() if p.name.startswith("t10k-images"))
    (folder / name).unlink()
    (folder / name).mkdir()
    with pytest.raises(input_pipeline.DataError, match="is a folder, not a file"):
        input_pipeline.load_idx_folder(folder, allow_unverified=True)


@pytest.mark.parametrize("flag", ["--results", "--root", "--compilation-cache"])
def test_a_campaign_folder_that_is_a_file_is_named_a_file(flag, tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    argv = ["--estimators", "st", "--root", str(tmp_path / "runs"), flag, str(file)]
    line = _usage_error(argv, capsys, reproduce_cli.main)
    assert f"{flag} {file} is a file, not a folder" in line


def test_the_tutorial_checks_its_out_folder_before_training(tmp_path, capsys):
    file = tmp_path / "out"
    file.write_text("x")
    line = _usage_error(["--out", str(file)], capsys, tutorial.parse_args)
    assert f"--out {file} is a file, not a folder" in line


def test_a_benchmark_out_that_is_a_folder_is_named_a_folder(tmp_path, capsys):
    from benchmarks import train_epoch

    line = _usage_error(["--out", str(tmp_path)], capsys, train_epoch.main)
    assert f"--out {tmp_path} is a folder, not a file" in line


def test_a_plugin_written_as_a_file_path_says_so():
    with pytest.raises(ValueError, match="is a file path, not a module name"):
        estimators.spec("plugins/my_module.py:SPEC")


def test_path_problems_in_words(tmp_path):
    file = tmp_path / "f"
    file.write_text("x")
    assert workdir.folder_problem(file, writable=True) == "is a file, not a folder"
    assert workdir.folder_problem(file / "sub", writable=True) == (
        f"cannot be created: {file} is a file, not a folder"
    )
    assert workdir.folder_problem(tmp_path / "none", writable=False) == "does not exist"
    assert workdir.folder_problem(tmp_path / "a" / "b", writable=True) is None
    assert workdir.file_problem(tmp_path, writable=True) == "is a folder, not a file"
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert workdir.folder_problem(tmp_path / "link", writable=True) == "is a broken symbolic link"


# Rule 4: sizes that exhaust memory end in one line naming the flags.


def test_sizes_that_cannot_fit_are_refused_before_training(data_dir, tmp_path, capsys):
    argv = _args(data_dir, tmp_path / "run", "--latents", "1000000", "--categories", "10000")
    line = _usage_error(argv, capsys)
    assert "--latents, --categories and --hidden (the parameters) need at least" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_huge_eval_batch_is_capped_at_the_test_set(data_dir):
    config = Config(latents=3, categories=4, hidden=(16,), eval_batch_size=10**9)
    state = train.create_train_state(config)
    x = jax.numpy.zeros((8, 28, 28, 1))
    result = evaluate.evaluate(state.model(), x, config=config, num_samples=2)
    assert set(result) == {"test/neg_elbo", "test/nll_iwae"}


def test_the_host_running_out_of_memory_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    from experiments.mnist import run

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(run, "train_and_evaluate", out_of_memory)
    line = _one_line(cli.main(_args(data_dir, tmp_path / "run")), capsys)
    assert line.startswith("error: the host ran out of memory (MemoryError): lower")


# Rule 5: the workdir's kind and lock are checked before the data loads.


def test_the_workdir_is_checked_before_the_data_loads(tmp_path, capsys):
    missing = tmp_path / "no-data"  # would fail the load: the workdir's error comes first
    file = tmp_path / "file"
    file.write_text("x")
    assert "is a file, not a folder" in _one_line(cli.main(_args(missing, file)), capsys)
    held = tmp_path / "held"
    held.mkdir()
    fd = os.open(held / workdir.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242 elsewhere\n")
        line = _one_line(cli.main(_args(missing, held)), capsys)
    finally:
        os.close(fd)
    assert "is in use by another run (process 4242 on elsewhere)" in line
    assert "MNIST" not in line


# Rule 7: a plug-in that fails on its first step is one line naming it.


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("RAISES", "fails on its first step: RuntimeError: my estimator is broken"),
        ("WRONG_SHAPE", "returns shape (16, 3) float32: it must return a sample of the logits'"),
        ("WRONG_DTYPE", "returns shape (16, 3, 4) int32: it must return a sample"),
    ],
)
def test_a_plugin_that_fails_its_first_step_is_one_line(
    plugin, attribute, message, tmp_path, capsys
):
    name = f"{plugin}:{attribute}"
    line = _usage_error(_args(tmp_path / "no-data", tmp_path / "run", "--estimator", name), capsys)
    assert f"--estimator {name} (logits (16, 3, 4), categorical)" in line and message in line
    line = _usage_error(
        ["--root", str(tmp_path), "--estimators", name, "--tune-lrs", "1e-3"],
        capsys,
        reproduce_cli.main,
    )
    key = "fails on its first step" if attribute == "RAISES" else "it must return a sample"
    assert f"--estimators {name}" in line and key in line

    from benchmarks import estimators as benchmark

    with pytest.raises(ValueError, match=f"--estimators {name}"):
        benchmark.variants([name])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--estimator", ""], "error: unknown estimator ''; registered: relaxed,"),
        (["--workdir", ""], "--workdir is empty: pass a folder"),
        (["--data-dir", ""], "--data-dir is empty: pass a folder"),
    ],
)
def test_empty_values_are_not_defaults(extra, message, tmp_path, capsys):
    assert message in _usage_error(_args(tmp_path / "no-data", tmp_path / "run", *extra), capsys)


def test_a_benchmark_count_of_zero_is_a_usage_error(tmp_path, capsys):
    from benchmarks import estimators as benchmark

    argv = ["--num-draws", "0", "--estimators", "st", "--out", str(tmp_path / "x.json")]
    assert "--num-draws must be at least 1" in _usage_error(argv, capsys, benchmark.main)
