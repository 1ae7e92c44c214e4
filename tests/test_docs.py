"""The API reference builds from the docstrings, with a page per public module naming its API.

The same build as the README's ``pdoc gumbel_jax -o docs/api``, into a temporary folder.
"""

import subprocess
import sys

import pytest

import gumbel_jax

pytestmark = pytest.mark.slow  # runs pdoc in a subprocess


@pytest.fixture(scope="module")
def api_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    subprocess.run(
        [sys.executable, "-m", "pdoc", "gumbel_jax", "-o", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


def test_the_package_page_exists(api_reference):
    page = api_reference / "gumbel_jax.html"
    assert page.exists()
    for module in gumbel_jax.__all__:
        assert f'href="gumbel_jax/{module}.html"' in page.read_text(), module


@pytest.mark.parametrize("module", gumbel_jax.__all__)
def test_every_public_module_has_a_page_with_its_public_names(api_reference, module):
    page = api_reference / "gumbel_jax" / f"{module}.html"
    assert page.exists(), page
    html = page.read_text()
    public = getattr(gumbel_jax, module).__all__
    assert public
    for name in public:
        # pdoc gives every documented name an anchor of its own.
        assert f'id="{name}"' in html, f"gumbel_jax.{module}.{name} is not in the API reference"


def test_private_modules_have_no_page(api_reference):
    assert not list(api_reference.rglob("_*.html"))
