"""Orbax checkpoints of a training run: what they hold, saving them, and resuming from the newest.

A checkpoint (``<workdir>/checkpoints/<step>/``, one Orbax ``CheckpointManager`` step) holds two
items:

- ``state``: the arrays needed to continue exactly: ``params`` (the model's ``nnx.State`` of
  parameters), ``opt_state`` (Adam's state, of the same structure), ``step`` and the training PRNG
  key as key data (``jax.random.key_data``; restored with ``wrap_key_data``), and for an
  estimator with a learned control variate (RELAX) ``control_variate``, its ``params`` and
  ``opt_state`` (the other estimators' checkpoints have no such entry);
- ``meta`` (JSON): the ``format`` (:data:`FORMAT`), the finished ``epoch``, the ``step``, the
  run's ``config``, a ``data`` fingerprint of the training images, and ``partial_epoch`` (the step
  losses and seconds of an epoch stopped part way, so that its metrics line covers all of its
  steps after the resume).

Checkpoints of the experiment's earlier Flax Linen model (no ``format`` in ``meta``; parameters
named ``encoder_0`` ...) are refused with a :class:`CheckpointError`, never deleted.

The manager keeps the last :data:`KEEP` steps. Orbax writes each step into a temporary folder
and renames it when complete, so a process killed during a save leaves no half-written step
(the temporary folder is removed when the next run opens the manager). Restoring tries the
newest step first and falls back to older ones, with a warning, when files were corrupted or
deleted by hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.mnist import workdir
from experiments.mnist.config import Config

CHECKPOINT_DIR = "checkpoints"
KEEP = 3
# The ``meta`` item's ``format`` of checkpoints of the Flax NNX model; the Linen model wrote none.
FORMAT = "flax-nnx-1"


class CheckpointError(Exception):
    """A run cannot resume from its workdir's checkpoints. The message is one line."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """A checkpoint read back.

    Attributes:
      state: the train state, with the arrays of the checkpoint.
      step: its global step.
      epoch: epochs finished at that step.
      meta: the JSON item (``epoch``, ``step``, ``config``, ``data``, ``partial_epoch``).
    """

    state: Any
    step: int
    epoch: int
    meta: dict[str, Any]


def data_fingerprint(images: np.ndarray) -> str:
    """SHA-256 of the training images' shape and bytes: the identity of a run's data."""
    images = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{images.dtype}{images.shape}".encode())
    digest.update(images.data)
    return digest.hexdigest()


def _arrays(state: Any) -> dict[str, Any]:
    """The arrays of a train state that a checkpoint holds (the key as key data; a learned
    control variate's parameters and optimizer state, when the state has one)."""
    arrays = {
        "params": state.params,
        "opt_state": state.opt_state,
        "step": state.step,
        "key": jax.random.key_data(state.key),
    }
    control_variate = getattr(state, "control_variate", None)
    if control_variate is not None:
        arrays["control_variate"] = {
            "params": control_variate.params,
            "opt_state": control_variate.opt_state,
        }
    return arrays


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_orbax_failures() -> Iterator[None]:
    """Hides the tracebacks that asyncio and Orbax's coroutines print for failed reads and writes.

    The error itself still propagates and is reported in one line. A :class:`RunCheckpoints`
    holds this for its lifetime, since its saves fail in background threads.
    """
    loggers = [logging.getLogger(name) for name in ("asyncio", "absl")]
    levels, unraisable_hook = [lg.level for lg in loggers], sys.unraisablehook
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        sys.unraisablehook = unraisable_hook


class RunCheckpoints:
    """The checkpoints of one run, under ``<workdir>/checkpoints``.

    Every process of a multi-host run must create it and call :meth:`save` and
    :meth:`restore_latest` together (Orbax synchronises them and writes from each process the
    shards it holds). Use it as a context manager, or call :meth:`close`, so that the last
    asynchronous save is finished before the program exits.

    Examples:
      >>> import tempfile
      >>> from experiments.mnist import train
      >>> from experiments.mnist.config import Config
      >>> config = Config(latents=2, categories=3, hidden=(8,))
      >>> fresh = train.create_train_state(config, image_shape=(4, 4, 1))
      >>> with RunCheckpoints(tempfile.mkdtemp()) as saved:
      ...     print(saved.restore_latest(fresh))  # a new run: nothing to resume
      ...     started = saved.save(fresh, epoch=0, meta={"config": config.to_dict()})
      ...     saved.wait_until_finished()
      ...     restored = saved.restore_latest(fresh)
      None
      >>> restored.step, restored.epoch, restored.meta["format"]
      (0, 0, 'flax-nnx-1')
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        keep: int = KEEP,
        warn: Callable[[str], None] = _stderr_warning,
    ):
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        self._warn = warn
        self._quiet = contextlib.ExitStack()
        self._quiet.enter_context(_quiet_orbax_failures())
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=ocp.checkpoint_managers.LatestN(keep),
                cleanup_tmp_directories=True,  # what a process killed during a save left
                create=True,
            ),
            item_names=("state", "meta"),
        )

    def __enter__(self) -> RunCheckpoints:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def steps(self) -> list[int]:
        """The complete checkpoints' steps, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, state: Any, *, epoch: int, meta: dict[str, Any]) -> bool:
        """Starts an asynchronous save of ``state`` at its step (nothing if that step exists).

        Args:
          state: the train state (``params``, ``opt_state``, ``step``, ``key``).
          epoch: epochs finished at ``state.step``.
          meta: JSON-compatible run information stored beside the arrays (``epoch`` and
            ``step`` are added).

        Returns:
          Whether a save started.
        """
        step = int(state.step)
        if step in self._manager.all_steps():
            return False
        with self._writing():
            return self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_arrays(state)),
                    meta=ocp.args.JsonSave(
                        {**meta, "format": FORMAT, "epoch": epoch, "step": step}
                    ),
                ),
                force=True,
            )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turns a failed write (disk full, file-size limit, permissions) into one line.

        Raises:
          CheckpointError: naming the path and the fix, for an ``OSError`` anywhere in the
            chain of the error Orbax raised.
        """
        try:
            yield
        except Exception as error:
            cause = _os_error(error)
            if cause is None:
                raise
            # The failed save's other writes fail too; their futures are garbage-collected later,
            # after the checkpoints are closed, and asyncio would log each with a traceback.
            logging.getLogger("asyncio").addFilter(_drop_unretrieved_exceptions)
            where = OSError(cause.errno, cause.strerror, f"a checkpoint in {self.directory}")
            raise CheckpointError(workdir.describe_write_failure(where)) from None

    def restore_latest(
        self, target: Any, *, check: Callable[[int, dict[str, Any]], None] | None = None
    ) -> Restored | None:
        """The newest checkpoint that restores, into the shardings of ``target``'s arrays.

        A checkpoint that fails to restore (files truncated, deleted or otherwise corrupted) is
        reported with a warning and deleted, so that the resumed run can write that step again,
        and the next older one is tried.

        Args:
          target: a train state of the run's shapes, dtypes and shardings (a fresh one).
          check: called with the step and the JSON item of the newest readable checkpoint
            before its arrays are read; it raises :class:`CheckpointError` to refuse it (such
            as :func:`check_resumable`).

        Returns:
          The restored checkpoint, or ``None`` when there is none (a new run).

        Raises:
          CheckpointError: there are checkpoints but none of them restores, or ``check``
            refused the newest one.
        """
        steps = self.steps()
        if not steps:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _arrays(target))
        failures = []
        for step in reversed(steps):
            try:
                meta = self._manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                )["meta"]
                epoch = int(meta["epoch"])
                _check_format(step, meta, self.directory)
                if check is not None:
                    check(step, meta)
                arrays = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                )["state"]
            except CheckpointError:
                raise
            except Exception as error:  # Orbax and TensorStore raise many kinds on bad files.
                reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                failures.append((step, reason))
                self._warn(
                    f"checkpoint {self.directory / str(step)} does not restore ({reason}); "
                    "trying an older one"
                )
                continue
            for bad_step, _ in failures:
                self._manager.delete(bad_step)
            if failures:
                bad_steps = ", ".join(str(bad_step) for bad_step, _ in failures)
                self._warn(
                    f"resuming from the older checkpoint at step {step}; the newer one(s) that "
                    f"did not restore (step {bad_steps}) were deleted"
                )
            state = target.replace(
                params=arrays["params"],
                opt_state=arrays["opt_state"],
                step=arrays["step"],
                key=jax.random.wrap_key_data(arrays["key"], impl=jax.random.key_impl(target.key)),
            )
            if "control_variate" in arrays:
                state = state.replace(
                    control_variate=state.control_variate.replace(**arrays["control_variate"])
                )
            return Restored(state=state, step=step, epoch=epoch, meta=meta)
        reasons = "; ".join(f"step {bad_step}: {reason}" for bad_step, reason in failures)
        raise CheckpointError(
            f"none of the {len(steps)} checkpoints in {self.directory} restores ({reasons}): "
            "move that folder away to start the run over, or use another --workdir"
        )

    def wait_until_finished(self) -> None:
        """Blocks until the last asynchronous save is complete on disk.

        Raises:
          CheckpointError: the save failed to write (disk full...).
        """
        with self._writing():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager.

        Raises:
          CheckpointError: the last save failed to write (disk full...).
        """
        try:
            self.wait_until_finished()
        finally:
            with contextlib.suppress(Exception):
                self._manager.close()
            self._quiet.close()


def _drop_unretrieved_exceptions(record: logging.LogRecord) -> bool:
    """A logging filter: drops asyncio's "... exception was never retrieved" records."""
    return "exception was never retrieved" not in str(record.msg)


def _os_error(error: BaseException | None) -> OSError | None:
    """The failed write behind ``error``: an ``OSError`` in its chain of causes and contexts, or
    the one TensorStore describes in a ``ValueError`` (``... [os_error_code='28']``)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            return error
        code = re.search(r"os_error_code='(\d+)'", str(error))
        if code is not None:
            path = re.search(r'Failed (?:writing|to write|to open)[^"]*"([^"]+)"', str(error))
            number = int(code.group(1))
            return OSError(number, os.strerror(number), path.group(1) if path else None)
        for nested in getattr(error, "exceptions", None) or ():  # An ExceptionGroup.
            if (found := _os_error(nested)) is not None:
                return found
        error = error.__cause__ or error.__context__
    return None


def _check_format(step: int, meta: dict[str, Any], directory: Path) -> None:
    """Refuses a checkpoint of another format (the Linen model's) before its arrays are read."""
    if meta.get("format") == FORMAT:
        return
    writer = (
        "the earlier Flax Linen version of this experiment"
        if "format" not in meta
        else f"another version of this experiment (format {meta['format']!r})"
    )
    raise CheckpointError(
        f"the checkpoint at step {step} in {directory} was written by {writer} and cannot be "
        "resumed by this one (Flax NNX): use another --workdir, or move that folder away to start "
        "the run over"
    )


def check_resumable(
    step: int, meta: dict[str, Any], config: Config, *, fingerprint: str, directory: Path
) -> None:
    """Checks that ``config`` and the training data may continue a checkpointed run.

    Args:
      step: the checkpoint's step.
      meta: its JSON item.
      config: the settings of the run that would resume it.
      fingerprint: :func:`data_fingerprint` of that run's training images.
      directory: the checkpoints' folder (for the message).

    Raises:
      CheckpointError: a setting that defines the model, the data or the estimator differs
        (each one named, with its saved and new value), the training data differs, or the
        checkpoint is already past ``config.epochs``.
    """
    where = f"the checkpoint at step {step} in {directory}"
    differences = config.fixed_on_resume_differences(meta.get("config", {}))
    if differences:
        raise CheckpointError(
            f"cannot resume {where} with changed settings ({'; '.join(differences)}): rerun "
            "with the saved settings (see config.json), or use another --workdir to start a new "
            "run"
        )
    if meta.get("data") != fingerprint:
        raise CheckpointError(
            f"cannot resume {where}: the training data differs from the data it was trained on "
            "(SHA-256 of the training images): use the same data, or another --workdir"
        )
    if meta["epoch"] > config.epochs:
        raise CheckpointError(
            f"{where} has finished epoch {meta['epoch']}, past --epochs {config.epochs}: pass "
            f"--epochs {meta['epoch']} or more, or use another --workdir"
        )
