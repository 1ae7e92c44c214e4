"""The reference runs set beside the tutorial protocol's table, averaged from their result files.

The ReinMax-Rao/CV authors (Wang and Bui 2026, https://arxiv.org/abs/2603.08257) released the
per-epoch results of their runs of the tutorial's model with the ReinMax paper's settings
(github.com/danielwang0452/DiscreteNumericalMethodsASC, commit 62697d1, ``results/``): one file per
method and seed, ``results_seed{seed}_{method}_cat10_lat30_optRAdam_lr{lr}_temp{t}.txt``, one line
per epoch, comma-separated; column 0 is the training loss averaged over the epoch, column 3 the
test loss (one hard sample and the analytic KL). This script averages the last epoch over the
seeds and prints the table that ``experiments/reproduce/README.md`` and
:data:`experiments.reproduce.published.PAPER_RESULTS` quote::

    git clone https://github.com/danielwang0452/DiscreteNumericalMethodsASC
    git -C DiscreteNumericalMethodsASC checkout 62697d1
    python -m experiments.reproduce.reference_runs DiscreteNumericalMethodsASC/results \
        > results/tutorial/reference_runs.md
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# (title, method, settings in the file names, settings in words), as the table lists them.
RUNS = (
    ("ST Gumbel-Softmax", "gumbel", "lr0.0005_temp0.5", "lr 5e-4, τ 0.5"),
    ("GST-1.0", "gst-1.0", "lr0.0005_temp0.5", "lr 5e-4, τ 0.5"),
    ("Gumbel-Rao, k = 100", "rao_gumbel", "lr0.0005_temp1.0", "lr 5e-4, τ 1.0"),
    ("ReinMax", "reinmax", "lr0.0005_temp1.3", "lr 5e-4, τ 1.3"),
    ("ReinMax-Rao, k = 100", "reinmax_v3", "lr0.0005_temp1.0", "lr 5e-4, τ 1.0"),
    ("ST without noise", "st", "lr0.007_temp1.4", "lr 0.007, τ 1.4"),
)
SEEDS = range(10)
TRAIN_COLUMN, TEST_COLUMN = 0, 3


def last_epochs(folder: Path, method: str, settings: str) -> np.ndarray:
    """``[seeds, columns]``: the last line of each seed's file.

    Raises:
      FileNotFoundError: a seed's file is missing (one line, naming it).
    """
    rows = []
    for seed in SEEDS:
        path = folder / f"results_seed{seed}_{method}_cat10_lat30_optRAdam_{settings}.txt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: pass the results/ folder of their commit 62697d1"
            )
        rows.append(np.atleast_2d(np.loadtxt(path, delimiter=","))[-1])
    return np.stack(rows)


def table(folder: Path) -> str:
    """The markdown table of the runs in ``folder``: mean ± sample standard deviation."""

    def text(values: np.ndarray) -> str:
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    lines = [
        "| Their run | Settings | Test neg. ELBO | Training loss, last epoch |",
        "|---|---|---|---|",
    ]
    for title, method, settings, words in RUNS:
        last = last_epochs(folder, method, settings)
        lines.append(
            f"| {title} | {words} | {text(last[:, TEST_COLUMN])} | {text(last[:, TRAIN_COLUMN])} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.reproduce.reference_runs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("results", type=Path, help="the results/ folder of their repository")
    args = parser.parse_args(argv)
    try:
        print(table(args.results))
    except FileNotFoundError as error:
        parser.exit(2, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
