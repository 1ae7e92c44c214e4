"""Smoke tests of benchmarks.compare_torch at tiny sizes (skipped without PyTorch; no timing is
asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import compare_torch
from experiments.mnist.config import Config


def test_compare_times_both_sides_and_reports_their_ratio():
    images = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    config = Config(hidden=(8,), latents=2, categories=3, batch_size=20)
    result = compare_torch.compare(images, config, repeats=2, torch_threads=1)
    for side in ("jax", "torch"):
        assert len(result[side]["epoch_seconds"]) == 3
        assert result[side]["steady_median_s"] > 0
    assert result["torch"]["threads"] == 1
    assert result["ratio"] == pytest.approx(
        result["jax"]["steady_median_s"] / result["torch"]["steady_median_s"]
    )


def test_main_writes_the_json(tmp_path, monkeypatch):
    monkeypatch.delenv("GUMBEL_JAX_MNIST_DIR", raising=False)
    out = tmp_path / "compare.json"
    compare_torch.main(["--repeats", "1", "--limit-examples", "200", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["examples"] == 200 and result["data"] == "synthetic uint8 images"
    assert result["cpu"] and result["torch_default_threads"] >= 1
