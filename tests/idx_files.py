"""IDX folders for tests: random digits (no real MNIST needed), and the real MNIST folder."""

import gzip
from pathlib import Path

import numpy as np

MNIST_DIR_ENV = "GUMBEL_JAX_MNIST_DIR"


def write_random_idx(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random uint8 digits in the IDX layout (unofficial data: needs --allow-unverified-data)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        header = b"".join(d.to_bytes(4, "big") for d in (0x803, *images.shape))
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        header = b"".join(d.to_bytes(4, "big") for d in (0x801, n))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    return folder


def write_idx_folder(folder: Path, data) -> Path:
    """Writes an :class:`~experiments.mnist.input_pipeline.ImageData` as the four gzipped IDX files.

    The official MNIST arrays give the official files (their SHA-256 after gunzip matches).
    """
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": (0x803, data.train_images),
        "train-labels-idx1-ubyte": (0x801, data.train_labels),
        "t10k-images-idx3-ubyte": (0x803, data.test_images),
        "t10k-labels-idx1-ubyte": (0x801, data.test_labels),
    }
    for name, (magic, array) in parts.items():
        array = np.ascontiguousarray(array, np.uint8)
        header = b"".join(d.to_bytes(4, "big") for d in (magic, *array.shape))
        (folder / f"{name}.gz").write_bytes(gzip.compress(header + array.tobytes(), mtime=0))
    return folder


def mnist_folder(value: str | None, cache: Path) -> Path:
    """The tests' folder of the four official MNIST IDX files.

    Args:
      value: ``$GUMBEL_JAX_MNIST_DIR``: a folder, resolved here to an absolute path (so that a
        relative one, such as ``../shared/mnist``, still works from another folder); or ``None``
        to get MNIST as the experiment does (tensorflow-datasets, downloaded once and cached) and
        write it into ``cache``.

    Fails the test (one line, no traceback) when the folder is missing or the download fails.
    """
    import pytest

    from experiments.mnist import input_pipeline

    if value:
        path = Path(value).expanduser().resolve()
        if not path.is_dir():
            pytest.fail(f"{MNIST_DIR_ENV}={value!r} is not a folder", pytrace=False)
        return path
    try:
        return write_idx_folder(cache, input_pipeline.load(None))
    except input_pipeline.DataError:
        pass
    pytest.fail(
        f"{MNIST_DIR_ENV} is not set and MNIST could not be downloaded with tensorflow-datasets: "
        f"set {MNIST_DIR_ENV} to a folder with the four MNIST IDX files (CI uses ../shared/mnist)",
        pytrace=False,
    )
