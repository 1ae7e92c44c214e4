"""Command line of the MNIST experiment: ``python -m experiments.mnist [flags]``.

Rerunning a command with the same ``--workdir`` resumes from its newest checkpoint.

Exit status: 0 on success; 2 for a usage error (argparse's message), a data failure or
checkpoints that cannot be resumed (one line on stderr); 130 after Ctrl-C (SIGINT) and 143 after
SIGTERM, with a checkpoint saved at the end of the current chunk.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import jax

from experiments.mnist import input_pipeline, outputs, parallel
from experiments.mnist.config import BINARIZATIONS, ESTIMATORS, LR_SCHEDULES, Config

_DEFAULTS = Config()


# Config fields whose flag is not the field's name with dashes.
_FLAGS = {"learning_rate": "--lr"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default (a list as its values), except ``None`` and off switches."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        if isinstance(action.default, list | tuple):
            values = " ".join(map(str, action.default)).replace("%", "%%")
            return f"{action.help or ''} (default: {values})".lstrip()
        return super()._get_help_string(action)


def add_data_arguments(group: argparse._ActionsContainer) -> None:
    """Adds ``--data-dir`` and ``--allow-unverified-data`` to a parser or argument group."""
    group.add_argument(
        "--data-dir",
        default=None,
        help=(
            "folder with the four MNIST IDX files (gzipped or not); default: the environment "
            f"variable {input_pipeline.DATA_DIR_ENV}, else tensorflow-datasets"
        ),
    )
    group.add_argument(
        "--allow-unverified-data",
        action="store_true",
        help="accept IDX files whose SHA-256 is not that of the official MNIST files",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every default is the :class:`Config` default."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.mnist",
        description=(
            "Train the categorical (Gumbel-Softmax) VAE on MNIST and evaluate the discrete model's "
            "negative ELBO and IWAE bound on the test set."
        ),
        formatter_class=HelpFormatter,
    )
    model = parser.add_argument_group("model and estimator")
    model.add_argument(
        "--latents", type=int, default=_DEFAULTS.latents, help="number of categorical latents"
    )
    model.add_argument(
        "--categories", type=int, default=_DEFAULTS.categories, help="categories per latent"
    )
    model.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default=None,
        help=f"gradient estimator from gumbel_jax.estimators (default: {_DEFAULTS.estimator})",
    )
    model.add_argument("--hard", action="store_true", help="shorthand for --estimator st")
    model.add_argument(
        "--gumbel-rao-samples",
        type=int,
        default=_DEFAULTS.gumbel_rao_samples,
        help="k of the gumbel-rao estimator",
    )
    training = parser.add_argument_group("training")
    training.add_argument(
        "--epochs",
        type=int,
        default=_DEFAULTS.epochs,
        help="total epochs (a resumed run continues)",
    )
    training.add_argument(
        "--batch-size",
        type=int,
        default=_DEFAULTS.batch_size,
        help="an epoch is num_train // batch_size steps; the remainder is skipped that epoch",
    )
    training.add_argument("--lr", type=float, default=_DEFAULTS.learning_rate, help="Adam's step")
    training.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=_DEFAULTS.lr_schedule,
        help="cosine: decay --lr to 0 over the run's --epochs (which then cannot change on resume)",
    )
    training.add_argument(
        "--temperature", type=float, default=_DEFAULTS.temperature, help="initial temperature"
    )
    training.add_argument(
        "--temperature-min",
        type=float,
        default=_DEFAULTS.temperature_min,
        help="the annealed temperature never goes below this",
    )
    training.add_argument(
        "--anneal-rate",
        type=float,
        default=_DEFAULTS.anneal_rate,
        help="temperature = max(min, initial * exp(-rate * step))",
    )
    training.add_argument(
        "--anneal-every",
        type=int,
        default=_DEFAULTS.anneal_every,
        help="the temperature is updated every this many global steps",
    )
    training.add_argument(
        "--seed", type=int, default=_DEFAULTS.seed, help="every random number derives from it"
    )
    training.add_argument(
        "--binarize",
        choices=BINARIZATIONS,
        default=_DEFAULTS.binarize,
        help="dynamic: pixels ~ Bernoulli(intensity); none: grey levels as targets",
    )
    training.add_argument(
        "--chunk-steps",
        type=int,
        default=_DEFAULTS.chunk_steps,
        help="training steps per compiled scan (progress is updated between chunks)",
    )
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--eval-samples",
        type=int,
        default=_DEFAULTS.eval_samples,
        help="k of the importance-weighted bound computed at the end of training",
    )
    evaluation.add_argument(
        "--eval-batch-size",
        type=int,
        default=_DEFAULTS.eval_batch_size,
        help="test images per evaluation batch",
    )
    io = parser.add_argument_group("data and outputs")
    add_data_arguments(io)
    io.add_argument("--workdir", default=_DEFAULTS.workdir, help="folder for the outputs")
    io.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    hosts = parser.add_argument_group(
        "several hosts (JAX multi-controller: run the same command on every host)"
    )
    hosts.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() before training (not needed on one host)",
    )
    hosts.add_argument(
        "--coordinator-address",
        default=None,
        help=f"HOST:PORT of process 0 (default: ${parallel.COORDINATOR_ADDRESS_ENV}, or detected "
        "on Slurm, Open MPI and Cloud TPU)",
    )
    hosts.add_argument(
        "--num-processes",
        type=int,
        default=None,
        help=f"number of processes (default: ${parallel.NUM_PROCESSES_ENV}, or detected)",
    )
    hosts.add_argument(
        "--process-id",
        type=int,
        default=None,
        help=f"this process's index, 0..N-1 (default: ${parallel.PROCESS_ID_ENV}, or detected)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The run's config from parsed flags (the data folder resolved from the environment).

    Raises:
      ValueError: a setting is invalid; the message names its flag.
    """
    if args.hard and args.estimator not in (None, "st"):
        raise ValueError(
            f"--hard means --estimator st; it contradicts --estimator {args.estimator}"
        )
    try:
        return _config(args)
    except ValueError as error:
        # Config names its fields (``learning_rate must be positive``); the CLI names the flag.
        field, _, rest = str(error).partition(" ")
        if field not in Config.__dataclass_fields__:
            raise
        raise ValueError(f"{_FLAGS.get(field, '--' + field.replace('_', '-'))} {rest}") from None


def _config(args: argparse.Namespace) -> Config:
    return Config(
        latents=args.latents,
        categories=args.categories,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        lr_schedule=args.lr_schedule,
        estimator="st" if args.hard else (args.estimator or _DEFAULTS.estimator),
        gumbel_rao_samples=args.gumbel_rao_samples,
        temperature=args.temperature,
        temperature_min=args.temperature_min,
        anneal_rate=args.anneal_rate,
        anneal_every=args.anneal_every,
        binarize=args.binarize,
        eval_samples=args.eval_samples,
        eval_batch_size=args.eval_batch_size,
        chunk_steps=args.chunk_steps,
        seed=args.seed,
        data_dir=input_pipeline.resolve_data_dir(args.data_dir),
        allow_unverified_data=args.allow_unverified_data,
        workdir=args.workdir,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the experiment; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))  # Exits with status 2 and the usage line.
    hosts = (args.coordinator_address, args.num_processes, args.process_id)
    if not args.distributed and any(value is not None for value in hosts):
        parser.error("--coordinator-address, --num-processes and --process-id need --distributed")
    if args.distributed:
        try:
            parallel.initialize_distributed(
                coordinator_address=args.coordinator_address,
                num_processes=args.num_processes,
                process_id=args.process_id,
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    try:
        data = input_pipeline.load(config.data_dir, allow_unverified=config.allow_unverified_data)
    except input_pipeline.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        parallel.check_batch_size(config.batch_size, mesh := parallel.make_mesh())
    except ValueError as error:
        parser.error(str(error))
    main_process = parallel.is_main_process()

    # Imported here so that flag and data errors are reported before the model is built.
    from experiments.mnist import checkpoints, run

    if main_process:
        print(
            f"MNIST from {data.source}: {len(data.train_images)} train, "
            f"{len(data.test_images)} test images; estimator {config.estimator}; "
            f"{mesh.size} device(s) ({mesh.devices.flat[0].platform}) in "
            f"{jax.process_count()} process(es); outputs in {config.workdir}",
            flush=True,
        )
    try:
        final = run.train_and_evaluate(config, data, mesh=mesh)
    except checkpoints.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except run.Interrupted as interruption:
        if main_process:
            print(interruption, file=sys.stderr)
        return interruption.exit_status
    except KeyboardInterrupt:
        print(
            "\ninterrupted at once: the checkpoints of finished epochs are in "
            f"{Path(config.workdir) / checkpoints.CHECKPOINT_DIR}; rerun the same command to "
            "resume",
            file=sys.stderr,
        )
        return 130
    if not main_process:
        return 0
    workdir = Path(config.workdir)
    print(f"Outputs in {workdir.resolve()}:")
    for name in (
        outputs.CONFIG_FILE,
        outputs.METRICS_FILE,
        outputs.RECONSTRUCTIONS_FILE,
        outputs.SAMPLES_FILE,
        outputs.CURVES_FILE,
        checkpoints.CHECKPOINT_DIR,
    ):
        print(f"  {workdir / name}")
    print(
        f"Final: test negative ELBO {final['test/neg_elbo']:.2f} nats, IWAE bound "
        f"{final['test/nll_iwae']:.2f} nats (k={final['iwae_samples']}), "
        f"train loss {final['train/loss']:.2f}, temperature {final['temperature']:.3f}"
    )
    return 0
