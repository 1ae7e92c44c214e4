"""Data parallelism of experiments.mnist: 4 fake CPU devices, and two processes on localhost.

Both run in subprocesses, because the device count and ``jax.distributed`` are fixed when a
process starts JAX.

Tolerance: data parallelism changes only the order of float32 sums (each device's partial batch
mean, then the all-reduce). Measured on CPU: the epoch loss of 4 devices equalled that of 1
device exactly (552.0296), parameters differed by at most 3e-8; the two-process run's epoch
losses equalled the single process's (547.4532, 545.3079). ``rtol=1e-5`` on the loss (and 1e-4 /
1e-5 on parameters) leaves room for other summation orders yet fails any real difference such as
a batch counted twice or a device training on the wrong shard.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from idx_files import write_random_idx

from experiments.mnist import parallel
from experiments.mnist.config import Config

pytestmark = pytest.mark.slow  # subprocesses with several devices and hosts

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240

FOUR_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from experiments.mnist import parallel, train, update
    from experiments.mnist.config import Config

    assert jax.device_count() == 4, jax.devices()
    config = Config(latents=3, categories=4, hidden=(16,), batch_size=8, epochs=1,
                    chunk_steps=3, estimator="st", progress=False)
    images = np.asarray(jax.random.randint(jax.random.key(7), (44, 28, 28), 0, 256), np.uint8)
    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
        mesh = parallel.make_mesh(devices)
        state, result = next(train.fit(train.create_train_state(config), images,
                                       config=config, mesh=mesh))
        results = [result]
        out[name] = {
            "loss": results[0].train_loss,
            "devices": len(state.params["encoder_hidden"][0]["kernel"][...].sharding.device_set),
            "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(state.params)],
        }
    # The compiled chunk on 4 devices averages the gradients with an all-reduce, and each
    # device's encoder sees its 2 of the 8 examples (their 784 pixels, flat inside the step).
    mesh = parallel.make_mesh()
    state = parallel.replicate(train.create_train_state(config), mesh)
    indices = parallel.shard_batches(np.arange(40).reshape(5, 8), mesh, axis=1)
    hlo = update.train_chunk.lower(
        state, parallel.replicate(images, mesh), indices, 0,
        config=update.StepConfig.from_config(config), num_steps=5,
        batch_sharding=parallel.batch_sharding(mesh),
    ).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo
    out["per_device_batch"] = "f32[2,784]" in hlo
    try:
        parallel.check_batch_size(10, mesh)
    except ValueError as error:
        out["error"] = str(error)
    json.dump(out, sys.stdout)
    """
)


def _env(**extra):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_four_devices_give_the_loss_of_one():
    result = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["one"]["devices"] == 1 and out["four"]["devices"] == 4
    np.testing.assert_allclose(out["four"]["loss"], out["one"]["loss"], rtol=1e-5)
    for four, one in zip(out["four"]["params"], out["one"]["params"], strict=True):
        np.testing.assert_allclose(four, one, rtol=1e-4, atol=1e-5)
    assert out["all_reduce"] and out["per_device_batch"]
    assert out["error"] == (
        "batch size 10 does not split evenly over 4 devices: pass a multiple of 4, such as "
        "--batch-size 8 or --batch-size 12"
    )


def test_batch_size_check_on_one_device_accepts_any_size():
    parallel.check_batch_size(7, parallel.make_mesh())  # the test process has one CPU device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs the CLI in one of several processes and saves the parameters this process holds.
ONE_PROCESS = textwrap.dedent(
    """
    import sys
    import jax, numpy as np
    from experiments.mnist import cli, train

    fit, held = train.fit, {}
    def keep_state(*args, **kwargs):  # fit, keeping the state of each epoch it yields
        for held["state"], result in fit(*args, **kwargs):
            yield held["state"], result
    train.fit = keep_state
    status = cli.main(sys.argv[2:])
    leaves = jax.tree.leaves(held["state"].params)
    np.savez(sys.argv[1], *[np.asarray(x.addressable_data(0)) for x in leaves])
    sys.exit(status)
    """
)


def test_two_processes_on_localhost_train_together_and_agree(tmp_path):
    data = write_random_idx(tmp_path / "data", 96, 16)
    workdir = tmp_path / "run"
    args = [
        *("--data-dir", str(data), "--allow-unverified-data", "--workdir", str(workdir)),
        *("--latents", "3", "--categories", "4", "--estimator", "st", "--epochs", "2"),
        *("--batch-size", "16", "--chunk-steps", "4", "--eval-samples", "2"),
        *("--eval-batch-size", "16", "--no-progress", "--distributed"),
        *("--coordinator-address", f"127.0.0.1:{_free_port()}", "--num-processes", "2"),
    ]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                ONE_PROCESS,
                str(tmp_path / f"params{i}.npz"),
                *args,
                "--process-id",
                str(i),
            ],
            env=_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT))
    finally:
        for process in processes:
            process.kill()
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr[-3000:]
    assert "2 device(s) (cpu) in 2 process(es)" in outputs[0][0]
    # Only process 0 reports (gloo itself prints a connection line in every process).
    assert "epoch 2/2" in outputs[0][0]
    assert "MNIST from" not in outputs[1][0] and "epoch" not in outputs[1][0]

    # Both processes hold the same parameters, bit for bit.
    with np.load(tmp_path / "params0.npz") as p0, np.load(tmp_path / "params1.npz") as p1:
        assert len(p0.files) == len(p1.files) > 0
        for name in p0.files:
            np.testing.assert_array_equal(p0[name], p1[name])
        two_processes = [p0[name] for name in p0.files]

    # And they trained what one process trains on the same data (up to summation order).
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["12", "6"]
    from experiments.mnist import input_pipeline, train

    config = Config(latents=3, categories=4, estimator="st", epochs=2, batch_size=16, chunk_steps=4)
    mnist = input_pipeline.load_idx_folder(data, allow_unverified=True)
    epochs = list(train.fit(train.create_train_state(config), mnist.train_images, config=config))
    losses, state = [result.train_loss for _, result in epochs], epochs[-1][0]
    np.testing.assert_allclose([r["train/loss"] for r in records], losses, rtol=1e-5)
    import jax

    for two, one in zip(two_processes, jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(two, np.asarray(one), rtol=1e-4, atol=1e-5)
