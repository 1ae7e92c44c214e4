"""A smoke run of ``python -m benchmarks.estimators`` with tiny settings (no figure is asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import estimators as benchmark
from gumbel_jax import estimators


@pytest.mark.slow
def test_exact_gradients_of_the_toy_problems_are_the_closed_forms():
    by_name = {problem.name: problem for problem in benchmark.problems()}
    assert set(by_name) == {"binary-0.49", "binary-0.499", "categorical-poly"}
    logits = np.linspace(-1.0, 1.0, 4)
    s = 1 / (1 + np.exp(-logits))
    for t in (0.49, 0.499):
        expected = s * (1 - s) * (1 - 2 * t)
        np.testing.assert_allclose(by_name[f"binary-{t}"].exact, expected, rtol=1e-6)


@pytest.mark.slow
def test_one_problem_runs_every_estimator_and_writes_json_and_png(tmp_path, capsys):
    rows, problems = benchmark.run(
        num_draws=64, temperatures=(1.0,), repeats=1, problem_names=("binary-0.49",)
    )
    names = [row["estimator"] for row in rows]
    # Every registered estimator for Bernoulli latents (at its defaults), then the sweeps, and
    # the learned variants of those with a control variate or tunable options (REBAR, RELAX).
    registered = estimators.names(distribution="bernoulli")
    learned = [
        f"{name}{benchmark.LEARNED_SUFFIX}"
        for name in registered
        if benchmark.learnable(estimators.spec(name))
    ]
    assert sorted(learned) == ["rebar (learned)", "relax (learned)"]
    expected = [*registered, *benchmark.EXTRA_VARIANTS, *learned]
    assert sorted(names) == sorted(expected)
    by_name = {row["estimator"]: row for row in rows}
    assert by_name["disarm"]["evaluations"] == 2
    assert by_name["reinforce-loo[num_samples=16]"]["evaluations"] == 16
    assert by_name["st"]["evaluations"] == 1
    for name in ("rebar", "relax"):
        fixed, fitted = by_name[name], by_name[f"{name}{benchmark.LEARNED_SUFFIX}"]
        assert (fixed["learned"], fitted["learned"]) == (False, True)
        assert fixed["evaluations"] == fitted["evaluations"] == 3
    # On this problem eta f(sigma(z)) is a poor control variate (f is nearly constant on the
    # vertices, not inside): the learned network removes most of RELAX's variance.
    assert by_name["relax (learned)"]["variance"] < 0.1 * by_name["relax"]["variance"]
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


@pytest.mark.slow
def test_a_plug_in_and_options_run_through_the_benchmark(tmp_path, monkeypatch):
    module = tmp_path / "my_benchmark_plugin.py"
    module.write_text(
        "from gumbel_jax import estimators\n"
        "SPEC = estimators.Spec('my-st', estimators.straight_through, summary='ST again')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    chosen = benchmark.variants(["my_benchmark_plugin:SPEC", "gumbel-rao[num_samples=3]"])
    rows, _ = benchmark.run(
        num_draws=32,
        temperatures=(1.0,),
        repeats=1,
        problem_names=("categorical-poly", "binary-0.49"),
        chosen_variants=chosen,
    )
    # The plug-in is categorical only, so it skips the binary problem.
    assert [(row["problem"], row["estimator"]) for row in rows] == [
        ("binary-0.49", "gumbel-rao[num_samples=3]"),
        ("categorical-poly", "my-st"),
        ("categorical-poly", "gumbel-rao[num_samples=3]"),
    ]


def test_bad_estimators_end_in_one_line(capsys):
    for bad in ("nope", "gumbel-rao[k=3]", "no_such_module_xyz:SPEC"):
        try:
            benchmark.main(["--estimators", bad, "--quick"])
        except SystemExit as exit_:
            assert exit_.code == 2
        else:
            raise AssertionError(f"{bad!r} was accepted")
        last_line = capsys.readouterr().err.strip().splitlines()[-1]
        assert "error:" in last_line and bad.partition("[")[0].partition(":")[0] in last_line


@pytest.mark.slow
def test_learning_moves_the_tunable_options_and_the_network_only_where_the_spec_has_them():
    problem = benchmark.problems()[0]
    rebar, relax = benchmark.variants(["rebar", "relax"])[1::2]
    assert rebar.learned and relax.learned
    rebar_params = benchmark.learn(problem, rebar)
    assert set(rebar_params) == {"tuned"}  # REBAR: eta and the temperature, no network
    assert float(rebar_params["tuned"]["eta"]) != 1.0
    assert float(rebar_params["tuned"]["temperature"]) != float(np.log(np.float32(0.5)))
    relax_params = benchmark.learn(problem, relax)
    assert set(relax_params) == {"tuned", "network"}
    assert np.abs(np.asarray(relax_params["network"]["w2"])).max() > 0  # started at zero
    # Fixed seed: the fit is reproducible.
    again = benchmark.learn(problem, relax)
    np.testing.assert_array_equal(again["network"]["w1"], relax_params["network"]["w1"])
