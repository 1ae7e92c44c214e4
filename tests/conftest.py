"""Shared fixtures: the folder of the real MNIST IDX files."""

import os
from pathlib import Path

import pytest
from idx_files import MNIST_DIR_ENV, mnist_folder


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """The folder of the four official MNIST IDX files, as an absolute path.

    From ``$GUMBEL_JAX_MNIST_DIR`` (CI sets it to ``../shared/mnist``); without it, MNIST is
    downloaded as the experiment does (tensorflow-datasets, cached) and written into a temporary
    folder. Fails (rather than skips) when neither works: the real-data tests must run.
    """
    return mnist_folder(os.environ.get(MNIST_DIR_ENV), tmp_path_factory.mktemp("mnist"))
