"""Benchmark: the steady-state training epoch of each estimator, as a ratio to straight-through's.

Usage::

    python -m benchmarks.estimator_epochs [--variants st gumbel-rao gumbel-rao[num_samples=100]]
        [--repeats 2] [--out results/estimator_epochs.json]

Each variant (a registered estimator's name or a plug-in ``MODULE:ATTRIBUTE``, with options as
``NAME[OPTION=VALUE,...]``: ``gumbel-rao[num_samples=100]``) trains the default model (with the
temperature floor of its spec, if it has one) for ``1 + repeats`` epochs through
``experiments.mnist.train.fit``, timed by
``benchmarks.epochs.epoch_benchmark`` (synthetic images, first epoch excluded); the table gives
the median steady epoch and its ratio to the first variant's, all measured in one process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

from benchmarks.epochs import (
    ESTIMATOR_SYNTAX,
    epoch_benchmark,
    estimator_config,
    estimator_flag,
    estimator_help,
)
from experiments.mnist.config import Config
from experiments.mnist.workdir import file_problem

DEFAULT_VARIANTS = ("st", "gumbel-rao", "gumbel-rao[num_samples=100]")


def variant_config(variant: str) -> Config:
    """``"st"`` -> ``Config(estimator="st")``; ``"gumbel-rao[num_samples=100]"`` sets the option
    (``benchmarks.epochs.estimator_config``)."""
    return estimator_config(variant)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.estimator_epochs", description=__doc__
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        type=estimator_flag,
        default=list(DEFAULT_VARIANTS),
        metavar=ESTIMATOR_SYNTAX,
        help=estimator_help("estimators to time, the first one the reference"),
    )
    parser.add_argument("--repeats", type=int, default=2, help="steady-state epochs per variant")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.out and (problem := file_problem(args.out, writable=True)) is not None:
        parser.error(f"--out {args.out} {problem}: pass a file you can write")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}", flush=True)
    rows = {}
    for variant in args.variants:
        result = epoch_benchmark(variant_config(variant), repeats=args.repeats)
        rows[variant] = {k: result[k] for k in ("epoch_seconds", "steady_median_s")}
        print(f"  {variant:18s} {result['steady_median_s']:7.2f} s", flush=True)
    reference = rows[args.variants[0]]["steady_median_s"]
    print(f"\nsteady-state epoch, median of {args.repeats}, and ratio to {args.variants[0]}")
    for variant, row in rows.items():
        row["ratio"] = row["steady_median_s"] / reference
        print(f"  {variant:18s} {row['steady_median_s']:7.2f} s  {row['ratio']:6.2f}x")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"repeats": args.repeats, "variants": rows}, indent=2) + "\n")
        print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
