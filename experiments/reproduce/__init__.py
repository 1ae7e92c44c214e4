"""The estimator comparison on MNIST: tune on a validation split, train with seeds, tabulate.

``python -m experiments.reproduce`` drives the categorical VAE of :mod:`experiments.mnist`
(20x10 latents, dynamic binarization) through two phases and a report:

- ``tune``: for each estimator, a small grid of learning rates and temperature schedules, trained
  on the first 50,000 training images and scored by the negative ELBO on the last 10,000
  (:mod:`experiments.reproduce.grid`, :mod:`experiments.reproduce.campaign`);
- ``final``: each estimator with its chosen settings, on the full training set, for several seeds,
  evaluated on the test set;
- ``report``: ``reproduction.json``, ``reproduction.md`` and ``reproduction_curves.png``, beside
  the published numbers (:mod:`experiments.reproduce.report`,
  :mod:`experiments.reproduce.published`).

Every run has its own workdir under ``--root``; a run whose ``metrics.jsonl`` already holds its
final epoch is skipped, so rerunning an interrupted campaign continues it.
"""
