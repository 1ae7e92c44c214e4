"""Every setting of one MNIST VAE run, as a frozen dataclass that round-trips through JSON.

The defaults are those of the PyTorch Gumbel-Softmax VAE tutorial (30 latents of 10 categories,
10 epochs, batch 100, Adam 1e-3, temperature 1.0 annealed towards 0.5 at rate 3e-5 every 100
steps, relaxed estimator; ``--hard`` selects straight-through).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gumbel_jax.estimators import NAMES as ESTIMATORS

BINARIZATIONS = ("dynamic", "none")
LR_SCHEDULES = ("constant", "cosine")

# Settings a resumed run may change: they do not change what is trained or how (``epochs`` only
# moves the end; chunking, evaluation and outputs do not touch the training numbers; the data
# folder may move, the data itself is checked by its fingerprint). Every other setting defines the
# model, the data or the estimator, and a resumed run must keep it.
MAY_CHANGE_ON_RESUME = frozenset(
    {
        "epochs",
        "chunk_steps",
        "eval_samples",
        "eval_batch_size",
        "data_dir",
        "allow_unverified_data",
        "workdir",
        "progress",
    }
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of a run. Hashable, so it can be a static argument of ``jax.jit``.

    Attributes:
      latents: number of categorical latent variables.
      categories: number of categories of each latent variable.
      hidden: widths of the encoder's hidden layers; the decoder mirrors them.
      epochs: number of passes over the training set.
      batch_size: examples per training step. An epoch is ``num_train // batch_size`` steps; the
        remainder of the (shuffled) training set is left out of that epoch.
      learning_rate: Adam's step size (its peak, with ``lr_schedule="cosine"``).
      lr_schedule: ``constant``, or ``cosine``: decayed from ``learning_rate`` to 0 over the
        run's ``epochs`` (``optax.cosine_decay_schedule``), so ``epochs`` then cannot change on
        resume.
      estimator: gradient estimator from ``gumbel_jax.estimators`` (one of ``ESTIMATORS``).
      gumbel_rao_samples: ``num_samples`` (k) of the ``gumbel-rao`` estimator.
      temperature: initial temperature of the relaxation.
      temperature_min: floor of the annealed temperature.
      anneal_rate: rate of the exponential schedule ``max(min, t0 * exp(-rate * step))``.
      anneal_every: the schedule's step is rounded down to a multiple of this.
      binarize: ``dynamic`` draws each training pixel as Bernoulli(intensity) every time it is used
        (the test set once, with a fixed key); ``none`` uses the grey levels as targets.
      eval_samples: k of the importance-weighted bound computed at the end of training.
      eval_batch_size: test examples per evaluation batch.
      chunk_steps: training steps per compiled ``lax.scan`` chunk (progress is shown between
        chunks). Chunks never cross an epoch boundary.
      seed: the seed every random number of the run derives from.
      data_dir: folder of the four MNIST IDX files, or ``None`` for tensorflow-datasets.
      allow_unverified_data: accept IDX files whose SHA-256 differs from the official MNIST.
      workdir: folder that receives the outputs.
      progress: show a progress bar.
    """

    latents: int = 30
    categories: int = 10
    hidden: tuple[int, ...] = (512, 256)
    epochs: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    estimator: str = "relaxed"
    gumbel_rao_samples: int = 10
    temperature: float = 1.0
    temperature_min: float = 0.5
    anneal_rate: float = 3e-5
    anneal_every: int = 100
    binarize: str = "dynamic"
    eval_samples: int = 32
    eval_batch_size: int = 500
    chunk_steps: int = 100
    seed: int = 0
    data_dir: str | None = None
    allow_unverified_data: bool = False
    workdir: str = "workdir"
    progress: bool = True

    def __post_init__(self):
        # JSON gives lists: store tuples so the config stays hashable.
        object.__setattr__(self, "hidden", tuple(self.hidden))
        self.validate()

    def validate(self) -> None:
        """Checks every setting.

        Raises:
          ValueError: naming the setting, what it must be and what it was.
        """
        positive_ints = (
            "latents",
            "categories",
            "epochs",
            "batch_size",
            "gumbel_rao_samples",
            "anneal_every",
            "eval_samples",
            "eval_batch_size",
            "chunk_steps",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.categories < 2:
            raise ValueError(f"categories must be at least 2, got {self.categories}")
        if not self.hidden or any(not isinstance(w, int) or w < 1 for w in self.hidden):
            raise ValueError(f"hidden must be positive layer widths, got {self.hidden!r}")
        for name in ("learning_rate", "temperature", "temperature_min"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.anneal_rate < 0:
            raise ValueError(f"anneal_rate must be non-negative, got {self.anneal_rate}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.binarize not in BINARIZATIONS:
            raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {self.binarize!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.estimator == "reinmax" and min(self.temperature, self.temperature_min) < 1:
            raise ValueError(
                "reinmax needs a temperature >= 1 throughout (its authors' recommendation), got "
                f"temperature {self.temperature} annealed to {self.temperature_min}: "
                "pass --temperature-min 1 (and --temperature >= 1)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Returns the settings as a JSON-compatible dict."""
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    def to_json(self) -> str:
        """Returns the settings as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Builds a config from a dict such as :meth:`to_dict` returns.

        Raises:
          ValueError: for unknown keys or invalid values.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Config:
        """Builds a config from the JSON text :meth:`to_json` writes."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def with_defaults(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """Saved settings (a ``config.json``) completed with the default of every missing one.

        A run saved before a setting existed was trained with that setting's default.
        """
        return {**cls().to_dict(), **saved}

    def fixed_on_resume_differences(self, saved: dict[str, Any]) -> list[str]:
        """The settings outside ``MAY_CHANGE_ON_RESUME`` where ``saved`` differs from this config.

        A setting missing from ``saved`` (a run saved before the setting existed) counts as its
        default. With the cosine learning-rate schedule ``epochs`` is fixed too: the schedule
        decays over the run's length.

        Args:
          saved: the settings of the checkpointed run (:meth:`to_dict` of its config).

        Returns:
          ``"name: saved -> now"`` for each differing setting, in field order (empty when the run
          may resume).
        """
        saved = self.with_defaults(saved)
        now = self.to_dict()
        fixed = {name for name in now if name not in MAY_CHANGE_ON_RESUME}
        if self.lr_schedule == "cosine":
            fixed.add("epochs")
        return [
            f"{name}: {saved[name]!r} -> {now[name]!r}"
            for name in now
            if name in fixed and saved[name] != now[name]
        ]

    def steps_per_epoch(self, num_train: int) -> int:
        """Full batches in one epoch over ``num_train`` examples (the remainder is dropped)."""
        return num_train // self.batch_size
