"""The published numbers the comparisons are set beside, per table.

Categorical table: test negative ELBO in nats (lower is better), on statically binarized MNIST in
both papers:

- Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
  https://arxiv.org/abs/1611.01144, Table 1, VAE with 20x10 categorical latents (its "score
  function" row, the unbiased baseline set beside REINFORCE-LOO).
- Paulus, Maddison, Krause. Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
  Estimator (ICLR 2021), https://arxiv.org/abs/2010.04838, Table 2, batch 20, 8-ary latents (their
  architecture and latent sizes differ from ours).

Binary table: no figure is set beside it (the table's ``published_note``,
``experiments.reproduce.grid.TABLES``, says why).

The tutorial's protocol: the ReinMax paper's own figures could not be read here; beside ours are
the runs of the same protocol that the ReinMax-Rao/CV authors released, as
:mod:`experiments.reproduce.reference_runs` averages them (it says where they come from; the
table's ``published_note`` says how they differ from ours).
"""

from __future__ import annotations

# The data set of every published number here (``input_pipeline.DATASETS``): a report on another
# sets none beside its results.
DATASET = "mnist"

# Published numbers per table and estimator of the comparison: (source, nats).
PAPER_RESULTS: dict[str, dict[str, tuple[tuple[str, float], ...]]] = {
    "categorical": {
        "relaxed": (("Jang 2017 GS", 101.5), ("Paulus 2021 GS", 95.5)),
        "st": (("Jang 2017 ST-GS", 107.8), ("Paulus 2021 ST-GS", 98.0)),
        "gumbel-rao-10": (("Paulus 2021 GR-MC1000", 96.5),),
        "gumbel-rao-100": (("Paulus 2021 GR-MC1000", 96.5),),
        "reinmax": (),
        "reinforce-loo": (("Jang 2017 SF", 110.6),),
    },
    "bernoulli": {},
    "tutorial": {
        "st": (("Wang 2026 runs ST-GS", 101.74),),
        "gapped-st": (("Wang 2026 runs GST-1.0", 100.77),),
        "gumbel-rao-10": (("Wang 2026 runs GR-MC100", 103.97),),
        "reinmax": (("Wang 2026 runs ReinMax", 100.80),),
        "reinmax-rao-10": (("Wang 2026 runs ReinMax-Rao (k=100)", 101.79),),
    },
}
