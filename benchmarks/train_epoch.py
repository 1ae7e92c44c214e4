"""Benchmark: training-epoch speed against this machine's fp32 matmul peak, and sampler costs.

Usage::

    python -m benchmarks.train_epoch [--repeats 5] [--estimator st] [--out results/benchmark.json]

``--estimator`` is any registered estimator or ``MODULE:ATTRIBUTE`` plug-in, with options as
``NAME[OPTION=VALUE,...]`` (``gumbel-rao[num_samples=100]``).

Prints a table and writes the same figures as JSON. The epoch is timed with JAX's default random
stream (``jax_threefry_partitionable=True``, unless the environment changed it) and once more
with the other threefry stream, which is faster on CPU but draws different numbers.

The figures it reports (the committed ones and what they say: ``benchmarks/README.md``,
Performance): the steady-state epoch as a share of the measured matmul peak, beside two floors
(the epoch's matmuls alone, and with Adam's update); the compile time; and each sampler's
forward+backward as a multiple of its baseline: drawing its noise plus its plain
elementwise/softmax work (see ``benchmarks.samplers``).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax

from benchmarks.epochs import (
    ESTIMATOR_SYNTAX,
    epoch_benchmark,
    estimator_config,
    estimator_flag,
    estimator_help,
    matmul_floor_benchmark,
    threefry_partitionable,
)
from benchmarks.samplers import print_table, sampler_benchmarks
from benchmarks.timing import matmul_peak_gflops
from experiments.mnist.workdir import file_problem


def _device_description() -> str:
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    host = platform.processor() or platform.machine()
    return f"{jax.device_count()} x {kind} ({device.platform}), host {host}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_epoch", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="steady-state epochs to time")
    parser.add_argument(
        "--estimator",
        type=estimator_flag,
        default="st",
        metavar=ESTIMATOR_SYNTAX,
        help=estimator_help("the estimator of the timed epoch"),
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--sampler-repeats", type=int, default=50)
    parser.add_argument("--out", default="results/benchmark.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.out and (problem := file_problem(args.out, writable=True)) is not None:
        parser.error(f"--out {args.out} {problem}: pass a file you can write")

    partitionable = bool(jax.config.jax_threefry_partitionable)
    print(
        f"device: {_device_description()}; jax {jax.__version__}; "
        f"jax_threefry_partitionable={partitionable}",
        flush=True,
    )
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak: {peak['peak_gflops']:.1f} GFLOP/s", flush=True)

    config = estimator_config(args.estimator, batch_size=args.batch_size)
    epoch = epoch_benchmark(config, repeats=args.repeats)
    epoch["fraction_of_peak"] = epoch["gflops"] / peak["peak_gflops"]
    with threefry_partitionable(not partitionable):
        other_stream = epoch_benchmark(config, repeats=args.repeats)
    other_stream["jax_threefry_partitionable"] = not partitionable
    floor = matmul_floor_benchmark(config)
    floor["fraction_of_peak"] = floor["gflops"] / peak["peak_gflops"]
    adam_floor = matmul_floor_benchmark(config, adam=True)
    adam_floor["fraction_of_peak"] = adam_floor["gflops"] / peak["peak_gflops"]
    print(
        f"\ntraining epoch (batch {config.batch_size}, {config.latents}x{config.categories}, "
        f"{args.estimator}, {epoch['gflop_per_epoch']:.0f} GFLOP per epoch)\n"
        f"  steady-state epoch   median {epoch['steady_median_s']:.3f} s, "
        f"min {epoch['steady_min_s']:.3f} s over {args.repeats}\n"
        f"  compile time         {epoch['compile_s']:.2f} s (first epoch minus steady median)\n"
        f"  other random stream  median {other_stream['steady_median_s']:.3f} s, min "
        f"{other_stream['steady_min_s']:.3f} s with jax_threefry_partitionable="
        f"{not partitionable}\n"
        f"  examples/s           {epoch['examples_per_s']:.0f}\n"
        f"  achieved             {epoch['gflops']:.1f} GFLOP/s = "
        f"{100 * epoch['fraction_of_peak']:.1f}% of the measured peak\n"
        f"  analytic bound       {epoch['gflop_per_epoch'] / peak['peak_gflops']:.3f} s per epoch "
        f"(all FLOPs at the measured peak)\n"
        f"  matmul-only epoch    {floor['epoch_s']:.3f} s = {floor['gflops']:.1f} GFLOP/s = "
        f"{100 * floor['fraction_of_peak']:.1f}% of peak (the same matmuls, nothing else)\n"
        f"  matmuls + Adam epoch {adam_floor['epoch_s']:.3f} s = "
        f"{adam_floor['gflops']:.1f} GFLOP/s = {100 * adam_floor['fraction_of_peak']:.1f}% of "
        "peak (the same, with Adam's update)",
        flush=True,
    )

    rows = sampler_benchmarks(repeats=args.sampler_repeats)
    print()
    print_table(rows)

    result = {
        "device": _device_description(),
        "jax": jax.__version__,
        "jax_threefry_partitionable": partitionable,
        "matmul_peak": peak,
        "epoch": epoch,
        "epoch_other_threefry_stream": other_stream,
        "matmul_only_epoch": floor,
        "matmul_adam_epoch": adam_floor,
        "samplers": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
