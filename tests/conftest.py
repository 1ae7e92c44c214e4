"""Shared fixtures (the folder of the real MNIST IDX files) and the fast tier's rule.

Every test that uses the real MNIST data (the ``mnist_dir`` fixture, directly or through another
fixture) is marked ``slow``, as are the doctests (everything collected outside ``tests/``: each
example compiles its own programs) and the tests that mark themselves:
``python -m pytest -m "not slow"`` is the quick loop, ``python -m pytest`` runs everything.

``slow`` means: more than about a second on 2 CPU cores. Mark ``@pytest.mark.slow`` (in an
absltest class: the decorator nearest ``def``, or on the class) every test that trains, spawns a
process, runs a campaign, draws many samples or compiles something (a first ``jax.jit`` costs
about that much); the quick loop keeps argument checks, registries, documents and small numerics.
"""

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


def pytest_collection_modifyitems(items):
    tests = Path(__file__).parent
    for item in items:
        uses_mnist = "mnist_dir" in getattr(item, "fixturenames", ())
        if uses_mnist or tests not in item.path.parents:
            item.add_marker(pytest.mark.slow)
