"""The public API: the names and signatures that the experiment and users rely on."""

import inspect

import jax.numpy as jnp
from absl.testing import absltest, parameterized

import gumbel_jax
from gumbel_jax import concrete, diagnostics, estimators, sample, schedules

KW = inspect.Parameter.KEYWORD_ONLY
POS = inspect.Parameter.POSITIONAL_OR_KEYWORD
EMPTY = inspect.Parameter.empty

# name -> [(parameter, kind, default)], exactly as the API reference documents them.
SIGNATURES = {
    sample.gumbel: [("key", POS, EMPTY), ("shape", POS, ()), ("dtype", POS, jnp.float32)],
    sample.gumbel_softmax: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("hard", KW, False),
        ("axis", KW, -1),
    ],
    sample.gumbel_max: [("key", POS, EMPTY), ("logits", POS, EMPTY), ("axis", KW, -1)],
    sample.gumbel_top_k: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("k", POS, EMPTY),
        ("axis", KW, -1),
    ],
    sample.relaxed_bernoulli: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("hard", KW, False),
    ],
    sample.hard_concrete: [
        ("key", POS, EMPTY),
        ("log_alpha", POS, EMPTY),
        ("temperature", POS, 2 / 3),
        ("low", KW, -0.1),
        ("high", KW, 1.1),
    ],
    sample.relaxed_top_k: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("k", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("hard", KW, False),
        ("axis", KW, -1),
    ],
    concrete.bernoulli_log_prob: [
        ("y", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, EMPTY),
    ],
    concrete.bernoulli_log_prob_logit: [
        ("x", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, EMPTY),
    ],
    concrete.hard_concrete_l0: [
        ("log_alpha", POS, EMPTY),
        ("temperature", POS, 2 / 3),
        ("low", KW, -0.1),
        ("high", KW, 1.1),
    ],
    concrete.sample_log: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, EMPTY),
        ("axis", KW, -1),
    ],
    concrete.log_prob: [
        ("y", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, EMPTY),
        ("axis", KW, -1),
    ],
    concrete.log_prob_log: [
        ("log_y", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, EMPTY),
        ("axis", KW, -1),
    ],
    concrete.kl_relaxed: [
        ("key", POS, EMPTY),
        ("logits_q", POS, EMPTY),
        ("temperature_q", POS, EMPTY),
        ("logits_p", POS, EMPTY),
        ("temperature_p", POS, EMPTY),
        ("axis", KW, -1),
    ],
    estimators.gumbel_softmax: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
    ],
    estimators.straight_through: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
    ],
    estimators.st_softmax: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
    ],
    estimators.gapped_st: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
        ("gap", KW, 1.0),
    ],
    estimators.zgr: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
    ],
    estimators.gumbel_rao: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("num_samples", KW, 10),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
    ],
    estimators.reinmax: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
    ],
    estimators.reinmax_rao: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("num_samples", KW, 100),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
    ],
    estimators.reinmax_cv: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("temperature", POS, 1.0),
        ("eta", KW, 1.0),
        ("num_samples", KW, 100),
        ("axis", KW, -1),
        ("distribution", KW, "categorical"),
    ],
    estimators.reinforce_loo: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("f", POS, EMPTY),
        ("num_samples", KW, 2),
        ("distribution", KW, "categorical"),
        ("axis", KW, -1),
    ],
    estimators.disarm: [
        ("key", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("f", POS, EMPTY),
        ("distribution", KW, "bernoulli"),
        ("axis", KW, -1),
    ],
    diagnostics.exact_gradient: [
        ("f", POS, EMPTY),
        ("logits", POS, EMPTY),
        ("distribution", KW, "categorical"),
        ("axis", KW, -1),
    ],
    diagnostics.gradient_stats: [
        ("key", POS, EMPTY),
        ("estimate", POS, EMPTY),
        ("num_draws", POS, EMPTY),
        ("exact", KW, None),
    ],
    schedules.exponential: [
        ("initial", POS, 1.0),
        ("rate", KW, 3e-5),
        ("minimum", KW, 0.5),
        ("every", KW, 1),
    ],
}


class PublicApiTest(parameterized.TestCase):
    def test_package_exports_the_modules(self):
        self.assertEqual(
            sorted(gumbel_jax.__all__),
            ["concrete", "diagnostics", "estimators", "sample", "schedules"],
        )
        for name in gumbel_jax.__all__:
            self.assertTrue(inspect.ismodule(getattr(gumbel_jax, name)))

    @parameterized.named_parameters(
        ("sample", sample),
        ("concrete", concrete),
        ("diagnostics", diagnostics),
        ("estimators", estimators),
        ("schedules", schedules),
    )
    def test_every_public_name_exists_and_is_documented(self, module):
        self.assertTrue(module.__doc__)
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value):
                self.assertTrue(inspect.getdoc(value), f"{module.__name__}.{name}")

    @parameterized.named_parameters(*[(f"{fn.__module__}.{fn.__name__}", fn) for fn in SIGNATURES])
    def test_signature(self, fn):
        parameters = inspect.signature(fn).parameters.values()
        actual = [(p.name, p.kind, p.default) for p in parameters]
        self.assertEqual(actual, SIGNATURES[fn])

    @parameterized.named_parameters(
        ("gumbel_softmax", estimators.gumbel_softmax, "1611.01144"),
        ("straight_through", estimators.straight_through, "1308.3432"),
        ("gumbel_rao", estimators.gumbel_rao, "2010.04838"),
        ("reinmax", estimators.reinmax, "2304.08612"),
        ("reinmax_rao", estimators.reinmax_rao, "2603.08257"),
        ("reinmax_cv", estimators.reinmax_cv, "2603.08257"),
        ("st_softmax", estimators.st_softmax, "1308.3432"),
        ("gapped_st", estimators.gapped_st, "2206.07235"),
        ("zgr", estimators.zgr, "2310.03602"),
        ("reinforce_loo", estimators.reinforce_loo, "1602.06725"),
        ("disarm", estimators.disarm, "2006.10680"),
        ("gumbel_top_k", sample.gumbel_top_k, "1903.06059"),
        ("concrete", concrete.log_prob, "1611.00712"),
        ("relaxed_bernoulli", sample.relaxed_bernoulli, "1611.00712"),
        ("hard_concrete", sample.hard_concrete, "1712.01312"),
        ("relaxed_top_k", sample.relaxed_top_k, "1901.10517"),
        ("bernoulli_log_prob", concrete.bernoulli_log_prob, "1611.00712"),
        ("bernoulli_log_prob_logit", concrete.bernoulli_log_prob_logit, "1611.00712"),
        ("hard_concrete_l0", concrete.hard_concrete_l0, "1712.01312"),
    )
    def test_cites_its_paper(self, fn, arxiv_id):
        self.assertIn(f"https://arxiv.org/abs/{arxiv_id}", inspect.getdoc(fn))


if __name__ == "__main__":
    absltest.main()
