"""What a run leaves in its workdir: ``config.json``, ``metrics.jsonl`` and three PNGs.

A run that diverged leaves ``diverged.json`` instead of the pictures and the final record.

In a multi-host run only process 0 calls these (see ``run.train_and_evaluate``).

Pictures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend change),
so they work without a display.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cycler import cycler
from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RECONSTRUCTIONS_FILE = "reconstructions.png"
SAMPLES_FILE = "samples.png"
CURVES_FILE = "curves.png"
# Written when training diverged (a non-finite loss): the run failed, it has no result.
DIVERGED_FILE = "diverged.json"


def write_config(workdir: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Writes ``settings`` as indented JSON to ``<workdir>/config.json``; returns the path."""
    path = Path(workdir) / CONFIG_FILE
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return path


def append_metrics(workdir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Appends one JSON line to ``<workdir>/metrics.jsonl`` and flushes it to disk."""
    path = Path(workdir) / METRICS_FILE
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def evaluated_on(record: dict[str, Any]) -> str:
    """What a ``metrics.jsonl`` record's held-out bounds are of: ``"valid"`` (a tuning run of
    the campaign, on its validation split) or ``"test"``."""
    return "valid" if "valid/neg_elbo" in record else "test"


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """The epoch records of ``<workdir>/metrics.jsonl``, in order (none if there is no file).

    The one reader of the file. A line that is not a complete JSON record of an epoch (a line
    cut short by a killed process, or damaged by hand: no integer ``epoch``) is left out.
    """
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            records.append(record)
    return records


def truncate_metrics(workdir: str | os.PathLike, epochs: int) -> Path:
    """Keeps the ``metrics.jsonl`` records of epochs ``1..epochs``, for a run resumed after them.

    Records of later epochs (trained again by the resumed run) are dropped, and so is a line cut
    short by a killed process. The file is replaced atomically; a missing file becomes empty.
    """
    path = Path(workdir) / METRICS_FILE
    kept = [r for r in read_metrics(workdir) if r["epoch"] <= epochs]
    partial = path.with_name(path.name + ".tmp")
    with partial.open("w") as f:
        f.writelines(json.dumps(record, sort_keys=True) + "\n" for record in kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    return path


def _image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """Tiles images ``[n, height, width, channels]`` into one ``[rows * height, columns * width]``
    image (``[..., channels]`` unless there is one channel)."""
    n, height, width, channels = images.shape
    rows = math.ceil(n / columns)
    grid = np.ones((rows * height, columns * width, channels), images.dtype)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    return grid[..., 0] if channels == 1 else grid


def _save_grid(path: Path, rows: Sequence[tuple[str, np.ndarray]], columns: int, title: str):
    """Draws each ``(label, images [n, rows, cols, channels])`` row as a grid of ``columns``
    images."""
    grid_rows = [math.ceil(len(images) / columns) for _, images in rows]
    figure = Figure(
        figsize=(columns * 0.7 + 0.3, sum(grid_rows) * 0.7 + 0.45 * len(rows) + 0.4),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), 1, squeeze=False, height_ratios=grid_rows)[:, 0]
    for ax, (label, images) in zip(axes, rows, strict=True):
        ax.imshow(_image_grid(images, columns), cmap="gray", vmin=0, vmax=1)
        if label:
            ax.set_title(label, fontsize=10, loc="left")
        ax.set_axis_off()
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return path


def dataset_title(workdir: str | os.PathLike, dataset: str | None = None) -> str:
    """How the pictures name the data set: ``dataset``'s title, else that of the run whose
    ``config.json`` is in ``workdir`` (written before any picture; a run saved before the
    setting existed, or no file, is MNIST's, the default)."""
    from experiments.mnist.input_pipeline import DATASETS, DEFAULT_DATASET

    if dataset is None:
        path = Path(workdir) / CONFIG_FILE
        try:
            dataset = json.loads(path.read_text()).get("dataset") if path.exists() else None
        except (ValueError, AttributeError):
            dataset = None
    spec = DATASETS.get(dataset or DEFAULT_DATASET)
    return spec.title if spec is not None else str(dataset)


def save_reconstructions(
    workdir: str | os.PathLike,
    originals: np.ndarray,
    reconstructions: np.ndarray,
    *,
    dataset: str | None = None,
) -> Path:
    """Test images ``[n, rows, cols, channels]`` in a row above their reconstructions (pixel
    probabilities); the title names the data set (:func:`dataset_title`)."""
    return _save_grid(
        Path(workdir) / RECONSTRUCTIONS_FILE,
        [("test images", np.asarray(originals)), ("reconstructions", np.asarray(reconstructions))],
        columns=len(originals),
        title=f"{dataset_title(workdir, dataset)}: test images (top) and their reconstructions "
        "(bottom)",
    )


def save_samples(
    workdir: str | os.PathLike,
    samples: np.ndarray,
    columns: int = 10,
    *,
    dataset: str | None = None,
) -> Path:
    """Pixel probabilities ``[n, rows, cols, channels]`` decoded from prior samples, as a grid;
    the title names the data set (:func:`dataset_title`)."""
    return _save_grid(
        Path(workdir) / SAMPLES_FILE,
        [("", np.asarray(samples))],
        columns=columns,
        title=f"{dataset_title(workdir, dataset)}: images decoded from samples of the uniform "
        "prior",
    )


@contextlib.contextmanager
def epoch_axes(
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str,
    figsize: tuple[float, float] = (6, 4),
    legend_fontsize: float | None = None,
) -> Iterator[Axes]:
    """Axes for curves by epoch, saved to ``path`` as a PNG when the block ends.

    The one figure helper of the curve plots (this run's and ``experiments.reproduce``'s): an
    integer epoch axis, a light grid and a legend. Past the colour cycle's colours (ten), curves
    are told apart by their line style: solid, then dashed, then dotted.
    """
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    ax.set_prop_cycle(cycler(linestyle=["-", "--", ":"]) * cycler(color=colours))
    yield ax
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_fontsize)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def save_curves(
    workdir: str | os.PathLike,
    records: Sequence[dict[str, Any]],
    *,
    dataset: str | None = None,
) -> Path:
    """Training loss and test negative ELBO (and the IWAE bound if present) by epoch; the title
    names the data set (:func:`dataset_title`)."""
    path = Path(workdir) / CURVES_FILE
    epochs = [r["epoch"] for r in records]
    title = f"{dataset_title(workdir, dataset)}: training loss and test bounds"
    with epoch_axes(path, title=title, ylabel="nats per example") as ax:
        ax.plot(epochs, [r["train/loss"] for r in records], "o-", label="train loss")
        split = evaluated_on(records[-1]) if records else "test"
        held_out = [r[f"{split}/neg_elbo"] for r in records]
        ax.plot(epochs, held_out, "s-", label=f"{split} negative ELBO")
        iwae = [(r["epoch"], r[f"{split}/nll_iwae"]) for r in records if f"{split}/nll_iwae" in r]
        if iwae:
            k = records[-1].get("iwae_samples")
            label = f"{split} IWAE bound (k={k})"
            ax.plot(*zip(*iwae, strict=True), "k*", markersize=10, label=label)
    return path


def write_divergence(workdir: str | os.PathLike, step: int, message: str) -> Path:
    """Marks the run of ``workdir`` as diverged: ``<workdir>/diverged.json`` with the message."""
    path = Path(workdir) / DIVERGED_FILE
    path.write_text(json.dumps({"step": step, "message": message}, sort_keys=True) + "\n")
    return path


def read_divergence(workdir: str | os.PathLike) -> str | None:
    """The message of a run of ``workdir`` that diverged (``diverged.json``), else ``None``."""
    path = Path(workdir) / DIVERGED_FILE
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text())["message"])
    except (ValueError, KeyError, TypeError):
        return f"diverged (see {path})"
