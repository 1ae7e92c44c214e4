"""The second data set, Fashion-MNIST (``--dataset fashion_mnist``), on small synthetic IDX files.

No real Fashion-MNIST is needed: the random files of ``idx_files.write_random_idx`` stand for it
(with ``--allow-unverified-data``, or with the table's digests replaced by theirs), and
tensorflow-datasets is mocked as in ``test_mnist_data.py``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from idx_files import write_random_idx

from experiments.mnist import checkpoints, cli, input_pipeline, outputs
from experiments.mnist.config import Config
from experiments.reproduce import campaign, grid, report
from experiments.reproduce import cli as reproduce_cli

FASHION = "fashion_mnist"
LABELS = "t10k-labels-idx1-ubyte"


def _gzipped(folder: Path) -> Path:
    """Replaces the folder's four IDX files by gzipped copies (``<name>.gz``)."""
    for name in input_pipeline.IDX_FILES:
        path = folder / name
        (folder / f"{name}.gz").write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        path.unlink()
    return folder


def _trust(monkeypatch, folder: Path) -> None:
    """Makes the folder's .gz files Fashion-MNIST's official ones, in the table."""
    digests = {
        name: hashlib.sha256((folder / f"{name}.gz").read_bytes()).hexdigest()
        for name in input_pipeline.IDX_FILES
    }
    spec = dataclasses.replace(input_pipeline.DATASETS[FASHION], sha256_gz=digests)
    monkeypatch.setitem(input_pipeline.DATASETS, FASHION, spec)


def test_the_table_describes_each_data_set_once():
    mnist, fashion = input_pipeline.DATASETS["mnist"], input_pipeline.DATASETS[FASHION]
    assert (mnist.title, mnist.tfds_name) == ("MNIST", "mnist")
    assert (fashion.title, fashion.tfds_name) == ("Fashion-MNIST", "fashion_mnist")
    assert mnist.data_dir_env != fashion.data_dir_env
    # MNIST's digests are of the decompressed files, Fashion-MNIST's of the official .gz files.
    assert set(mnist.sha256) == set(fashion.sha256_gz) == set(input_pipeline.IDX_FILES)
    assert not mnist.sha256_gz and not fashion.sha256
    assert Config.__dataclass_fields__["dataset"].metadata["choices"] == ("mnist", FASHION)


def test_fashion_mnist_loads_by_name_from_its_own_folder(tmp_path, monkeypatch):
    folder = write_random_idx(tmp_path / "fashion", 30, 6)
    data = input_pipeline.load(str(folder), dataset=FASHION, allow_unverified=True)
    assert data.train_images.shape == (30, 28, 28) and data.test_labels.shape == (6,)
    assert data.source == f"idx:{folder.resolve()}"
    # Its own environment variable: MNIST's folder is never read as Fashion-MNIST.
    monkeypatch.setenv(input_pipeline.DATASETS["mnist"].data_dir_env, str(tmp_path / "mnist"))
    monkeypatch.delenv(input_pipeline.DATASETS[FASHION].data_dir_env, raising=False)
    assert input_pipeline.resolve_data_dir(None, FASHION) is None
    monkeypatch.setenv(input_pipeline.DATASETS[FASHION].data_dir_env, str(folder))
    assert input_pipeline.resolve_data_dir(None, FASHION) == str(folder.resolve())
    args = cli.build_parser().parse_args(["--dataset", FASHION])
    assert cli.config_from_args(args).data_dir == str(folder.resolve())


def test_the_digest_check_refuses_other_files_and_names_the_data_set(tmp_path, monkeypatch):
    folder = write_random_idx(tmp_path / "fashion", 30, 6)
    # Decompressed files: only the official .gz files' digests are known.
    with pytest.raises(input_pipeline.DataError) as error:
        input_pipeline.load_idx_folder(folder, dataset=FASHION)
    message = str(error.value)
    assert message.startswith("Fashion-MNIST file ") and "cannot be verified" in message
    assert "--allow-unverified-data" in message and "\n" not in message
    # Gzipped files that are not the official ones.
    _gzipped(folder)
    with pytest.raises(input_pipeline.DataError, match=r"^Fashion-MNIST file .* of the \.gz file"):
        input_pipeline.load_idx_folder(folder, dataset=FASHION)
    # The official .gz bytes are accepted (here: the table made to name these files), and the .gz
    # file is the one read where a decompressed copy is there too.
    _trust(monkeypatch, folder)
    (folder / LABELS).write_bytes(b"not an IDX file")
    data = input_pipeline.load_idx_folder(folder, dataset=FASHION)
    assert data.test_labels.shape == (6,)
    # The same files as MNIST: refused, naming MNIST and its decompressed digest.
    (folder / LABELS).unlink()
    with pytest.raises(input_pipeline.DataError, match=r"^MNIST file .* not the official ba89"):
        input_pipeline.load_idx_folder(folder)


def test_the_cli_refuses_unverified_fashion_mnist_in_one_line(tmp_path, capsys):
    folder = write_random_idx(tmp_path / "fashion", 30, 6)
    status = cli.main(
        ["--dataset", FASHION, "--data-dir", str(folder), "--workdir", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: Fashion-MNIST file ") and "--allow-unverified-data" in err
    status = cli.main(["--dataset", FASHION, "--data-dir", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: Fashion-MNIST data folder ")
    assert "GUMBEL_JAX_FASHION_MNIST_DIR=DIR" in err


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    for spec in input_pipeline.DATASETS.values():
        monkeypatch.delenv(spec.data_dir_env, raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(input_pipeline, "_check_download_host", lambda url: None)


def test_tfds_is_asked_for_the_tables_name(no_local_data, monkeypatch):
    asked = []
    data_source = tfds.data_source
    monkeypatch.setattr(
        tfds, "data_source", lambda name, **k: asked.append(name) or data_source(name, **k)
    )
    with tfds.testing.mock_data(num_examples=12):
        data = input_pipeline.load(None, dataset=FASHION)
    assert asked == ["fashion_mnist"]
    assert data.train_images.shape == (12, 28, 28) and "fashion_mnist" in data.source


def test_without_tensorflow_the_fashion_mnist_files_are_downloaded_and_verified(
    no_local_data, monkeypatch, tmp_path
):
    folder = _gzipped(write_random_idx(tmp_path / "downloaded", 30, 6))
    requested, managers = {}, []

    def needs_tensorflow(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    def download(self, urls):
        managers.append(self)
        requested.update(urls)
        return {name: folder / f"{name}.gz" for name in urls}

    monkeypatch.setattr(tfds, "data_source", needs_tensorflow)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", download)
    with pytest.raises(input_pipeline.DataError, match=r"^Fashion-MNIST file .* of the \.gz"):
        input_pipeline.load(None, dataset=FASHION)
    assert requested[LABELS].startswith("http://fashion-mnist.s3-website")
    _trust(monkeypatch, folder)
    data = input_pipeline.load(None, dataset=FASHION)
    assert data.train_images.shape == (30, 28, 28)
    assert data.source.startswith("tfds-downloads:")


def test_a_failed_download_names_the_data_set_and_its_variable(no_local_data, monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("Max retries exceeded")

    monkeypatch.setattr(tfds, "data_source", refuse)
    with pytest.raises(input_pipeline.DataError) as error:
        input_pipeline.load(None, dataset=FASHION)
    assert str(error.value).startswith("could not download Fashion-MNIST with tensorflow-datasets")
    assert "GUMBEL_JAX_FASHION_MNIST_DIR=DIR" in str(error.value)


@pytest.mark.slow
def test_a_fashion_mnist_run_names_its_data_set_everywhere(tmp_path, monkeypatch, capsys):
    folder = write_random_idx(tmp_path / "fashion", 40, 16)
    workdir = tmp_path / "run"
    titles = []
    save_grid, epoch_axes = outputs._save_grid, outputs.epoch_axes
    monkeypatch.setattr(
        outputs, "_save_grid", lambda *a, **k: titles.append(k["title"]) or save_grid(*a, **k)
    )
    monkeypatch.setattr(
        outputs, "epoch_axes", lambda *a, **k: titles.append(k["title"]) or epoch_axes(*a, **k)
    )
    status = cli.main(
        ["--dataset", FASHION, "--data-dir", str(folder), "--allow-unverified-data",
         "--epochs", "1", "--batch-size", "20", "--latents", "2", "--categories", "3",
         "--hidden", "8", "--eval-samples", "2", "--eval-batch-size", "16", "--no-progress",
         "--workdir", str(workdir)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.startswith(f"Fashion-MNIST from idx:{folder.resolve()}: 40 train, 16 test images")
    assert json.loads((workdir / outputs.CONFIG_FILE).read_text())["dataset"] == FASHION
    assert len(titles) == 3 and all(t.startswith("Fashion-MNIST: ") for t in titles)
    assert outputs.dataset_title(workdir) == "Fashion-MNIST"


def test_a_run_saved_before_the_setting_existed_resumes_as_mnist(tmp_path):
    saved = Config(latents=2, categories=3, hidden=(8,)).to_dict()
    del saved["dataset"]
    assert Config.with_defaults(saved)["dataset"] == "mnist"
    meta = {"config": saved, "data": "fingerprint", "epoch": 1}
    where = {"fingerprint": "fingerprint", "directory": tmp_path}
    checkpoints.check_resumable(3, meta, Config(latents=2, categories=3, hidden=(8,)), **where)
    fashion = Config(latents=2, categories=3, hidden=(8,), dataset=FASHION)
    with pytest.raises(checkpoints.CheckpointError, match="dataset: 'mnist' -> 'fashion_mnist'"):
        checkpoints.check_resumable(3, meta, fashion, **where)
    # The pictures of such a run are MNIST's too.
    (tmp_path / outputs.CONFIG_FILE).write_text(json.dumps(saved))
    assert outputs.dataset_title(tmp_path) == "MNIST"


def _plan(tmp_path, *extra):
    argv = ["--phase", "report", "--estimators", "st", "--tune-lrs", "1e-3"]
    argv += ["--tune-lr-schedules", "constant"]
    argv += ["--tune-temperatures", "1.0", "--tune-epochs", "2", "--epochs", "2", "--seeds", "0"]
    argv += ["--root", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), *extra]
    return reproduce_cli.plan_from_args(reproduce_cli.build_parser().parse_args(argv))


def test_the_campaigns_folders_include_the_data_set(tmp_path):
    runs = tmp_path / "runs"
    mnist, fashion = _plan(tmp_path), _plan(tmp_path, "--dataset", FASHION)
    (mnist_tune,), (fashion_tune,) = mnist.tune_runs, fashion.tune_runs
    assert mnist_tune.workdir == runs / "tune" / "st" / "lr0.001-t1-const"  # as before
    assert fashion_tune.workdir == runs / FASHION / "tune" / "st" / "lr0.001-t1-const"
    candidate = fashion_tune.candidate
    (final,) = fashion.final_runs({"st": campaign.Choice(candidate, (), 2)})["st"]
    assert final.workdir == runs / FASHION / "final" / "st" / "lr0.001-t1-const" / "seed0"
    assert fashion.results == tmp_path / "results" / FASHION
    assert mnist.results == tmp_path / "results"
    options = fashion.config_options
    assert fashion_tune.config(**options).dataset == final.config(**options).dataset == FASHION
    # A Fashion-MNIST run where an MNIST run is refuses to mix them.
    mnist_tune.workdir.mkdir(parents=True)
    (mnist_tune.workdir / outputs.CONFIG_FILE).write_text(mnist_tune.config(**options).to_json())
    moved = dataclasses.replace(fashion_tune, workdir=mnist_tune.workdir)
    with pytest.raises(campaign.CampaignError, match="dataset: 'mnist' there, 'fashion_mnist'"):
        campaign.status(moved)
    # A run folder whose config.json predates the setting is MNIST's.
    saved = json.loads((mnist_tune.workdir / outputs.CONFIG_FILE).read_text())
    del saved["dataset"]
    (mnist_tune.workdir / outputs.CONFIG_FILE).write_text(json.dumps(saved))
    assert campaign.status(mnist_tune) == "new"


def test_the_campaign_says_which_data_set_it_loaded(tmp_path, capsys):
    folder = write_random_idx(tmp_path / "fashion", 1_000, 10)
    argv = ["--phase", "tune", "--estimators", "st", "--dataset", FASHION]
    argv += ["--data-dir", str(folder), "--allow-unverified-data", "--compilation-cache", "none"]
    assert reproduce_cli.main([*argv, "--root", str(tmp_path / "runs")]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"Fashion-MNIST from idx:{folder.resolve()}; runs in ")
    assert out.splitlines()[0].endswith(str(tmp_path / "runs" / FASHION))
    assert "at least 20000 training images" in err


def _write_run(run: grid.CampaignRun, loss: float) -> None:
    run.workdir.mkdir(parents=True)
    config = run.config(eval_samples=4, data_dir=None, progress=False)
    (run.workdir / outputs.CONFIG_FILE).write_text(config.to_json())
    records = [
        {"epoch": 1, "seconds": 3.0, "test/neg_elbo": loss + 10},
        {"epoch": 2, "seconds": 3.0, "test/neg_elbo": loss, "test/nll_iwae": loss - 3,
         "iwae_samples": 4},
    ]  # fmt: skip
    (run.workdir / outputs.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_report_names_the_data_set_and_sets_no_mnist_number_beside_it(tmp_path, monkeypatch):
    plan = _plan(tmp_path, "--dataset", FASHION)
    _write_run(plan.tune_runs[0], 120.0)
    choices = campaign.choose(plan.tune_runs)
    final = plan.final_runs(choices)
    _write_run(final["st"][0], 110.0)
    titles = []
    epoch_axes = outputs.epoch_axes
    monkeypatch.setattr(
        outputs, "epoch_axes", lambda *a, **k: titles.append(k["title"]) or epoch_axes(*a, **k)
    )
    summary, paths = report.write_plan(plan, *campaign.execute(plan))
    text = paths["markdown"].read_text()
    assert text.startswith("## Estimator comparison: categorical VAE on Fashion-MNIST, 20x10")
    assert "2 epochs on the Fashion-MNIST training set" in text
    assert "The published numbers are for MNIST: none is set beside these Fashion-MNIST" in text
    assert "Jang 2017" not in text and "| lr 0.001, τ 1 constant | none |" in text
    entry = json.loads(paths["json"].read_text())["st"]
    assert entry["dataset"] == FASHION and entry["published"] == {}
    assert paths["json"].parent == tmp_path / "results" / FASHION
    assert [t.replace("\n", " ") for t in titles] == [
        "Test loss by epoch: categorical VAE on Fashion-MNIST, 20x10 latents"
    ]
    assert summary.results["st"]["neg_elbo_mean"] == 110.0
    # The table's title on MNIST, as before.
    assert plan.table.heading() == "categorical VAE on MNIST, 20x10 latents"
    assert report.Summary({}, {}, (), table=plan.table).heading == plan.table.heading("mnist")
