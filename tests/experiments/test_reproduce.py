"""Tests of the estimator comparison (``python -m experiments.reproduce``).

One end-to-end campaign on real MNIST with a tiny budget (1,000 images, one epoch, two estimators,
three tuning runs), run as a subprocess so that its JAX compilation cache stays out of the test
process, then run again to check that finished runs are skipped. The rest uses hand-written
workdirs and arrays, without training.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from idx_files import write_random_idx
from matplotlib.image import imread

from experiments.mnist import input_pipeline, outputs
from experiments.reproduce import campaign, cli, grid, report

REPO = Path(__file__).resolve().parents[2]

ENTRY_KEYS = {
    "neg_elbo_mean",
    "neg_elbo_std",
    "nll_iwae_mean",
    "seeds",
    "epochs",
    "latents",
    "categories",
    "seconds_per_epoch",
    "settings",
    "tuning",
}


def _reproduce(args, mnist_dir):
    env = {**os.environ, input_pipeline.DATA_DIR_ENV: str(mnist_dir), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.reproduce", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_tiny_campaign_writes_the_report_and_skips_finished_runs(tmp_path, mnist_dir):
    root, results = tmp_path / "runs", tmp_path / "results"
    args = [
        "--estimators", "st", "reinmax",
        "--epochs", 1, "--tune-epochs", 1, "--seeds", 0,
        "--tune-lrs", 1e-3, "--tune-lr-schedules", "constant",
        "--tune-temperatures", "1.0:0.5", "0.5",
        "--reinmax-temperatures", "1.5",
        "--eval-samples", 4,
        "--limit-examples", 1000,
        "--root", root, "--results", results, "--no-progress",
    ]  # fmt: skip
    first = _reproduce(args, mnist_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("training in") == 5  # 3 tuning runs, 2 final runs.

    data = json.loads((results / report.JSON_FILE).read_text())
    assert list(data) == ["st", "reinmax"]
    runs = root / "limit1000"
    for name, entry in data.items():
        assert ENTRY_KEYS <= set(entry)
        assert (entry["seeds"], entry["epochs"], entry["latents"], entry["categories"]) == (
            [0],
            1,
            20,
            10,
        )
        assert entry["neg_elbo_std"] is None  # One seed has no spread.
        assert 50 < entry["nll_iwae_mean"] <= entry["neg_elbo_mean"] + 1 < 700
        assert entry["seconds_per_epoch"] > 0
        assert entry["limit_examples"] == 1000
        # The JSON holds the final run's last test record...
        chosen = grid.TemperatureSchedule(
            entry["settings"]["temperature"],
            entry["settings"]["temperature_min"],
            entry["settings"]["anneal_rate"],
            entry["settings"]["anneal_every"],
        )
        slug = grid.Candidate(entry["settings"]["learning_rate"], chosen).slug
        record = outputs.read_metrics(runs / "final" / name / slug / "seed0")[-1]
        assert entry["neg_elbo_mean"] == pytest.approx(record["test/neg_elbo"], rel=1e-12)
        # ...and the chosen candidate is the tuning run with the lowest validation score.
        scores = {
            path.name: outputs.read_metrics(path)[-1]["valid/neg_elbo"]  # validation, named so
            for path in (runs / "tune" / name).iterdir()
        }
        assert scores[slug] == min(scores.values())
        assert sorted(c["validation_neg_elbo"] for c in entry["tuning"]["candidates"]) == sorted(
            scores.values()
        )
    assert len(data["st"]["tuning"]["candidates"]) == 2
    assert data["reinmax"]["settings"]["temperature"] == 1.5
    assert "target" not in data["st"]

    table = (results / report.MARKDOWN_FILE).read_text()
    rows = [line for line in table.splitlines() if line.startswith("|")]
    header = (
        "| Estimator | Test neg. ELBO | IWAE NLL | Train neg. ELBO | s/epoch | Chosen settings "
        "| Published |"
    )
    assert rows[0] == header
    assert all(entry["train_neg_elbo_mean"] > 50 for entry in data.values())
    assert all(row.count("|") == header.count("|") for row in rows[:4])
    assert rows[2].startswith("| ST Gumbel-Softmax | ") and "Jang 2017 ST-GS 107.8" in rows[2]
    assert f"{data['st']['neg_elbo_mean']:.2f}" in rows[2]
    assert rows[3].startswith("| ReinMax | ")
    assert "Smoke test" in table and "Best: " in table
    assert "| Estimator | Candidate | Validation neg. ELBO |" in table

    image = imread(results / report.CURVES_FILE)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 500
    assert image.std() > 0.01  # Not a blank canvas.

    metrics = sorted(runs.glob("**/metrics.jsonl"))
    assert len(metrics) == 5
    modified = [path.stat().st_mtime_ns for path in metrics]
    second = _reproduce(args, mnist_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("finished, skipped") == 5
    assert "training in" not in second.stdout
    assert [path.stat().st_mtime_ns for path in metrics] == modified
    assert json.loads((results / report.JSON_FILE).read_text()) == data


def _fake_mnist(num_train: int) -> input_pipeline.ImageData:
    images = np.arange(num_train, dtype=np.int64)[:, None, None] % 251 * np.ones((1, 2, 2))
    return input_pipeline.ImageData(
        train_images=images.astype(np.uint8),
        train_labels=np.arange(num_train, dtype=np.uint8),
        test_images=np.full((7, 2, 2), 255, np.uint8),
        test_labels=np.zeros(7, np.uint8),
        source="fake",
    )


def test_validation_split_holds_out_the_last_10000_training_images_and_no_test_image():
    data = _fake_mnist(60_000)
    split = campaign.validation_split(data)
    np.testing.assert_array_equal(split.train_images, data.train_images[:50_000])
    np.testing.assert_array_equal(split.test_images, data.train_images[50_000:])
    np.testing.assert_array_equal(split.test_labels, data.train_labels[50_000:])
    assert not np.any(split.test_images == 255)  # Nothing of the test set.
    with pytest.raises(campaign.CampaignError, match="at least 20000 training images"):
        campaign.validation_split(_fake_mnist(15_000))


def test_parse_schedule():
    assert grid.parse_temperature_schedule("1.0") == grid.TemperatureSchedule(1.0, 1.0)
    assert grid.parse_temperature_schedule("2:2") == grid.TemperatureSchedule(2.0, 2.0)
    annealed = grid.parse_temperature_schedule("1.0:0.5", rate=1e-4, every=500)
    assert annealed == grid.TemperatureSchedule(1.0, 0.5, 1e-4, 500)
    assert annealed.slug == "t1-to0.5-r0.0001-every500"
    assert grid.TemperatureSchedule(1.5, 1.5).slug == "t1.5-const"
    for bad in ("", "x", "0", "-1", "1:2:3", "1:"):
        with pytest.raises(ValueError, match="is not 'T'"):
            grid.parse_temperature_schedule(bad)
    with pytest.raises(ValueError, match="anneals upwards"):
        grid.parse_temperature_schedule("0.5:1.0")


def test_the_learning_rate_schedule_is_a_tuning_dimension_named_only_when_not_constant():
    st, schedule = grid.VARIANTS["st"], grid.TemperatureSchedule(1.5, 1.5)
    grid_ = grid.candidates(st, (1e-3,), (schedule,), (), ("constant", "cosine"))
    assert [c.slug for c in grid_] == ["lr0.001-t1.5-const", "lr0.001-cosine-t1.5-const"]
    assert [c.label for c in grid_] == [
        "lr 0.001, τ 1.5 constant",
        "lr 0.001 cosine, τ 1.5 constant",
    ]
    assert grid.candidates(st, (1e-3,), (schedule,), ()) == grid_[:1]  # constant by default
    run = grid.final_run(Path("r"), st, grid_[1], seed=0, epochs=3)
    assert run.config(eval_samples=1, data_dir=None, progress=False).lr_schedule == "cosine"


def test_each_table_tunes_its_learning_rate_schedules_unless_the_flag_names_others(tmp_path):
    def schedules(*argv):
        argv = ["--phase", "report", "--estimators", "st", "--root", str(tmp_path), *argv]
        plan = cli.plan_from_args(cli.build_parser().parse_args(argv))
        return sorted({run.candidate.lr_schedule for run in plan.tune_runs})

    assert grid.TABLES["categorical"].lr_schedules == ("constant", "cosine")
    assert schedules() == ["constant", "cosine"]
    assert schedules("--latent-type", "bernoulli") == ["constant"]
    assert schedules("--tune-lr-schedules", "cosine") == ["cosine"]
    assert schedules("--latent-type", "bernoulli", "--tune-lr-schedules", "cosine") == ["cosine"]


def test_a_run_saved_before_lr_schedule_existed_is_a_constant_rate_run(tmp_path):
    st = grid.VARIANTS["st"]
    candidate = grid.Candidate(1e-3, grid.TemperatureSchedule(1.0, 1.0))
    run = grid.tune_run(tmp_path, st, candidate, epochs=1)
    run.workdir.mkdir(parents=True)
    config = run.config(eval_samples=1, data_dir=None, progress=False).to_dict()
    del config["lr_schedule"]
    (run.workdir / "config.json").write_text(json.dumps(config))
    assert campaign.status(run) == "new"
    cosine = grid.CampaignRun(
        "tune",
        st,
        grid.Candidate(1e-3, candidate.temperature_schedule, "cosine"),
        0,
        1,
        run.workdir,
    )
    with pytest.raises(campaign.CampaignError, match="lr_schedule: 'constant' there, 'cosine'"):
        campaign.status(cosine)


def _write_run(run: grid.CampaignRun, neg_elbos, *, final=True, train=None, split=None) -> None:
    """A workdir as ``train_and_evaluate`` leaves it, with the given held-out losses by epoch
    (``valid/`` for a tuning run, ``test/`` for a final one, or ``split``) and the final
    training-set bound ``train``, if given."""
    run.workdir.mkdir(parents=True)
    config = run.config(eval_samples=4, data_dir=None, progress=False)
    (run.workdir / "config.json").write_text(config.to_json())
    split = split or ("valid" if run.phase == "tune" else "test")
    lines = []
    for epoch, value in enumerate(neg_elbos, start=1):
        record = {"epoch": epoch, "seconds": 2.0 + epoch, f"{split}/neg_elbo": value}
        if final and epoch == len(neg_elbos):
            record.update({f"{split}/nll_iwae": value - 3, "iwae_samples": 4})
            if train is not None:
                record["train/neg_elbo"] = train
        lines.append(json.dumps(record))
    (run.workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_status_choose_and_report_from_finished_workdirs(tmp_path):
    st, relaxed = grid.VARIANTS["st"], grid.VARIANTS["relaxed"]
    schedules = (grid.TemperatureSchedule(1.0, 0.5, 1e-4, 500), grid.TemperatureSchedule(1.0, 1.0))
    tune = [
        grid.tune_run(tmp_path, v, c, epochs=2)
        for v in (st, relaxed)
        for c in grid.candidates(v, (1e-3,), schedules, ())
    ]
    assert campaign.status(tune[0]) == "new"
    _write_run(tune[0], [150.0, 120.0], final=False)
    assert campaign.status(tune[0]) == "partial"
    with pytest.raises(campaign.CampaignError, match="tuning runs are not finished"):
        campaign.choose(tune)
    shutil.rmtree(tune[0].workdir)
    for run, score in zip(tune, [110.0, math.nan, 104.0, 103.0], strict=True):
        _write_run(run, [150.0, score])
    assert campaign.status(tune[0]) == "finished"
    choices = campaign.choose(tune)
    assert choices["st"].candidate.temperature_schedule == schedules[0]  # NaN (diverged) loses.
    assert math.isinf(dict(choices["st"].scores)[grid.Candidate(1e-3, schedules[1])])
    assert choices["relaxed"].candidate.temperature_schedule == schedules[1]

    # A longer run than asked, or a folder of other settings, is refused.
    with pytest.raises(campaign.CampaignError, match="more than the 1 asked"):
        campaign.status(grid.tune_run(tmp_path, st, choices["st"].candidate, epochs=1))
    other = grid.CampaignRun("tune", relaxed, choices["st"].candidate, 0, 2, tune[0].workdir)
    with pytest.raises(campaign.CampaignError, match="estimator: 'st' there, 'relaxed' here"):
        campaign.status(other)

    final = {
        "st": [
            grid.final_run(tmp_path, st, choices["st"].candidate, seed=s, epochs=3)
            for s in (0, 1, 2)
        ],
        "relaxed": [
            grid.final_run(tmp_path, relaxed, choices["relaxed"].candidate, seed=s, epochs=3)
            for s in (0, 1, 2)
        ],
    }
    for run, last in zip(final["st"][:2], [100.5, 101.5], strict=True):
        _write_run(run, [130.0, 110.0, last])
    for run, last in zip(final["relaxed"], [97.0, 97.5, 98.0], strict=True):
        _write_run(run, [120.0, 105.0, last])
    summary = report.summarize(final, choices)
    assert summary.missing == (final["st"][2].title,)
    # A row with a run still to train is listed as running, never shown as a result.
    assert list(summary.results) == ["relaxed"] and summary.running == (("st", 2, 3),)
    table = report.markdown(summary)
    assert "**Still running** (no result shown until every run has finished): ST " in table
    assert "ST Gumbel-Softmax (2 of 3 runs finished)" in table
    assert "| ST Gumbel-Softmax |" not in table
    assert summary.results["relaxed"]["tuning_epochs"] == 2
    assert "latent_type" not in summary.results["relaxed"]  # the categorical table's shape

    final["st"][2].workdir.mkdir(parents=True)
    outputs.write_divergence(final["st"][2].workdir, 9, "training diverged")
    summary = report.summarize(final, choices)
    assert summary.missing == () and summary.failed == (final["st"][2].title,)
    entry = summary.results["st"]
    assert entry["seeds"] == [0, 1]
    assert entry["neg_elbo_mean"] == pytest.approx(101.0)
    assert entry["neg_elbo_std"] == pytest.approx(math.sqrt(0.5))
    assert entry["nll_iwae_mean"] == pytest.approx(98.0)
    assert entry["seconds_per_epoch"] == pytest.approx(4.0)
    assert summary.results["relaxed"]["neg_elbo_std"] == pytest.approx(0.5)
    np.testing.assert_allclose(summary.curves["st"], [[130, 110, 100.5], [130, 110, 101.5]])

    table = report.markdown(summary)
    assert "| ST Gumbel-Softmax | 101.00 ± 0.71 (2 seeds) |" in table
    assert "Best: Gumbel-Softmax (relaxed), 97.50 nats." in table
    assert "target" not in table.lower() and "missed" not in table
    assert "**Failed:** diverged (a non-finite loss), no result: 1 final run (final st: " in table

    paths = report.write(tmp_path / "results", summary)
    assert json.loads(paths["json"].read_text())["relaxed"]["neg_elbo_mean"] == 97.5
    assert imread(paths["curves"]).shape[-1] in (3, 4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reinmax-temperatures", "0.5"], "must stay >= 1 for reinmax"),
        (["--floored-temperatures", "0.5"], "--floored-temperatures must stay >= 1 for reinmax"),
        (["--tune-temperatures", "hot"], "is not 'T'"),
        (["--seeds", "1", "1"], "distinct"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--tune-lrs", "inf"], "--tune-lrs must be finite, got inf"),
        (["--anneal-rate", "inf"], "--anneal-rate must be finite, got inf"),
        (["--tune-temperatures", "inf"], "--floored-temperatures must be finite, got inf"),
        (["--seeds", str(2**32)], "--seeds must be an integer from 0 to 4294967295"),
        (
            ["--estimators", "disarm"],
            "--estimators disarm: estimator 'disarm' supports bernoulli latents, not "
            "'categorical'; for 'categorical' latents use one of: relaxed, st,",
        ),
        (["--estimators", "nope"], "--estimators nope: unknown estimator 'nope'; registered:"),
        (["--estimators", "st[gap=1]"], "--estimators st[gap=1]: estimator 'st' has no option"),
        (
            ["--estimators", "no_such_module:SPEC"],
            "--estimators no_such_module:SPEC: plug-in estimator 'no_such_module:SPEC': cannot "
            "import module 'no_such_module'",
        ),
        (["--latent-type", "gaussian"], "invalid choice: 'gaussian'"),
        (["--eval-samples", "0"], "--eval-samples must be at least 1"),
    ],
)
def test_bad_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unofficial_data_needs_allow_unverified_data(tmp_path, monkeypatch, capsys):
    folder = write_random_idx(tmp_path / "idx", n_train=20_000, n_test=100)
    argv = ["--phase", "tune", "--estimators", "st", "--tune-lrs", "1e-3", "--no-progress"]
    argv += ["--data-dir", str(folder), "--root", str(tmp_path / "runs")]
    assert cli.main(argv) == 2
    assert "--allow-unverified-data" in capsys.readouterr().err

    trained = []
    monkeypatch.setattr(campaign, "train_runs", lambda runs, data, **kw: trained.append(kw))
    monkeypatch.setattr(campaign, "choose", lambda runs: {})
    assert cli.main([*argv, "--allow-unverified-data", "--compilation-cache", "none"]) == 0
    assert trained[0]["allow_unverified_data"] is True
    assert trained[0]["data_dir"] == str(folder)


def test_too_few_training_images_for_the_validation_split_is_one_line(tmp_path, capsys):
    folder = write_random_idx(tmp_path / "idx", n_train=1_000, n_test=100)
    argv = ["--phase", "tune", "--estimators", "st", "--data-dir", str(folder)]
    status = cli.main([*argv, "--allow-unverified-data", "--root", str(tmp_path / "runs")])
    assert status == 2
    assert "at least 20000 training images" in capsys.readouterr().err


def test_report_before_tuning_says_what_to_run(tmp_path, capsys):
    status = cli.main(["--phase", "report", "--root", str(tmp_path), "--estimators", "st"])
    assert status == 2
    err = capsys.readouterr().err
    assert "tuning runs are not finished" in err and "--phase tune" in err


def test_a_diverged_run_is_failed_never_a_result(tmp_path, monkeypatch, capsys):
    """A run whose training diverged: ``failed`` in the status, skipped by training, the worst
    score in tuning, and listed as failed (not as a result) by the report."""
    st = grid.VARIANTS["st"]
    schedules = (grid.TemperatureSchedule(1.0, 0.5, 1e-4, 500),)
    tune = [
        grid.tune_run(tmp_path, st, c, epochs=2)
        for c in grid.candidates(st, (1e-3, 1.0), schedules, ())
    ]
    _write_run(tune[0], [150.0, 120.0])
    _write_run(tune[1], [150.0], final=False)
    outputs.write_divergence(tune[1].workdir, 700, "training diverged: the loss is nan at step 700")
    assert [campaign.status(run) for run in tune] == ["finished", "failed"]
    choice = campaign.choose(tune)["st"]
    assert choice.candidate == tune[0].candidate
    assert math.isinf(dict(choice.scores)[tune[1].candidate])

    from experiments.mnist import run as mnist_run

    trained = []
    monkeypatch.setattr(mnist_run, "train_and_evaluate", lambda config, data: trained.append(1))
    campaign.train_runs(tune, data=input_pipeline.ImageData(*[np.zeros(1)] * 4, source="none"))
    assert trained == []
    assert "failed, skipped" in capsys.readouterr().out

    final = [grid.final_run(tmp_path, st, choice.candidate, seed=s, epochs=2) for s in (0, 1)]
    _write_run(final[0], [130.0, 100.0])
    _write_run(final[1], [130.0, math.nan])  # Its metrics say NaN...
    outputs.write_divergence(final[1].workdir, 9, "training diverged")  # ...and it diverged.
    summary = report.summarize({"st": final}, {"st": choice})
    assert summary.results["st"]["seeds"] == [0]
    assert summary.failed == (final[1].title,) and summary.missing == ()
    assert (
        f"**Failed:** diverged (a non-finite loss), no result: 1 final run ({final[1].title})"
        in (report.markdown(summary))
    )


def test_a_diverging_run_is_reported_and_the_campaign_goes_on(tmp_path, monkeypatch, capsys):
    from experiments.mnist import run as mnist_run
    from experiments.mnist import train

    st = grid.VARIANTS["st"]
    schedules = (grid.TemperatureSchedule(1.0, 0.5, 1e-4, 500),)
    tune = [
        grid.tune_run(tmp_path, st, c, epochs=1)
        for c in grid.candidates(st, (10.0, 1e-3), schedules, ())
    ]
    calls = []

    def diverge_first(config, data):
        calls.append(config.learning_rate)
        Path(config.workdir).mkdir(parents=True)
        if len(calls) == 1:
            raise train.Diverged(np.array([1.0, np.nan]), first_step=4, learning_rate=10.0)

    monkeypatch.setattr(mnist_run, "train_and_evaluate", diverge_first)
    options = {"eval_samples": 1, "data_dir": None, "progress": False}
    data = input_pipeline.ImageData(*[np.zeros(1)] * 4, source="none")
    campaign.train_runs(tune, data, **options)
    assert calls == [10.0, 1e-3]
    out = capsys.readouterr().out
    assert "failed, no result (training diverged: the loss is nan at step 5;" in out


def test_a_damaged_config_json_in_a_run_folder_is_one_line(tmp_path):
    run = grid.tune_run(
        tmp_path,
        grid.VARIANTS["st"],
        grid.Candidate(1e-3, grid.TemperatureSchedule(1.0, 1.0)),
        epochs=1,
    )
    run.workdir.mkdir(parents=True)
    (run.workdir / "config.json").write_text('{"latents": 3,')  # Cut short.
    with pytest.raises(campaign.CampaignError, match=r"config\.json is damaged"):
        campaign.status(run)


def test_root_and_results_are_resolved_where_they_enter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = cli.plan_from_args(
        cli.build_parser().parse_args(["--root", "runs dir", "--results", "../résultats"])
    )
    assert plan.root == tmp_path.resolve() / "runs dir"
    assert plan.results == tmp_path.resolve().parent / "résultats"
    assert all(run.workdir.is_absolute() for run in plan.tune_runs)


def test_score_function_estimators_are_tuned_over_learning_rates_only():
    loo = grid.VARIANTS["reinforce-loo"]
    schedules = (grid.TemperatureSchedule(1.0, 0.5, 1e-4, 500),)
    candidates = grid.candidates(loo, (1e-3, 3e-3), schedules, ())
    assert [c.slug for c in candidates] == ["lr0.001", "lr0.003"]
    assert candidates[0].label == "lr 0.001" and candidates[0].to_dict()["temperature"] is None
    options = {"eval_samples": 4, "data_dir": None, "progress": False}
    config = grid.final_run(Path("r"), loo, candidates[0], seed=1, epochs=3).config(**options)
    assert (config.latent_type, config.latents, config.categories) == ("categorical", 20, 10)
    assert (config.estimator, config.options()) == ("reinforce-loo", {"num_samples": 2})


def test_the_binary_table_trains_the_disarm_papers_model_and_reports_its_latent_type(tmp_path):
    table = grid.TABLES["bernoulli"]
    assert table.variants == ("relaxed", "st", "zgr", "reinforce-loo", "disarm", "rebar", "relax")
    disarm = grid.VARIANTS["disarm"]
    (candidate,) = grid.candidates(disarm, (1e-3,), (), ())
    tune = [grid.tune_run(tmp_path, disarm, candidate, epochs=2, table=table)]
    config = tune[0].config(eval_samples=100, data_dir=None, progress=False)
    assert (config.latent_type, config.latents, config.hidden) == ("bernoulli", 200, (200, 200))
    assert (config.activation, config.estimator) == ("leaky_relu", "disarm")
    _write_run(tune[0], [150.0, 120.0])
    choices = campaign.choose(tune)
    final = {
        "disarm": [
            grid.final_run(tmp_path, disarm, candidate, seed=s, epochs=2, table=table)
            for s in (0, 1)
        ]
    }
    for run, train in zip(final["disarm"], [104.0, 106.0], strict=True):
        _write_run(run, [130.0, 110.0], train=train)
    summary = report.summarize(final, choices, table=table, tune_runs=tune)
    # _write_run's epochs take 3 and 4 seconds: 7 s per run.
    assert summary.training_hours == pytest.approx((7 / 3600, 14 / 3600))
    entry = summary.results["disarm"]
    assert ENTRY_KEYS <= set(entry)
    assert (entry["latent_type"], entry["latents"], entry["categories"]) == ("bernoulli", 200, None)
    assert entry["tuning_epochs"] == 2
    text = report.markdown(summary)
    assert text.startswith("## Estimator comparison: binary VAE on MNIST, 200 Bernoulli latents")
    assert entry["train_neg_elbo_mean"] == pytest.approx(105.0)
    assert "| Estimator | Test neg. ELBO | IWAE NLL | Train neg. ELBO | s/epoch |" in text
    assert (
        "| DisARM, 1 pair (2 evaluations) | 110.00 ± 0.00 | 107.00 ± 0.00 (k=4) | 105.00 ± 1.41 |"
        in text
    )
    assert "encoder 784-200-200-(200) with LeakyReLU (slope 0.3) and mirrored decoder" in text
    assert "Best: DisARM, 1 pair (2 evaluations), 110.00 nats." in text
    assert "Training time: 0.0 hours of training steps (0.0 tuning, 0.0 final runs;" in text


def test_a_campaign_that_lost_runs_says_so_in_its_exit_status(tmp_path, capsys):
    """Rule 6: a diverged tuning run and a diverged final run: the report is written, the exit
    status is 3 and the last line names both failed runs."""
    argv = ["--phase", "report", "--estimators", "st", "--tune-lrs", "1e-3", "1.0"]
    argv += ["--tune-temperatures", "1.0:0.5", "--tune-epochs", "2", "--epochs", "2"]
    argv += ["--tune-lr-schedules", "constant"]
    argv += ["--seeds", "0", "1", "--root", str(tmp_path / "runs")]
    argv += ["--results", str(tmp_path / "results")]
    plan = cli.plan_from_args(cli.build_parser().parse_args(argv))
    good, bad = plan.tune_runs
    _write_run(good, [150.0, 120.0])
    _write_run(bad, [150.0], final=False)
    outputs.write_divergence(bad.workdir, 7, "training diverged")
    final = plan.final_runs(campaign.choose(plan.tune_runs))["st"]
    _write_run(final[0], [130.0, 100.0])
    _write_run(final[1], [130.0], final=False)
    outputs.write_divergence(final[1].workdir, 9, "training diverged")
    assert cli.main(argv) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: 2 run(s) failed (training diverged) and have no result")
    assert bad.title in last and final[1].title in last
    assert (tmp_path / "results" / "reproduction.md").exists()


def _tutorial_plan(tmp_path, *extra: str):
    argv = ["--protocol", "tutorial", "--phase", "report", "--root", str(tmp_path / "runs")]
    argv += ["--results", str(tmp_path / "results"), *extra]
    parser = cli.build_parser()
    return cli.plan_from_args(parser.parse_args(argv))


def test_the_tutorial_protocol_trains_fixed_settings_without_tuning(tmp_path):
    plan = _tutorial_plan(tmp_path)
    table = grid.TABLES["tutorial"]
    assert plan.table is table and not table.tuned and plan.tune_runs == ()
    assert [v.name for v in plan.variants] == list(table.variants)
    assert (plan.epochs, plan.seeds) == (160, (0, 1, 2))
    finals = plan.final_runs(plan.choices())
    settings = {
        name: (runs[0].config(**plan.config_options), runs[0].candidate)
        for name, runs in finals.items()
    }
    # Every estimator of the protocol, with the settings the module's table lists.
    expected = {name: (lr, t) for name, lr, t in grid.TUTORIAL_SETTINGS}
    assert {n: (c.learning_rate, c.temperature) for n, (c, _) in settings.items()} == expected
    config, _ = settings["reinmax"]
    assert (config.latents, config.categories, config.hidden) == (30, 10, (512, 256))
    assert (config.binarize, config.optimizer, config.batch_size) == ("none", "radam", 100)
    assert (config.temperature_min, config.anneal_rate) == (1.3, 0.0)  # constant
    assert (config.epochs, config.lr_schedule) == (160, "constant")
    assert settings["gumbel-rao-10"][0].options() == {"num_samples": 10}
    assert finals["st"][2].workdir == tmp_path / "runs/final/st/lr0.0005-t0.5-const/seed2"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tune-lrs", "1e-3"], "--protocol tutorial fixes each estimator's settings and does "
         "not tune: drop --tune-lrs"),
        (["--tune-epochs", "3", "--anneal-rate", "1e-3"], "drop --tune-epochs --anneal-rate"),
        (["--latent-type", "bernoulli"], "--protocol tutorial has categorical latents: drop "
         "--latent-type bernoulli"),
        (["--phase", "tune"], "--protocol tutorial does not tune: pass --phase final, all or"),
        (["--estimators", "relax"], "--estimators relax: --protocol tutorial has no settings for "
         "it; its estimators are st-softmax, st, relaxed,"),
    ],
)  # fmt: skip
def test_the_tutorial_protocol_refuses_what_it_would_ignore(extra, message, capsys, tmp_path):
    argv = ["--protocol", "tutorial", "--root", str(tmp_path), *extra]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_tutorial_protocols_report_names_its_protocol_and_has_no_tuning(tmp_path):
    plan = _tutorial_plan(tmp_path, "--estimators", "st", "reinmax", "--epochs", "2")
    choices = plan.choices()
    final = plan.final_runs(choices)
    for name, losses in (("st", (110.0, 111.0, 112.0)), ("reinmax", (105.0, 106.0, 107.0))):
        for run, loss in zip(final[name], losses, strict=True):
            _write_run(run, [130.0, loss], train=loss - 2)
    summary = report.summarize(final, choices, table=plan.table, tune_runs=plan.tune_runs)
    entry = summary.results["reinmax"]
    assert (entry["epochs"], entry["latents"], entry["categories"]) == (2, 30, 10)
    assert (entry["binarization"], entry["optimizer"], entry["seeds"]) == (
        "none",
        "radam",
        [0, 1, 2],
    )
    assert entry["tuning"] is None and entry["tuning_epochs"] is None
    assert entry["settings"]["learning_rate"] == 5e-4 and entry["settings"]["temperature"] == 1.3
    assert entry["train_neg_elbo_mean"] == pytest.approx(104.0)
    text = report.markdown(summary)
    assert (
        "grey-level targets (no binarization), batch 100, RAdam, encoder 784-512-256-(30x10)"
        in (text)
    )
    assert "Settings fixed per estimator by the protocol (no tuning)." in text
    assert "| ReinMax | 106.00 ± 1.00 |" in text and "| Settings | Published |" in text
    assert "Tuning (validation" not in text and "tuning," not in text
    assert "could not be read here" in text and "| Wang 2026 runs ReinMax 100.8 |" in text
    assert "hours of training steps (evaluation not counted)." in text


def test_tuning_runs_written_before_the_valid_names_still_score(tmp_path):
    """Tuning runs recorded their validation bound as ``test/...`` before ``valid/...``."""
    st = grid.VARIANTS["st"]
    old, new = (
        grid.tune_run(tmp_path, st, grid.Candidate(lr, None), epochs=1) for lr in (1e-3, 3e-3)
    )
    _write_run(old, [101.0], split="test")
    _write_run(new, [102.0])
    assert "valid/neg_elbo" in outputs.read_metrics(new.workdir)[-1]
    assert [campaign.status(run) for run in (old, new)] == ["finished", "finished"]
    assert [campaign.validation_score(run) for run in (old, new)] == [101.0, 102.0]


@pytest.mark.parametrize(("usable", "expected"), [({0}, "cpu (1 core)"), ({0, 1}, "cpu (2 cores)")])
def test_the_device_names_the_cores_this_process_may_use(monkeypatch, usable, expected):
    # A campaign pinned to one core (taskset -c 0) times its epochs on one core, whatever the
    # machine has; the report's s/epoch column says so.
    monkeypatch.setattr(campaign.os, "sched_getaffinity", lambda pid: usable, raising=False)
    assert campaign.device_description() == expected


def test_the_training_time_counts_the_runs_that_ended_not_those_still_training(tmp_path):
    # A report rebuilt from committed records (finished runs only) must equal the one written
    # beside a worker still training: a half-trained run's epochs are not counted.
    table = grid.TABLES["bernoulli"]
    disarm = grid.VARIANTS["disarm"]
    (candidate,) = grid.candidates(disarm, (1e-3,), (), ())
    tune = [grid.tune_run(tmp_path, disarm, candidate, epochs=2, table=table)]
    _write_run(tune[0], [150.0, 120.0])
    final = {
        "disarm": [
            grid.final_run(tmp_path, disarm, candidate, seed=s, epochs=2, table=table)
            for s in (0, 1)
        ]
    }
    _write_run(final["disarm"][0], [130.0, 110.0])
    _write_run(final["disarm"][1], [130.0], final=False)  # epoch 1 of 2: still training
    summary = report.summarize(final, campaign.choose(tune), table=table, tune_runs=tune)
    assert summary.running == (("disarm", 1, 2),)
    # _write_run's epochs take 3 and 4 seconds: 7 s per run that ended.
    assert summary.training_hours == pytest.approx((7 / 3600, 7 / 3600))
