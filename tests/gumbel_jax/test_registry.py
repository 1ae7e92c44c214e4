"""The estimator registry: specs, registration, look-up, plug-ins, options and the uniform call."""

import sys
import tempfile
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest, parameterized

from gumbel_jax import estimators
from gumbel_jax.estimators import _spec

BUILT_IN = (
    "relaxed",
    "st",
    "st-softmax",
    "gapped-st",
    "zgr",
    "gumbel-rao",
    "reinmax",
    "reinmax-rao",
    "reinmax-cv",
    "reinforce-loo",
    "disarm",
    "rebar",
    "relax",
    "indecater",
)


class RegisteredSpecsTest(parameterized.TestCase):
    def test_every_built_in_estimator_is_registered_with_its_paper(self):
        self.assertContainsSubset(BUILT_IN, estimators.names())
        for name in BUILT_IN:
            spec = estimators.spec(name)
            self.assertEqual(spec.name, name)
            self.assertRegex(spec.reference, r"arxiv\.org|openreview\.net", name)
            self.assertTrue(spec.summary, name)

    def test_names_filter_by_kind_and_distribution(self):
        samples = estimators.names(kind="sample")
        surrogates = estimators.names(kind="surrogate")
        self.assertEqual(set(samples) | set(surrogates), set(estimators.names()))
        self.assertEqual(estimators.NAMES, samples)
        self.assertEqual(estimators.SURROGATE_NAMES, surrogates)
        self.assertNotIn("disarm", estimators.names(distribution="categorical"))
        self.assertIn("disarm", estimators.names(kind="surrogate", distribution="bernoulli"))

    @parameterized.parameters(*BUILT_IN)
    def test_get_returns_the_spec_function_of_its_kind(self, name):
        spec = estimators.spec(name)
        getter = estimators.get if spec.kind == "sample" else estimators.get_surrogate
        self.assertIs(getter(name), spec.fn)
        wrong = estimators.get_surrogate if spec.kind == "sample" else estimators.get
        with self.assertRaisesRegex(ValueError, f"{name!r} is a"):
            wrong(name)

    def test_surrogates_say_their_cost(self):
        self.assertEqual(estimators.spec("reinforce-loo").cost({"num_samples": 5}, (30, 10)), 5)
        self.assertEqual(estimators.spec("disarm").cost(None, (200,)), 2)
        self.assertEqual(estimators.spec("st").cost(None, (30, 10)), 1)

    def test_temperature_floor_and_distributions_from_the_spec(self):
        reinmax = estimators.spec("reinmax")
        self.assertEqual(reinmax.check_temperature(1.0), 1.0)
        with self.assertRaisesRegex(ValueError, "'reinmax' needs temperature >= 1"):
            reinmax.check_temperature(0.5)
        with self.assertRaisesRegex(ValueError, "for 'categorical' latents use one of: .*st"):
            estimators.spec("disarm").check_distribution("categorical")

    def test_only_sample_estimators_with_a_temperature_anneal_one(self):
        names = estimators.names()
        annealed = {name for name in names if estimators.spec(name).anneals_temperature}
        self.assertIn("st", annealed)
        self.assertIn("reinmax", annealed)
        # ZGR takes no temperature; the surrogates sample exactly (REBAR's is an option).
        self.assertNotIn("zgr", annealed)
        self.assertTrue(annealed.isdisjoint(estimators.names(kind="surrogate")))


def _toy_fn(key, logits, temperature=1.0, *, axis=-1, distribution="categorical", scale=1.0):
    del distribution
    return scale * estimators.straight_through(key, logits, temperature, axis=axis)


class SpecTest(parameterized.TestCase):
    def test_register_returns_the_spec_and_refuses_a_duplicate(self):
        spec = estimators.Spec("test-toy", _toy_fn, options={"scale": 1.0})
        try:
            self.assertIs(estimators.register(spec), spec)
            self.assertIs(estimators.spec("test-toy"), spec)
            self.assertIn("test-toy", estimators.names(kind="sample"))
            with self.assertRaisesRegex(ValueError, "'test-toy' is already registered"):
                estimators.register(estimators.Spec("test-toy", _toy_fn))
        finally:
            _spec._REGISTRY.pop("test-toy", None)

    def test_register_takes_only_specs(self):
        with self.assertRaisesRegex(TypeError, "takes a Spec"):
            estimators.register(_toy_fn)

    @parameterized.named_parameters(
        ("empty_name", {"name": ""}, ValueError, "non-empty string"),
        ("colon", {"name": "a:b"}, ValueError, "without ':'"),
        ("not_callable", {"fn": 3}, TypeError, "must be callable"),
        ("kind", {"kind": "pathwise"}, ValueError, "`kind` must be one of"),
        ("distribution", {"distributions": ("gaussian",)}, ValueError, "subset of"),
        ("option_type", {"options": {"k": [1]}}, TypeError, "bool, int, float or str"),
        ("option_clash", {"options": {"axis": 1}}, ValueError, "clashes"),
        ("surrogate_cost", {"kind": "surrogate"}, ValueError, "how many evaluations"),
    )
    def test_invalid_specs_are_refused(self, changes, error, message):
        fields = {"name": "x", "fn": _toy_fn, **changes}
        with self.assertRaisesRegex(error, message):
            estimators.Spec(**fields)

    def test_options_are_checked_and_parsed(self):
        spec = estimators.spec("gumbel-rao")
        self.assertEqual(spec.check_options({"num_samples": 3}), {"num_samples": 3})
        self.assertEqual(spec.parse_options(["num-samples=7"]), {"num_samples": 7})
        with self.assertRaisesRegex(ValueError, "no option 'k'; its options .*num_samples=10"):
            spec.check_options({"k": 3})
        with self.assertRaisesRegex(TypeError, "must be an integer"):
            spec.check_options({"num_samples": 2.5})
        with self.assertRaisesRegex(TypeError, "must be an integer"):
            spec.check_options({"num_samples": True})
        with self.assertRaisesRegex(ValueError, "takes an integer .* got 'x'"):
            spec.parse_options(["num_samples=x"])
        with self.assertRaisesRegex(ValueError, "NAME=VALUE"):
            spec.parse_options(["num_samples"])
        floats = estimators.Spec("x", _toy_fn, options={"scale": 1.0, "flag": False})
        self.assertEqual(floats.check_options({"scale": 2}), {"scale": 2.0, "flag": False})
        self.assertEqual(floats.parse_options(["flag=true"]), {"scale": 1.0, "flag": True})
        with self.assertRaisesRegex(ValueError, "takes a number"):
            floats.parse_options(["scale=nan"])

    def test_variants_and_labels_round_trip(self):
        spec, options = estimators.parse_variant("gumbel-rao[num_samples=100]")
        self.assertEqual((spec.name, options), ("gumbel-rao", {"num_samples": 100}))
        self.assertEqual(spec.label(options), "gumbel-rao[num_samples=100]")
        self.assertEqual(spec.label(), "gumbel-rao")
        self.assertEqual(estimators.parse_variant("st"), (estimators.spec("st"), {}))
        for bad in ("gumbel-rao[num_samples=100", "st]", "nope[k=1]"):
            with self.assertRaises(ValueError):
                estimators.parse_variant(bad)

    @pytest.mark.slow
    def test_bind_gives_one_call_per_kind(self):
        key, logits = jax.random.key(0), jnp.array([[0.3, -1.0, 2.0]])
        bound = estimators.spec("gumbel-rao").bind({"num_samples": 4})
        np.testing.assert_array_equal(
            bound(key, logits, 0.5), estimators.gumbel_rao(key, logits, 0.5, num_samples=4)
        )
        zgr = estimators.spec("zgr")
        self.assertFalse(zgr.uses_temperature)
        np.testing.assert_array_equal(zgr.bind()(key, logits, 123.0), estimators.zgr(key, logits))
        f = lambda z: jnp.sum(z * jnp.arange(3.0), axis=-1)
        surrogate = estimators.spec("reinforce-loo").bind({"num_samples": 3})
        np.testing.assert_array_equal(
            surrogate(key, logits, f), estimators.reinforce_loo(key, logits, f, num_samples=3)
        )


class PlugInTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        folder = tempfile.mkdtemp()
        Path(folder, "gumbel_plugin_example.py").write_text(
            textwrap.dedent(
                """
                from gumbel_jax import estimators

                def doubled(key, logits, temperature=1.0, *, axis=-1, distribution="categorical"):
                    return estimators.straight_through(key, logits, temperature, axis=axis)

                SPEC = estimators.Spec("doubled", doubled, summary="ST again")
                NAME = "st"
                NOT_A_SPEC = 3
                """
            )
        )
        sys.path.insert(0, folder)
        self.addCleanup(sys.path.remove, folder)
        self.addCleanup(sys.modules.pop, "gumbel_plugin_example", None)

    def test_a_spec_in_a_user_module_is_found_without_registering(self):
        spec = estimators.spec("gumbel_plugin_example:SPEC")
        self.assertEqual(spec.name, "doubled")
        self.assertNotIn("doubled", estimators.names())
        self.assertIs(estimators.spec("gumbel_plugin_example:NAME"), estimators.spec("st"))

    def test_a_bad_plug_in_is_one_line_naming_it(self):
        cases = {
            "no_such_module_for_gumbel:SPEC": "cannot import module 'no_such_module_for_gumbel'",
            "gumbel_plugin_example:MISSING": "has no attribute 'MISSING'",
            "gumbel_plugin_example:NOT_A_SPEC": "must be a gumbel_jax.estimators.Spec",
            "gumbel_plugin_example:": "MODULE:ATTRIBUTE",
        }
        for name, message in cases.items():
            with self.assertRaisesRegex(ValueError, message) as raised:
                estimators.spec(name)
            self.assertNotIn("\n", str(raised.exception))
            self.assertIn(repr(name), str(raised.exception))


if __name__ == "__main__":
    absltest.main()
