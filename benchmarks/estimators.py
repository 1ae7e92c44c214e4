"""Benchmark: every gradient estimator of the library against exact gradients on toy problems.

Usage::

    python -m benchmarks.estimators [--quick] [--num-draws 20000] [--out results/estimators.json]

Problems (small enough that ``diagnostics.exact_gradient`` enumerates them):

- ``binary-0.49`` and ``binary-0.499``: the quadratic toy of the REBAR and DisARM papers,
  ``f(b) = sum_d (b_d - t)^2`` on 4 Bernoulli latents with logits ``linspace(-1, 1, 4)``; the
  exact gradient ``sigmoid'(logits) (1 - 2t)`` is tiny next to ``f``'s values, so an estimator
  must resolve a small difference.
- ``categorical-poly``: the polynomial programming problem of the ReinMax paper (its ``p = 2``
  case): 4 categorical latents of 4 categories, category ``k`` standing for the value
  ``k / 3``, ``f(z) = mean_l (value(z_l) - 0.45)^2``, logits drawn from a standard normal.

The sample estimators (relaxed, ST, Gumbel-Rao, ReinMax) act on the binary problems through the
two-category form: logits ``[0, l]`` stacked on a new last axis (``softmax([0, l])[1] =
sigmoid(l)``) and ``b = z[..., 1]``; the gradient with respect to ``l`` flows through the stack.
The score-function estimators (REINFORCE-LOO, DisARM) take ``f`` itself.

For each estimator and temperature (ReinMax only at temperatures >= 1, as its authors
recommend), ``diagnostics.gradient_stats`` draws ``--num-draws`` gradients and reports the bias
(L2), the variance (trace), the MSE and the cosine to the exact gradient, and the noise floor
``sqrt(variance / num_draws)``: an unbiased estimator's measured bias is of that order. The cost
per gradient is the median time of a jitted ``vmap`` over 1000 keys (``benchmarks.timing``)
divided by 1000, in microseconds, measured once per estimator (it does not depend on the
temperature).

Writes the table to stdout, the figures to ``--out`` (JSON) and a figure of bias and variance
against temperature next to it (``.png``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from benchmarks.timing import time_call
from gumbel_jax import diagnostics, estimators

TEMPERATURES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
QUICK_TEMPERATURES = (0.5, 1.0, 2.0)
GUMBEL_RAO_SAMPLES = (10, 100)
REINFORCE_SAMPLES = (2, 4, 16)
TIMING_BATCH = 1000

Objective = Callable[[jax.Array], jax.Array]  # one sample of the logits' shape -> scalar


class Problem:
    """A toy problem: logits, the objective of one sample, and the exact gradient."""

    def __init__(self, name: str, logits: jax.Array, f: Objective, distribution: str):
        self.name, self.logits, self.f, self.distribution = name, logits, f, distribution
        with jax.enable_x64(True):
            exact = diagnostics.exact_gradient(
                f, jnp.asarray(logits, jnp.float64), distribution=distribution
            )
        self.exact = np.asarray(exact, np.float64)


def problems() -> list[Problem]:
    binary_logits = jnp.linspace(-1.0, 1.0, 4)
    values = jnp.linspace(0.0, 1.0, 4)
    return [
        *[
            Problem(
                f"binary-{t}",
                binary_logits,
                lambda b, t=t: jnp.sum((b - t) ** 2),
                "bernoulli",
            )
            for t in (0.49, 0.499)
        ],
        Problem(
            "categorical-poly",
            jax.random.normal(jax.random.key(0), (4, 4)),
            lambda z: jnp.mean((z @ values - 0.45) ** 2),
            "categorical",
        ),
    ]


def sample_estimators() -> dict[str, tuple[Callable, float]]:
    """Name -> (estimator ``fn(key, logits, temperature)``, lowest temperature it accepts)."""
    table = {
        "relaxed": (estimators.gumbel_softmax, 0.0),
        "st": (estimators.straight_through, 0.0),
    }
    for k in GUMBEL_RAO_SAMPLES:
        table[f"gumbel-rao k={k}"] = (
            lambda key, x, t, k=k: estimators.gumbel_rao(key, x, t, num_samples=k),
            0.0,
        )
    table["reinmax"] = (estimators.reinmax, 1.0)
    return table


def sample_gradient(problem: Problem, estimator: Callable) -> Callable:
    """``(temperature, key) -> gradient`` of ``f(estimator sample)`` w.r.t. the logits."""

    def loss(logits, temperature, key):
        if problem.distribution == "bernoulli":  # the two-category form [0, l]
            pair = jnp.stack([jnp.zeros_like(logits), logits], axis=-1)
            return problem.f(estimator(key, pair, temperature)[..., 1])
        return problem.f(estimator(key, logits, temperature))

    return lambda temperature, key: jax.grad(loss)(problem.logits, temperature, key)


def surrogate_estimators(problem: Problem) -> dict[str, Callable]:
    """Name -> ``key -> gradient`` for the score-function estimators that fit the problem."""
    f_batch = jax.vmap(problem.f)
    table = {}
    for s in REINFORCE_SAMPLES:

        def loss(logits, key, s=s):
            return estimators.reinforce_loo(
                key, logits, f_batch, num_samples=s, distribution=problem.distribution
            )

        table[f"reinforce-loo S={s}"] = loss
    if problem.distribution == "bernoulli":
        table["disarm"] = lambda logits, key: estimators.disarm(key, logits, f_batch)
    return {
        name: (lambda key, loss=loss: jax.grad(loss)(problem.logits, key))
        for name, loss in table.items()
    }


@jax.jit
def _gradients(estimate: Partial, keys: jax.Array) -> jax.Array:
    return jax.vmap(estimate)(keys)


def microseconds_per_gradient(estimate: Partial, repeats: int) -> float:
    """The median time of ``TIMING_BATCH`` gradients (jitted ``vmap``) over their number."""
    keys = jax.random.split(jax.random.key(99), TIMING_BATCH)
    stats = time_call(_gradients, estimate, keys, repeats=repeats)
    return stats["median_s"] / TIMING_BATCH * 1e6


def _row(problem, name, temperature, stats, cost) -> dict:
    return {
        "problem": problem.name,
        "estimator": name,
        "temperature": temperature,
        "num_draws": stats.num_draws,
        "bias": stats.bias,
        "variance": stats.variance,
        "mse": stats.mse,
        "cosine": stats.cosine,
        "noise_floor": stats.noise_floor,
        "us_per_gradient": cost,
    }


def run(
    num_draws: int,
    temperatures: tuple[float, ...],
    repeats: int,
    seed: int = 0,
    problem_names: tuple[str, ...] | None = None,
) -> tuple[list[dict], list[Problem]]:
    """Measures every estimator on every problem (or those in ``problem_names``).

    The sample estimators' temperature is an argument of a ``Partial``, so each estimator is
    compiled once per problem, whatever the number of temperatures.
    """
    rows = []
    key = jax.random.key(seed)
    chosen = [p for p in problems() if problem_names is None or p.name in problem_names]
    for problem in chosen:
        for name, (estimator, minimum) in sample_estimators().items():
            gradient, cost = sample_gradient(problem, estimator), None
            for temperature in temperatures:
                if temperature < minimum:
                    continue
                estimate = Partial(gradient, jnp.float32(temperature))
                key, subkey = jax.random.split(key)
                stats = diagnostics.gradient_stats(subkey, estimate, num_draws, exact=problem.exact)
                if cost is None:
                    cost = microseconds_per_gradient(estimate, repeats)
                rows.append(_row(problem, name, temperature, stats, cost))
        for name, gradient in surrogate_estimators(problem).items():
            estimate = Partial(gradient)
            key, subkey = jax.random.split(key)
            stats = diagnostics.gradient_stats(subkey, estimate, num_draws, exact=problem.exact)
            cost = microseconds_per_gradient(estimate, repeats)
            rows.append(_row(problem, name, None, stats, cost))
    return rows, chosen


def print_table(rows: list[dict], all_problems: list[Problem]) -> None:
    for problem in all_problems:
        print(
            f"\n{problem.name} ({problem.distribution}, logits {tuple(problem.logits.shape)}), "
            f"|exact gradient| = {np.linalg.norm(problem.exact):.4g}"
        )
        print(
            f"  {'estimator':20s} {'temp':>5s} {'bias':>10s} {'variance':>10s} {'mse':>10s} "
            f"{'cosine':>7s} {'noise fl.':>10s} {'us/grad':>8s}"
        )
        for row in rows:
            if row["problem"] != problem.name:
                continue
            temperature = "-" if row["temperature"] is None else f"{row['temperature']:g}"
            print(
                f"  {row['estimator']:20s} {temperature:>5s} {row['bias']:10.3e} "
                f"{row['variance']:10.3e} {row['mse']:10.3e} {row['cosine']:7.3f} "
                f"{row['noise_floor']:10.1e} {row['us_per_gradient']:8.2f}"
            )


def plot(rows: list[dict], all_problems: list[Problem], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(row["estimator"] for row in rows))
    colors = dict(zip(names, plt.get_cmap("tab10").colors, strict=False))
    markers = dict(zip(names, "osvD^<>", strict=False))  # overlapping lines stay visible
    fig, axes = plt.subplots(
        2, len(all_problems), figsize=(4.6 * len(all_problems), 7.2), squeeze=False
    )
    for column, problem in enumerate(all_problems):
        mine = [row for row in rows if row["problem"] == problem.name]
        for line, metric in enumerate(("bias", "variance")):
            ax = axes[line, column]
            for name in names:
                points = [row for row in mine if row["estimator"] == name]
                if not points:
                    continue
                if points[0]["temperature"] is None:
                    ax.axhline(points[0][metric], color=colors[name], linestyle="--", label=name)
                else:
                    ax.plot(
                        [row["temperature"] for row in points],
                        [row[metric] for row in points],
                        marker=markers[name],
                        markersize=5,
                        color=colors[name],
                        label=name,
                    )
            if metric == "bias":
                ax.axhline(
                    np.linalg.norm(problem.exact), color="black", linewidth=0.8, linestyle=":"
                )
                ax.set_title(f"{problem.name}\n(dotted: |exact gradient|)", fontsize=10)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("temperature")
            ax.set_ylabel(f"{metric} (L2)" if metric == "bias" else "variance (trace)")
            ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9)
    fig.suptitle(
        "Gradient estimators against exact gradients (dashed: temperature-free; an unbiased "
        "estimator's bias is its noise floor)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.estimators", description=__doc__)
    parser.add_argument("--num-draws", type=int, default=20_000, help="gradients per statistic")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per cost figure")
    parser.add_argument(
        "--quick", action="store_true", help="3 temperatures, 500 draws, 2 timed calls"
    )
    parser.add_argument("--out", default="results/estimators.json", help="where to write JSON")
    args = parser.parse_args(argv)
    num_draws, repeats = args.num_draws, args.repeats
    temperatures = TEMPERATURES
    if args.quick:
        num_draws, repeats, temperatures = 500, 2, QUICK_TEMPERATURES

    start = time.perf_counter()
    rows, all_problems = run(num_draws, temperatures, repeats)
    print_table(rows, all_problems)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    result = {
        "device": f"{device.platform} ({platform.processor() or platform.machine()})",
        "jax": jax.__version__,
        "num_draws": num_draws,
        "temperatures": list(temperatures),
        "seconds": time.perf_counter() - start,
        "problems": {
            p.name: {
                "distribution": p.distribution,
                "logits": np.asarray(p.logits).tolist(),
                "exact_gradient": p.exact.tolist(),
            }
            for p in all_problems
        },
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    figure = out.with_suffix(".png")
    plot(rows, all_problems, figure)
    print(f"\nwrote {out} and {figure} in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
