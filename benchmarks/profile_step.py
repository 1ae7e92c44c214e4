"""Where a training step's time goes: op times of the scanned step from a JAX profiler trace.

Usage::

    python -m benchmarks.profile_step [--steps 50] [--estimator st] [--out results/profile.json]

Traces one chunk of ``--steps`` training steps (after compiling it), sums the duration of every
XLA op in the trace and prints the shares of a few categories (matrix products, the Adam update,
random numbers, the rest). The categories are recognised by the names XLA gives its fused ops on
CPU, so treat them as a guide; the op times of the two cores add up to more than the wall time.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax

from benchmarks.epochs import (
    ESTIMATOR_SYNTAX,
    NUM_TRAIN,
    estimator_config,
    estimator_flag,
    estimator_help,
    synthetic_images,
)
from experiments.mnist import train, update
from experiments.mnist.workdir import file_problem

# Fused-op name patterns of XLA:CPU, by what the step spends them on. YNNPACK fusions
# (``ynn_fusion.N``) also run elementwise ops and reductions: they count as matrix products only
# when their fused computation holds a dot (``matmul_ops``), otherwise as "other".
CATEGORIES = {
    "matrix products": r"^(dot|onednn|xnn)",
    "Adam update (elementwise over the parameters)": r"^multiply_add_fusion",
    "random numbers (threefry loops, Gumbel, binarization)": (
        r"^(while|exponential_log|negate_log|bitcast_compare|add_bitcast|convert_bitcast)"
    ),
}
_RUNTIME = ("ThunkExecutor", "$", "SlinkyThreadPool", "PjitFunction", "end: ")


def matmul_ops(hlo_text: str) -> set[str]:
    """Names of the fusions in compiled HLO text whose fused computation holds a matrix product."""
    computations = dict(re.findall(r"^%?([\w.-]+) [^\n]*\{\n(.*?)\n\}", hlo_text, re.M | re.S))
    with_dot = {
        name for name, body in computations.items() if re.search(r" (dot|convolution)\(", body)
    }
    calls = re.findall(r"%([\w.-]+) = [^\n]* fusion\([^\n]*calls=%([\w.-]+)", hlo_text)
    return {fusion for fusion, callee in calls if callee in with_dot}


def op_times(steps: int, estimator: str) -> tuple[dict[str, float], set[str]]:
    """Microseconds per XLA op name, summed over a traced chunk of ``steps`` training steps, and
    the names of the ops that are matrix products (``matmul_ops`` of the compiled chunk)."""
    config = estimator_config(estimator)
    step_config = update.StepConfig.from_config(config)
    state = train.create_train_state(config)
    images = jax.device_put(synthetic_images())
    indices = update.epoch_batch_indices(
        jax.random.key(0), 0, num_examples=NUM_TRAIN, steps=steps, batch_size=config.batch_size
    )

    # Compiled once: its HLO names the ops the trace times.
    compiled = update.train_chunk.lower(
        state, images, indices, 0, config=step_config, num_steps=steps
    ).compile()

    def chunk(state):
        return compiled(state, images, indices, 0)

    state, metrics = chunk(state)
    jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            state, metrics = chunk(state)
            jax.block_until_ready(metrics)
        trace = sorted(Path(folder).rglob("*.trace.json.gz"))[-1]
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith(_RUNTIME):
            totals[event["name"]] += event.get("dur", 0)
    return dict(totals), matmul_ops(compiled.as_text())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--estimator",
        type=estimator_flag,
        default="st",
        metavar=ESTIMATOR_SYNTAX,
        help=estimator_help("the estimator of the profiled steps"),
    )
    parser.add_argument("--out", default=None, help="also write the shares as JSON here")
    args = parser.parse_args(argv)
    if args.out and (problem := file_problem(args.out, writable=True)) is not None:
        parser.error(f"--out {args.out} {problem}: pass a file you can write")
    totals, matmuls = op_times(args.steps, args.estimator)
    total = sum(totals.values())
    shares = {name: 0.0 for name in [*CATEGORIES, "other"]}
    for op, microseconds in totals.items():
        name = (
            "matrix products"
            if op in matmuls
            else next((c for c, p in CATEGORIES.items() if re.match(p, op)), "other")
        )
        shares[name] += microseconds / total
    print(f"op time of {args.steps} steps: {total / 1e3:.1f} ms ({total / args.steps:.0f} us/step)")
    for name, share in shares.items():
        print(f"  {100 * share:5.1f}%  {name}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        top = sorted(totals.items(), key=lambda item: -item[1])[:20]
        result = {
            "device": f"{jax.devices()[0].platform} ({jax.device_count()} device(s))",
            "jax": jax.__version__,
            "estimator": args.estimator,
            "steps": args.steps,
            "us_per_step": total / args.steps,
            "shares": shares,
            "top_ops_us_per_step": {op: us / args.steps for op, us in top},
        }
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return shares


if __name__ == "__main__":
    main()
