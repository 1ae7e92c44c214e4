"""The reference runs' averages (experiments.reproduce.reference_runs) and where they are quoted."""

from pathlib import Path

import numpy as np
import pytest

from experiments.reproduce import published, reference_runs

README = Path(__file__).resolve().parents[2] / "experiments" / "reproduce" / "README.md"


def _write_runs(folder: Path) -> None:
    """Two epochs per seed; the last epoch's training loss 100 + seed, test loss 90 + 2 seed."""
    for _, method, settings, _ in reference_runs.RUNS:
        for seed in reference_runs.SEEDS:
            lines = np.zeros((2, 8))
            lines[-1, reference_runs.TRAIN_COLUMN] = 100.0 + seed
            lines[-1, reference_runs.TEST_COLUMN] = 90.0 + 2 * seed
            name = f"results_seed{seed}_{method}_cat10_lat30_optRAdam_{settings}.txt"
            np.savetxt(folder / name, lines, fmt="%.6f", delimiter=",")


def test_the_table_averages_the_last_epoch_over_the_seeds(tmp_path):
    _write_runs(tmp_path)
    rows = reference_runs.table(tmp_path).splitlines()[2:]
    assert len(rows) == len(reference_runs.RUNS)
    # Seeds 0..9: means 99 and 104.5, sample standard deviations 2 * 3.03 and 3.03.
    assert rows[0] == "| ST Gumbel-Softmax | lr 5e-4, τ 0.5 | 99.00 ± 6.06 | 104.50 ± 3.03 |"


def test_a_missing_file_is_one_line_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        reference_runs.main([str(tmp_path)])
    assert exit_.value.code == 2
    assert "results_seed0_gumbel_cat10_lat30_optRAdam_lr0.0005_temp0.5.txt is missing" in (
        capsys.readouterr().err
    )


def test_the_numbers_set_beside_the_tutorial_table_are_the_readmes():
    text = README.read_text()
    for entries in published.PAPER_RESULTS["tutorial"].values():
        for _, value in entries:
            assert f"| {value:.2f} ± " in text
