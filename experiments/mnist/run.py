"""A whole training run: resume, train, evaluate every epoch, checkpoint, stop cleanly on signals.

:func:`train_and_evaluate` wraps :func:`experiments.mnist.train.fit` with everything a run needs
around the training loop: it resumes from the newest Orbax checkpoint of the workdir
(:mod:`experiments.mnist.checkpoints`), evaluates after every epoch
(:mod:`experiments.mnist.evaluate`), writes the metrics, pictures and checkpoints
(:mod:`experiments.mnist.outputs`), and turns SIGINT/SIGTERM into a stop at the next chunk
boundary with a checkpoint (:func:`stop_on_signals`, :class:`Interrupted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.mnist import checkpoints, evaluate, input_pipeline, outputs, parallel
from experiments.mnist.config import Config
from experiments.mnist.train import EpochResult, PartialEpoch, TrainState, create_train_state, fit


class Interrupted(Exception):
    """Training stopped at SIGINT or SIGTERM, after saving a checkpoint.

    Attributes:
      signum: the signal received.
      step: global step of the checkpoint.
      directory: the checkpoints' folder.
      exit_status: ``128 + signum`` (130 for Ctrl-C, 143 for SIGTERM), the shell's convention.
    """

    def __init__(self, signum: int, *, step: int, directory: Path):
        self.signum = signum
        self.step = step
        self.directory = directory
        self.exit_status = 128 + signum
        super().__init__(
            f"interrupted by {signal.Signals(signum).name}: saved a checkpoint at step {step} in "
            f"{directory}; rerun the same command to resume"
        )


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], int | None]]:
    """Turns SIGINT and SIGTERM into a request to stop at the next chunk boundary.

    Yields a function that returns the signal received so far, or ``None``. A second signal
    raises ``KeyboardInterrupt`` at once (the checkpoints already on disk stay valid). Outside
    the main thread, where Python cannot install handlers, nothing is installed.
    """
    received: list[int] = []

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        if parallel.is_main_process():
            print(
                f"\n{signal.Signals(signum).name} received: stopping after the current chunk to "
                "save a checkpoint (send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    stopping_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, handler) for s in stopping_signals}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def train_and_evaluate(
    config: Config, data: input_pipeline.Mnist, *, mesh: jax.sharding.Mesh | None = None
) -> dict[str, Any]:
    """Trains (or resumes) the model, evaluates it after every epoch and writes the outputs.

    Writes ``config.json``, one ``metrics.jsonl`` line per epoch (the last with the IWAE bound),
    ``reconstructions.png``, ``samples.png`` and ``curves.png`` into ``config.workdir`` (on
    process 0 only), and an Orbax checkpoint at the end of every epoch into
    ``<workdir>/checkpoints`` (the last :data:`checkpoints.KEEP` kept).

    If the workdir holds checkpoints, the run resumes from the newest one that restores (after
    checking that the model, data and estimator settings are the saved ones) and ends exactly
    as an uninterrupted run would; the ``metrics.jsonl`` lines of the epochs after that
    checkpoint are dropped. Otherwise an existing ``metrics.jsonl`` is replaced.

    SIGINT and SIGTERM stop training at the next chunk boundary, save a checkpoint there and
    raise :class:`Interrupted`.

    Args:
      config: the run's settings.
      data: the data set (the same on every process).
      mesh: the devices to train on (default: all devices, :func:`parallel.make_mesh`).

    Returns:
      The last metrics record.

    Raises:
      checkpoints.CheckpointError: the workdir's checkpoints cannot be resumed with ``config``.
      Interrupted: training was stopped by a signal (a checkpoint was saved).
      ValueError: the batch size does not fit the data or the devices.
    """
    workdir = Path(config.workdir)
    main = parallel.is_main_process()
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_batch_size(config.batch_size, mesh)
    steps = config.steps_per_epoch(len(data.train_images))
    test_x = parallel.replicate(evaluate.test_pixels(data.test_images, config.binarize), mesh)
    state = create_train_state(config, data_dim=test_x.shape[-1], total_steps=config.epochs * steps)
    state = parallel.replicate(state, mesh)
    run_info = {"config": config.to_dict(), "data": checkpoints.data_fingerprint(data.train_images)}
    last: dict[str, Any] = {}

    with checkpoints.RunCheckpoints(workdir) as saved:
        restored = saved.restore_latest(
            state,
            check=functools.partial(
                checkpoints.check_resumable,
                config=config,
                fingerprint=run_info["data"],
                directory=saved.directory,
            ),
        )
        partial_epoch = None
        if restored is not None:
            state = restored.state
            if restored.meta.get("partial_epoch"):
                partial_epoch = PartialEpoch(
                    losses=tuple(restored.meta["partial_epoch"]["losses"]),
                    seconds=restored.meta["partial_epoch"]["seconds"],
                )
            if main:
                into = restored.step - restored.epoch * steps
                where = f", {into}/{steps} steps into epoch {restored.epoch + 1}" if into else ""
                print(
                    f"Resuming from the checkpoint at step {restored.step} (epoch "
                    f"{restored.epoch}{where}) in {saved.directory}",
                    flush=True,
                )
                outputs.truncate_metrics(workdir, restored.epoch)
        elif main:
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / outputs.METRICS_FILE).unlink(missing_ok=True)
        if main:
            outputs.write_config(workdir, config.to_dict())

        def on_epoch_end(state: TrainState, result: EpochResult) -> None:
            final = result.epoch == config.epochs
            record = {
                "epoch": result.epoch,
                "step": result.step,
                "temperature": result.temperature,
                "train/loss": result.train_loss,
                "seconds": result.seconds,
                "examples_per_second": result.examples_per_second,
                **evaluate.evaluate(
                    state.model(),
                    test_x,
                    config=config,
                    num_samples=config.eval_samples if final else None,
                ),
            }
            if final:
                record["iwae_samples"] = config.eval_samples
            # The metrics line first: a run killed before the checkpoint is complete redoes
            # the epoch and replaces the line.
            if main:
                outputs.append_metrics(workdir, record)
            saved.save(state, epoch=result.epoch, meta={**run_info, "partial_epoch": None})
            last.clear()
            last.update(record)
            line = (
                f"epoch {result.epoch}/{config.epochs}  step {result.step}  "
                f"temperature {result.temperature:.3f}  train/loss {result.train_loss:.2f}  "
                f"test/neg_elbo {record['test/neg_elbo']:.2f}"
            )
            if final:
                line += f"  test/nll_iwae {record['test/nll_iwae']:.2f} (k={config.eval_samples})"
            if main:
                print(
                    f"{line}  {result.seconds:.1f} s ({result.examples_per_second:.0f} ex/s)",
                    flush=True,
                )

        with stop_on_signals() as received_signal:

            def on_stop(state: TrainState, partial: PartialEpoch) -> None:
                saved.save(
                    state,
                    epoch=int(state.step) // steps,
                    meta={**run_info, "partial_epoch": dataclasses.asdict(partial)},
                )
                saved.wait_until_finished()
                raise Interrupted(
                    received_signal() or signal.SIGINT,
                    step=int(state.step),
                    directory=saved.directory,
                )

            state = fit(
                state,
                data.train_images,
                config=config,
                mesh=mesh,
                on_epoch_end=on_epoch_end,
                should_stop=lambda: received_signal() is not None,
                on_stop=on_stop,
                partial_epoch=partial_epoch,
            )
            # A signal during the last chunk ends training normally; it must still stop the caller
            # (a campaign of runs, say) once this run's outputs are written.
            stopped = parallel.any_process(received_signal() is not None)
            late_signal = (received_signal() or signal.SIGINT) if stopped else None
        saved.save(state, epoch=int(state.step) // steps, meta={**run_info, "partial_epoch": None})

    if not last and main:
        print(f"The run in {workdir} had already finished epoch {config.epochs}: nothing to train")
        last.update(outputs.read_metrics(workdir)[-1])
    shown = test_x[:10]
    model = state.model()
    reconstructions = np.asarray(evaluate.reconstruct(model, shown))
    samples = np.asarray(evaluate.sample_prior(model, num=100))
    if main:
        outputs.save_reconstructions(workdir, np.asarray(shown), reconstructions)
        outputs.save_samples(workdir, samples)
        outputs.save_curves(workdir, outputs.read_metrics(workdir))
    if late_signal is not None:
        raise Interrupted(late_signal, step=int(state.step), directory=saved.directory)
    return last
