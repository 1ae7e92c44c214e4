"""The one-file tutorial, ``experiments/tutorial.py``: its output line, its bound and its picture.

The slow test trains one epoch on the real MNIST (from ``$GUMBEL_JAX_MNIST_DIR``; skipped without
it) and checks the test negative ELBO of the discrete model lies between 100 and 200 nats: a
decoder that ignores the latents reaches about 206 at best, and ST training reaches about 157 in
one epoch. The fast tests use a small synthetic data set or a missing folder.
"""

import os
import re

import numpy as np
import pytest
from PIL import Image

from experiments import tutorial
from experiments.mnist import input_pipeline

LINE = re.compile(
    r"epoch (\d+)/(\d+)  temperature (\d+\.\d\d)  train loss (-?\d+\.\d\d)  "
    r"test negative ELBO (-?\d+\.\d\d)"
)


def _synthetic_mnist(n_train: int = 200, n_test: int = 20) -> input_pipeline.ImageData:
    """Images with their top or bottom half white, as uint8 ``[n, 28, 28]``."""
    rng = np.random.default_rng(0)

    def images(n):
        rows = np.arange(28)[None, :, None]
        top = rng.integers(0, 2, (n, 1, 1)).astype(bool)
        white = np.where(top, rows < 14, rows >= 14)  # [n, 28, 1]
        grey = np.broadcast_to(np.where(white, 0.95, 0.05), (n, 28, 28))
        return (grey * 255).astype(np.uint8)  # binarized per step: the noise

    labels = lambda n: np.zeros(n, np.uint8)
    return input_pipeline.ImageData(
        images(n_train), labels(n_train), images(n_test), labels(n_test), "synthetic"
    )


def _lines(text: str) -> list[re.Match]:
    matches = [LINE.fullmatch(line) for line in text.splitlines() if line.startswith("epoch ")]
    assert all(matches), text
    return matches


@pytest.mark.slow
def test_trains_on_a_small_synthetic_set(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(tutorial.input_pipeline, "load", lambda data_dir: _synthetic_mnist())
    assert tutorial.main(["--epochs", "8", "--hard", "--out", str(tmp_path)]) == 0
    lines = _lines(capsys.readouterr().out)
    assert [(m[1], m[2]) for m in lines] == [(str(e), "8") for e in range(1, 9)]
    train = [float(m[4]) for m in lines]
    test = [float(m[5]) for m in lines]
    assert np.isfinite(train).all() and np.isfinite(test).all()
    assert train[-1] < train[0] - 10, train  # 16 Adam steps from about 543 nats
    assert test[-1] < test[0], test
    assert all(float(m[3]) == 1.0 for m in lines)  # 16 steps: the first 100 are at temperature 1
    with Image.open(tmp_path / "reconstructions.png") as image:
        assert image.size[0] > image.size[1]


def test_a_missing_data_folder_exits_2_with_one_line(capsys, tmp_path):
    status = tutorial.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: MNIST data folder") and captured.err.count("\n") == 1
    assert not (tmp_path / "reconstructions.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get(input_pipeline.DATA_DIR_ENV),
    reason=f"set {input_pipeline.DATA_DIR_ENV} to a folder of the MNIST IDX files",
)
def test_one_epoch_on_mnist(capsys, tmp_path):
    assert tutorial.main(["--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (line,) = _lines(out)
    assert (line[1], line[2]) == ("1", "1")
    assert 0.5 <= float(line[3]) <= 1.0
    assert 100.0 < float(line[5]) < 200.0, out
    with Image.open(tmp_path / "reconstructions.png") as image:
        assert np.asarray(image.convert("L")).std() > 10  # not a blank picture
