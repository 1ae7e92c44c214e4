"""The committed comparison tables are the reports of the committed runs.

A campaign keeps its runs under ``results/`` and the records of the finished ones (``config.json``,
``metrics.jsonl``, ``reproduce_device.json``) are committed beside the table they make. Rebuilt
from those records (``--phase report``), each such table must be the committed one, number for
number: a table edited by hand, or runs committed without their report, fail here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.reproduce import cli, grid

ROOT = Path(__file__).resolve().parents[1]
# How the command line names each table.
TABLE_FLAGS = {
    "categorical": [],
    "bernoulli": ["--latent-type", "bernoulli"],
    "tutorial": ["--protocol", "tutorial"],
}
# The tables whose committed report was made from committed runs (the others' runs predate the
# records kept in git).
FROM_COMMITTED_RUNS = ("tutorial", "bernoulli", "categorical")


def test_every_table_has_its_command_line_flags():
    assert set(TABLE_FLAGS) == set(grid.TABLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", FROM_COMMITTED_RUNS)
def test_the_committed_table_is_the_report_of_the_committed_runs(name, tmp_path, capsys):
    table = grid.TABLES[name]
    committed = ROOT / table.results
    argv = [*TABLE_FLAGS[name], "--phase", "report", "--root", str(ROOT / table.root)]
    status = cli.main([*argv, "--results", str(tmp_path), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    rebuilt = json.loads((tmp_path / "reproduction.json").read_text())
    assert rebuilt == json.loads((committed / "reproduction.json").read_text())
    markdown = (tmp_path / "reproduction.md").read_text()
    assert markdown == (committed / "reproduction.md").read_text()
