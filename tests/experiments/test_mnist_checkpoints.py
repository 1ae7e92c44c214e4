"""Checkpoints of experiments.mnist: exact resume, refusals, signals, SIGKILL and corrupted files.

The runs use random IDX digits (``--allow-unverified-data``), 96 training images in batches of
16 (6 steps per epoch, in chunks of 4 + 2 steps): the mechanics do not need real MNIST, and the
model is the default one so that the command is the one users run.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from idx_files import write_random_idx

from experiments.mnist import checkpoints, cli, evaluate, outputs, train, update
from experiments.mnist.config import MAY_CHANGE_ON_RESUME, Config

REPO = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 6
TIMEOUT = 240


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_random_idx(tmp_path_factory.mktemp("data"), 96 + 5, 16)  # 5 left out each epoch


def _args(data_dir: Path, workdir: Path, epochs: int, *extra: str) -> list[str]:
    return [
        *("--data-dir", str(data_dir), "--allow-unverified-data", "--workdir", str(workdir)),
        *("--latents", "3", "--categories", "4", "--estimator", "st", "--batch-size", "16"),
        *("--chunk-steps", "4", "--anneal-every", "1", "--anneal-rate", "0.01"),
        *("--eval-samples", "2", "--eval-batch-size", "16", "--no-progress"),
        *("--epochs", str(epochs), *extra),
    ]


def _final_arrays(workdir: Path) -> tuple[int, list[np.ndarray]]:
    """The step and every array (params, Adam state, step, key data) of the newest checkpoint."""
    config = Config.from_json((workdir / outputs.CONFIG_FILE).read_text())
    target = train.create_train_state(config, total_steps=config.epochs * STEPS_PER_EPOCH)
    with checkpoints.RunCheckpoints(workdir) as saved:
        restored = saved.restore_latest(target)
    state = restored.state
    leaves = jax.tree.leaves((state.params, state.opt_state, state.step))
    return restored.step, [np.asarray(x) for x in leaves] + [
        np.asarray(jax.random.key_data(state.key))
    ]


def _assert_same_run(workdir: Path, reference: Path) -> None:
    step, arrays = _final_arrays(workdir)
    reference_step, reference_arrays = _final_arrays(reference)
    assert step == reference_step
    assert len(arrays) == len(reference_arrays) > 10
    for x, y in zip(arrays, reference_arrays, strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)  # bit for bit
    # The metrics of every epoch, the interrupted one included, are those of the reference
    # (an epoch that was the last of a shorter run also has that run's IWAE bound).
    records, expected = outputs.read_metrics(workdir), outputs.read_metrics(reference)
    assert len(records) == len(expected)
    for record, reference_record in zip(records, expected, strict=True):
        for key in reference_record.keys() - {"seconds", "examples_per_second"}:
            assert record[key] == reference_record[key], key


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    workdir = tmp_path_factory.mktemp("straight")
    assert cli.main(_args(data_dir, workdir, 2)) == 0
    return workdir


@pytest.mark.slow
def test_resume_after_an_epoch_is_bitwise_identical(data_dir, straight, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(_args(data_dir, workdir, 1)) == 0
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [6]
    capsys.readouterr()
    assert cli.main(_args(data_dir, workdir, 2)) == 0
    out = capsys.readouterr().out
    assert f"Resuming from the checkpoint at step 6 (epoch 1) in {workdir / 'checkpoints'}" in out
    assert "epoch 1/2" not in out and "epoch 2/2" in out
    _assert_same_run(workdir, straight)
    assert json.loads((workdir / outputs.CONFIG_FILE).read_text())["epochs"] == 2


def _signal_at_chunk(monkeypatch, number: int) -> None:
    """Makes the ``number``-th training chunk raise a real SIGINT, to the real handler."""
    chunk, calls = update.train_chunk, []

    def chunk_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            signal.raise_signal(signal.SIGINT)
        return chunk(*args, **kwargs)

    monkeypatch.setattr(update, "train_chunk", chunk_then_signal)


@pytest.mark.slow
def test_a_signal_in_mid_epoch_saves_and_the_rerun_is_bitwise_identical(
    data_dir, straight, tmp_path, capsys, monkeypatch
):
    """SIGINT after the 3rd chunk (step 10, mid-epoch 2): 130, checkpoint, exact resume."""
    workdir = tmp_path / "run"
    # What the caller had: Python's default handler, or SIG_IGN under `nohup ... &`.
    handler_before = signal.getsignal(signal.SIGINT)
    _signal_at_chunk(monkeypatch, 3)
    assert cli.main(_args(data_dir, workdir, 2)) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "SIGINT received: stopping after the current chunk" in err
    assert f"saved a checkpoint at step 10 in {workdir / 'checkpoints'}" in err
    assert "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
    assert [r["epoch"] for r in outputs.read_metrics(workdir)] == [1]

    assert cli.main(_args(data_dir, workdir, 2)) == 0
    assert "(epoch 1, 4/6 steps into epoch 2)" in capsys.readouterr().out
    _assert_same_run(workdir, straight)


@pytest.mark.slow
def test_a_signal_in_the_last_chunk_finishes_the_run_then_exits_130(
    data_dir, straight, tmp_path, capsys, monkeypatch
):
    """SIGINT during the 4th and last chunk: the run ends and writes its outputs, then stops
    with 130, so that a caller running several trainings (a campaign) stops too."""
    workdir = tmp_path / "run"
    _signal_at_chunk(monkeypatch, 4)
    assert cli.main(_args(data_dir, workdir, 2)) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert f"saved a checkpoint at step 12 in {workdir / 'checkpoints'}" in err
    assert "Traceback" not in err
    assert [r["epoch"] for r in outputs.read_metrics(workdir)] == [1, 2]
    assert (workdir / "samples.png").is_file()
    _assert_same_run(workdir, straight)

    assert cli.main(_args(data_dir, workdir, 2)) == 0
    assert "already finished epoch 2" in capsys.readouterr().out


@pytest.mark.slow  # needs the `straight` run
def test_changed_model_or_data_settings_are_refused(data_dir, straight, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    args = _args(data_dir, workdir, 3, "--latents", "5", "--hard", "--lr", "0.01")
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot resume the checkpoint at step 12")
    assert "latents: 3 -> 5" in err and "learning_rate: 0.001 -> 0.01" in err
    assert "estimator" not in err  # --hard is st, the saved estimator
    assert len(err.splitlines()) == 1

    other_data = write_random_idx(tmp_path / "other", 101, 16, seed=1)
    assert cli.main(_args(other_data, workdir, 3)) == 2
    assert "the training data differs" in capsys.readouterr().err

    assert cli.main(_args(data_dir, workdir, 1)) == 2
    assert "has finished epoch 2, past --epochs 1" in capsys.readouterr().err
    assert outputs.read_metrics(workdir) == outputs.read_metrics(straight)  # untouched


@pytest.mark.slow
def test_a_changed_latent_type_or_estimator_sample_count_is_refused(
    data_dir, straight, tmp_path, capsys
):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    args = _args(data_dir, workdir, 3, "--latent-type", "bernoulli", "--estimator", "gumbel-rao")
    assert cli.main([*args, "--estimator-option", "num_samples=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot resume the checkpoint at step 12")
    assert "latent_type: 'categorical' -> 'bernoulli'" in err
    assert "estimator_options: {} -> {'num_samples': 3}" in err
    assert len(err.splitlines()) == 1
    assert cli.main(_args(data_dir, workdir, 3, "--activation", "tanh")) == 2
    assert "activation: 'relu' -> 'tanh'" in capsys.readouterr().err
    assert outputs.read_metrics(workdir) == outputs.read_metrics(straight)  # untouched


@pytest.mark.slow
def test_a_cosine_run_trains_saves_and_refuses_a_longer_resume(data_dir, tmp_path, capsys):
    workdir = tmp_path / "cosine"
    assert cli.main(_args(data_dir, workdir, 1, "--lr-schedule", "cosine")) == 0
    step, arrays = _final_arrays(workdir)
    assert step == STEPS_PER_EPOCH
    assert int(arrays[-2]) == STEPS_PER_EPOCH  # the state's step, next to the key data
    capsys.readouterr()
    assert cli.main(_args(data_dir, workdir, 2, "--lr-schedule", "cosine")) == 2
    assert "epochs: 1 -> 2" in capsys.readouterr().err


@pytest.mark.slow
def test_a_radam_run_resumes_bitwise_and_refuses_a_changed_optimizer(data_dir, tmp_path, capsys):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert cli.main(_args(data_dir, whole, 2, "--optimizer", "radam")) == 0
    assert cli.main(_args(data_dir, resumed, 1, "--optimizer", "radam")) == 0
    assert cli.main(_args(data_dir, resumed, 2, "--optimizer", "radam")) == 0
    _assert_same_run(resumed, whole)
    capsys.readouterr()
    assert cli.main(_args(data_dir, resumed, 3)) == 2
    assert "optimizer: 'radam' -> 'adam'" in capsys.readouterr().err


def test_only_run_length_chunking_evaluation_and_outputs_may_change():
    assert {"epochs", "chunk_steps", "eval_samples", "workdir"} <= MAY_CHANGE_ON_RESUME
    saved = Config().to_dict()
    assert Config(epochs=20, chunk_steps=7, eval_samples=4).fixed_on_resume_differences(saved) == []
    changed = Config(binarize="none", anneal_every=50, seed=1, hidden=(64,))
    assert changed.fixed_on_resume_differences(saved) == [
        "hidden: [512, 256] -> [64]",
        "anneal_every: 100 -> 50",
        "binarize: 'dynamic' -> 'none'",
        "seed: 0 -> 1",
    ]


def test_a_setting_missing_from_an_older_checkpoint_counts_as_its_default():
    saved = {k: v for k, v in Config().to_dict().items() if k != "lr_schedule"}
    assert Config().fixed_on_resume_differences(saved) == []
    assert Config(lr_schedule="cosine").fixed_on_resume_differences(saved) == [
        "lr_schedule: 'constant' -> 'cosine'"
    ]


def test_with_the_cosine_schedule_the_number_of_epochs_is_fixed():
    saved = Config(lr_schedule="cosine").to_dict()
    assert Config(lr_schedule="cosine", chunk_steps=7).fixed_on_resume_differences(saved) == []
    assert Config(lr_schedule="cosine", epochs=20).fixed_on_resume_differences(saved) == [
        "epochs: 10 -> 20"
    ]


def _corrupt_array_files(step_dir: Path) -> None:
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            with path.open("r+b") as f:
                f.truncate(path.stat().st_size // 2)


def _delete_json_item(step_dir: Path) -> None:
    (step_dir / "meta" / "metadata").unlink()


@pytest.mark.parametrize("corrupt", [_corrupt_array_files, _delete_json_item])
@pytest.mark.slow
def test_a_corrupted_latest_checkpoint_is_skipped_with_a_warning(
    data_dir, straight, tmp_path, capsys, corrupt
):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    corrupt(workdir / "checkpoints" / "12")
    assert cli.main(_args(data_dir, workdir, 2)) == 0
    captured = capsys.readouterr()
    assert f"warning: checkpoint {workdir / 'checkpoints' / '12'} does not restore" in captured.err
    assert "resuming from the older checkpoint at step 6" in captured.err
    assert "Traceback" not in captured.err
    assert "Resuming from the checkpoint at step 6 (epoch 1)" in captured.out
    _assert_same_run(workdir, straight)  # epoch 2 trained again, to the same numbers


@pytest.mark.slow  # needs the `straight` run
def test_no_checkpoint_restores_exits_2(data_dir, straight, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)
    for step_dir in (workdir / "checkpoints").iterdir():
        _corrupt_array_files(step_dir)
    metrics = (workdir / outputs.METRICS_FILE).read_text()
    assert cli.main(_args(data_dir, workdir, 3)) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(
        f"error: none of the 2 checkpoints in {workdir / 'checkpoints'} restores (step 12: "
    )
    assert "move that folder away to start the run over" in err
    assert (workdir / outputs.METRICS_FILE).read_text() == metrics  # nothing started over
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["12", "6"]


def test_metrics_of_epochs_after_the_checkpoint_are_dropped(tmp_path):
    for epoch in (1, 2, 3):
        outputs.append_metrics(tmp_path, {"epoch": epoch, "train/loss": float(epoch)})
    with (tmp_path / outputs.METRICS_FILE).open("a") as f:
        f.write('{"epoch": 4, "train/lo')  # a line cut short by a killed process
    outputs.truncate_metrics(tmp_path, 2)
    assert outputs.read_metrics(tmp_path) == [
        {"epoch": 1, "train/loss": 1.0},
        {"epoch": 2, "train/loss": 2.0},
    ]


def test_damaged_metrics_lines_are_left_out(tmp_path):
    """Lines edited by hand or by another program: not records of an epoch, so not read."""
    outputs.append_metrics(tmp_path, {"epoch": 1, "train/loss": 1.0})
    with (tmp_path / outputs.METRICS_FILE).open("a") as f:
        f.write('garbage\n{"epoch": "2"}\n{"epoch": true}\n[1, 2]\nnull\n')
    outputs.truncate_metrics(tmp_path, 2)
    assert outputs.read_metrics(tmp_path) == [{"epoch": 1, "train/loss": 1.0}]


def _env():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "experiments.mnist", *args],
            cwd=REPO,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_for(process: subprocess.Popen, log: Path, text: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_without_a_traceback(data_dir, tmp_path):
    workdir, log = tmp_path / "run", tmp_path / "log.txt"
    process = _start(_args(data_dir, workdir, 10_000), log)
    try:
        _wait_for(process, log, "epoch 4/10000")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 143, log.read_text()
    finally:
        process.kill()
    text = log.read_text()
    assert "SIGTERM received: stopping after the current chunk" in text
    assert "interrupted by SIGTERM: saved a checkpoint at step " in text
    assert "Traceback" not in text
    step = int(text.split("saved a checkpoint at step ")[1].split()[0])
    assert step >= 4 * STEPS_PER_EPOCH
    with checkpoints.RunCheckpoints(workdir) as saved:
        steps = saved.steps()
    # The newest 3 are kept: the one saved at the signal and the two before it.
    assert len(steps) == 3 and steps[-1] == step and steps[0] > STEPS_PER_EPOCH


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_workdir_that_resumes(data_dir, tmp_path, capsys):
    workdir, log = tmp_path / "run", tmp_path / "log.txt"
    process = _start(_args(data_dir, workdir, 10_000), log)
    try:
        _wait_for(process, log, "epoch 2/10000")
        process.kill()  # SIGKILL, wherever it is: training, evaluating, writing or saving
        assert process.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        process.kill()
    epochs = len(outputs.read_metrics(workdir))
    assert epochs >= 2
    assert cli.main(_args(data_dir, workdir, epochs + 1)) == 0
    out = capsys.readouterr().out
    assert "Resuming from the checkpoint at step" in out
    records = outputs.read_metrics(workdir)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 2))


KILLED_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import jax, jax.numpy as jnp, optax
    from experiments.mnist import checkpoints, train, update

    def state(step, size):
        params = {"w": jnp.full((size,), float(step))}
        return update.TrainState.create(
            graphdef=None, params=params, tx=optax.adam(1e-3), key=jax.random.key(0)
        ).replace(step=jnp.int32(step))

    saved = checkpoints.RunCheckpoints(sys.argv[1])
    saved.save(state(1, 10), epoch=1, meta={})
    saved.wait_until_finished()
    saved.save(state(2, 30_000_000), epoch=2, meta={})  # 360 MB with Adam's moments
    print(sorted(p.name for p in saved.directory.iterdir()), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # while the asynchronous save is writing
    """
)


@pytest.mark.slow
def test_a_process_killed_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", KILLED_DURING_SAVE, str(tmp_path)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert result.stdout.strip() == "['1', '2.orbax-checkpoint-tmp']"  # killed mid-save
    with checkpoints.RunCheckpoints(tmp_path) as saved:
        assert saved.steps() == [1]
        target = update.TrainState.create(
            graphdef=None,
            params={"w": np.zeros(10, np.float32)},
            tx=optax.adam(1e-3),
            key=jax.random.key(0),
        ).replace(step=jnp.zeros((), jnp.int32))
        restored = saved.restore_latest(target)
    assert restored.step == 1 and restored.epoch == 1
    np.testing.assert_array_equal(restored.state.params["w"], np.ones(10, np.float32))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]  # cleaned up


def _write_linen_checkpoint(workdir: Path, config: Config) -> Path:
    """A checkpoint as the Flax Linen version of the experiment saved it (before NNX).

    Linen named the layers ``encoder_0``, ``encoder_1``, ``encoder_logits``, ``decoder_0``, ...,
    kept them under ``params`` and wrote no ``format`` into the JSON item.
    """
    widths = {
        "encoder_0": (784, 512),
        "encoder_1": (512, 256),
        "encoder_logits": (256, config.latents * config.categories),
        "decoder_0": (config.latents * config.categories, 256),
        "decoder_1": (256, 512),
        "decoder_logits": (512, 784),
    }
    params = {
        name: {"kernel": jnp.zeros(shape), "bias": jnp.zeros(shape[1])}
        for name, shape in widths.items()
    }
    arrays = {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "step": jnp.int32(STEPS_PER_EPOCH),
        "key": jax.random.key_data(jax.random.key(0)),
    }
    meta = {"config": config.to_dict(), "data": "", "partial_epoch": None, "epoch": 1}
    directory = workdir / checkpoints.CHECKPOINT_DIR
    manager = ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(create=True),
        item_names=("state", "meta"),
    )
    manager.save(
        STEPS_PER_EPOCH,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(arrays),
            meta=ocp.args.JsonSave({**meta, "step": STEPS_PER_EPOCH}),
        ),
    )
    manager.wait_until_finished()
    manager.close()
    return directory


@pytest.mark.slow
def test_a_checkpoint_of_the_linen_model_is_refused_in_one_line(data_dir, tmp_path, capsys):
    workdir = tmp_path / "linen"
    args = _args(data_dir, workdir, 2)
    config = cli.config_from_args(cli.build_parser().parse_args(args))
    directory = _write_linen_checkpoint(workdir, config)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: the checkpoint at step {STEPS_PER_EPOCH} in {directory}")
    assert "Flax Linen" in err and "another --workdir" in err
    assert sorted(p.name for p in directory.iterdir()) == [str(STEPS_PER_EPOCH)]  # kept


def _diverge_at_chunk(monkeypatch, number: int) -> None:
    """Makes the ``number``-th training chunk report a NaN loss at its second step."""
    chunk, calls = update.train_chunk, []

    def chunk_then_nan(*args, **kwargs):
        calls.append(1)
        state, metrics = chunk(*args, **kwargs)
        if len(calls) == number:
            loss = metrics["loss"].at[1].set(jnp.nan)
            metrics = {**metrics, "loss": loss, "finite": jnp.asarray(False)}
        return state, metrics

    monkeypatch.setattr(update, "train_chunk", chunk_then_nan)


@pytest.mark.slow
def test_a_diverged_run_exits_3_and_keeps_the_last_finite_checkpoint(
    data_dir, tmp_path, capsys, monkeypatch
):
    """A NaN loss in epoch 2 (step 7): one line, status 3, epoch 1's checkpoint and metrics
    kept, nothing of the diverged state saved, no pictures; the workdir says it diverged."""
    workdir = tmp_path / "run"
    _diverge_at_chunk(monkeypatch, 3)  # Epoch 2's first chunk, steps 6..9.
    assert cli.main(_args(data_dir, workdir, 2)) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: training diverged: the loss is nan at step 7;"), err
    assert "learning rate (--lr 0.001) is probably too high" in err
    assert [r["epoch"] for r in outputs.read_metrics(workdir)] == [1]
    with checkpoints.RunCheckpoints(workdir) as saved:
        assert saved.steps() == [STEPS_PER_EPOCH]
    assert not any((workdir / name).exists() for name in ("samples.png", "curves.png"))
    assert "step 7" in outputs.read_divergence(workdir)


@pytest.mark.slow
def test_a_learning_rate_that_overflows_diverges_with_status_3(data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(_args(data_dir, workdir, 1, "--lr", "1e30")) == 3
    err = capsys.readouterr().err
    assert "training diverged" in err and "--lr 1e+30" in err
    assert outputs.read_metrics(workdir) == []
    assert not (workdir / "checkpoints").exists() or not any((workdir / "checkpoints").iterdir())


@pytest.mark.slow
def test_a_signal_during_the_evaluation_stops_it_and_the_rerun_only_evaluates(
    data_dir, straight, tmp_path, capsys, monkeypatch
):
    """SIGINT during the final evaluation (its first batch): status 130, a message that says
    training is finished and checkpointed but not evaluated; the rerun trains nothing."""
    workdir = tmp_path / "run"
    batch, calls = evaluate._neg_elbo_batch, []

    def batch_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # One batch per evaluation: the 2nd is epoch 2's.
            signal.raise_signal(signal.SIGINT)
        return batch(*args, **kwargs)

    monkeypatch.setattr(evaluate, "_neg_elbo_batch", batch_then_signal)
    assert cli.main(_args(data_dir, workdir, 2)) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert (
        "interrupted by SIGINT during the evaluation of epoch 2: its training is finished and "
        f"checkpointed (step 12 in {workdir / 'checkpoints'}), its evaluation is not" in err
    )
    assert "Traceback" not in err
    assert [r["epoch"] for r in outputs.read_metrics(workdir)] == [1]
    assert not (workdir / "samples.png").exists()

    chunk, chunks = update.train_chunk, []
    monkeypatch.setattr(update, "train_chunk", lambda *a, **k: chunks.append(1) or chunk(*a, **k))
    assert cli.main(_args(data_dir, workdir, 2)) == 0
    assert chunks == []  # Nothing trained again.
    assert "epoch 2/2  step 12" in capsys.readouterr().out
    _assert_same_run(workdir, straight)


_HOLD_LOCK = """
import sys, time
from experiments.mnist import workdir
with workdir.owned(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


@pytest.mark.slow
def test_a_workdir_held_by_another_process_is_refused_at_once(data_dir, tmp_path, capsys):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(workdir)],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(_args(data_dir, workdir, 1)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert (
            f"the workdir {workdir} is in use by another run (process {holder.pid} on "
            f"{socket.gethostname()})" in err
        )
        assert sorted(p.name for p in workdir.iterdir()) == ["run.lock"]  # Nothing touched.
    finally:
        holder.kill()  # SIGKILL: the operating system releases the lock.
        holder.wait(timeout=TIMEOUT)
    assert cli.main(_args(data_dir, workdir, 1)) == 0


_FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # A write past the limit fails with EFBIG.
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
from experiments.mnist import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_line_and_the_rerun_resumes(data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMIT, *_args(data_dir, workdir, 1)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(
        f"error: cannot write a checkpoint in {workdir / 'checkpoints'} (File too large): free "
        "disk space"
    ), err
    assert cli.main(_args(data_dir, workdir, 1)) == 0


@pytest.mark.slow
def test_running_out_of_memory_is_one_line_and_keeps_the_checkpoints(
    data_dir, tmp_path, capsys, monkeypatch
):
    """XLA running out of memory in the evaluation after training (an evaluation batch of 10**9
    images used to ask for 3 TB; it is now capped at the test set): one line naming the flags,
    exit 2."""
    workdir = tmp_path / "oom"

    def out_of_memory(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory allocating 3136000000000 bytes."
        )

    monkeypatch.setattr(evaluate, "evaluate", out_of_memory)
    assert cli.main(_args(data_dir, workdir, 1)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the device ran out of memory (RESOURCE_EXHAUSTED")
    assert "lower --eval-batch-size" in err and len(err.splitlines()) == 1
    assert any((workdir / checkpoints.CHECKPOINT_DIR).iterdir())  # the epoch before evaluation
