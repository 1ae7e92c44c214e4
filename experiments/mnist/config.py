"""Every setting of one MNIST VAE run, as a frozen dataclass that round-trips through JSON.

The defaults are those of the PyTorch Gumbel-Softmax VAE tutorial (30 latents of 10 categories,
10 epochs, batch 100, Adam 1e-3, temperature 1.0 annealed towards 0.5 at rate 3e-5 every 100
steps, relaxed estimator; ``--hard`` selects straight-through).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from experiments.mnist.input_pipeline import DATASETS, DEFAULT_DATASET
from experiments.mnist.models import MODELS
from gumbel_jax import estimators
from gumbel_jax.estimators import DISTRIBUTIONS as LATENT_TYPES

# The hidden layers' nonlinearities (``experiments.mnist.models`` implements them), in words.
ACTIVATIONS = {"relu": "ReLU", "leaky_relu": "LeakyReLU (slope 0.3)", "tanh": "tanh"}

BINARIZATIONS = ("dynamic", "none")
# Seeds are 0 .. SEEDS - 1: jax.random.key(seed) keeps the low 32 bits (2**32 is seed 0 again).
SEEDS = 2**32
LR_SCHEDULES = ("constant", "cosine")
# The optimizers (``optax`` builds them from the name): Adam, and Rectified Adam (Liu et al.,
# ICLR 2020, https://arxiv.org/abs/1908.03265), which the ReinMax paper's MNIST-VAE uses.
OPTIMIZERS = ("adam", "radam")

# The command line's groups of settings (their titles in ``--help``).
MODEL, TRAINING, EVALUATION, DATA_AND_OUTPUTS = (
    "model and estimator",
    "training",
    "evaluation",
    "data and outputs",
)


class ConfigError(ValueError):
    """An invalid setting.

    Attributes:
      field: the :class:`Config` field at fault, or ``None`` when settings conflict.
      problem: what is wrong, without the field's name (``"must be positive, got 0.0"``), so that
        a command line can name its flag instead.
    """

    def __init__(self, field: str | None, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}" if field else problem)


def setting(
    default: Any,
    *,
    help: str,
    group: str,
    defines_run: bool,
    flag: str | None = "",
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A :class:`Config` field that declares its command-line flag and its role in a run, once.

    Args:
      default: the setting's default (of the CLI too).
      help: the flag's help text.
      group: the command line's group (:data:`MODEL`, :data:`TRAINING`, ...).
      defines_run: whether the setting defines what is trained (the model, the data, the
        estimator, the optimisation, the seed): a resumed run must keep it, and a run folder of
        ``experiments.reproduce`` stands for it. The others (run length, chunking, evaluation,
        where the data and outputs are) may change on resume.
      flag: the flag, ``""`` for ``--`` and the name with dashes, ``None`` for no flag.
      choices: the allowed values, if a fixed set.
    """
    metadata = {
        "help": help,
        "group": group,
        "defines_run": defines_run,
        "flag": flag,
        "choices": choices,
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of a run. Hashable, so it can be a static argument of ``jax.jit``.

    Each field is a :func:`setting`: its default, its flag and help text, and whether it defines
    the run are declared there once; the command line (``experiments.mnist.cli``), the resume
    check (:meth:`fixed_on_resume_differences`) and the campaign's run folders read them.

    Attributes:
      latent_type: ``categorical`` (one-hot latents, the tutorial's) or ``bernoulli`` (binary
        latents); the prior is uniform in both cases.
      latents: number of latent variables.
      categories: number of categories of each categorical latent variable (unused with
        ``bernoulli``).
      model: ``mlp`` (the tutorial's) or ``conv`` (``experiments.mnist.models.MODELS``).
      hidden: widths of the encoder's hidden layers; the decoder mirrors them (the conv model
        uses the last one for its dense layer).
      activation: the hidden layers' nonlinearity (``relu``, ``leaky_relu`` with slope 0.3 below
        zero, ``tanh``).
      epochs: number of passes over the training set.
      batch_size: examples per training step. An epoch is ``num_train // batch_size`` steps; the
        remainder of the (shuffled) training set is left out of that epoch.
      learning_rate: the optimizer's step size (its peak, with ``lr_schedule="cosine"``).
      lr_schedule: ``constant``, or ``cosine``: decayed from ``learning_rate`` to 0 over the
        run's ``epochs`` (``optax.cosine_decay_schedule``), so ``epochs`` then cannot change on
        resume.
      optimizer: ``adam`` or ``radam`` (Rectified Adam, as the ReinMax paper's MNIST-VAE);
        ``optax``'s defaults otherwise.
      estimator: the gradient estimator: a name registered in ``gumbel_jax.estimators``
        (``estimators.names()``), or ``"MODULE:ATTRIBUTE"`` naming a
        ``gumbel_jax.estimators.Spec`` in the user's own module. Its spec says everything the
        run needs: its kind (a sample estimator, or a surrogate of the reconstruction term), the
        latent types it supports, its options and its temperature floor.
      estimator_options: the estimator's options, ``((name, value), ...)`` sorted by name: every
        option of its spec, the defaults overridden by those given (a dict is accepted too, as
        ``config.json`` holds them).
      temperature: initial temperature of the relaxation.
      temperature_min: floor of the annealed temperature.
      anneal_rate: rate of the exponential temperature annealing
        ``max(min, t0 * exp(-rate * step))``.
      anneal_every: the annealing's step is rounded down to a multiple of this.
      binarize: ``dynamic`` draws each training pixel as Bernoulli(intensity) every time it is used
        (the test set once, with a fixed key); ``none`` uses the grey levels as targets.
      eval_samples: k of the importance-weighted bound computed at the end of training.
      eval_batch_size: test examples per evaluation batch.
      chunk_steps: training steps per compiled ``lax.scan`` chunk (progress is shown between
        chunks). Chunks never cross an epoch boundary.
      seed: the seed every random number of the run derives from.
      dataset: the data set trained and evaluated on, a key of
        ``experiments.mnist.input_pipeline.DATASETS`` (``mnist``, ``fashion_mnist``).
      data_dir: folder of the data set's four IDX files, or ``None`` for tensorflow-datasets.
      allow_unverified_data: accept IDX files that cannot be verified as the data set's official
        files.
      workdir: folder that receives the outputs.
      progress: show a progress bar.
    """

    latent_type: str = setting(
        "categorical",
        help="categorical: one-hot latents; bernoulli: binary latents (prior Bernoulli(0.5))",
        group=MODEL,
        defines_run=True,
        choices=LATENT_TYPES,
    )
    latents: int = setting(30, help="number of latent variables", group=MODEL, defines_run=True)
    categories: int = setting(
        10, help="categories per latent (categorical latents only)", group=MODEL, defines_run=True
    )
    hidden: tuple[int, ...] = setting(
        (512, 256),
        help="encoder hidden widths (the decoder mirrors them)",
        group=MODEL,
        defines_run=True,
    )
    model: str = setting(
        "mlp",
        help="mlp: the tutorial's; conv: two stride-2 convolutions each way "
        "(experiments/mnist/models.py lists them)",
        group=MODEL,
        defines_run=True,
        choices=tuple(MODELS),
    )
    activation: str = setting(
        "relu",
        help="nonlinearity of the hidden layers (leaky_relu: slope 0.3 below zero)",
        group=MODEL,
        defines_run=True,
        choices=tuple(ACTIVATIONS),
    )
    epochs: int = setting(
        10, help="total epochs (a resumed run continues)", group=TRAINING, defines_run=False
    )
    batch_size: int = setting(
        100,
        help="an epoch is num_train // batch_size steps; the remainder is skipped that epoch",
        group=TRAINING,
        defines_run=True,
    )
    learning_rate: float = setting(
        1e-3, help="the optimizer's step", group=TRAINING, defines_run=True, flag="--lr"
    )
    lr_schedule: str = setting(
        "constant",
        help="cosine: decay --lr to 0 over the run's --epochs (which then cannot change on resume)",
        group=TRAINING,
        defines_run=True,
        choices=LR_SCHEDULES,
    )
    optimizer: str = setting(
        "adam",
        help="adam, or radam (Rectified Adam, the ReinMax paper's MNIST-VAE optimizer)",
        group=TRAINING,
        defines_run=True,
        choices=OPTIMIZERS,
    )
    estimator: str = setting(
        "relaxed",
        help="gradient estimator: a registered name (listed below) or MODULE:ATTRIBUTE, a "
        "gumbel_jax.estimators.Spec in your own module",
        group=MODEL,
        defines_run=True,
    )
    estimator_options: tuple[tuple[str, Any], ...] = setting(
        (),
        help="an option of the estimator (repeat the flag for several), e.g. num_samples=100; "
        "its options and their defaults are listed below",
        group=MODEL,
        defines_run=True,
        flag="--estimator-option",
    )
    temperature: float = setting(1.0, help="initial temperature", group=TRAINING, defines_run=True)
    temperature_min: float = setting(
        0.5, help="the annealed temperature never goes below this", group=TRAINING, defines_run=True
    )
    anneal_rate: float = setting(
        3e-5,
        help="temperature = max(min, initial * exp(-rate * step))",
        group=TRAINING,
        defines_run=True,
    )
    anneal_every: int = setting(
        100,
        help="the temperature is updated every this many global steps",
        group=TRAINING,
        defines_run=True,
    )
    binarize: str = setting(
        "dynamic",
        help="dynamic: pixels ~ Bernoulli(intensity); none: grey levels as targets",
        group=TRAINING,
        defines_run=True,
        choices=BINARIZATIONS,
    )
    eval_samples: int = setting(
        32,
        help="k of the importance-weighted bound computed at the end of training",
        group=EVALUATION,
        defines_run=False,
    )
    eval_batch_size: int = setting(
        500, help="test images per evaluation batch", group=EVALUATION, defines_run=False
    )
    chunk_steps: int = setting(
        100,
        help="training steps per compiled scan (progress is updated between chunks)",
        group=TRAINING,
        defines_run=False,
    )
    seed: int = setting(
        0, help="every random number derives from it", group=TRAINING, defines_run=True
    )
    dataset: str = setting(
        DEFAULT_DATASET,
        help="the data set to train and evaluate on (experiments/mnist/input_pipeline.py's "
        "DATASETS describes each)",
        group=DATA_AND_OUTPUTS,
        defines_run=True,
        choices=tuple(DATASETS),
    )
    data_dir: str | None = setting(
        None,
        help=(
            "folder with the data set's four IDX files; default: the environment variable "
            + ", ".join(f"{spec.data_dir_env} for {name}" for name, spec in DATASETS.items())
            + ", else tensorflow-datasets"
        ),
        group=DATA_AND_OUTPUTS,
        defines_run=False,
    )
    allow_unverified_data: bool = setting(
        False,
        help="accept IDX files that cannot be verified as the data set's official files (by "
        "their SHA-256)",
        group=DATA_AND_OUTPUTS,
        defines_run=False,
    )
    workdir: str = setting(
        "workdir", help="folder for the outputs", group=DATA_AND_OUTPUTS, defines_run=False
    )
    progress: bool = setting(
        True,
        help="do not show progress bars",
        group=DATA_AND_OUTPUTS,
        defines_run=False,
        flag="--no-progress",
    )

    def __post_init__(self):
        # JSON gives lists: store tuples so the config stays hashable.
        object.__setattr__(self, "hidden", tuple(self.hidden))
        # Every option of the estimator, sorted: the same training has one config (and folder).
        options = _option_pairs(self.estimator_options)
        if isinstance(self.estimator, str):
            try:
                options = tuple(sorted(self.spec().check_options(dict(options)).items()))
            except (ConfigError, ValueError, TypeError):
                pass  # validate() names the problem
        object.__setattr__(self, "estimator_options", options)
        self.validate()

    def spec(self) -> estimators.Spec:
        """The estimator's :class:`gumbel_jax.estimators.Spec` (a plug-in's module is imported).

        Raises:
          ConfigError: an unknown estimator, or a plug-in that cannot be loaded (one line naming
            it and the problem).
        """
        try:
            return estimators.spec(self.estimator)
        except ValueError as error:
            raise ConfigError(None, _problem(error)) from None

    def options(self) -> dict[str, Any]:
        """The estimator's options, every one of its spec (as ``spec().bind`` takes them)."""
        return dict(self.estimator_options)

    def validate(self) -> None:
        """Checks every setting.

        Raises:
          ConfigError: naming the setting, what it must be and what it was.
        """
        self._check_integers()
        self._check_reals()
        for field in dataclasses.fields(self):
            choices, value = field.metadata["choices"], getattr(self, field.name)
            if choices is not None and value not in choices:
                raise ConfigError(field.name, f"must be one of {choices}, got {value!r}")
        self._check_estimator()

    def _check_estimator(self) -> None:
        """Asks the estimator's spec: the latent type, the options, the temperature floor."""
        if not isinstance(self.estimator, str) or not self.estimator:
            raise ConfigError("estimator", f"must be an estimator's name, got {self.estimator!r}")
        spec = self.spec()
        if self.latent_type not in spec.distributions:
            supporting = estimators.names(distribution=self.latent_type)
            raise ConfigError(
                None,
                f"--estimator {self.estimator} does not support --latent-type {self.latent_type} "
                f"(it supports {' and '.join(spec.distributions)}); for {self.latent_type} "
                f"latents use one of: {', '.join(supporting)}",
            )
        try:
            spec.check_options(self.options())
        except (ValueError, TypeError) as error:
            raise ConfigError("estimator_options", _problem(error)) from None
        floor = spec.min_temperature
        if floor is not None and min(self.temperature, self.temperature_min) < floor:
            see = f"; see {spec.reference}" if spec.reference else ""
            raise ConfigError(
                None,
                f"--estimator {self.estimator} needs a temperature >= {floor:g} throughout (its "
                f"authors' condition), got --temperature {self.temperature:g} and "
                f"--temperature-min {self.temperature_min:g}: pass both >= {floor:g}{see}",
            )

    def _check_integers(self) -> None:
        positive_ints = (
            "latents",
            "categories",
            "epochs",
            "batch_size",
            "anneal_every",
            "eval_samples",
            "eval_batch_size",
            "chunk_steps",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if self.categories < 2:
            raise ConfigError("categories", f"must be at least 2, got {self.categories}")
        if not self.hidden or any(not isinstance(w, int) or w < 1 for w in self.hidden):
            raise ConfigError("hidden", f"must be positive layer widths, got {self.hidden!r}")
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEEDS:
            raise ConfigError(
                "seed",
                f"must be an integer from 0 to {SEEDS - 1} (jax.random.key keeps 32 bits: other "
                f"seeds repeat these), got {seed!r}",
            )

    def _check_reals(self) -> None:
        for name in ("learning_rate", "temperature", "temperature_min"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)!r}")
        if not self.anneal_rate >= 0:
            raise ConfigError("anneal_rate", f"must be non-negative, got {self.anneal_rate}")
        for name in ("learning_rate", "temperature", "temperature_min", "anneal_rate"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(name, f"must be finite, got {getattr(self, name)!r}")
        if self.temperature_min > self.temperature:  # the schedule decays from one to the other
            raise ConfigError(
                None,
                f"--temperature-min {self.temperature_min:g} is above --temperature "
                f"{self.temperature:g}: the temperature starts at --temperature and is annealed "
                "down to --temperature-min; pass a --temperature-min no higher than --temperature",
            )

    def to_dict(self) -> dict[str, Any]:
        """Returns the settings as a JSON-compatible dict."""
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        out["estimator_options"] = dict(self.estimator_options)
        return out

    def to_json(self) -> str:
        """Returns the settings as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Builds a config from a dict such as :meth:`to_dict` returns.

        Raises:
          ConfigError: for unknown keys or invalid values.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                None, f"unknown config keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Config:
        """Builds a config from the JSON text :meth:`to_json` writes."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def run_defining(cls) -> tuple[str, ...]:
        """The settings that define what a run trains, in field order (``defines_run``).

        A resumed run must keep them; every other setting may change on resume.
        """
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["defines_run"])

    @classmethod
    def with_defaults(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """Saved settings (a ``config.json``) completed with the default of every missing one.

        A run saved before a setting existed was trained with that setting's default. A run saved
        before ``estimator_options`` existed recorded its estimator's sample count in
        ``gumbel_rao_samples`` (sample estimators) or ``num_samples`` (surrogates): that value
        becomes the estimator's ``num_samples`` option, if it has one.
        """
        saved = dict(saved)
        legacy = {name: saved.pop(name) for name in _LEGACY_SAMPLE_COUNTS if name in saved}
        if "estimator_options" not in saved and "estimator" in saved:
            try:
                spec = estimators.spec(saved["estimator"])
                count = legacy.get(_LEGACY_SAMPLE_COUNTS[spec.kind == "surrogate"])
                given = (
                    {}
                    if count is None or "num_samples" not in spec.options
                    else {"num_samples": count}
                )
                saved["estimator_options"] = spec.check_options(given)
            except (ValueError, TypeError):
                pass  # compared as saved: the difference is reported
        return {**cls().to_dict(), **saved}

    def fixed_on_resume_differences(self, saved: dict[str, Any]) -> list[str]:
        """The settings that define the run (:meth:`run_defining`) where ``saved`` differs.

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
        fixed = set(self.run_defining())
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


# The fields that held a sample count before ``estimator_options``: of the sample estimators, of
# the surrogates (read by :meth:`Config.with_defaults` from older ``config.json`` files).
_LEGACY_SAMPLE_COUNTS = ("gumbel_rao_samples", "num_samples")


def _option_pairs(options: Any) -> tuple[tuple[str, Any], ...]:
    """``((name, value), ...)`` sorted by name, from a dict or pairs (JSON gives lists)."""
    items = options.items() if isinstance(options, dict) else options
    try:
        return tuple(sorted((str(name), value) for name, value in items))
    except (TypeError, ValueError):
        raise ConfigError(
            "estimator_options", f"must be NAME=VALUE pairs, got {options!r}"
        ) from None


def _problem(error: Exception) -> str:
    """A library error's message without its final period, to follow a flag's name."""
    return str(error).rstrip(".")


# Settings a resumed run may change: they do not change what is trained or how (``epochs`` only
# moves the end; chunking, evaluation and outputs do not touch the training numbers; the data
# folder may move, the data itself is checked by its fingerprint).
MAY_CHANGE_ON_RESUME = frozenset(
    f.name for f in dataclasses.fields(Config) if not f.metadata["defines_run"]
)
