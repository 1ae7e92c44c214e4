"""Benchmark: our training epoch against the PyTorch tutorial's loop, in one run on one machine.

Usage::

    python -m benchmarks.compare_torch [--repeats 3] [--out results/compare_torch_cpu.json]

Both sides train the same model (784-512-256-(30x10) and mirrored decoder, batch 100, Adam 1e-3,
ST Gumbel-Softmax, temperature ``max(0.5, exp(-3e-5 t))`` updated every 100 steps, dynamic
binarization, the negative ELBO of ``benchmarks.torch_reference``) for ``1 + repeats`` epochs;
the first epoch (JAX's compilation, PyTorch's warm-up) is left out and the median of the others
is reported for each, with their ratio.

- PyTorch: the tutorial's loop, written from its description: a ``DataLoader`` (shuffled, batch
  100, no worker processes, as the tutorial on CPU) over a ``TensorDataset`` of the images as
  float tensors in ``[0, 1]``, and per step ``torch.bernoulli`` binarization, ``zero_grad``,
  forward, loss, ``backward``, ``loss.item()`` (the tutorial sums the epoch's loss) and
  ``optimizer.step()``. PyTorch's default number of threads (printed) on the same cores.
- JAX: ``experiments.mnist.train.fit``, the path ``python -m experiments.mnist --hard`` runs,
  timed by ``benchmarks.epochs.epoch_benchmark`` as ``benchmarks.train_epoch`` times it.

The images are MNIST's training set from ``$GUMBEL_JAX_MNIST_DIR`` when it is set (the
experiment's input pipeline), else synthetic images of its shape (speed does not depend on the
pixels). Needs ``torch`` (the optional extra ``torch``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np
import torch

from benchmarks import torch_reference
from benchmarks.epochs import epoch_benchmark, synthetic_images
from experiments.mnist import input_pipeline
from experiments.mnist.config import Config
from experiments.mnist.workdir import file_problem


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_images(*, synthetic: bool = False) -> tuple[np.ndarray, str]:
    """uint8 images ``[n, 28, 28]`` and where they came from: MNIST if the folder is set."""
    data_dir = None if synthetic else os.environ.get(input_pipeline.DATA_DIR_ENV)
    if data_dir:
        return input_pipeline.load_idx_folder(data_dir).train_images, f"MNIST ({data_dir})"
    return synthetic_images(), "synthetic uint8 images"


def torch_epochs(images: np.ndarray, config: Config, *, epochs: int, seed: int = 0) -> list[float]:
    """Trains the tutorial's PyTorch loop for ``epochs`` epochs; the wall seconds of each."""
    torch.manual_seed(seed)
    model = torch_reference.CategoricalVAE(
        latents=config.latents,
        categories=config.categories,
        hidden=config.hidden,
        data_dim=images[0].size,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    pixels = torch.from_numpy(np.array(images.reshape(len(images), -1), np.float32)) / 255.0
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(pixels),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,  # as the experiment's epochs (60,000 / 100 drops nothing)
    )
    step, seconds = 0, []
    for _ in range(epochs):
        started = time.perf_counter()
        train_loss = 0.0
        for (data,) in loader:
            x = torch.bernoulli(data)
            temperature = torch_reference.temperature_at(
                step,
                initial=config.temperature,
                minimum=config.temperature_min,
                rate=config.anneal_rate,
                every=config.anneal_every,
            )
            optimizer.zero_grad()
            pixel_logits, posterior_logits = model(x, temperature, hard=True)
            loss = torch_reference.negative_elbo(pixel_logits, x, posterior_logits)
            loss.backward()
            train_loss += loss.item() * len(data)
            optimizer.step()
            step += 1
        seconds.append(time.perf_counter() - started)
    return seconds


def compare(
    images: np.ndarray, config: Config, *, repeats: int, torch_threads: int | None = None
) -> dict:
    """Times ``1 + repeats`` epochs of each side; medians of the steady ones and their ratio.

    ``torch_threads`` sets ``torch.set_num_threads`` for the PyTorch loop (``None``: its default).
    """
    jax_result = epoch_benchmark(config, repeats=repeats, images=images)
    default_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads or default_threads)
    try:
        torch_seconds = torch_epochs(images, config, epochs=1 + repeats)
    finally:
        torch.set_num_threads(default_threads)
    torch_median = statistics.median(torch_seconds[1:])
    return {
        "jax": {
            "epoch_seconds": jax_result["epoch_seconds"],
            "steady_median_s": jax_result["steady_median_s"],
            "steady_min_s": jax_result["steady_min_s"],
        },
        "torch": {
            "epoch_seconds": torch_seconds,
            "steady_median_s": torch_median,
            "steady_min_s": min(torch_seconds[1:]),
            "threads": torch_threads or default_threads,
        },
        "ratio": jax_result["steady_median_s"] / torch_median,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_torch", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="steady-state epochs to time")
    parser.add_argument("--limit-examples", type=int, default=None, help="train on the first N")
    parser.add_argument("--synthetic", action="store_true", help="synthetic images, not MNIST")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="PyTorch's threads (default: its own)"
    )
    parser.add_argument("--out", default="results/compare_torch_cpu.json")
    args = parser.parse_args(argv)
    if args.out and (problem := file_problem(args.out, writable=True)) is not None:
        parser.error(f"--out {args.out} {problem}: pass a file you can write")

    images, source = training_images(synthetic=args.synthetic)
    images = images[: args.limit_examples]
    config = Config(estimator=torch_reference.TRAINING_ESTIMATOR)  # the one both sides run
    machine = (
        f"{cpu_name()}, {os.cpu_count()} logical CPUs visible; jax {jax.__version__} "
        f"({jax.devices()[0].platform}), torch {torch.__version__} with "
        f"{args.torch_threads or torch.get_num_threads()} threads "
        f"({'set by --torch-threads' if args.torch_threads else 'its default'})"
    )
    print(f"{machine}\ndata: {len(images)} {source}", flush=True)
    result = compare(images, config, repeats=args.repeats, torch_threads=args.torch_threads)
    print(
        f"steady-state epoch, median of {args.repeats} (first epoch excluded):\n"
        f"  PyTorch loop  {result['torch']['steady_median_s']:7.2f} s  "
        f"(epochs {', '.join(f'{s:.2f}' for s in result['torch']['epoch_seconds'])})\n"
        f"  gumbel_jax    {result['jax']['steady_median_s']:7.2f} s  "
        f"(epochs {', '.join(f'{s:.2f}' for s in result['jax']['epoch_seconds'])})\n"
        f"  ratio         {result['ratio']:.3f} (gumbel_jax / PyTorch)",
        flush=True,
    )
    result.update(
        cpu=cpu_name(),
        logical_cpus=os.cpu_count(),
        jax_version=jax.__version__,
        torch_version=torch.__version__,
        torch_default_threads=torch.get_num_threads(),
        data=source,
        examples=len(images),
        repeats=args.repeats,
        config={"batch_size": config.batch_size, "estimator": config.estimator},
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
