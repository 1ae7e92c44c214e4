"""What the comparison trains: its two tables, the estimators, their tuning grids, each run.

A :class:`Table` is one comparison: the latent type and model every run of it shares, and the
estimators it compares. ``categorical`` is the tutorial's VAE with 20x10 categorical latents;
``bernoulli`` has 200 binary latents in the nonlinear model of the DisARM paper (Dong, Mnih,
Tucker, NeurIPS 2020, https://arxiv.org/abs/2006.10680): 784-200-200 with LeakyReLU (slope 0.3)
to 200 log-odds, mirrored decoder.

An estimator of the comparison (:class:`Variant`) is a ``gumbel_jax`` estimator (a registered
name or a plug-in ``MODULE:ATTRIBUTE``) with its options. Its tuning grid is every learning rate
crossed with every temperature schedule its spec allows: one list of schedules for the sample
estimators, another (``floored``) for those whose spec sets a ``min_temperature`` (ReinMax's
authors ask for temperatures >= 1), and none for the surrogate estimators and those without a
temperature, so only learning rates. A :class:`CampaignRun` is one training run; its folder names
its settings (the variant's name stands for the estimator and its options) and its data set (a
folder named after any data set but MNIST: :func:`dataset_folder`), so a finished run is found
again by its settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.mnist.config import ACTIVATIONS, Config
from experiments.mnist.input_pipeline import DATASETS, DEFAULT_DATASET
from gumbel_jax import estimators


@dataclasses.dataclass(frozen=True)
class Variant:
    """An estimator of the comparison: a ``gumbel_jax`` estimator with its options.

    Attributes:
      name: its name in the table, the JSON and the folders (``gumbel-rao-10`` ...); one name
        per estimator and options, so that a folder stands for one training.
      estimator: a registered estimator's name, or a plug-in ``"MODULE:ATTRIBUTE"``.
      title: how the table names it.
      options: the estimator's options (a dict, kept as sorted ``(name, value)`` pairs so the
        variant stays hashable); those not given take the spec's defaults.
    """

    name: str
    estimator: str
    title: str
    options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        options = self.options.items() if isinstance(self.options, Mapping) else self.options
        object.__setattr__(self, "options", tuple(sorted(options)))

    @property
    def spec(self) -> estimators.Spec:
        """The estimator's spec (a plug-in's module is imported).

        Raises:
          ValueError: an unknown estimator or a plug-in that cannot be loaded (one line).
        """
        return estimators.spec(self.estimator)

    @property
    def anneals_temperature(self) -> bool:
        """Whether the estimator has a temperature to tune: its spec's ``anneals_temperature``
        (surrogates and sample estimators whose spec says ``uses_temperature=False`` do not)."""
        return self.spec.anneals_temperature

    @property
    def min_temperature(self) -> float | None:
        """The temperature floor of its spec (``None`` without one)."""
        return self.spec.min_temperature if self.anneals_temperature else None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("relaxed", "relaxed", "Gumbel-Softmax (relaxed)"),
        Variant("st", "st", "ST Gumbel-Softmax"),
        Variant("gumbel-rao-10", "gumbel-rao", "Gumbel-Rao, k=10", {"num_samples": 10}),
        Variant("gumbel-rao-100", "gumbel-rao", "Gumbel-Rao, k=100", {"num_samples": 100}),
        Variant("reinmax", "reinmax", "ReinMax"),
        Variant("st-softmax", "st-softmax", "ST (softmax, no Gumbel noise)"),
        Variant("gapped-st", "gapped-st", "Gapped ST (GST-1.0)"),
        Variant("zgr", "zgr", "ZGR"),
        Variant("reinmax-rao-10", "reinmax-rao", "ReinMax-Rao, k=10", {"num_samples": 10}),
        Variant("reinmax-cv-10", "reinmax-cv", "ReinMax-CV, k=10", {"num_samples": 10}),
        Variant("rebar", "rebar", "REBAR (3 evaluations)"),
        Variant("relax", "relax", "RELAX, learned control variate (3 evaluations)"),
        # Two decoder evaluations per example: the fewest a leave-one-out baseline allows, and
        # DisARM's cost (one antithetic pair).
        Variant("reinforce-loo", "reinforce-loo", "REINFORCE-LOO, 2 samples", {"num_samples": 2}),
        Variant("disarm", "disarm", "DisARM, 1 pair (2 evaluations)"),
    )
}
"""The estimators of the tables, by the names the tables give them (their data: estimator and
options). Any other estimator is a variant too: see :func:`variant`."""


def variant(text: str) -> Variant:
    """The variant ``text`` names: one of :data:`VARIANTS`, or any estimator with options,
    ``NAME``, ``NAME[OPTION=VALUE,...]`` or ``MODULE:ATTRIBUTE[...]`` (a registered estimator or
    a plug-in ``Spec``), with the spec's defaults for the options not given.

    An estimator with options that a table variant already has is that variant (and trains in
    its folders); any other is named by the estimator as written and the options that differ
    from the defaults (``gumbel-rao[num_samples=50]``, ``my_module:MY_SPEC``), which is also its
    title and its folder.

    Raises:
      ValueError: an unknown estimator or option, or a plug-in that cannot be loaded (one line).
    """
    if text in VARIANTS:
        return VARIANTS[text]
    spec, options = estimators.parse_variant(text)
    written = text.partition("[")[0].strip()
    for known in VARIANTS.values():
        if known.estimator == written and spec.check_options(dict(known.options)) == options:
            return known
    name = written + spec.label(options)[len(spec.name) :]
    return Variant(name, written, name, options)


@dataclasses.dataclass(frozen=True)
class Table:
    """One comparison: the model every run shares and the estimators compared.

    A table either tunes each estimator on a validation split (``settings`` empty: the grid of
    :func:`candidates`) or trains the ``settings`` its protocol fixes for each estimator, as a
    paper's hyper-parameter table does (no tuning).

    Attributes:
      name: its key in :data:`TABLES` (the ``published`` numbers are keyed by it).
      latent_type: ``categorical`` or ``bernoulli`` (``Config.latent_type``).
      latents: latent variables.
      categories: categories of each (categorical only; ``None`` for binary latents).
      hidden: encoder hidden widths (the decoder mirrors them).
      activation: their nonlinearity (``Config.activation``).
      variants: names of the :data:`VARIANTS` it compares, in the table's order.
      title: the table's heading, with ``{dataset}`` where the data set's title goes (the data
        set is the campaign's, not the table's: :meth:`heading`).
      root: default folder of its runs (under ``results/``: their records are committed beside
        the report, not their checkpoints or pictures; see ``.gitignore``).
      results: default folder of its report.
      eval_samples: default ``k`` of the final IWAE bound.
      published_note: how the published numbers beside the table's differ in protocol.
      titles: table-specific names of some variants (the binary Concrete for ``relaxed``).
      binarize: ``Config.binarize`` of every run (``dynamic``, or ``none``: grey-level targets).
      optimizer: ``Config.optimizer`` of every run.
      epochs: default epochs of each final run.
      lr_schedules: default learning-rate schedules of the tuning grid (``Config.lr_schedule``:
        ``constant``, ``cosine``), crossed with its learning rates and temperatures.
      settings: ``(variant name, Candidate)`` of each estimator, for a table whose protocol fixes
        them; empty for a table that tunes.
    """

    name: str
    latent_type: str
    latents: int
    categories: int | None
    hidden: tuple[int, ...]
    activation: str
    variants: tuple[str, ...]
    title: str
    root: str
    results: str
    eval_samples: int
    published_note: str
    titles: tuple[tuple[str, str], ...] = ()
    binarize: str = "dynamic"
    optimizer: str = "adam"
    epochs: int = 100
    lr_schedules: tuple[str, ...] = ("constant",)
    settings: tuple[tuple[str, Candidate], ...] = ()

    @property
    def tuned(self) -> bool:
        """Whether the estimators' settings are chosen on a validation split (else fixed)."""
        return not self.settings

    def heading(self, dataset: str = DEFAULT_DATASET) -> str:
        """The table's title on ``dataset`` (a key of ``input_pipeline.DATASETS``)."""
        return self.title.format(dataset=DATASETS[dataset].title)

    def variant_title(self, name: str) -> str:
        """How this table names the variant ``name`` (another estimator: its name)."""
        known = VARIANTS[name].title if name in VARIANTS else name
        return dict(self.titles).get(name, known)

    @property
    def architecture(self) -> str:
        """The encoder in words, e.g. ``784-512-256-(20x10) with ReLU``."""
        latent = f"{self.latents}x{self.categories}" if self.categories else str(self.latents)
        widths = "-".join(map(str, self.hidden))
        return f"784-{widths}-({latent}) with {ACTIVATIONS[self.activation]}"


# Default grids. Jang et al. anneal max(0.5, exp(-r t)) with r in {1e-5, 1e-4} every N in
# {500, 1000} steps; r = 1e-4 every 500 steps reaches 0.5 after ~7,000 steps (14 tuning epochs).
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
TEMPERATURES = ("1.0:0.5", "1.0")
# The schedules of the estimators whose spec sets a temperature floor (ReinMax's is 1).
FLOORED_TEMPERATURES = ("1.0", "1.5")
ANNEAL_RATE = 1e-4
ANNEAL_EVERY = 500

# The tuning runs' seed.
TUNE_SEED = 0

# The tutorial protocol's settings, (variant, learning rate, constant temperature), from the
# ReinMax paper's hyper-parameters for 10 categories x 30 latents with RAdam, as its authors'
# script gives ReinMax's (LiyuanLucasLiu/ReinMax, mnist_vae/reinmax_10_30.sh: lr 5e-4,
# temperature 1.3) and as the ReinMax-Rao/CV authors copied the paper's table for the others
# (danielwang0452/DiscreteNumericalMethodsASC, baseline_hypers.py). Where we differ:
# - st-softmax: that copy says lr 0.007, ten times any other entry of it (all 3e-4 to 1e-3 for
#   every size); we read a dropped zero and use 7e-4.
# - relaxed: not in the paper; the straight-through Gumbel-Softmax's settings.
# - reinmax-rao, reinmax-cv: not in the paper; their authors' settings for this size
#   (hyperparameters.py, entries reinmax_v3 and reinmax_cv for 10 x 30: lr 5e-4, temperature 1.0,
#   RAdam), with 10 samples where their code takes 100 (the cost of an epoch 1.5x ST's rather
#   than about 3x), and ReinMax-CV's eta at our default 1.0 where they search it.
# - gumbel-rao: 10 samples where the ReinMax authors' code takes 100, for the same reason.
TUTORIAL_SETTINGS = (
    ("st-softmax", 7e-4, 1.4),
    ("st", 5e-4, 0.5),
    ("relaxed", 5e-4, 0.5),
    ("gumbel-rao-10", 5e-4, 1.0),
    ("gapped-st", 5e-4, 0.5),
    ("reinmax", 5e-4, 1.3),
    ("reinmax-rao-10", 5e-4, 1.0),
    ("reinmax-cv-10", 5e-4, 1.0),
)


@dataclasses.dataclass(frozen=True)
class TemperatureSchedule:
    """A temperature schedule ``max(minimum, start * exp(-rate * step))``, updated every ``every``.

    A constant schedule has ``minimum == start``, ``rate == 0`` and ``every == 1``.
    """

    start: float
    minimum: float
    rate: float = 0.0
    every: int = 1

    @property
    def constant(self) -> bool:
        return self.rate == 0 or self.minimum == self.start

    @property
    def slug(self) -> str:
        """Folder-name part, e.g. ``t1-to0.5-r0.0001-every500`` or ``t1-const``."""
        if self.constant:
            return f"t{self.start:g}-const"
        return f"t{self.start:g}-to{self.minimum:g}-r{self.rate:g}-every{self.every}"

    @property
    def label(self) -> str:
        """Table text, e.g. ``τ 1→0.5 (rate 1e-04 every 500)`` or ``τ 1 constant``."""
        if self.constant:
            return f"τ {self.start:g} constant"
        return f"τ {self.start:g}→{self.minimum:g} (rate {self.rate:.0e} every {self.every})"


def parse_temperature_schedule(
    spec: str, *, rate: float = ANNEAL_RATE, every: int = ANNEAL_EVERY
) -> TemperatureSchedule:
    """Reads ``"T"`` (constant ``T``) or ``"T0:TMIN"`` (``T0`` annealed to ``TMIN`` at ``rate``).

    Raises:
      ValueError: the text is not one or two positive numbers, or ``TMIN > T0``.
    """
    parts = spec.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(v > 0 for v in values):
        raise ValueError(
            f"temperature schedule {spec!r} is not 'T' (constant) or 'T0:TMIN' (annealed from "
            "T0 to TMIN) with positive numbers, e.g. 1.0 or 1.0:0.5"
        )
    if len(values) == 1 or values[0] == values[1]:
        return TemperatureSchedule(values[0], values[0])
    start, minimum = values
    if minimum > start:
        raise ValueError(
            f"temperature schedule {spec!r} anneals upwards: TMIN must not exceed T0 in 'T0:TMIN'"
        )
    return TemperatureSchedule(start, minimum, rate, every)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """Settings the tuning chooses: a learning rate (and its schedule) and a temperature schedule.

    ``lr_schedule`` is ``Config.lr_schedule``: ``constant``, or ``cosine`` (decayed to 0 over the
    run). A constant rate leaves it out of the folder name and the label.
    """

    learning_rate: float
    temperature_schedule: TemperatureSchedule | None
    lr_schedule: str = "constant"

    @property
    def _lr_suffix(self) -> str:
        return "" if self.lr_schedule == "constant" else f"-{self.lr_schedule}"

    @property
    def slug(self) -> str:
        """Folder name, e.g. ``lr0.001-t1-const`` (``lr0.001`` without a temperature)."""
        schedule = self.temperature_schedule
        return f"lr{self.learning_rate:g}{self._lr_suffix}" + (
            f"-{schedule.slug}" if schedule else ""
        )

    @property
    def label(self) -> str:
        decay = "" if self.lr_schedule == "constant" else f" {self.lr_schedule}"
        schedule = self.temperature_schedule
        return f"lr {self.learning_rate:g}{decay}" + (f", {schedule.label}" if schedule else "")

    def to_dict(self) -> dict:
        """The settings as the JSON of the report gives them (temperatures ``None`` without a
        temperature schedule)."""
        schedule = self.temperature_schedule
        return {
            "learning_rate": self.learning_rate,
            "lr_schedule": self.lr_schedule,
            "temperature": schedule.start if schedule else None,
            "temperature_min": schedule.minimum if schedule else None,
            "anneal_rate": schedule.rate if schedule else None,
            "anneal_every": schedule.every if schedule else None,
            "label": self.label,
        }


def candidates(
    variant: Variant,
    learning_rates: tuple[float, ...],
    temperatures: tuple[TemperatureSchedule, ...],
    floored_temperatures: tuple[TemperatureSchedule, ...],
    lr_schedules: tuple[str, ...] = ("constant",),
) -> tuple[Candidate, ...]:
    """The tuning grid of ``variant``: every learning rate and learning-rate schedule with every
    temperature schedule its spec allows: ``floored_temperatures`` for an estimator with a
    ``min_temperature``, ``temperatures`` for the other sample estimators, none for a surrogate
    or an estimator without a temperature."""
    family = temperatures if variant.min_temperature is None else floored_temperatures
    if not variant.anneals_temperature:
        family = (None,)
    return tuple(
        Candidate(lr, s, lr_schedule)
        for lr in learning_rates
        for lr_schedule in lr_schedules
        for s in family
    )


TABLES: dict[str, Table] = {
    "categorical": Table(
        name="categorical",
        latent_type="categorical",
        latents=20,
        categories=10,
        hidden=Config.hidden,
        activation=Config.activation,
        variants=(
            "relaxed",
            "st",
            "gapped-st",
            "gumbel-rao-10",
            "gumbel-rao-100",
            "reinmax",
            "reinmax-rao-10",
            "reinmax-cv-10",
            "zgr",
            "reinforce-loo",
            # REBAR (three decoder evaluations, 3.0 ST epochs) is left out for its cost: RELAX is
            # REBAR with a learned control variate, and REBAR trailed it on the binary table.
            "relax",
        ),
        title="categorical VAE on {dataset}, 20x10 latents",
        root="results/runs",
        results="results",
        eval_samples=Config.eval_samples,
        published_note="The published numbers are for static binarization and other architectures.",
        # A learning rate decayed to 0 by a cosine helped ReinMax by more than a nat here.
        lr_schedules=("constant", "cosine"),
    ),
    "bernoulli": Table(
        name="bernoulli",
        latent_type="bernoulli",
        latents=200,
        categories=None,
        hidden=(200, 200),
        activation="leaky_relu",
        variants=("relaxed", "st", "zgr", "reinforce-loo", "disarm", "rebar", "relax"),
        title="binary VAE on {dataset}, 200 Bernoulli latents (DisARM's nonlinear model)",
        root="results/binary/runs",
        results="results/binary",
        eval_samples=100,  # the DisARM paper's test bound
        published_note="The DisARM paper trains this model on dynamically binarized MNIST too, "
        "but for 1,000,000 steps of batch 50 (about 830 epochs) at Adam 1e-4, with a learned "
        "prior, mean-centred encoder inputs and the decoder's bias set to the pixel means, and "
        "reports the training ELBO and the 100-sample test bound over 5 runs; its figures are not "
        "set beside ours here (see the README for why).",
        titles=(("relaxed", "binary Concrete (relaxed)"), ("st", "ST binary Concrete")),
    ),
    "tutorial": Table(
        name="tutorial",
        latent_type="categorical",
        latents=30,
        categories=10,
        hidden=Config.hidden,
        activation=Config.activation,
        variants=(
            "st-softmax",
            "st",
            "relaxed",
            "gumbel-rao-10",
            "gapped-st",
            "reinmax",
            "reinmax-rao-10",
            "reinmax-cv-10",
        ),
        title="the tutorial's protocol: categorical VAE on grey-level {dataset}, 30x10 latents, "
        "160 epochs, RAdam, the ReinMax paper's settings",
        root="results/tutorial/runs",
        results="results/tutorial",
        eval_samples=Config.eval_samples,
        published_note="The ReinMax paper's MNIST-VAE figures for this column (Liu et al., "
        "NeurIPS 2023, https://arxiv.org/abs/2304.08612) could not be read here. Set beside ours "
        "instead: the test negative ELBO after epoch 160, mean of 10 seeds, of the runs of this "
        "protocol with the paper's settings that the ReinMax-Rao/CV authors released (Wang and "
        "Bui 2026, https://arxiv.org/abs/2603.08257; their repository "
        "danielwang0452/DiscreteNumericalMethodsASC, results/ at commit 62697d1; PyTorch; their "
        "Gumbel-Rao with 100 samples; their ST without noise at lr 0.007, 136.45 nats, not set "
        "beside ours at 7e-4).",
        binarize="none",
        optimizer="radam",
        epochs=160,
        settings=tuple(
            (name, Candidate(learning_rate, TemperatureSchedule(temperature, temperature)))
            for name, learning_rate, temperature in TUTORIAL_SETTINGS
        ),
    ),
}
CATEGORICAL = TABLES["categorical"]


@dataclasses.dataclass(frozen=True)
class CampaignRun:
    """One training run of the campaign.

    Attributes:
      phase: ``"tune"`` (validation split) or ``"final"`` (test set).
      variant: the estimator.
      candidate: its learning rate and temperature schedule.
      seed: the run's seed.
      epochs: its training budget.
      workdir: its folder, ``<root>[/<dataset>]/<phase>/<variant>/<candidate>[/seed<seed>]``
        (:func:`dataset_folder`).
      table: the comparison it belongs to (its model).
      dataset: the data set it trains on (``Config.dataset``).
    """

    phase: str
    variant: Variant
    candidate: Candidate
    seed: int
    epochs: int
    workdir: Path
    table: Table = CATEGORICAL
    dataset: str = DEFAULT_DATASET

    @property
    def title(self) -> str:
        seed = f", seed {self.seed}" if self.phase == "final" else ""
        return f"{self.phase} {self.variant.name}: {self.candidate.label}{seed}"

    def config(
        self,
        *,
        eval_samples: int,
        data_dir: str | None,
        progress: bool,
        allow_unverified_data: bool = False,
    ) -> Config:
        """The :class:`Config` of the run for ``experiments.mnist.run.train_and_evaluate``."""
        # Without a temperature (surrogates, ...) the defaults are recorded, unused.
        schedule = self.candidate.temperature_schedule or TemperatureSchedule(
            Config.temperature, Config.temperature_min, Config.anneal_rate, Config.anneal_every
        )
        table = self.table
        return Config(
            latent_type=table.latent_type,
            latents=table.latents,
            categories=table.categories or Config.categories,
            hidden=table.hidden,
            activation=table.activation,
            epochs=self.epochs,
            learning_rate=self.candidate.learning_rate,
            lr_schedule=self.candidate.lr_schedule,
            estimator=self.variant.estimator,
            estimator_options=self.variant.options,
            temperature=schedule.start,
            temperature_min=schedule.minimum,
            anneal_rate=schedule.rate,
            anneal_every=schedule.every,
            binarize=table.binarize,
            optimizer=table.optimizer,
            eval_samples=eval_samples,
            seed=self.seed,
            dataset=self.dataset,
            data_dir=data_dir,
            allow_unverified_data=allow_unverified_data,
            workdir=str(self.workdir),
            progress=progress,
        )


def dataset_folder(folder: Path, dataset: str) -> Path:
    """Where a data set's runs, or its report, go in ``folder``: ``folder`` itself for MNIST (as
    before other data sets existed, so that MNIST campaigns keep their runs and reports),
    ``folder/<dataset>`` for any other: ``results/runs/fashion_mnist/final/...``. The runs of two
    data sets never share a folder."""
    return folder if dataset == DEFAULT_DATASET else folder / dataset


def tune_run(
    root: Path,
    variant: Variant,
    candidate: Candidate,
    *,
    epochs: int,
    table: Table = CATEGORICAL,
    dataset: str = DEFAULT_DATASET,
) -> CampaignRun:
    """The tuning run of one candidate (seed :data:`TUNE_SEED`) on ``dataset``."""
    workdir = dataset_folder(root, dataset) / "tune" / variant.name / candidate.slug
    return CampaignRun("tune", variant, candidate, TUNE_SEED, epochs, workdir, table, dataset)


def final_run(
    root: Path,
    variant: Variant,
    candidate: Candidate,
    *,
    seed: int,
    epochs: int,
    table: Table = CATEGORICAL,
    dataset: str = DEFAULT_DATASET,
) -> CampaignRun:
    """The final run of the chosen candidate with one seed, on ``dataset``."""
    workdir = dataset_folder(root, dataset) / "final" / variant.name / candidate.slug
    return CampaignRun(
        "final", variant, candidate, seed, epochs, workdir / f"seed{seed}", table, dataset
    )
