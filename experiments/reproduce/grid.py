"""What the comparison trains: the estimators, their tuning grids, and each run's folder and config.

An estimator of the comparison (:class:`Variant`) is a ``gumbel_jax`` estimator plus, for
Gumbel-Rao, its number of samples. Its tuning grid is every learning rate crossed with every
temperature schedule of its family: relaxed, ST and Gumbel-Rao share one list of schedules,
ReinMax has its own (temperatures >= 1, its authors' recommendation). A :class:`CampaignRun` is one
training run; its folder names its settings, so a finished run is found again by its settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from experiments.mnist.config import Config


@dataclasses.dataclass(frozen=True)
class Variant:
    """An estimator of the comparison.

    Attributes:
      name: its name in the table, the JSON and the folders (``gumbel-rao-10`` ...).
      estimator: the ``gumbel_jax.estimators`` name.
      gumbel_rao_samples: ``k`` of Gumbel-Rao, ``None`` for the others.
      title: how the table names it.
    """

    name: str
    estimator: str
    gumbel_rao_samples: int | None
    title: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("relaxed", "relaxed", None, "Gumbel-Softmax (relaxed)"),
        Variant("st", "st", None, "ST Gumbel-Softmax"),
        Variant("gumbel-rao-10", "gumbel-rao", 10, "Gumbel-Rao, k=10"),
        Variant("gumbel-rao-100", "gumbel-rao", 100, "Gumbel-Rao, k=100"),
        Variant("reinmax", "reinmax", None, "ReinMax"),
    )
}

# Default grids. Jang et al. anneal max(0.5, exp(-r t)) with r in {1e-5, 1e-4} every N in
# {500, 1000} steps; r = 1e-4 every 500 steps reaches 0.5 after ~7,000 steps (14 tuning epochs).
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
TUNE_LR_SCHEDULES = ("constant",)
TEMPERATURES = ("1.0:0.5", "1.0")
REINMAX_TEMPERATURES = ("1.0", "1.5")
ANNEAL_RATE = 1e-4
ANNEAL_EVERY = 500

# Settings of every run of the comparison.
LATENTS = 20
CATEGORIES = 10
BINARIZE = "dynamic"
TUNE_SEED = 0


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
    temperature_schedule: TemperatureSchedule
    lr_schedule: str = "constant"

    @property
    def _lr_suffix(self) -> str:
        return "" if self.lr_schedule == "constant" else f"-{self.lr_schedule}"

    @property
    def slug(self) -> str:
        return f"lr{self.learning_rate:g}{self._lr_suffix}-{self.temperature_schedule.slug}"

    @property
    def label(self) -> str:
        decay = "" if self.lr_schedule == "constant" else f" {self.lr_schedule}"
        return f"lr {self.learning_rate:g}{decay}, {self.temperature_schedule.label}"

    def to_dict(self) -> dict:
        """The settings as the JSON of the report gives them."""
        return {
            "learning_rate": self.learning_rate,
            "lr_schedule": self.lr_schedule,
            "temperature": self.temperature_schedule.start,
            "temperature_min": self.temperature_schedule.minimum,
            "anneal_rate": self.temperature_schedule.rate,
            "anneal_every": self.temperature_schedule.every,
            "label": self.label,
        }


def candidates(
    variant: Variant,
    learning_rates: tuple[float, ...],
    temperatures: tuple[TemperatureSchedule, ...],
    reinmax_temperatures: tuple[TemperatureSchedule, ...],
    lr_schedules: tuple[str, ...] = TUNE_LR_SCHEDULES,
) -> tuple[Candidate, ...]:
    """The tuning grid of ``variant``: every learning rate and learning-rate schedule with every
    temperature schedule of its family."""
    family = reinmax_temperatures if variant.estimator == "reinmax" else temperatures
    return tuple(
        Candidate(lr, s, lr_schedule)
        for lr in learning_rates
        for lr_schedule in lr_schedules
        for s in family
    )


@dataclasses.dataclass(frozen=True)
class CampaignRun:
    """One training run of the campaign.

    Attributes:
      phase: ``"tune"`` (validation split) or ``"final"`` (test set).
      variant: the estimator.
      candidate: its learning rate and temperature schedule.
      seed: the run's seed.
      epochs: its training budget.
      workdir: its folder, ``<root>/<phase>/<variant>/<candidate>[/seed<seed>]``.
    """

    phase: str
    variant: Variant
    candidate: Candidate
    seed: int
    epochs: int
    workdir: Path

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
        schedule = self.candidate.temperature_schedule
        return Config(
            latents=LATENTS,
            categories=CATEGORIES,
            epochs=self.epochs,
            learning_rate=self.candidate.learning_rate,
            lr_schedule=self.candidate.lr_schedule,
            estimator=self.variant.estimator,
            gumbel_rao_samples=self.variant.gumbel_rao_samples or Config.gumbel_rao_samples,
            temperature=schedule.start,
            temperature_min=schedule.minimum,
            anneal_rate=schedule.rate,
            anneal_every=schedule.every,
            binarize=BINARIZE,
            eval_samples=eval_samples,
            seed=self.seed,
            data_dir=data_dir,
            allow_unverified_data=allow_unverified_data,
            workdir=str(self.workdir),
            progress=progress,
        )


def tune_run(root: Path, variant: Variant, candidate: Candidate, *, epochs: int) -> CampaignRun:
    """The tuning run of one candidate (seed :data:`TUNE_SEED`)."""
    workdir = root / "tune" / variant.name / candidate.slug
    return CampaignRun("tune", variant, candidate, TUNE_SEED, epochs, workdir)


def final_run(
    root: Path, variant: Variant, candidate: Candidate, *, seed: int, epochs: int
) -> CampaignRun:
    """The final run of the chosen candidate with one seed."""
    workdir = root / "final" / variant.name / candidate.slug / f"seed{seed}"
    return CampaignRun("final", variant, candidate, seed, epochs, workdir)
