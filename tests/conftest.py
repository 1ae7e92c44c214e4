"""Shared fixtures: the folder of the real MNIST IDX files."""

import os
from pathlib import Path

import pytest

MNIST_DIR_ENV = "GUMBEL_JAX_MNIST_DIR"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder of the four official MNIST IDX files, from ``$GUMBEL_JAX_MNIST_DIR``.

    Fails (rather than skips) when it is not set or not a folder: the real-data tests must run.
    """
    value = os.environ.get(MNIST_DIR_ENV)
    if not value:
        pytest.fail(
            f"{MNIST_DIR_ENV} is not set: set it to the folder with the four MNIST IDX files "
            "(.ci/run sets it to ../shared/mnist)",
            pytrace=False,
        )
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"{MNIST_DIR_ENV}={value!r} is not a folder", pytrace=False)
    return path
