"""Micro-benchmarks of the gumbel_jax samplers and estimators, in microseconds per call.

The reference point is what any Gumbel-Softmax must do: draw one Gumbel variate per logit and take
a softmax. `baseline/noise+softmax` times exactly that (forward and backward); the hard sampler's
forward+backward is reported as a ratio to it (target: within 1.5x).

Usage (``benchmarks.train_epoch`` prints the same table)::

    python -m benchmarks.samplers [--repeats 50] [--only gumbel-rao]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.timing import time_call
from gumbel_jax import estimators, sample

SHAPE = (4096, 30, 10)


def _loss_of(sampler):
    """A scalar loss whose gradient runs the sampler's backward pass."""
    weights = jnp.linspace(-1.0, 1.0, SHAPE[-1])

    def loss(key, logits, temperature):
        return jnp.sum(sampler(key, logits, temperature) * weights)

    return loss


def _baseline(key, logits, temperature):
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    return jax.nn.softmax((logits + noise) / temperature, axis=-1)


def _hard(key, logits, temperature):
    return sample.gumbel_softmax(key, logits, temperature, hard=True)


def sampler_benchmarks(repeats: int = 50, only: str | None = None) -> list[dict]:
    """Times forward and forward+backward of each sampler on logits of shape ``SHAPE``.

    Args:
      repeats: timed calls of each.
      only: time only the baseline and the samplers whose name contains this.

    Returns:
      One row per measurement: ``{"name", "pass", "us_min", "us_median"}``.
    """
    key = jax.random.key(0)
    logits = jax.random.normal(jax.random.key(1), SHAPE, jnp.float32)
    temperature = jnp.float32(0.7)
    candidates = {
        "baseline/noise+softmax": _baseline,
        "sample.gumbel_softmax(hard=True)": _hard,
    }
    for name in estimators.NAMES:
        candidates[f"estimators.get({name!r})"] = estimators.get(name)
    rows = []
    for name, sampler in candidates.items():
        if only is not None and not name.startswith("baseline") and only not in name:
            continue
        passes = {
            "forward": jax.jit(sampler),
            "forward+backward": jax.jit(jax.grad(_loss_of(sampler), argnums=1)),
        }
        for pass_name, fn in passes.items():
            stats = time_call(fn, key, logits, temperature, repeats=repeats)
            rows.append(
                {
                    "name": name,
                    "pass": pass_name,
                    "us_min": stats["min_s"] * 1e6,
                    "us_median": stats["median_s"] * 1e6,
                }
            )
    return rows


def print_table(rows: list[dict]) -> None:
    """Prints the rows with each one's ratio to the baseline of its pass (added to the rows)."""
    baseline = {r["pass"]: r["us_median"] for r in rows if r["name"].startswith("baseline")}
    print(f"samplers on logits {list(SHAPE)}, microseconds per call (median, min)")
    print(f"  {'sampler':42s} {'pass':17s} {'median':>9s} {'min':>9s} {'x baseline':>10s}")
    for row in rows:
        row["ratio_to_baseline"] = row["us_median"] / baseline[row["pass"]]
        print(
            f"  {row['name']:42s} {row['pass']:17s} {row['us_median']:9.0f} {row['us_min']:9.0f}"
            f" {row['ratio_to_baseline']:10.2f}"
        )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.samplers", description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--only", default=None, help="e.g. gumbel-rao (the baseline always runs)")
    args = parser.parse_args(argv)
    rows = sampler_benchmarks(repeats=args.repeats, only=args.only)
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
