"""A whole training run: resume, train, evaluate every epoch, checkpoint, stop cleanly on signals.

:func:`train_and_evaluate` wraps :func:`experiments.mnist.train.fit` with everything a run needs
around the training loop: it resumes from the newest Orbax checkpoint of the workdir
(:mod:`experiments.mnist.checkpoints`), evaluates after every epoch
(:mod:`experiments.mnist.evaluate`), writes the metrics, pictures and checkpoints
(:mod:`experiments.mnist.outputs`), and turns SIGINT/SIGTERM into a stop at the next chunk
boundary with a checkpoint (:func:`stop_on_signals`, :class:`Interrupted`), or at the next chunk
of an evaluation. The workdir is the run's alone while it lasts (:mod:`experiments.mnist.workdir`),
and a run whose loss stops being finite ends with :class:`Diverged`, recorded in the workdir.
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

from experiments.mnist import checkpoints, evaluate, input_pipeline, outputs, parallel, workdir
from experiments.mnist.config import Config
from experiments.mnist.train import (
    Diverged,
    EpochResult,
    PartialEpoch,
    create_train_state,
    fit,
    steps_per_epoch,
)
from experiments.mnist.update import TrainState


class Interrupted(Exception):
    """Training stopped at SIGINT or SIGTERM, after saving a checkpoint.

    Attributes:
      signum: the signal received.
      step: global step of the checkpoint.
      directory: the checkpoints' folder.
      exit_status: ``128 + signum`` (130 for Ctrl-C, 143 for SIGTERM), the shell's convention.

    ``evaluating``: the epoch whose evaluation the signal stopped (its training is checkpointed).
    """

    def __init__(self, signum: int, *, step: int, directory: Path, evaluating: int | None = None):
        self.signum = signum
        self.step = step
        self.directory = directory
        self.exit_status = 128 + signum
        name = signal.Signals(signum).name
        if evaluating is None:
            message = (
                f"interrupted by {name}: saved a checkpoint at step {step} in {directory}; rerun "
                "the same command to resume"
            )
        else:
            message = (
                f"interrupted by {name} during the evaluation of epoch {evaluating}: its training "
                f"is finished and checkpointed (step {step} in {directory}), its evaluation is "
                "not; rerun the same command to evaluate it without training it again"
            )
        super().__init__(message)


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
    config: Config, data: input_pipeline.ImageData, *, mesh: jax.sharding.Mesh | None = None
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
    raise :class:`Interrupted`; during an evaluation they stop it at its next chunk (the epoch's
    training is checkpointed before it is evaluated; a rerun evaluates it without training).

    Args:
      config: the run's settings.
      data: the data set (the same on every process).
      mesh: the devices to train on (default: all devices, :func:`parallel.make_mesh`).

    Returns:
      The last metrics record.

    The workdir is owned by this run while it lasts (:func:`workdir.owned`, on process 0): a
    second run on it stops at once with a :class:`workdir.WorkdirError`.

    Raises:
      checkpoints.CheckpointError: the workdir's checkpoints cannot be resumed with ``config``, or
        a checkpoint cannot be written.
      workdir.WorkdirError: the workdir cannot be created, or another run holds it.
      Diverged: training produced a non-finite loss (``diverged.json`` is written, the
        checkpoints before it are kept, no pictures are drawn).
      Interrupted: training or evaluation was stopped by a signal (training is checkpointed).
      ValueError: the batch size does not fit the data or the devices.
    """
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_batch_size(config.batch_size, mesh)
    steps = steps_per_epoch(config, len(data.train_images))  # Checked before anything is written.
    with _owned(config.workdir):
        return _owned_run(config, data, mesh, steps)


@contextlib.contextmanager
def _owned(path: str) -> Iterator[None]:
    """Process 0 owns the workdir (:func:`workdir.owned`) for the block; every process learns
    whether it could, so that none goes on alone.

    Raises:
      workdir.WorkdirError: on every process, when process 0 cannot own the workdir.
    """
    with contextlib.ExitStack() as stack:
        error = None
        if parallel.is_main_process():
            try:
                stack.enter_context(workdir.owned(path))
            except workdir.WorkdirError as failure:
                error = failure
        if parallel.any_process(error is not None):
            raise error or workdir.WorkdirError(f"process 0 cannot own the workdir {path}")
        yield


def _owned_run(
    config: Config, data: input_pipeline.ImageData, mesh: jax.sharding.Mesh, steps: int
) -> dict[str, Any]:
    """:func:`train_and_evaluate` once the workdir is this run's."""
    test_x = _pixels(data.test_images, config.binarize, mesh)
    # The training set's pixels are made only for the last epoch's training-set bound.
    train_pixels = functools.partial(_pixels, data.train_images, config.binarize, mesh)
    state = create_train_state(
        config, image_shape=test_x.shape[1:], total_steps=config.epochs * steps
    )
    state = parallel.replicate(state, mesh)
    run_info = {"config": config.to_dict(), "data": checkpoints.data_fingerprint(data.train_images)}
    with checkpoints.RunCheckpoints(config.workdir) as saved:
        state, partial_epoch, unevaluated = _resume(
            saved, state, config, run_info=run_info, steps=steps
        )
        with stop_on_signals() as received_signal:
            epoch_end = _EpochEnd(
                config, test_x, train_pixels, saved, run_info, received_signal, data.evaluation
            )
            if unevaluated is not None:
                epoch_end.record(state, unevaluated)
            state = _fit(state, data, config, mesh, epoch_end, partial_epoch, steps=steps)
            # A signal during the last chunk ends training normally; it must still stop the caller
            # (a campaign of runs, say) once this run's outputs are written.
            stopped = parallel.any_process(received_signal() is not None)
            late_signal = (received_signal() or signal.SIGINT) if stopped else None
        saved.save(state, epoch=int(state.step) // steps, meta={**run_info, "partial_epoch": None})
    last = epoch_end.last or _finished_before(config)
    _write_pictures(config, state, test_x)
    if late_signal is not None:
        raise Interrupted(late_signal, step=int(state.step), directory=saved.directory)
    return last


def _pixels(images: np.ndarray, mode: str, mesh: jax.sharding.Mesh) -> jax.Array:
    """``images`` binarized once with the evaluation's fixed key, on the mesh's devices."""
    return parallel.replicate(evaluate.pixels_binarized_once(images, mode), mesh)


def _fit(
    state: TrainState,
    data: input_pipeline.ImageData,
    config: Config,
    mesh: jax.sharding.Mesh,
    epoch_end: _EpochEnd,
    partial_epoch: PartialEpoch | None,
    *,
    steps: int,
) -> TrainState:
    """Trains with :func:`fit`: after each epoch, ``epoch_end`` checkpoints, evaluates and writes;
    a stop request saves the part of the epoch trained and raises :class:`Interrupted`; a
    divergence is recorded in the workdir.

    Returns:
      The final train state.
    """
    epochs = fit(
        state,
        data.train_images,
        config=config,
        mesh=mesh,
        should_stop=lambda: epoch_end.received_signal() is not None,
        partial_epoch=partial_epoch,
    )
    try:
        for state, result in epochs:
            if isinstance(result, PartialEpoch):
                _save_and_raise(
                    state,
                    result,
                    saved=epoch_end.saved,
                    run_info=epoch_end.run_info,
                    steps=steps,
                    received_signal=epoch_end.received_signal,
                )
            epoch_end(state, result)
    except Diverged as error:
        if parallel.is_main_process():
            outputs.write_divergence(config.workdir, error.step, str(error))
        raise
    return state


def _resume(
    saved: checkpoints.RunCheckpoints,
    fresh: TrainState,
    config: Config,
    *,
    run_info: dict[str, Any],
    steps: int,
) -> tuple[TrainState, PartialEpoch | None, EpochResult | None]:
    """The state to start from: the newest checkpoint that restores, else ``fresh``.

    Prepares the workdir accordingly (on process 0): a resumed run keeps the metrics lines of
    the epochs its checkpoint finished, a new one starts an empty ``metrics.jsonl``; both write
    ``config.json`` and drop the ``diverged.json`` of an earlier attempt.

    Returns:
      ``(state, partial_epoch, unevaluated)``: ``unevaluated`` is the checkpoint's epoch when its
      training finished but its metrics line was never written (its evaluation was stopped).
    """
    workdir, main = Path(config.workdir), parallel.is_main_process()
    restored = saved.restore_latest(
        fresh,
        check=functools.partial(
            checkpoints.check_resumable,
            config=config,
            fingerprint=run_info["data"],
            directory=saved.directory,
        ),
    )
    if main:
        (workdir / outputs.DIVERGED_FILE).unlink(missing_ok=True)
        if restored is None:
            (workdir / outputs.METRICS_FILE).unlink(missing_ok=True)
        else:
            _report_resume(restored, saved.directory, steps)
            outputs.truncate_metrics(workdir, restored.epoch)
        outputs.write_config(workdir, config.to_dict())
    if restored is None:
        return fresh, None, None
    partial = restored.meta.get("partial_epoch")
    partial = PartialEpoch(tuple(partial["losses"]), partial["seconds"]) if partial else None
    return restored.state, partial, _unevaluated(restored, workdir)


def _report_resume(restored: checkpoints.Restored, directory: Path, steps: int) -> None:
    into = restored.step - restored.epoch * steps
    where = f", {into}/{steps} steps into epoch {restored.epoch + 1}" if into else ""
    print(
        f"Resuming from the checkpoint at step {restored.step} (epoch "
        f"{restored.epoch}{where}) in {directory}",
        flush=True,
    )


def _unevaluated(restored: checkpoints.Restored, workdir: Path) -> EpochResult | None:
    """The checkpoint's finished epoch if it has no metrics line yet (every process agrees)."""
    result = restored.meta.get("epoch_result")
    if result is None:
        return None
    # The metrics file is process 0's; the other processes follow its answer.
    recorded = any(r["epoch"] == restored.epoch for r in outputs.read_metrics(workdir))
    if parallel.any_process(parallel.is_main_process() and not recorded):
        return EpochResult(**result)
    return None


class _EpochEnd:
    """What a run does after each epoch: checkpoint, evaluate, write the metrics line, report.

    Attributes:
      last: the metrics record of the last epoch trained (empty before the first).
      split: what ``test_x`` is (``ImageData.evaluation``), the prefix of its metrics.
    """

    def __init__(
        self,
        config: Config,
        test_x: jax.Array,
        train_pixels: Callable[[], jax.Array],
        saved: checkpoints.RunCheckpoints,
        run_info: dict[str, Any],
        received_signal: Callable[[], int | None],
        split: str = "test",
    ):
        self.config, self.saved, self.run_info = config, saved, run_info
        self.test_x, self.train_pixels, self.split = test_x, train_pixels, split
        self.received_signal = received_signal
        self.last: dict[str, Any] = {}

    def __call__(self, state: TrainState, result: EpochResult) -> None:
        # The checkpoint first, with the epoch's training figures: a run stopped during the
        # evaluation resumes from it and only evaluates (see :func:`_unevaluated`).
        meta = {**self.run_info, "partial_epoch": None, "epoch_result": dataclasses.asdict(result)}
        self.saved.save(state, epoch=result.epoch, meta=meta)
        self.record(state, result)

    def _signalled(self) -> bool:
        return parallel.any_process(self.received_signal() is not None)

    def record(self, state: TrainState, result: EpochResult) -> None:
        """Evaluates the epoch, then writes and prints its metrics line (process 0).

        Raises:
          Interrupted: a signal stopped the evaluation (the epoch's checkpoint is complete).
        """
        config, main = self.config, parallel.is_main_process()
        # A signal of the epoch's last chunk lets the epoch finish (evaluation included) before
        # the run stops; one received during the evaluation stops it at its next chunk.
        signalled_before = self._signalled()
        try:
            record = epoch_record(
                state,
                result,
                self.test_x,
                config=config,
                should_stop=None if signalled_before else self._signalled,
                train_x=self.train_pixels() if result.epoch == config.epochs else None,
                split=self.split,
            )
        except evaluate.Stopped:
            self.saved.wait_until_finished()
            raise Interrupted(
                self.received_signal() or signal.SIGINT,
                step=result.step,
                directory=self.saved.directory,
                evaluating=result.epoch,
            ) from None
        if main:
            outputs.append_metrics(config.workdir, record)
            print(epoch_line(record, config), flush=True)
        self.last = record


def epoch_record(
    state: TrainState,
    result: EpochResult,
    test_x: jax.Array,
    *,
    config: Config,
    should_stop: Callable[[], bool] | None = None,
    train_x: jax.Array | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of an epoch: its training figures and the held-out bounds
    (of ``test_x``, named ``<split>/...``: ``test``, or ``valid`` for a validation split).

    The last epoch also has the IWAE bound with ``config.eval_samples`` samples and, given
    ``train_x`` (the training pixels binarized once), ``train/neg_elbo``: the discrete model's
    negative ELBO on the training set, one exact sample per image (what papers that report a
    "training ELBO" measure; ``train/loss`` is the objective the estimator optimised, relaxed for
    ``relaxed``).

    Raises:
      evaluate.Stopped: ``should_stop`` stopped the evaluation.
    """
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
            should_stop=should_stop,
            split=split,
        ),
    }
    if final:
        record["iwae_samples"] = config.eval_samples
        if train_x is not None:
            record |= evaluate.evaluate(
                state.model(), train_x, config=config, should_stop=should_stop, split="train"
            )
    return record


def epoch_line(record: dict[str, Any], config: Config) -> str:
    """The line printed after an epoch."""
    split = outputs.evaluated_on(record)
    line = f"epoch {record['epoch']}/{config.epochs}  step {record['step']}  "
    if config.spec().anneals_temperature:  # the others ignore it
        line += f"temperature {record['temperature']:.3f}  "
    line += f"train/loss {record['train/loss']:.2f}  "
    line += f"{split}/neg_elbo {record[f'{split}/neg_elbo']:.2f}"
    if f"{split}/nll_iwae" in record:
        line += f"  {split}/nll_iwae {record[f'{split}/nll_iwae']:.2f} (k={record['iwae_samples']})"
    if "train/neg_elbo" in record:
        line += f"  train/neg_elbo {record['train/neg_elbo']:.2f}"
    return f"{line}  {record['seconds']:.1f} s ({record['examples_per_second']:.0f} ex/s)"


def _save_and_raise(
    state: TrainState,
    partial: PartialEpoch,
    *,
    saved: checkpoints.RunCheckpoints,
    run_info: dict[str, Any],
    steps: int,
    received_signal: Callable[[], int | None],
) -> None:
    """On a stop: saves a checkpoint with the part of the epoch trained, then raises.

    Raises:
      Interrupted: always, naming the signal received.
    """
    meta = {**run_info, "partial_epoch": dataclasses.asdict(partial)}
    saved.save(state, epoch=int(state.step) // steps, meta=meta)
    saved.wait_until_finished()
    raise Interrupted(
        received_signal() or signal.SIGINT, step=int(state.step), directory=saved.directory
    )


def _finished_before(config: Config) -> dict[str, Any]:
    """The last record of a run that had finished before this call (process 0; else empty)."""
    if not parallel.is_main_process():
        return {}
    print(
        f"The run in {config.workdir} had already finished epoch {config.epochs}: nothing to train"
    )
    return outputs.read_metrics(config.workdir)[-1]


def _write_pictures(config: Config, state: TrainState, test_x: jax.Array) -> None:
    """Reconstructions of 10 test digits, 100 prior samples and the curves (process 0 writes)."""
    model, shown = state.model(), test_x[:10]
    reconstructions = np.asarray(evaluate.reconstruct(model, shown))
    samples = np.asarray(evaluate.sample_prior(model, num=100))
    if parallel.is_main_process():
        outputs.save_reconstructions(config.workdir, np.asarray(shown), reconstructions)
        outputs.save_samples(config.workdir, samples)
        outputs.save_curves(config.workdir, outputs.read_metrics(config.workdir))
