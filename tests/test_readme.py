"""The documents agree with the code and the results: examples run, tables and links are current.

The documents: the front page ``README.md``, the library guide ``docs/library.md``, and one
``README.md`` per folder (the experiment, the comparison, the benchmarks).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REPRODUCE = ROOT / "experiments" / "reproduce" / "README.md"
MNIST = ROOT / "experiments" / "mnist" / "README.md"
DOCUMENTS = [
    README,
    ROOT / "docs" / "library.md",
    MNIST,
    REPRODUCE,
    ROOT / "benchmarks" / "README.md",
    ROOT / "CHANGELOG.md",
]
REPORTS = [
    ROOT / "results" / "reproduction.md",
    ROOT / "results" / "cosine" / "reproduction.md",
    ROOT / "results" / "binary" / "reproduction.md",
    ROOT / "results" / "tutorial" / "reproduction.md",
    # The reference runs set beside the tutorial protocol (experiments.reproduce.reference_runs).
    ROOT / "results" / "tutorial" / "reference_runs.md",
]
# The line .ci/run looks for in README.md.
TEST_COMMAND = (
    'pip install -e ".[test]" && ruff check . && ruff format --check . '
    "&& python -m pytest -n auto --maxprocesses 4 --durations=15"
)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
@pytest.mark.slow
def test_python_examples_run(document):
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.DOTALL)
    for block in blocks:
        exec(compile(block, str(document), "exec"), {})


def test_the_front_page_and_the_library_guide_have_examples():
    for document in (README, ROOT / "docs" / "library.md"):
        assert "```python\n" in document.read_text(), _name(document)


def test_the_readme_holds_the_test_command_ci_runs():
    assert TEST_COMMAND in README.read_text()
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_results_tables_are_those_the_reports_wrote():
    document = REPRODUCE.read_text()
    for report in REPORTS:
        lines = report.read_text().splitlines()
        prefixes = ("|", "Best:", "**Incomplete", "**Still running", "**Failed")
        rows = [line for line in lines if line.startswith(prefixes)]
        assert len(rows) > 5, report
        for row in rows:
            assert row in document, f"{_name(report)}: {row}"


@pytest.mark.parametrize("document", [README, REPRODUCE], ids=_name)
def test_quoted_results_are_the_reports_own(document):
    """Every ``mean ± std`` a document quotes is one of the reports' numbers."""
    reports = "\n".join(report.read_text() for report in REPORTS)
    quoted = re.findall(r"\d+\.\d+ ± \d+\.\d+", document.read_text())
    assert quoted
    for number in quoted:
        assert number in reports, f"{_name(document)} quotes {number}, which no report has"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE):
        text = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", ""))
        anchors.add(text.replace(" ", "-"))
    return anchors


def _without_code(markdown: str) -> str:
    return re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_relative_links_and_images_resolve(document):
    text = _without_code(document.read_text())
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (document.parent / path).resolve() if path else document
        assert target.exists(), f"{_name(document)}: {link} does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target.read_text()), f"{_name(document)}: {link}"


def test_the_experiment_manual_names_every_flag():
    from experiments.mnist import cli

    flags = re.findall(r"(--[a-z][a-z-]+)", cli.build_parser().format_help())
    manual = MNIST.read_text()
    for flag in sorted(set(flags) - {"--help"}):
        assert f"`{flag}" in manual, f"experiments/mnist/README.md does not mention {flag}"


def test_every_registered_estimator_is_listed_with_its_paper():
    from gumbel_jax import estimators

    guide = (ROOT / "docs" / "library.md").read_text()
    front = README.read_text()
    for name in estimators.names():
        spec = estimators.spec(name)
        paper = re.findall(r"https://[^\s;,)]+", spec.reference)[0]
        row = next((line for line in guide.splitlines() if line.startswith(f"| `{name}` |")), "")
        assert paper in row, f"docs/library.md's estimator table lacks {name!r} with {paper}"
        assert f'(`"{name}"`' in front, f"README.md's API table lacks {name!r}"
