"""Benchmark: every gradient estimator of the library against exact gradients on toy problems.

Usage::

    python -m benchmarks.estimators [--quick] [--num-draws 20000] [--out results/estimators.json]
        [--estimators NAME NAME[OPTION=VALUE,...] MODULE:ATTRIBUTE ...]

Problems (small enough that ``diagnostics.exact_gradient`` enumerates them):

- ``binary-0.49`` and ``binary-0.499``: the quadratic toy of the REBAR and DisARM papers,
  ``f(b) = sum_d (b_d - t)^2`` on 4 Bernoulli latents with logits ``linspace(-1, 1, 4)``; the
  exact gradient ``sigmoid'(logits) (1 - 2t)`` is tiny next to ``f``'s values, so an estimator
  must resolve a small difference.
- ``categorical-poly``: the polynomial programming problem of the ReinMax paper (its ``p = 2``
  case): 4 categorical latents of 4 categories, category ``k`` standing for the value
  ``k / 3``, ``f(z) = mean_l (value(z_l) - 0.45)^2``, logits drawn from a standard normal.

Every registered estimator runs (``gumbel_jax.estimators.names()``), plus a few option sweeps
(``EXTRA_VARIANTS``), or those named with ``--estimators``: a registered name, a plug-in
``MODULE:ATTRIBUTE`` (a :class:`gumbel_jax.estimators.Spec` in your own module) or either with
options, ``"gumbel-rao[num_samples=100]"``. Each runs on the problems of the distributions its
spec supports: sample estimators on ``f`` of their sample (``distribution="bernoulli"`` on the
binary problems), surrogate estimators on ``f`` itself.

An estimator whose spec has a learned part (``Spec.control_variate``, RELAX's network, or
``Spec.tunable`` options, REBAR's ``eta`` and temperature) also runs *learned*, beside its fixed
row: before measuring, :data:`LEARN_STEPS` Adam steps on the variance gradient (Grathwohl et al.,
eq. 5: ``jax.grad`` of the squared gradient estimate, averaged over :data:`LEARN_KEYS` keys per
step, fixed seed) tune its tunable options (a positive one as its logarithm) and, with a control
variate, a small network of the relaxed sample (:func:`control_variate`). The learned row is
labelled ``NAME (learned)``; its ``evaluations`` are those of the fixed estimator (the learning's
cost is not counted), so its variance compares with REINFORCE-LOO's and DisARM's at equal
evaluations of ``f`` per gradient.

For each sample estimator and temperature (from the spec's ``min_temperature`` up; once, with no
temperature, for an estimator that takes none), ``diagnostics.gradient_stats`` draws
``--num-draws`` gradients and reports the bias (L2), the variance (trace), the MSE and the
cosine to the exact gradient, and the noise floor ``sqrt(variance / num_draws)``: an unbiased
estimator's measured bias is of that order. ``evaluations`` is the spec's number of
evaluations of ``f`` per gradient (1 for a sample estimator), so surrogates can be compared at
equal cost. The cost per gradient is the median time of a jitted ``vmap`` over 1000 keys
(``benchmarks.timing``) divided by 1000, in microseconds, measured once per estimator (it does
not depend on the temperature).

Writes the table to stdout, the figures to ``--out`` (JSON) and a figure of bias and variance
against temperature next to it (``.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial

from benchmarks.timing import time_call
from experiments.mnist import estimator_check
from experiments.mnist.workdir import file_problem
from gumbel_jax import diagnostics, estimators

TEMPERATURES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
QUICK_TEMPERATURES = (0.5, 1.0, 2.0)
# Option sweeps measured besides every registered estimator at its defaults.
EXTRA_VARIANTS = (
    "gumbel-rao[num_samples=100]",
    "reinforce-loo[num_samples=4]",
    "reinforce-loo[num_samples=16]",
)
TIMING_BATCH = 1000
# The learned variants' fit: Adam steps on the variance gradient, keys per step, step size, the
# control variate's hidden width, the seed.
LEARN_STEPS = 300
LEARN_KEYS = 16
LEARN_RATE = 1e-2
CONTROL_VARIATE_HIDDEN = 32
LEARN_SEED = 7
LEARNED_SUFFIX = " (learned)"

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


@dataclasses.dataclass(frozen=True)
class Variant:
    """An estimator with its options, as the benchmark names it (``Spec.label``), fixed or
    ``learned`` (its control variate and tunable options fitted first, :func:`learn`)."""

    spec: estimators.Spec
    options: dict
    learned: bool = False

    @property
    def label(self) -> str:
        return self.spec.label(self.options) + (LEARNED_SUFFIX if self.learned else "")


def learnable(spec: estimators.Spec) -> bool:
    """Whether a spec has something to learn: a control variate or tunable options."""
    return spec.kind == "surrogate" and (spec.control_variate or bool(spec.tunable))


def variants(texts: Sequence[str] | None = None) -> list[Variant]:
    """The variants of ``texts`` (``NAME``, ``NAME[OPTION=VALUE,...]``, ``MODULE:ATTRIBUTE``),
    by default every registered estimator and ``EXTRA_VARIANTS``; each one that is
    :func:`learnable` is followed by its learned variant.

    Raises:
      ValueError: an unknown estimator or option (one line, from ``estimators.parse_variant``).
    """
    if texts is None:
        texts = (*estimators.names(), *EXTRA_VARIANTS)
    chosen = []
    for text in texts:
        variant = Variant(*estimators.parse_variant(text))
        if ":" in text.partition("[")[0]:  # a plug-in: its first step traced before any work
            for distribution in variant.spec.distributions:
                estimator_check.check_first_step(
                    variant.spec,
                    variant.spec.check_options(variant.options),
                    shape=estimator_check.logits_shape(1, 4, 4, distribution),
                    distribution=distribution,
                    name=text,
                    flag="--estimators",
                )
        chosen.append(variant)
        if learnable(variant.spec):
            chosen.append(dataclasses.replace(variant, learned=True))
    return chosen


def control_variate(params: dict, relaxed: jax.Array) -> jax.Array:
    """The benchmark's learned control variate: ``[2, *logits.shape]`` relaxed samples to
    ``[2]``, one tanh hidden layer of the flattened ``2 sigma - 1``."""
    h = 2.0 * relaxed.reshape(relaxed.shape[0], -1) - 1.0
    return (jnp.tanh(h @ params["w1"] + params["b1"]) @ params["w2"])[..., 0] + params["b2"]


def _initial_learned(spec: estimators.Spec, options: dict, size: int) -> dict:
    """The learned parameters at the start: the tunable options at their values (a positive one
    as its logarithm) and, with a control variate, a network whose output starts at zero."""
    tuned = {
        name: jnp.log(jnp.float32(options[name]))
        if domain == "positive"
        else jnp.float32(options[name])
        for name, domain in spec.tunable.items()
    }
    params = {"tuned": tuned}
    if spec.control_variate:
        key = jax.random.key(LEARN_SEED)
        params["network"] = {
            "w1": jax.random.normal(key, (size, CONTROL_VARIATE_HIDDEN)) / np.sqrt(size),
            "b1": jnp.zeros(CONTROL_VARIATE_HIDDEN),
            "w2": jnp.zeros((CONTROL_VARIATE_HIDDEN, 1)),
            "b2": jnp.zeros(()),
        }
    return params


def _learned_call(problem: Problem, variant: Variant) -> Callable:
    """``(params, key) -> gradient`` of a learnable surrogate with learned ``params``."""
    spec, f_batch = variant.spec, jax.vmap(problem.f)
    call = spec.bind_learned(variant.options)

    def gradient(params, key):
        tuned = {
            name: jnp.exp(params["tuned"][name]) if domain == "positive" else params["tuned"][name]
            for name, domain in spec.tunable.items()
        }
        network = params.get("network")
        cv = None if network is None else functools.partial(control_variate, network)

        def surrogate(logits):
            return call(key, logits, f_batch, cv, tuned, distribution=problem.distribution)

        return jax.grad(surrogate)(problem.logits)

    return gradient


def learn(problem: Problem, variant: Variant) -> dict:
    """Fits a learnable variant on ``problem``: :data:`LEARN_STEPS` Adam steps on the variance
    gradient (of the sum of squares of the gradient estimate, averaged over
    :data:`LEARN_KEYS` keys per step), from the seed :data:`LEARN_SEED`.

    Returns:
      The learned parameters (``{"tuned": ..., "network": ...}``), for :func:`gradient_fn`.
    """
    gradient = _learned_call(problem, variant)
    params = _initial_learned(variant.spec, variant.options, int(np.prod(problem.logits.shape)))
    tx = optax.adam(LEARN_RATE)

    def variance(params, keys):
        return jnp.mean(jax.vmap(lambda key: jnp.sum(gradient(params, key) ** 2))(keys))

    def step(carry, key):
        params, opt_state = carry
        grads = jax.grad(variance)(params, jax.random.split(key, LEARN_KEYS))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    keys = jax.random.split(jax.random.key(LEARN_SEED), LEARN_STEPS)
    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), keys))(params)
    return params


def gradient_fn(problem: Problem, variant: Variant) -> Callable:
    """``(temperature, key) -> gradient`` (sample estimators) or ``key -> gradient``
    (surrogates, and sample estimators without a temperature) of the problem's objective with
    respect to its logits; a learned variant is fitted first (:func:`learn`)."""
    if variant.learned:
        learned, gradient = learn(problem, variant), _learned_call(problem, variant)
        return lambda key: gradient(learned, key)
    call = variant.spec.bind(variant.options)
    distribution = problem.distribution
    if variant.spec.kind == "surrogate":
        f_batch = jax.vmap(problem.f)

        def surrogate(logits, key):
            return call(key, logits, f_batch, distribution=distribution)

        return lambda key: jax.grad(surrogate)(problem.logits, key)

    def loss(logits, temperature, key):
        return problem.f(call(key, logits, temperature, distribution=distribution))

    if not variant.spec.uses_temperature:  # run at temperature None (``temperatures_for``)
        return lambda key: jax.grad(loss)(problem.logits, 1.0, key)  # the call drops it
    return lambda temperature, key: jax.grad(loss)(problem.logits, temperature, key)


def temperatures_for(variant: Variant, temperatures: Sequence[float]) -> list[float | None]:
    """The temperatures a variant runs at: ``[None]`` for surrogates and estimators without
    one, else those from its spec's ``min_temperature`` up."""
    spec = variant.spec
    if spec.kind == "surrogate" or not spec.uses_temperature:
        return [None]
    return [t for t in temperatures if spec.min_temperature is None or t >= spec.min_temperature]


@jax.jit
def _gradients(estimate: Partial, keys: jax.Array) -> jax.Array:
    return jax.vmap(estimate)(keys)


def microseconds_per_gradient(estimate: Partial, repeats: int) -> float:
    """The median time of ``TIMING_BATCH`` gradients (jitted ``vmap``) over their number."""
    keys = jax.random.split(jax.random.key(99), TIMING_BATCH)
    stats = time_call(_gradients, estimate, keys, repeats=repeats)
    return stats["median_s"] / TIMING_BATCH * 1e6


def _row(problem, variant, temperature, stats, cost) -> dict:
    return {
        "problem": problem.name,
        "estimator": variant.label,
        "learned": variant.learned,
        "kind": variant.spec.kind,
        "unbiased": variant.spec.unbiased,
        "evaluations": variant.spec.cost(variant.options, problem.logits.shape),
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
    chosen_variants: Sequence[Variant] | None = None,
) -> tuple[list[dict], list[Problem]]:
    """Measures every variant (default: ``variants()``) on every problem it supports (or those
    in ``problem_names``).

    A sample estimator's temperature is an argument of a ``Partial``, so each estimator is
    compiled once per problem, whatever the number of temperatures.
    """
    rows = []
    key = jax.random.key(seed)
    chosen = [p for p in problems() if problem_names is None or p.name in problem_names]
    for problem in chosen:
        for variant in variants() if chosen_variants is None else chosen_variants:
            if problem.distribution not in variant.spec.distributions:
                continue
            gradient, cost = gradient_fn(problem, variant), None
            for temperature in temperatures_for(variant, temperatures):
                estimate = (
                    Partial(gradient)
                    if temperature is None
                    else Partial(gradient, jnp.float32(temperature))
                )
                key, subkey = jax.random.split(key)
                stats = diagnostics.gradient_stats(subkey, estimate, num_draws, exact=problem.exact)
                if cost is None:
                    cost = microseconds_per_gradient(estimate, repeats)
                rows.append(_row(problem, variant, temperature, stats, cost))
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
    palette = plt.get_cmap("tab20").colors
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    shapes = "osvD^<>phX*"  # overlapping lines stay visible
    markers = {name: shapes[i % len(shapes)] for i, name in enumerate(names)}
    fig, axes = plt.subplots(
        2, len(all_problems), figsize=(4.6 * len(all_problems), 8.0), squeeze=False
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
    by_label = {}  # every estimator once, whichever problems it ran on
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, handle)
    fig.legend(
        by_label.values(),
        by_label.keys(),
        loc="lower center",
        ncol=min(len(by_label), 6),
        fontsize=8,
    )
    fig.suptitle(
        "Gradient estimators against exact gradients (dashed: temperature-free; an unbiased "
        "estimator's bias is its noise floor)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.12, 1, 0.97))
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
    parser.add_argument(
        "--estimators",
        nargs="+",
        metavar="ESTIMATOR",
        help="registered names, NAME[OPTION=VALUE,...] or MODULE:ATTRIBUTE plug-ins (default: "
        f"every registered estimator and {', '.join(EXTRA_VARIANTS)})",
    )
    args = parser.parse_args(argv)
    if args.out and (problem := file_problem(args.out, writable=True)) is not None:
        parser.error(f"--out {args.out} {problem}: pass a file you can write")
    for name in ("num_draws", "repeats"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )
    try:
        chosen_variants = variants(args.estimators)
    except ValueError as error:
        parser.error(str(error))
    num_draws, repeats = args.num_draws, args.repeats
    temperatures = TEMPERATURES
    if args.quick:
        num_draws, repeats, temperatures = 500, 2, QUICK_TEMPERATURES

    start = time.perf_counter()
    rows, all_problems = run(num_draws, temperatures, repeats, chosen_variants=chosen_variants)
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
