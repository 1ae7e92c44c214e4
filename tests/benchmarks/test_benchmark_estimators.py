"""A smoke run of ``python -m benchmarks.estimators`` with tiny settings (no figure is asserted)."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import estimators as benchmark


def test_exact_gradients_of_the_toy_problems_are_the_closed_forms():
    by_name = {problem.name: problem for problem in benchmark.problems()}
    assert set(by_name) == {"binary-0.49", "binary-0.499", "categorical-poly"}
    logits = np.linspace(-1.0, 1.0, 4)
    s = 1 / (1 + np.exp(-logits))
    for t in (0.49, 0.499):
        expected = s * (1 - s) * (1 - 2 * t)
        np.testing.assert_allclose(by_name[f"binary-{t}"].exact, expected, rtol=1e-6)


def test_one_problem_runs_every_estimator_and_writes_json_and_png(tmp_path, capsys):
    rows, problems = benchmark.run(
        num_draws=64, temperatures=(1.0,), repeats=1, problem_names=("binary-0.49",)
    )
    names = [row["estimator"] for row in rows]
    assert names == [
        "relaxed",
        "st",
        "gumbel-rao k=10",
        "gumbel-rao k=100",
        "reinmax",
        "reinforce-loo S=2",
        "reinforce-loo S=4",
        "reinforce-loo S=16",
        "disarm",
    ]
    for row in rows:
        assert row["num_draws"] == 64
        assert np.isfinite([row["bias"], row["variance"], row["mse"], row["us_per_gradient"]]).all()
        assert row["mse"] >= row["bias"] ** 2
    benchmark.print_table(rows, problems)
    assert "disarm" in capsys.readouterr().out
    figure = tmp_path / "estimators.png"
    benchmark.plot(rows, problems, figure)
    assert figure.stat().st_size > 10_000
    json.dumps(rows)  # the rows are what main writes: plain JSON
