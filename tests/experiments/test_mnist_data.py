"""Tests of experiments.mnist.input_pipeline and of the CLI's data failures (exit status 2)."""

import dataclasses
import gzip
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.mnist import cli, input_pipeline
from experiments.mnist.config import Config, ConfigError

LABELS = "t10k-labels-idx1-ubyte"


def _labels_bytes(mnist_dir: Path) -> bytes:
    return gzip.decompress((mnist_dir / f"{LABELS}.gz").read_bytes())


def _folder(tmp_path: Path, mnist_dir: Path, *, replace_labels: bytes | None = None, drop=()):
    """A folder linking the real files, with the test labels replaced or some files left out."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in input_pipeline.IDX_FILES:
        if name in drop:
            continue
        if name == LABELS and replace_labels is not None:
            (folder / name).write_bytes(replace_labels)
        else:
            (folder / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    return folder


def _run_cli(capsys, *args: str) -> tuple[int, str]:
    status = cli.main([*args, "--no-progress", "--workdir", "unused-workdir"])
    return status, capsys.readouterr().err


def _assert_one_line_error(status: int, stderr: str, *fragments: str) -> None:
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_gzipped_and_plain_idx_files_read_the_same(tmp_path, mnist_dir):
    plain = tmp_path / LABELS
    plain.write_bytes(_labels_bytes(mnist_dir))
    official = input_pipeline.DATASETS["mnist"].sha256[LABELS]
    kwargs = {"expected_magic": 0x801, "expected_sha256": official}
    from_gz = input_pipeline.read_idx(mnist_dir / f"{LABELS}.gz", **kwargs)
    from_plain = input_pipeline.read_idx(plain, **kwargs)
    np.testing.assert_array_equal(from_gz, from_plain)
    assert from_gz.shape == (10_000,) and from_gz.dtype == np.uint8
    assert np.bincount(from_gz).tolist()[:2] == [980, 1135]  # MNIST's published test counts


def test_official_folder_loads(mnist_dir):
    data = input_pipeline.load_idx_folder(mnist_dir)
    assert data.train_images.shape == (60_000, 28, 28)
    assert data.test_images.shape == (10_000, 28, 28)
    assert data.train_labels.shape == (60_000,)
    np.testing.assert_allclose(data.train_images.mean() / 255, 0.1307, atol=1e-4)


def test_missing_folder(tmp_path, capsys):
    status, err = _run_cli(capsys, "--data-dir", str(tmp_path / "nowhere"))
    _assert_one_line_error(
        status, err, "nowhere", "does not exist", "--data-dir", "GUMBEL_JAX_MNIST_DIR"
    )


@pytest.mark.slow
def test_missing_folder_in_a_subprocess_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.mnist", "--data-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
        check=False,
    )
    _assert_one_line_error(result.returncode, result.stderr, "does not exist")
    assert "Traceback" not in result.stderr


def test_missing_file(tmp_path, mnist_dir, capsys):
    folder = _folder(tmp_path, mnist_dir, drop=(LABELS,))
    status, err = _run_cli(capsys, "--data-dir", str(folder))
    _assert_one_line_error(status, err, f"{LABELS} (or {LABELS}.gz) is missing")


def test_truncated_file(tmp_path, mnist_dir, capsys):
    folder = _folder(tmp_path, mnist_dir, replace_labels=_labels_bytes(mnist_dir)[:5000])
    status, err = _run_cli(capsys, "--data-dir", str(folder))
    _assert_one_line_error(status, err, LABELS, "is truncated", "5000 bytes, expected 10008")


def test_truncated_gzip_file(tmp_path, mnist_dir, capsys):
    cut = (mnist_dir / f"{LABELS}.gz").read_bytes()[:2000]
    folder = _folder(tmp_path, mnist_dir, replace_labels=cut)
    status, err = _run_cli(capsys, "--data-dir", str(folder))
    _assert_one_line_error(status, err, LABELS, "is truncated")


def test_wrong_magic_number(tmp_path, mnist_dir, capsys):
    content = bytearray(_labels_bytes(mnist_dir))
    content[:4] = (2051).to_bytes(4, "big")  # the images' magic number in a labels file
    folder = _folder(tmp_path, mnist_dir, replace_labels=bytes(content))
    status, err = _run_cli(capsys, "--data-dir", str(folder))
    _assert_one_line_error(status, err, LABELS, "magic number 0x00000803, expected 0x00000801")


def test_wrong_hash_is_refused_unless_allowed(tmp_path, mnist_dir, capsys):
    content = bytearray(_labels_bytes(mnist_dir))
    content[8] = (content[8] + 1) % 10  # one label changed: well-formed, but not MNIST
    folder = _folder(tmp_path, mnist_dir, replace_labels=bytes(content))
    status, err = _run_cli(capsys, "--data-dir", str(folder))
    _assert_one_line_error(status, err, LABELS, "SHA-256", "--allow-unverified-data")
    data = input_pipeline.load_idx_folder(folder, allow_unverified=True)
    assert data.test_labels[0] == content[8]


def test_environment_variable_is_used_and_the_flag_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(input_pipeline.DATA_DIR_ENV, str(tmp_path / "from-env"))
    status, err = _run_cli(capsys)
    _assert_one_line_error(status, err, "from-env")
    status, err = _run_cli(capsys, "--data-dir", str(tmp_path / "from-flag"))
    _assert_one_line_error(status, err, "from-flag")
    assert "from-env" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["--estimator", "gumbel"],
        ["--hard", "--estimator", "relaxed"],
        ["--batch-size", "0"],
        ["--binarize", "static"],
        ["--epochs", "two"],
        ["--latent-type", "gaussian"],
        ["--activation", "sigmoid"],
        ["--hidden"],
        ["--estimator-option"],
    ],
)
def test_bad_flags_give_a_usage_error(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    assert "usage: python -m experiments.mnist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "0"], "error: --lr must be positive, got 0.0"),
        (["--batch-size", "0"], "error: --batch-size must be a positive integer, got 0"),
        (["--temperature-min", "-1"], "error: --temperature-min must be positive, got -1.0"),
        (
            ["--estimator", "gumbel-rao", "--estimator-option", "k=3"],
            "error: --estimator-option estimator 'gumbel-rao' has no option 'k'; its options "
            "(with defaults): num_samples=10",
        ),
        (
            ["--estimator", "gumbel-rao", "--estimator-option", "num_samples=two"],
            "error: --estimator-option option 'num_samples' of estimator 'gumbel-rao' takes an "
            "integer (default 10); got 'two'",
        ),
        (
            ["--estimator-option", "num_samples=3"],
            "error: --estimator-option estimator 'relaxed' has no option 'num_samples'; its "
            "options (with defaults): none",
        ),
        (["--estimator", "gumbel-rao", "--estimator-option", "3"], "must be written NAME=VALUE"),
        (["--estimator", "nope"], "error: unknown estimator 'nope'; registered: relaxed, st,"),
        (["--hidden", "200", "0"], "error: --hidden must be positive layer widths"),
        (
            ["--estimator", "disarm"],
            "error: --estimator disarm does not support --latent-type categorical (it supports "
            "bernoulli); for categorical latents use one of: relaxed, st,",
        ),
        (
            ["--estimator", "reinmax", "--temperature", "1.5", "--temperature-min", "0.5"],
            "error: --estimator reinmax needs a temperature >= 1 throughout (its authors' "
            "condition), got --temperature 1.5 and --temperature-min 0.5: pass both >= 1",
        ),
    ],
)
def test_invalid_settings_are_reported_by_their_flag(args, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(args)
    assert message in capsys.readouterr().err


def test_help_shows_list_defaults_as_values():
    from experiments.reproduce import cli as reproduce_cli

    text = reproduce_cli.build_parser().format_help()
    assert "(default: 0 1 2)" in " ".join(text.split())
    assert "(default: ('" not in text


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    """No IDX folder configured; TFDS data dir empty."""
    monkeypatch.delenv(input_pipeline.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_tfds_download_failure_says_how_to_use_a_local_folder(no_local_data, monkeypatch, capsys):
    def unresolvable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    status, err = _run_cli(capsys)
    _assert_one_line_error(
        status, err, "could not download MNIST", "--data-dir DIR", "GUMBEL_JAX_MNIST_DIR=DIR"
    )


def test_tfds_connection_error_during_download(no_local_data, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise ConnectionError("Max retries exceeded")

    monkeypatch.setattr(input_pipeline, "_check_download_host", lambda url: None)
    monkeypatch.setattr(tfds, "data_source", refuse)
    status, err = _run_cli(capsys)
    _assert_one_line_error(status, err, "ConnectionError: Max retries exceeded", "--data-dir")


def test_tfds_path_with_mock_data(no_local_data, monkeypatch):
    monkeypatch.setattr(input_pipeline, "_check_download_host", lambda url: None)
    with tfds.testing.mock_data(num_examples=12):
        data = input_pipeline.load(None)
    assert data.train_images.shape == (12, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (12, 28, 28)
    assert data.train_labels.shape == (12,)
    assert data.source.startswith("tfds:")


@pytest.mark.slow
def test_tfds_cli_run_with_mock_data(no_local_data, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(input_pipeline, "_check_download_host", lambda url: None)
    workdir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=40):
        status = cli.main(
            ["--epochs", "1", "--batch-size", "20", "--latents", "2", "--categories", "3",
             "--eval-samples", "2", "--eval-batch-size", "16", "--no-progress",
             "--workdir", str(workdir)]
        )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert "MNIST from tfds:" in capsys.readouterr().out
    assert (workdir / "metrics.jsonl").is_file()


def test_without_tensorflow_tfds_downloads_the_idx_files(no_local_data, monkeypatch, mnist_dir):
    """TFDS cannot prepare MNIST without TensorFlow: its download manager fetches the IDX files."""

    def needs_tensorflow(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    requested = {}

    def download(self, urls):
        requested.update(urls)
        return {name: mnist_dir / f"{name}.gz" for name in urls}

    monkeypatch.setattr(input_pipeline, "_check_download_host", lambda url: None)
    monkeypatch.setattr(tfds, "data_source", needs_tensorflow)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", download)
    data = input_pipeline.load(None)
    assert data.train_images.shape == (60_000, 28, 28)
    assert requested[LABELS].endswith(f"/mnist/{LABELS}.gz")
    assert os.fspath(data.source).startswith("tfds-downloads:")


def test_the_flags_and_their_defaults_come_from_the_config_fields(monkeypatch):
    monkeypatch.delenv(input_pipeline.DATA_DIR_ENV, raising=False)
    # The one difference: --workdir is resolved where it enters (to an absolute path).
    expected = Config(workdir=str(Path(Config.workdir).resolve()))
    assert cli.config_from_args(cli.build_parser().parse_args([])) == expected
    flagged = [f for f in dataclasses.fields(Config) if f.metadata["flag"] is not None]
    text = " ".join(cli.build_parser().format_help().split())
    for field in flagged:
        assert f"{cli.flag(field.name)} " in text
        assert " ".join(field.metadata["help"].split()) in text
    assert cli.flag("learning_rate") == "--lr" and cli.flag("progress") == "--no-progress"


def test_a_config_error_names_its_field():
    with pytest.raises(ConfigError) as error:
        Config(learning_rate=0.0)
    assert (error.value.field, error.value.problem) == (
        "learning_rate",
        "must be positive, got 0.0",
    )
    with pytest.raises(ConfigError) as error:
        Config(estimator="reinmax")
    assert error.value.field is None
    assert str(error.value).startswith("--estimator reinmax needs a temperature >= 1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "inf"], "error: --lr must be finite, got inf"),
        (["--lr", "nan"], "error: --lr must be positive, got nan"),
        (["--temperature", "inf"], "error: --temperature must be finite, got inf"),
        (["--anneal-rate", "nan"], "error: --anneal-rate must be non-negative, got nan"),
        (["--anneal-rate", "inf"], "error: --anneal-rate must be finite, got inf"),
        (["--seed", str(2**32)], "error: --seed must be an integer from 0 to 4294967295"),
        (["--seed", "-1"], "error: --seed must be an integer from 0 to 4294967295"),
        (["--seed", str(2**64)], "error: --seed must be an integer from 0 to 4294967295"),
        (["--eval-samples", "-5"], "error: --eval-samples must be a positive integer"),
        (["--chunk-steps", "1e3"], "invalid int value: '1e3'"),
    ],
)
def test_non_finite_and_out_of_range_settings_are_usage_errors(args, message, tmp_path, capsys):
    """Checked before anything is read or written."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--workdir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_seeds_alias_beyond_32_bits():
    """Why --seed stops at 2**32 - 1: jax.random.key keeps the low 32 bits."""
    import jax

    same = jax.random.key_data(jax.random.key(2**32)) == jax.random.key_data(jax.random.key(0))
    assert bool(same.all())
    assert Config(seed=2**32 - 1).seed == 2**32 - 1


def _random_data(tmp_path):
    from idx_files import write_random_idx

    return write_random_idx(tmp_path / "data", 40, 8)


def test_a_batch_larger_than_the_training_set_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = ["--data-dir", str(_random_data(tmp_path)), "--allow-unverified-data"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--batch-size", "64", "--workdir", str(workdir), "--no-progress"])
    assert exit_info.value.code == 2
    assert "batch_size 64 exceeds the 40 training examples" in capsys.readouterr().err
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("x"), "is a file, not a folder: pass a folder"),
        (lambda p: p.parent.joinpath("blocker").write_text("x"), "cannot create the workdir"),
    ],
)
def test_a_workdir_that_cannot_be_used_is_one_line(tmp_path, capsys, make, message):
    workdir = tmp_path / "run"
    make(workdir)
    if not workdir.exists():
        workdir = tmp_path / "blocker" / "run"  # Its parent is a file.
    args = ["--data-dir", str(_random_data(tmp_path)), "--allow-unverified-data", "--no-progress"]
    status = cli.main([*args, "--batch-size", "8", "--workdir", str(workdir)])
    _assert_one_line_error(status, capsys.readouterr().err, str(workdir), message)


def test_relative_paths_are_resolved_where_they_enter(tmp_path, monkeypatch):
    """The README's GUMBEL_JAX_MNIST_DIR=../shared/mnist: a relative folder is made absolute
    once (by the tests' fixture, the data flag, the environment variable and --workdir)."""
    from idx_files import mnist_folder

    (tmp_path / "shared" / "mnist").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    expected = tmp_path.resolve() / "shared" / "mnist"
    assert mnist_folder("../shared/mnist", tmp_path / "unused") == expected
    monkeypatch.setenv(input_pipeline.DATA_DIR_ENV, "../shared/mnist")
    assert input_pipeline.resolve_data_dir(None) == str(expected)
    assert input_pipeline.resolve_data_dir("../shared/mnist") == str(expected)
    config = cli.config_from_args(cli.build_parser().parse_args(["--workdir", "out dir/é"]))
    assert config.workdir == str(tmp_path.resolve() / "repo" / "out dir" / "é")
    assert config.data_dir == str(expected)


def test_without_the_environment_variable_the_tests_get_mnist_as_the_experiment_does(
    tmp_path, monkeypatch
):
    """Online: the experiment's loader (TFDS, cached) into a folder of IDX files; offline: one
    line that says what to set."""
    from idx_files import mnist_folder

    rng = np.random.default_rng(0)
    fake = input_pipeline.ImageData(
        rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 20, dtype=np.uint8),
        rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 5, dtype=np.uint8),
        source="tfds",
    )
    calls = []
    monkeypatch.setattr(input_pipeline, "load", lambda d, **k: calls.append(d) or fake)
    folder = mnist_folder(None, tmp_path / "mnist")
    assert calls == [None]
    data = input_pipeline.load_idx_folder(folder, allow_unverified=True)
    np.testing.assert_array_equal(data.train_images, fake.train_images)
    np.testing.assert_array_equal(data.test_labels, fake.test_labels)

    def offline(data_dir, **kwargs):
        raise input_pipeline.DataError("downloading MNIST failed")

    monkeypatch.setattr(input_pipeline, "load", offline)
    with pytest.raises(pytest.fail.Exception) as failure:
        mnist_folder(None, tmp_path / "other")
    assert "GUMBEL_JAX_MNIST_DIR is not set and MNIST could not be downloaded" in str(failure.value)
    assert "set GUMBEL_JAX_MNIST_DIR to a folder" in str(failure.value)


@pytest.mark.slow
def test_a_workdir_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """Read-only: simulated (the tests run as root, who may write anywhere)."""
    import errno

    from experiments.mnist import outputs, workdir

    args = ["--data-dir", str(_random_data(tmp_path)), "--allow-unverified-data", "--no-progress"]
    args += ["--batch-size", "8", "--workdir", str(tmp_path / "run")]

    def read_only(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(workdir.os, "open", read_only)
        status = cli.main(args)
    _assert_one_line_error(
        status, capsys.readouterr().err, f"cannot write {tmp_path / 'run' / 'run.lock'}"
    )

    def full_disk(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path / "config.json"))

    monkeypatch.setattr(outputs, "write_config", full_disk)
    status = cli.main(args)
    _assert_one_line_error(
        status,
        capsys.readouterr().err,
        f"cannot write {tmp_path / 'run' / 'config.json'} (No space left on device): free disk",
    )


def test_ctrl_c_while_the_data_loads_is_one_line_and_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(input_pipeline, "load", interrupted)
    assert cli.main(["--workdir", str(tmp_path / "run"), "--no-progress"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted before training started: nothing was written"
    assert not (tmp_path / "run").exists()
