"""Micro-benchmarks of the gumbel_jax samplers and estimators, in microseconds per call.

Usage::

    python -m benchmarks.samplers [--repeats 50] [--only relaxed_top_k]

Each sampler is compared with a baseline: the work any implementation of it must do, written
plainly. For the Gumbel-Softmax samplers and the estimators that is one Gumbel variate per logit
and a softmax (`baseline/noise+softmax`); for the binary samplers, one logistic variate per
log-odds and a sigmoid (plus the stretch and the clip for the hard concrete); for the relaxed
top-k, the Gumbel noise and Xie & Ermon's loop of `k` softmaxes with `log(max(1 - a, tiny))`
down-weighting. Every row reports its ratio to its baseline, forward and forward+backward.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks.timing import time_call
from gumbel_jax import estimators, sample

SHAPE = (4096, 30, 10)
TOP_K = 3  # the subset size of the relaxed top-k rows
LOW, HIGH = -0.1, 1.1  # the hard concrete's stretched interval (the paper's)


def _loss_of(sampler):
    """A scalar loss whose gradient runs the sampler's backward pass."""
    weights = jnp.linspace(-1.0, 1.0, SHAPE[-1])

    def loss(key, logits, temperature):
        return jnp.sum(sampler(key, logits, temperature) * weights)

    return loss


def _baseline(key, logits, temperature):
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    return jax.nn.softmax((logits + noise) / temperature, axis=-1)


def _baseline_sigmoid(key, logits, temperature):
    noise = jax.random.logistic(key, logits.shape, logits.dtype)
    return jax.nn.sigmoid((logits + noise) / temperature)


def _baseline_stretch_clip(key, logits, temperature):
    soft = _baseline_sigmoid(key, logits, temperature)
    return jnp.clip(LOW + (HIGH - LOW) * soft, 0.0, 1.0)


def _baseline_top_k(key, logits, temperature):
    # Xie & Ermon's reference loop (github.com/ermongroup/subsets), eps-clamped.
    alpha = logits + jax.random.gumbel(key, logits.shape, logits.dtype)
    total = jnp.zeros_like(logits)
    a = jnp.zeros_like(logits)
    for _ in range(TOP_K):
        alpha = alpha + jnp.log(jnp.maximum(1.0 - a, jnp.finfo(logits.dtype).tiny))
        a = jax.nn.softmax(alpha / temperature, axis=-1)
        total = total + a
    return total


BASELINES = {
    "baseline/noise+softmax": _baseline,
    "baseline/logistic noise+sigmoid": _baseline_sigmoid,
    "baseline/logistic noise+sigmoid+clip": _baseline_stretch_clip,
    f"baseline/noise+{TOP_K} softmaxes (Xie-Ermon)": _baseline_top_k,
}


def _candidates() -> dict[str, tuple]:
    """``name -> (sampler, baseline name)``, baselines first (each its own baseline)."""
    top_k = f"baseline/noise+{TOP_K} softmaxes (Xie-Ermon)"
    candidates = {name: (fn, name) for name, fn in BASELINES.items()}
    candidates["sample.gumbel_softmax(hard=True)"] = (
        lambda k, x, t: sample.gumbel_softmax(k, x, t, hard=True),
        "baseline/noise+softmax",
    )
    for name in estimators.names(kind="sample"):  # defaults bound; the temperature if it takes one
        candidates[f"estimators.get({name!r})"] = (
            estimators.spec(name).bind(),
            "baseline/noise+softmax",
        )
    for hard in (False, True):
        candidates[f"sample.relaxed_bernoulli(hard={hard})"] = (
            lambda k, x, t, hard=hard: sample.relaxed_bernoulli(k, x, t, hard=hard),
            "baseline/logistic noise+sigmoid",
        )
    candidates["sample.hard_concrete"] = (
        lambda k, x, t: sample.hard_concrete(k, x, t, low=LOW, high=HIGH),
        "baseline/logistic noise+sigmoid+clip",
    )
    for hard in (False, True):
        candidates[f"sample.relaxed_top_k(k={TOP_K}, hard={hard})"] = (
            lambda k, x, t, hard=hard: sample.relaxed_top_k(k, x, TOP_K, t, hard=hard),
            top_k,
        )
    return candidates


def sampler_benchmarks(repeats: int = 50, only: str = "") -> list[dict]:
    """Times forward and forward+backward of each sampler on logits of shape ``SHAPE``.

    Args:
      repeats: timed calls per measurement.
      only: if given, time only the samplers whose name contains it (and their baselines).

    Returns:
      One row per measurement: ``{"name", "pass", "us_min", "us_median", "baseline",
      "ratio_to_baseline"}``, the ratio of medians to the row's baseline in the same pass.
    """
    key = jax.random.key(0)
    logits = jax.random.normal(jax.random.key(1), SHAPE, jnp.float32)
    temperature = jnp.float32(0.7)
    candidates = _candidates()
    chosen = [name for name in candidates if only in name]
    chosen = list(dict.fromkeys([candidates[name][1] for name in chosen] + chosen))
    rows = []
    for name in chosen:
        sampler, baseline = candidates[name]
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
                    "baseline": baseline,
                }
            )
    medians = {(row["name"], row["pass"]): row["us_median"] for row in rows}
    for row in rows:
        row["ratio_to_baseline"] = row["us_median"] / medians[row["baseline"], row["pass"]]
    return rows


def print_table(rows: list[dict]) -> None:
    """Prints the rows of ``sampler_benchmarks``: median, min and the ratio to the baseline."""
    print(f"samplers on logits {list(SHAPE)}, microseconds per call (median, min)")
    print(f"  {'sampler':46s} {'pass':17s} {'median':>9s} {'min':>9s} {'x baseline':>10s}")
    for row in rows:
        print(
            f"  {row['name']:46s} {row['pass']:17s} {row['us_median']:9.0f} {row['us_min']:9.0f}"
            f" {row['ratio_to_baseline']:10.2f}"
        )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.samplers", description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--only", default="", help="time only samplers whose name contains it")
    args = parser.parse_args(argv)
    rows = sampler_benchmarks(repeats=args.repeats, only=args.only)
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
