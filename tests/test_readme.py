"""The README's Python examples run as written, and its results are the reports' own."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no ```python block"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_results_tables_in_the_readme_are_those_the_reports_wrote():
    readme = README.read_text()
    for report in ("results/reproduction.md", "results/cosine/reproduction.md"):
        lines = (README.parent / report).read_text().splitlines()
        rows = [line for line in lines if line.startswith(("|", "Best:", "**Incomplete"))]
        assert len(rows) > 5, report
        for row in rows:
            assert row in readme, f"{report}: {row}"
