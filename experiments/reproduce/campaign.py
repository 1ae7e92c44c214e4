"""Running the comparison: the phases in order, their data, the runs' states, training, the choice.

- :func:`execute` carries out the training of a :class:`Plan` (what the command line asked for):
  tune, then the final runs with the chosen settings (the report,
  :func:`experiments.reproduce.report.write_plan`, reads them).
- :func:`validation_split` makes the tuning data: the first 50,000 training images to train on and
  the last 10,000 in the place of the test set, so tuning never sees the test set.
- :func:`status` tells whether a run's workdir holds a finished run (its ``metrics.jsonl`` has the
  record of its last epoch, with the IWAE bound), part of one, or nothing.
- :func:`train_runs` trains the runs that are not finished, in order, skipping the others.
- :func:`choose` picks each estimator's candidate with the lowest validation negative ELBO.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from experiments.mnist import input_pipeline, outputs
from experiments.mnist.config import Config
from experiments.reproduce import grid

NUM_VALIDATION = 10_000
DEVICE_FILE = "reproduce_device.json"


class CampaignError(Exception):
    """The campaign cannot go on as asked. The message is one line that names the fix."""


def validation_split(data: input_pipeline.ImageData) -> input_pipeline.ImageData:
    """The tuning data: train on all but the last 10,000 training images, evaluate on those.

    Returns:
      An :class:`~experiments.mnist.input_pipeline.ImageData` whose ``test_*`` arrays are the
      validation images (the last ``NUM_VALIDATION`` training images); the test set is dropped.

    Raises:
      CampaignError: fewer than ``2 * NUM_VALIDATION`` training images.
    """
    n = len(data.train_images)
    if n < 2 * NUM_VALIDATION:
        raise CampaignError(
            f"the validation split needs at least {2 * NUM_VALIDATION} training images, got {n} "
            f"in {data.source}: use the data set's full training set"
        )
    cut = n - NUM_VALIDATION
    return input_pipeline.ImageData(
        train_images=data.train_images[:cut],
        train_labels=data.train_labels[:cut],
        test_images=data.train_images[cut:],
        test_labels=data.train_labels[cut:],
        source=f"{data.source} (validation split: train[:{cut}], validate on train[{cut}:])",
        evaluation="valid",
    )


def limit_examples(data: input_pipeline.ImageData, limit: int) -> input_pipeline.ImageData:
    """The first ``limit`` images of each part of ``data``, for smoke tests."""
    return dataclasses.replace(
        data,
        train_images=data.train_images[:limit],
        train_labels=data.train_labels[:limit],
        test_images=data.test_images[:limit],
        test_labels=data.test_labels[:limit],
        source=f"{data.source} (first {limit} images of each part)",
    )


def status(run: grid.CampaignRun) -> str:
    """``"finished"``, ``"failed"`` (diverged), ``"partial"`` (some epochs or checkpoints) or
    ``"new"``.

    Raises:
      CampaignError: the folder holds a run of other settings, or more epochs than ``run.epochs``,
        or a damaged ``config.json``.
    """
    config_path = run.workdir / outputs.CONFIG_FILE
    if config_path.exists():
        saved = Config.with_defaults(_read_config(config_path))
        expected = run.config(eval_samples=1, data_dir=None, progress=False).to_dict()
        differences = [
            f"{name}: {saved[name]!r} there, {expected[name]!r} here"
            for name in Config.run_defining()  # what the folder's name stands for
            if saved[name] != expected[name]
        ]
        if differences:
            raise CampaignError(
                f"{run.workdir} holds a run with other settings ({'; '.join(differences)}): move "
                "it away, or pass another --root"
            )
    if outputs.read_divergence(run.workdir) is not None:
        return "failed"
    records = outputs.read_metrics(run.workdir)
    epochs = max((r["epoch"] for r in records), default=0)
    if epochs > run.epochs:
        raise CampaignError(
            f"{run.workdir} has trained {epochs} epochs, more than the {run.epochs} asked: pass "
            f"{'--tune-epochs' if run.phase == 'tune' else '--epochs'} {epochs} (or more), or "
            "another --root"
        )
    last = records[-1] if records else {}
    if last.get("epoch") == run.epochs and f"{outputs.evaluated_on(last)}/nll_iwae" in last:
        return "finished"
    return "partial" if records or any(run.workdir.glob("checkpoints/*")) else "new"


def _read_config(path: Path) -> dict[str, Any]:
    """A run folder's ``config.json``.

    Raises:
      CampaignError: it is not a JSON object (a damaged file).
    """
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        saved = error
    if not isinstance(saved, dict):
        raise CampaignError(
            f"{path} is damaged (not a JSON object of settings): move that run folder away to "
            "train the run again"
        )
    return saved


def device_description() -> str:
    """The device runs are timed on, e.g. ``cpu (2 cores)`` or ``gpu (NVIDIA H100 80GB HBM3)``.

    On a CPU, the cores are those this process may run on (``taskset -c 0`` gives ``cpu (1
    core)``), not all the machine's.
    """
    device = jax.devices()[0]
    if device.platform == "cpu":
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        cores = len(usable) if usable else os.cpu_count()
        return f"cpu ({cores} core{'s' if cores != 1 else ''})"
    return f"{device.platform} ({device.device_kind})"


def train_runs(
    runs: Sequence[grid.CampaignRun], data: input_pipeline.ImageData, **config_options
) -> None:
    """Trains every run of ``runs`` that is not finished, reporting progress on stdout.

    A partial run is continued by ``train_and_evaluate`` (from its newest checkpoint). Each
    finished run gets a ``reproduce_device.json`` naming the device that finished it. A run that
    diverges (or diverged before) is reported as failed and skipped: it has no result.

    Args:
      runs: the runs, in order.
      data: the data of their phase.
      **config_options: ``eval_samples``, ``data_dir``, ``progress`` and
        ``allow_unverified_data`` of :meth:`grid.CampaignRun.config`.

    Raises:
      CampaignError: a run folder cannot be used (see :func:`status`).
    """
    from experiments.mnist import run as mnist_run  # Imported here: only training needs it.

    states = [status(run) for run in runs]
    todo = sum(state != "finished" for state in states)
    if runs:
        phase = runs[0].phase
        print(
            f"{phase}: {len(runs)} runs, {len(runs) - todo} finished, {todo} to train "
            f"({len(data.train_images)} training images, {len(data.test_images)} evaluation "
            f"images, {runs[0].epochs} epochs each)",
            flush=True,
        )
    for index, (run, state) in enumerate(zip(runs, states, strict=True), start=1):
        where = f"[{run.phase} {index}/{len(runs)}] {run.title}"
        if state in ("finished", "failed"):
            reason = f": {outputs.read_divergence(run.workdir)}" if state == "failed" else ""
            print(f"{where}: {state}, skipped ({run.workdir}){reason}", flush=True)
            continue
        verb = "continuing" if state == "partial" else "training"
        print(f"{where}: {verb} in {run.workdir}", flush=True)
        try:
            mnist_run.train_and_evaluate(run.config(**config_options), data)
        except mnist_run.Diverged as error:
            print(f"{where}: failed, no result ({error})", flush=True)
            continue
        (run.workdir / DEVICE_FILE).write_text(
            json.dumps({"device": device_description(), "jax": jax.__version__}) + "\n"
        )


@dataclasses.dataclass(frozen=True)
class Choice:
    """The tuning's outcome for one estimator.

    Attributes:
      candidate: the chosen settings (or those the table's protocol fixes).
      scores: validation negative ELBO of every candidate (``inf`` for a run that diverged), in
        the grid's order; empty when the protocol fixes the settings.
      epochs: the tuning runs' budget (0 without tuning).
    """

    candidate: grid.Candidate
    scores: tuple[tuple[grid.Candidate, float], ...]
    epochs: int


def validation_score(run: grid.CampaignRun) -> float:
    """The last validation negative ELBO of a finished tuning run (``inf`` if not finite or if
    the run diverged)."""
    if outputs.read_divergence(run.workdir) is not None:
        return math.inf
    last = outputs.read_metrics(run.workdir)[-1]
    value = last[f"{outputs.evaluated_on(last)}/neg_elbo"]
    return value if math.isfinite(value) else math.inf


def choose(tune_runs: Sequence[grid.CampaignRun]) -> dict[str, Choice]:
    """Each estimator's candidate with the lowest validation negative ELBO (first one on ties).

    A diverged (failed) tuning run scores ``inf``.

    Raises:
      CampaignError: a tuning run is neither finished nor failed.
    """
    unfinished = [run for run in tune_runs if status(run) not in ("finished", "failed")]
    if unfinished:
        names = ", ".join(f"{run.variant.name} {run.candidate.slug}" for run in unfinished[:4])
        more = f" and {len(unfinished) - 4} more" if len(unfinished) > 4 else ""
        raise CampaignError(
            f"{len(unfinished)} tuning runs are not finished ({names}{more}): run --phase tune "
            "(or --phase all) with the same --root, --tune-epochs and grid first"
        )
    by_variant: dict[str, list[grid.CampaignRun]] = {}
    for run in tune_runs:
        by_variant.setdefault(run.variant.name, []).append(run)
    choices = {}
    for name, runs in by_variant.items():
        scores = tuple((run.candidate, validation_score(run)) for run in runs)
        best = min(range(len(scores)), key=lambda i: scores[i][1])
        choices[name] = Choice(scores[best][0], scores, runs[0].epochs)
    return choices


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a campaign is asked to do (``experiments.reproduce``'s command line, parsed).

    Attributes:
      phase: ``tune``, ``final``, ``all`` (tune, final, report) or ``report``.
      table: the comparison (its latent type, model and estimators).
      root: the runs' folder (with ``limit<N>`` appended for a smoke test); the runs of a data
        set other than MNIST are in its subfolder (``grid.dataset_folder``).
      variants: the estimators compared.
      tune_runs: every tuning run, in order.
      epochs: epochs of each final run.
      seeds: seeds of each final run.
      results: folder for the report.
      limit_examples: the smoke test's images per part of the data, or ``None``.
      config_options: ``eval_samples``, ``data_dir``, ``allow_unverified_data`` and
        ``progress`` of every run (:meth:`grid.CampaignRun.config`).
      compilation_cache: ``--compilation-cache`` (``None``: ``root/jax_cache``; ``"none"``: off).
      dataset: the data set every run trains on (``Config.dataset``).
    """

    phase: str
    table: grid.Table
    root: Path
    variants: tuple[grid.Variant, ...]
    tune_runs: tuple[grid.CampaignRun, ...]
    epochs: int
    seeds: tuple[int, ...]
    results: Path
    limit_examples: int | None
    config_options: dict[str, Any]
    compilation_cache: str | None = None
    dataset: str = input_pipeline.DEFAULT_DATASET

    def choices(self) -> dict[str, Choice]:
        """Each estimator's settings: chosen on validation (:func:`choose`, the tuning must be
        finished), or fixed by the table's protocol."""
        if self.table.tuned:
            return choose(self.tune_runs)
        fixed = dict(self.table.settings)
        return {v.name: Choice(fixed[v.name], (), 0) for v in self.variants}

    def final_runs(self, choices: dict[str, Choice]) -> dict[str, list[grid.CampaignRun]]:
        """Each estimator's final runs (one per seed) with its chosen candidate."""
        return {
            v.name: [
                grid.final_run(
                    self.root,
                    v,
                    choices[v.name].candidate,
                    seed=s,
                    epochs=self.epochs,
                    table=self.table,
                    dataset=self.dataset,
                )
                for s in self.seeds
            ]
            for v in self.variants
        }


def execute(
    plan: Plan, *, lost: list[str] | None = None
) -> tuple[dict[str, list[grid.CampaignRun]], dict[str, Choice]] | None:
    """The training phases ``plan.phase`` asks for, in order: tune, then final.

    ``lost``, if given, receives the titles of the runs the phases needed that failed (diverged),
    tuning runs first, so that the caller's exit status can say so.

    Returns:
      ``(final_runs, choices)`` for the report (:func:`experiments.reproduce.report.write_plan`):
      each estimator's final runs and its settings; ``None`` after ``--phase tune``.

    Raises:
      CampaignError: a run folder cannot be used, or the tuning is not finished (for a later
        phase).
      experiments.mnist.input_pipeline.DataError: the data cannot be loaded.
      experiments.mnist.run.Interrupted: a run was stopped by a signal.
    """
    data = None
    if plan.phase != "report":
        options = plan.config_options
        data = input_pipeline.load(
            options["data_dir"],
            dataset=plan.dataset,
            allow_unverified=options["allow_unverified_data"],
        )
        title = input_pipeline.DATASETS[plan.dataset].title
        runs = grid.dataset_folder(plan.root, plan.dataset)
        print(f"{title} from {data.source}; runs in {runs}", flush=True)
        enable_compilation_cache(plan.compilation_cache, plan.root)
    if plan.phase in ("tune", "all") and plan.tune_runs:  # a table with fixed settings has none
        tune_data = _limited(validation_split(data), plan.limit_examples)
        train_runs(plan.tune_runs, tune_data, **plan.config_options)
    choices = plan.choices()
    lost = [] if lost is None else lost
    lost.extend(run.title for run in plan.tune_runs if status(run) == "failed")
    for name, choice in choices.items():
        if choice.scores:
            score = dict(choice.scores)[choice.candidate]
            print(f"chosen for {name}: {choice.candidate.label} (validation {score:.2f})")
    if plan.phase == "tune":
        return None
    final_runs = plan.final_runs(choices)
    if plan.phase in ("final", "all"):
        runs = [r for per_seed in final_runs.values() for r in per_seed]
        train_runs(runs, _limited(data, plan.limit_examples), **plan.config_options)
    finals = [run for per_seed in final_runs.values() for run in per_seed]
    lost.extend(run.title for run in finals if status(run) == "failed")
    return final_runs, choices


def _limited(data: input_pipeline.ImageData, limit: int | None) -> input_pipeline.ImageData:
    return data if limit is None else limit_examples(data, limit)


def enable_compilation_cache(flag: str | None, root: Path) -> None:
    """Points JAX's persistent compilation cache at ``flag`` (default ``root/jax_cache``).

    The runs share the evaluation's executables and each run's compilation is reused when it is
    continued, which saves most of a short run's time. A cache the user set is left alone.
    """
    if flag == "none" or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(Path(flag) if flag else root / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
