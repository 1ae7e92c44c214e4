"""The comparison's results: ``reproduction.json``, ``reproduction.md`` and the curves' figure.

:func:`summarize` reads the final runs (and the tuning's choice) into one JSON-ready object keyed
by estimator name, with a row for each estimator whose runs have all ended (an estimator with a
run still to train is listed as running, never shown as a result); :func:`write` saves it with a
Markdown table set beside the published numbers (:mod:`experiments.reproduce.published`), and a
figure of the test negative ELBO by epoch of every estimator (mean over seeds, with the seeds'
range shaded).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.mnist import input_pipeline, outputs
from experiments.mnist.config import Config
from experiments.reproduce import campaign, grid, published

JSON_FILE = "reproduction.json"
MARKDOWN_FILE = "reproduction.md"
CURVES_FILE = "reproduction_curves.png"
# How the paragraph above a table names the optimizers (``Config.optimizer``).
OPTIMIZER_NAMES = {"adam": "Adam", "radam": "RAdam"}


@dataclasses.dataclass(frozen=True)
class Summary:
    """What :func:`summarize` found.

    Attributes:
      results: the JSON object, keyed by estimator name: the estimators whose final runs have
        all ended, at least one of them finished.
      curves: test negative ELBO by epoch, ``[seeds, epochs]``, per estimator of ``results``.
      missing: titles of the final runs that are not finished (nor failed).
      limit_examples: the smoke-test data limit the runs used, or ``None``.
      failed: titles of the final runs that diverged (no result).
      table: the comparison.
      running: ``(estimator name, finished runs, runs)`` of each estimator left out of
        ``results`` because some of its final runs are not finished.
      training_hours: hours of training steps (evaluation not counted) of the tuning runs and
        of the final runs reported, or ``None`` when the tuning runs were not given.
      dataset: the data set of the runs (a key of ``input_pipeline.DATASETS``), named in the
        heading, the paragraph and the figure.
    """

    results: dict[str, dict[str, Any]]
    curves: dict[str, np.ndarray]
    missing: tuple[str, ...]
    limit_examples: int | None = None
    failed: tuple[str, ...] = ()
    table: grid.Table = grid.CATEGORICAL
    running: tuple[tuple[str, int, int], ...] = ()
    training_hours: tuple[float, float] | None = None
    dataset: str = input_pipeline.DEFAULT_DATASET

    @property
    def heading(self) -> str:
        """The table's title on the runs' data set."""
        return self.table.heading(self.dataset)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``None`` for one value, or for non-finite values)."""
    mean = _finite_or_none(statistics.fmean(values))
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean, _finite_or_none(std)


def summarize(
    final_runs: Mapping[str, Sequence[grid.CampaignRun]],
    choices: Mapping[str, campaign.Choice],
    *,
    table: grid.Table = grid.CATEGORICAL,
    limit_examples: int | None = None,
    tune_runs: Sequence[grid.CampaignRun] | None = None,
    dataset: str = input_pipeline.DEFAULT_DATASET,
) -> Summary:
    """Gathers the final runs of each estimator whose runs have all ended.

    Args:
      final_runs: each estimator's final runs (one per seed), by estimator name.
      choices: the tuning's outcome, by estimator name.
      table: the comparison the runs belong to.
      limit_examples: the data limit of a smoke test, recorded in the results.
      tune_runs: the tuning runs, to add up the table's training time.
      dataset: the data set the runs trained on (the published numbers are set beside MNIST's
        results only).

    Returns:
      The :class:`Summary`. Each entry of ``results`` has ``neg_elbo_mean``, ``neg_elbo_std``
      (sample standard deviation over seeds, ``null`` for one seed), ``nll_iwae_mean``,
      ``nll_iwae_std``, ``iwae_samples``, ``seeds``, ``epochs``, ``tuning_epochs``, ``latents``,
      ``categories`` (``null`` for binary latents), ``seconds_per_epoch`` (median training time
      of an epoch over all epochs and seeds), ``device``, ``settings`` (the chosen ones),
      ``tuning``, ``per_seed``, ``dataset`` and ``published``; the binary table's entries also have
      ``latent_type: "bernoulli"``.
    """
    results, curves, missing, failed, running = {}, {}, [], [], []
    ended = []  # the final runs that finished or diverged: those whose training time counts
    for name, runs in final_runs.items():
        states = {run: campaign.status(run) for run in runs}
        ended.extend(run for run in runs if states[run] in ("finished", "failed"))
        finished = [run for run in runs if states[run] == "finished"]
        failed.extend(run.title for run in runs if states[run] == "failed")
        unfinished = [run.title for run in runs if states[run] not in ("finished", "failed")]
        missing.extend(unfinished)
        if unfinished:
            running.append((name, len(finished), len(runs)))
            continue
        if not finished:
            continue
        records = [outputs.read_metrics(run.workdir) for run in finished]
        epochs = finished[0].epochs
        by_epoch = [_latest_per_epoch(r) for r in records]
        curves[name] = np.array(
            [[by[epoch]["test/neg_elbo"] for epoch in range(1, epochs + 1)] for by in by_epoch]
        )
        results[name] = _row(
            name, finished, records, choices[name], table, limit_examples, dataset=dataset
        )
    hours = None
    if tune_runs is not None:
        hours = (_training_hours(tune_runs), _training_hours(ended))
    return Summary(
        results,
        curves,
        tuple(missing),
        limit_examples,
        tuple(failed),
        table,
        tuple(running),
        hours,
        dataset,
    )


def _training_hours(runs: Sequence[grid.CampaignRun]) -> float:
    """Hours of training steps of ``runs`` (their epochs' ``seconds``; evaluation not counted)."""
    seconds = sum(
        record["seconds"]
        for run in runs
        for record in _latest_per_epoch(outputs.read_metrics(run.workdir)).values()
    )
    return seconds / 3600


def _row(
    name: str,
    finished: Sequence[grid.CampaignRun],
    records: Sequence[Sequence[dict[str, Any]]],
    choice: campaign.Choice,
    table: grid.Table,
    limit_examples: int | None,
    *,
    dataset: str,
) -> dict[str, Any]:
    """The JSON entry of estimator ``name`` from its finished runs and their metrics records."""
    last = [r[-1] for r in records]
    neg_elbo_mean, neg_elbo_std = _mean_std([r["test/neg_elbo"] for r in last])
    nll_iwae_mean, nll_iwae_std = _mean_std([r["test/nll_iwae"] for r in last])
    variant = finished[0].variant
    row = {
        "estimator": variant.estimator,
        "estimator_options": variant.spec.check_options(dict(variant.options)),
        "neg_elbo_mean": neg_elbo_mean,
        "neg_elbo_std": neg_elbo_std,
        "nll_iwae_mean": nll_iwae_mean,
        "nll_iwae_std": nll_iwae_std,
        **_train_bound(last),
        "iwae_samples": sorted({r["iwae_samples"] for r in last}),
        "seeds": [run.seed for run in finished],
        "epochs": finished[0].epochs,
        "tuning_epochs": choice.epochs if table.tuned else None,
        "latents": table.latents,
        "categories": table.categories,
        "binarization": table.binarize,
        "optimizer": table.optimizer,
        "seconds_per_epoch": statistics.median(x["seconds"] for r in records for x in r),
        "device": ", ".join(sorted({_device(run.workdir) for run in finished})),
        "settings": choice.candidate.to_dict(),
        "tuning": _tuning(choice, limit_examples) if table.tuned else None,
        "per_seed": [
            {
                "seed": run.seed,
                "neg_elbo": _finite_or_none(r["test/neg_elbo"]),
                "nll_iwae": _finite_or_none(r["test/nll_iwae"]),
            }
            for run, r in zip(finished, last, strict=True)
        ],
        "dataset": dataset,
        "published": (
            dict(published.PAPER_RESULTS[table.name].get(name, ()))
            if dataset == published.DATASET
            else {}
        ),
    }
    if table.latent_type != "categorical":
        row["latent_type"] = table.latent_type
    if limit_examples is not None:
        row["limit_examples"] = limit_examples
    return row


def _tuning(choice: campaign.Choice, limit_examples: int | None) -> dict[str, Any]:
    """The JSON of the tuning: its split, epochs, seed and every candidate's score."""
    return {
        "split": _split_text(limit_examples),
        "epochs": choice.epochs,
        "seed": grid.TUNE_SEED,
        "candidates": [
            {**candidate.to_dict(), "validation_neg_elbo": _finite_or_none(score)}
            for candidate, score in choice.scores
        ],
    }


def _train_bound(last: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """``train_neg_elbo_mean`` and ``_std`` over seeds of the final records' training-set bound
    (papers' "training ELBO"), or nothing when a record lacks it."""
    values = [record.get("train/neg_elbo") for record in last]
    if any(value is None for value in values):
        return {}
    mean, std = _mean_std(values)
    return {"train_neg_elbo_mean": mean, "train_neg_elbo_std": std}


def _split_text(limit_examples: int | None) -> str:
    if limit_examples is None:
        return "train on the first 50,000 training images, validate on the last 10,000"
    return (
        f"train on the first {limit_examples} training images, validate on the first "
        f"{limit_examples} of the last 10,000"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _latest_per_epoch(records: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The last record written for each epoch, by epoch."""
    return {r["epoch"]: r for r in records}


def _device(workdir: Path) -> str:
    path = workdir / campaign.DEVICE_FILE
    return json.loads(path.read_text())["device"] if path.exists() else "unknown device"


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "diverged"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _lr_schedule_note(results: Mapping[str, dict]) -> str:
    """Words on the learning-rate schedules, where any chosen one is not constant."""
    if all(e["settings"]["lr_schedule"] == "constant" for e in results.values()):
        return ""
    return " (a learning rate marked cosine decays to 0 over the run)"


def markdown(summary: Summary) -> str:
    """The results as a Markdown section: the table, the best estimator, the tuning grid."""
    results, table = summary.results, summary.table
    lines = [f"## Estimator comparison: {summary.heading}", ""]
    if summary.limit_examples is not None:
        lines += [
            f"**Smoke test:** only the first {summary.limit_examples} images of each part of the "
            "data were used; these numbers are not comparable with the published ones.",
            "",
        ]
    if results:
        lines += _results_table(summary)
    if summary.failed:
        lines += [
            f"**Failed:** diverged (a non-finite loss), no result: "
            f"{_plural(len(summary.failed), 'final run')} ({'; '.join(summary.failed)}).",
            "",
        ]
    if summary.running:
        rows = "; ".join(
            f"{table.variant_title(name)} ({done} of {_plural(total, 'run')} finished)"
            for name, done, total in summary.running
        )
        lines += [
            f"**Still running** (no result shown until every run has finished): {rows}.",
            "",
        ]
    if results and table.tuned:
        lines += _tuning_table(summary)
    if summary.training_hours is not None:
        tuning, final = summary.training_hours
        parts = f"{tuning:.1f} tuning, {final:.1f} final runs; " if table.tuned else ""
        lines += [
            f"Training time: {tuning + final:.1f} hours of training steps ({parts}evaluation not "
            "counted).",
            "",
        ]
    return "\n".join(lines)


def _protocol_text(summary: Summary, seeds: Sequence[int]) -> str:
    """The paragraph above the results table: what was measured, on which protocol."""
    results, table = summary.results, summary.table
    first = next(iter(results.values()))
    devices = sorted({entry["device"] for entry in results.values()})
    targets = {
        "dynamic": "dynamic binarization",
        "none": "grey-level targets (no binarization)",
    }[table.binarize]
    test_data = "binarized once" if table.binarize == "dynamic" else "grey levels"
    if table.tuned:
        settings = (
            f"Settings chosen by validation negative ELBO ({first['tuning']['split']}; "
            f"{_plural(first['tuning']['epochs'], 'epoch')}, seed {first['tuning']['seed']})."
        )
    else:
        settings = "Settings fixed per estimator by the protocol (no tuning)."
    text = (
        "Test negative ELBO and IWAE bound in nats (lower is better), "
        + (
            f"mean ± sample standard deviation over {len(seeds)} seeds "
            if len(seeds) > 1
            else "one seed "
        )
        + f"({', '.join(map(str, seeds))}; a row with fewer seeds says so); "
        f"{_plural(first['epochs'], 'epoch')} on the {_title(summary.dataset)} training set, "
        f"{targets}, "
        f"batch {Config.batch_size}, {OPTIMIZER_NAMES[table.optimizer]}"
        f"{_lr_schedule_note(results)}, encoder {table.architecture} and mirrored decoder, "
        f"uniform prior; the discrete model evaluated on the test set ({test_data}). {settings} "
        f"s/epoch: median training time of an epoch on {'; '.join(devices)}. "
        f"{_published_note(summary)}"
    )
    if all("train_neg_elbo_mean" in entry for entry in results.values()):
        text += (
            " Train neg. ELBO: the discrete model's negative ELBO on the training set "
            f"({test_data}) after the last epoch."
        )
    return text


def _title(dataset: str) -> str:
    return input_pipeline.DATASETS[dataset].title


def _published_note(summary: Summary) -> str:
    """The table's words on the published numbers, which are all MNIST's."""
    if summary.dataset == published.DATASET:
        return summary.table.published_note
    return (
        f"The published numbers are for {_title(published.DATASET)}: none is set beside these "
        f"{_title(summary.dataset)} results."
    )


def _results_table(summary: Summary) -> list[str]:
    """The results' paragraph, table and best estimator."""
    results, table = summary.results, summary.table
    seeds = sorted({s for entry in results.values() for s in entry["seeds"]})
    lines = [_protocol_text(summary, seeds)]
    # The training-set bound, where every row has it (runs before it existed do not).
    train = all("train_neg_elbo_mean" in entry for entry in results.values())
    lines += [
        "",
        "| Estimator | Test neg. ELBO | IWAE NLL |"
        + (" Train neg. ELBO |" if train else "")
        + f" s/epoch | {'Chosen settings' if table.tuned else 'Settings'} | Published |",
        "|---|---|---|" + ("---|" if train else "") + "---|---|---|",
    ]
    for name, entry in results.items():
        n = len(entry["seeds"])
        seeds_note = "" if n == len(seeds) else f" ({_plural(n, 'seed')})"
        iwae = _fmt(entry["nll_iwae_mean"], entry["nll_iwae_std"])
        k = "/".join(map(str, entry["iwae_samples"]))
        on_train = (
            f" {_fmt(entry['train_neg_elbo_mean'], entry['train_neg_elbo_std'])} |" if train else ""
        )
        anchors = "; ".join(f"{src} {value:.1f}" for src, value in entry["published"].items())
        lines.append(
            f"| {table.variant_title(name)} | "
            f"{_fmt(entry['neg_elbo_mean'], entry['neg_elbo_std'])}"
            f"{seeds_note} | {iwae} (k={k}) |{on_train} {entry['seconds_per_epoch']:.1f} | "
            f"{entry['settings']['label']} | {anchors or 'none'} |"
        )
    lines.append("")
    scored = {n: e["neg_elbo_mean"] for n, e in results.items() if e["neg_elbo_mean"] is not None}
    if scored:
        # Every row that ties with the lowest at the table's precision.
        best = f"{min(scored.values()):.2f}"
        names = [table.variant_title(n) for n, value in scored.items() if f"{value:.2f}" == best]
        lines += [f"Best: {' and '.join(names)}, {best} nats.", ""]
    return lines


def _tuning_table(summary: Summary) -> list[str]:
    """Every tuning candidate's validation score, the chosen one in bold."""
    lines = [
        "Tuning (validation negative ELBO after the tuning epochs; the chosen candidate in bold):",
        "",
        "| Estimator | Candidate | Validation neg. ELBO |",
        "|---|---|---|",
    ]
    for name, entry in summary.results.items():
        for candidate in entry["tuning"]["candidates"]:
            score = candidate["validation_neg_elbo"]
            text = "diverged" if score is None else f"{score:.2f}"
            label = candidate["label"]
            if label == entry["settings"]["label"]:
                label, text = f"**{label}**", f"**{text}**"
            lines.append(f"| {summary.table.variant_title(name)} | {label} | {text} |")
    lines.append("")
    return lines


def save_curves(path: Path, summary: Summary) -> Path:
    """Test negative ELBO by epoch: mean over seeds, the seeds' range shaded."""
    with outputs.epoch_axes(
        path,
        title="\n".join(textwrap.wrap(f"Test loss by epoch: {summary.heading}", 60)),
        ylabel="test negative ELBO (nats)",
        figsize=(7, 4.5),
        legend_fontsize=8,
    ) as ax:
        tops = []
        for name, values in summary.curves.items():
            epochs = np.arange(1, values.shape[1] + 1)
            mean = values.mean(axis=0)
            (line,) = ax.plot(epochs, mean, marker="." if len(epochs) < 30 else None)
            line.set_label(summary.table.variant_title(name))
            if values.shape[0] > 1:
                ax.fill_between(
                    epochs,
                    values.min(axis=0),
                    values.max(axis=0),
                    color=line.get_color(),
                    alpha=0.2,
                )
            # Leave the first tenth of a long run off the scale, where the losses start far above.
            tops.append(mean[len(mean) // 10] if len(mean) >= 10 else np.nanmax(mean))
        finite_tops = [t for t in tops if np.isfinite(t)]
        if finite_tops:
            lows = [np.nanmin(v) for v in summary.curves.values()]
            ax.set_ylim(min(x for x in lows if np.isfinite(x)) - 1, max(finite_tops) + 1)
    return path


def write(results_dir: str | os.PathLike, summary: Summary) -> dict[str, Path]:
    """Writes the JSON, the Markdown table and the figure into ``results_dir``; returns the paths.

    Raises:
      ValueError: ``summary`` has no finished estimator.
    """
    if not summary.results:
        raise ValueError("no final run is finished: there is nothing to report")
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / JSON_FILE,
        "markdown": folder / MARKDOWN_FILE,
        "curves": folder / CURVES_FILE,
    }
    paths["json"].write_text(
        json.dumps(summary.results, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    )
    paths["markdown"].write_text(markdown(summary))
    save_curves(paths["curves"], summary)
    return paths


def write_plan(
    plan: campaign.Plan,
    final_runs: Mapping[str, Sequence[grid.CampaignRun]],
    choices: Mapping[str, campaign.Choice],
) -> tuple[Summary, dict[str, Path]]:
    """Summarizes a campaign's final runs (:func:`campaign.execute`'s result) and writes the
    report into ``plan.results``.

    Raises:
      campaign.CampaignError: no final run is finished.
    """
    summary = summarize(
        final_runs,
        choices,
        table=plan.table,
        limit_examples=plan.limit_examples,
        tune_runs=plan.tune_runs,
        dataset=plan.dataset,
    )
    if not summary.results:
        raise campaign.CampaignError(
            "no final run is finished, there is nothing to report: run --phase final (or all) "
            "with the same --root, --epochs and --seeds first"
        )
    return summary, write(plan.results, summary)
