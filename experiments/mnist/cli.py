"""Command line of the MNIST experiment: ``python -m experiments.mnist [flags]``.

Rerunning a command with the same ``--workdir`` resumes from its newest checkpoint.

Exit status: 0 on success; 2 for a usage error (argparse's message), a data failure, checkpoints
that cannot be resumed, a workdir that cannot be created or written (disk full...) or that another
run holds (one line on stderr); 3 when training diverged (a non-finite loss); 130 after Ctrl-C
(SIGINT) and 143 after SIGTERM, with a checkpoint saved at the end of the current chunk.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from experiments.mnist import (
    estimator_check,
    input_pipeline,
    models,
    outputs,
    parallel,
    workdir,
)
from experiments.mnist.config import (
    DATA_AND_OUTPUTS,
    EVALUATION,
    MODEL,
    TRAINING,
    Config,
    ConfigError,
)
from gumbel_jax import estimators


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default (a list as its values), except ``None`` and on/off switches;
    keeps the lines of a description or epilog (each wrapped on its own, continued indented)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "\n".join(
            textwrap.fill(
                line.strip(),
                width,
                initial_indent=indent + line[: len(line) - len(line.lstrip())],
                subsequent_indent=indent + " " * (len(line) - len(line.lstrip()) + 4),
            )
            for line in text.splitlines()
        )

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:
            return action.help
        if isinstance(action.default, list | tuple):
            values = " ".join(map(str, action.default)).replace("%", "%%")
            return f"{action.help or ''} (default: {values})".lstrip()
        return super()._get_help_string(action)


def flag(name: str) -> str:
    """The command-line flag of the :class:`Config` field ``name`` (``learning_rate``: ``--lr``)."""
    return Config.__dataclass_fields__[name].metadata["flag"] or "--" + name.replace("_", "-")


def _flagged_fields(group: str | None = None) -> list[dataclasses.Field]:
    """The :class:`Config` fields that have a flag (those of ``group`` only, if given)."""
    return [
        f
        for f in dataclasses.fields(Config)
        if f.metadata["flag"] is not None and group in (None, f.metadata["group"])
    ]


def add_settings(
    container: argparse._ActionsContainer, names: Sequence[str], *, show_default: bool = True
) -> None:
    """Adds the flags of the :class:`Config` fields ``names``, as the fields declare them.

    Each flag stores into the field's name, with the field's default, help and choices; a
    ``bool`` field is an on/off switch (``--no-progress`` turns ``progress`` off).

    Args:
      container: a parser or an argument group.
      names: the fields.
      show_default: ``False`` gives the flags the default ``None`` (so that a caller can tell
        whether they were passed) and writes the field's default into the help.
    """
    for name in names:
        field = Config.__dataclass_fields__[name]
        options: dict[str, Any] = {"dest": name, "help": field.metadata["help"]}
        if isinstance(field.default, bool):
            options["action"] = "store_false" if field.default else "store_true"
        elif field.default == ():  # Repeated NAME=VALUE pairs, e.g. --estimator-option k=1.
            options.update(action="append", metavar="NAME=VALUE")
        elif isinstance(field.default, tuple):  # A list of values, e.g. --hidden 512 256.
            options.update(type=type(field.default[0]), nargs="+", metavar="N")
        else:
            options["type"] = str if field.default is None else type(field.default)
            options["choices"] = field.metadata["choices"]
            if options["choices"] is None:
                options["metavar"] = flag(name).lstrip("-").replace("-", "_").upper()
        options["default"] = None if field.default == () else field.default
        if not show_default:
            options["default"] = None
            options["help"] += f" (default: {field.default})"
        container.add_argument(flag(name), **options)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: a flag for every :class:`Config` field that declares one."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.mnist",
        description=(
            "Train the discrete VAE of the Gumbel-Softmax tutorial (categorical or binary latents) "
            f"on {' or '.join(spec.title for spec in input_pipeline.DATASETS.values())} "
            "(--dataset) and evaluate the discrete model's negative ELBO and IWAE bound on the "
            "test set."
        ),
        formatter_class=HelpFormatter,
        epilog=estimator_list(),
    )
    for title in (MODEL, TRAINING, EVALUATION, DATA_AND_OUTPUTS):
        group = parser.add_argument_group(title)
        for field in _flagged_fields(title):
            # --estimator has no default in the parser, so that --hard can tell it was not given.
            add_settings(group, [field.name], show_default=field.name != "estimator")
        if title == MODEL:
            group.add_argument("--hard", action="store_true", help="shorthand for --estimator st")
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


def estimator_list() -> str:
    """The registered estimators, one line each with its options, floor and summary (for
    ``--help``)."""
    lines = ["estimators (--estimator NAME, or MODULE:ATTRIBUTE for a Spec in your own module):"]
    for name in estimators.names():
        spec = estimators.spec(name)
        facts = [spec.kind, "/".join(spec.distributions)]
        facts += [f"{option}={value}" for option, value in spec.options.items()]
        if spec.min_temperature is not None:
            facts.append(f"temperature >= {spec.min_temperature:g}")
        if spec.kind == "sample" and not spec.uses_temperature:
            facts.append("no temperature")
        lines.append(f"  {name} ({', '.join(facts)}): {spec.summary}")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> Config:
    """The run's config from parsed flags (the data folder resolved from the environment).

    Raises:
      ValueError: a setting is invalid; the message names its flag.
    """
    # The one estimator the CLI knows by name: --hard is the tutorial's shorthand for ST.
    if args.hard and args.estimator not in (None, "st"):
        raise ValueError(
            f"--hard means --estimator st; it contradicts --estimator {args.estimator}"
        )
    values = {field.name: getattr(args, field.name) for field in _flagged_fields()}
    values["estimator"] = "st" if args.hard else args.estimator
    if values["estimator"] is None:
        values["estimator"] = Config.estimator
    for name in ("workdir", "data_dir"):  # an empty path is not the current folder nor a default
        if getattr(args, name) == "":
            raise ValueError(f"{flag(name)} is empty: pass a folder")
    try:
        spec = estimators.spec(values["estimator"])
    except ValueError as error:
        raise ValueError(str(error).rstrip(".")) from None
    try:
        values["estimator_options"] = spec.parse_options(args.estimator_options or ())
    except (ValueError, TypeError) as error:
        raise ValueError(f"{flag('estimator_options')} {str(error).rstrip('.')}") from None
    values["data_dir"] = input_pipeline.resolve_data_dir(args.data_dir, args.dataset)
    values["workdir"] = str(Path(args.workdir).expanduser().resolve())  # Resolved once, here.
    try:
        return Config(**values)
    except ConfigError as error:
        if error.field is None:
            raise
        raise ValueError(f"{flag(error.field)} {error.problem}") from None


# Exit statuses besides 0 (finished), 2 (a bad setting or an outside failure) and 128 + signal.
DIVERGED = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the experiment; returns the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Before the run's own handlers, or a second Ctrl-C.
        print("\ninterrupted before training started: nothing was written", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        check_contradictions(config, given_flags(argv))
    except ValueError as error:
        parser.error(str(error))  # Exits with status 2 and the usage line.
    hosts = (args.coordinator_address, args.num_processes, args.process_id)
    if not args.distributed and any(value is not None for value in hosts):
        parser.error("--coordinator-address, --num-processes and --process-id need --distributed")
    if args.distributed:  # before anything touches JAX's backend, tracing included
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
        check_first_step(config)  # traces the estimator: after jax.distributed.initialize
    except ValueError as error:
        parser.error(str(error))
    try:  # The workdir's kind, writability and lock, before the data loads (writes nothing).
        if parallel.is_main_process():
            workdir.check(config.workdir)
        data = input_pipeline.load(
            config.data_dir,
            dataset=config.dataset,
            allow_unverified=config.allow_unverified_data,
        )
    except (workdir.WorkdirError, input_pipeline.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: {_HOST_MEMORY} while loading the data", file=sys.stderr)
        return 2
    from experiments.mnist import train  # Here: flag and data errors come before the model.

    try:
        parallel.check_batch_size(config.batch_size, mesh := parallel.make_mesh())
        train.steps_per_epoch(config, len(data.train_images))
        check_memory(config, num_test=len(data.test_images), mesh=mesh)
    except ValueError as error:
        parser.error(str(error))
    return _train(config, data, mesh)


def given_flags(
    argv: Sequence[str] | None, parser: argparse.ArgumentParser | None = None
) -> frozenset[str]:
    """The settings (argparse destinations) given on the command line ``argv``, as opposed to
    left at their defaults (abbreviated and ``--flag=value`` forms included).

    Args:
      argv: the command line (``None``: ``sys.argv[1:]``).
      parser: a fresh parser of that command line, which this changes (default: this module's).
    """
    probe = parser or build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return frozenset(vars(probe.parse_args(argv)))


# The settings of the temperature schedule (sample estimators that use a temperature only).
_TEMPERATURE_SETTINGS = ("temperature", "temperature_min", "anneal_rate", "anneal_every")


def check_contradictions(config: Config, given: frozenset[str]) -> None:
    """Refuses settings given on the command line (``given``) that contradict another setting or
    that another makes meaningless; the defaults never do.

    Raises:
      ValueError: one line naming both flags.
    """
    spec = config.spec()
    if not spec.anneals_temperature:
        why = (
            "a surrogate estimator samples exactly, with no annealed temperature"
            if spec.kind == "surrogate"
            else "it uses no temperature"
        )
        if "temperature" in spec.options:
            why += "; set its own with --estimator-option temperature=T"
        for name in _TEMPERATURE_SETTINGS:
            if name in given:
                raise ValueError(
                    f"{flag(name)} has no effect with --estimator {config.estimator} ({why}): "
                    f"drop {flag(name)}"
                )
    if "anneal_rate" in given and config.anneal_rate == 0:
        for name in ("temperature_min", "anneal_every"):
            if name in given:
                raise ValueError(
                    f"{flag(name)} has no effect with --anneal-rate 0 (the temperature stays "
                    f"at --temperature {config.temperature:g}): drop one of them"
                )


def check_first_step(config: Config, *, flag: str = "--estimator") -> None:
    """Traces the estimator's first call on the run's logits (nothing is computed): a plug-in
    that raises or returns the wrong shape or dtype is a usage error before the data loads.

    Raises:
      ValueError: one line naming the estimator and the problem.
    """
    estimator_check.check_first_step(
        config.spec(),
        config.options(),
        shape=estimator_check.logits_shape(
            config.batch_size, config.latents, config.categories, config.latent_type
        ),
        distribution=config.latent_type,
        temperature=config.temperature,
        name=config.estimator,
        flag=flag,
    )


_HOST_MEMORY = (
    "the host ran out of memory (MemoryError): lower --eval-batch-size or --batch-size, or the "
    "model's size (--latents, --categories, --hidden) or the estimator's samples "
    "(--estimator-option)"
)
_BYTES = 4  # float32


def parameter_count(config: Config, image_shape: tuple[int, ...] = models.MNIST_SHAPE) -> int:
    """The model's number of parameters, from its shapes alone (nothing is allocated)."""
    abstract = nnx.eval_shape(lambda: models.from_config(config, image_shape, rngs=nnx.Rngs(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def memory_needed(config: Config, *, num_test: int, num_devices: int = 1) -> dict[str, int]:
    """Lower bounds of the bytes one device holds at once, for each part of a run, keyed by the
    flags that size it: the parameters with Adam's state and the gradient, a training step's
    samples and decoder output, an evaluation chunk's samples and decoder output."""
    latent_size = config.latents * (1 if config.latent_type == "bernoulli" else config.categories)
    params = parameter_count(config)
    spec, options = config.spec(), config.options()
    batch = -(-config.batch_size // num_devices)
    per_example = latent_size + max(config.hidden) + 28 * 28
    shape = estimator_check.logits_shape(1, config.latents, config.categories, config.latent_type)
    if spec.kind == "surrogate":
        train = batch * max(1, spec.cost(options, shape[1:])) * per_example
    else:  # the estimator's samples are of the latents; the decoder sees one
        train = batch * (max(1, int(options.get("num_samples", 1))) * latent_size + per_example)
    chunk = min(config.eval_samples, 32)  # evaluate.IWAE_SAMPLE_CHUNK
    evaluation = min(config.eval_batch_size, num_test) * chunk * per_example
    return {
        "--latents, --categories and --hidden (the parameters)": 4 * params * _BYTES,
        "--batch-size, --latents, --categories and --estimator-option (a training step)": (
            train * _BYTES
        ),
        "--eval-batch-size, --eval-samples, --latents and --categories (an evaluation chunk)": (
            evaluation * _BYTES
        ),
    }


def available_memory(device: jax.Device) -> int | None:
    """The bytes a device can hold: an accelerator's limit, the host's free memory for the CPU;
    ``None`` if unknown."""
    try:
        limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # not every backend reports its memory
        limit = None
    if limit:
        return int(limit)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: Config, *, num_test: int, mesh: jax.sharding.Mesh) -> None:
    """Refuses, before anything compiles, sizes whose arrays cannot fit in a device's memory.

    Raises:
      ValueError: one line naming the flags that size the largest part.
    """
    available = available_memory(mesh.devices.flat[0])
    if available is None:
        return
    needed = memory_needed(config, num_test=num_test, num_devices=mesh.size)
    flags, size = max(needed.items(), key=lambda item: item[1])
    if size > available:
        raise ValueError(
            f"{flags} need at least {size / 2**30:.3g} GiB of memory, more than the "
            f"{available / 2**30:.3g} GiB available on the {mesh.devices.flat[0].platform} "
            "device: lower them"
        )


def _train(config: Config, data: input_pipeline.ImageData, mesh: jax.sharding.Mesh) -> int:
    """Trains and evaluates the run, reporting on the main process; returns the exit status."""
    # Imported here so that flag and data errors are reported before the model is built.
    from experiments.mnist import checkpoints, run

    main_process = parallel.is_main_process()
    if main_process:
        print(
            f"{input_pipeline.DATASETS[config.dataset].title} from {data.source}: "
            f"{len(data.train_images)} train, "
            f"{len(data.test_images)} test images; {_latents_text(config)}; estimator "
            f"{config.estimator}; "
            f"{mesh.size} device(s) ({mesh.devices.flat[0].platform}) in "
            f"{jax.process_count()} process(es); outputs in {config.workdir}",
            flush=True,
        )
    try:
        final = run.train_and_evaluate(config, data, mesh=mesh)
    except (checkpoints.CheckpointError, workdir.WorkdirError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # Writing the metrics, config or pictures.
        print(f"error: {workdir.describe_write_failure(error)}", file=sys.stderr)
        return 2
    except run.Diverged as error:
        if main_process:
            print(f"error: {error}", file=sys.stderr)
        return DIVERGED
    except jax.errors.JaxRuntimeError as error:
        if (message := describe_out_of_memory(error)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"error: {_HOST_MEMORY}; the checkpoints of finished epochs are kept", file=sys.stderr
        )
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
    if main_process:
        _print_outputs(config, final, checkpoints.CHECKPOINT_DIR)
    return 0


def describe_out_of_memory(error: jax.errors.JaxRuntimeError) -> str | None:
    """One line for XLA's out-of-memory error (``RESOURCE_EXHAUSTED``) naming the flags that
    size the arrays; ``None`` for any other runtime error."""
    text = str(error)
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    first = text.strip().splitlines()[0]
    return (
        f"the device ran out of memory ({first}): lower --eval-batch-size or --batch-size, or "
        "the model's size (--latents, --categories, --hidden) or the estimator's samples "
        "(--estimator-option); the checkpoints of finished epochs are kept"
    )


def _latents_text(config: Config) -> str:
    """``30x10 categorical latents`` or ``200 binary latents``."""
    if config.latent_type == "bernoulli":
        return f"{config.latents} binary latents"
    return f"{config.latents}x{config.categories} categorical latents"


def _print_outputs(config: Config, final: dict[str, Any], checkpoint_dir: str) -> None:
    workdir = Path(config.workdir)
    print(f"Outputs in {workdir.resolve()}:")
    for name in (
        outputs.CONFIG_FILE,
        outputs.METRICS_FILE,
        outputs.RECONSTRUCTIONS_FILE,
        outputs.SAMPLES_FILE,
        outputs.CURVES_FILE,
        checkpoint_dir,
    ):
        print(f"  {workdir / name}")
    print(
        f"Final: test negative ELBO {final['test/neg_elbo']:.2f} nats, IWAE bound "
        f"{final['test/nll_iwae']:.2f} nats (k={final['iwae_samples']}), "
        f"train loss {final['train/loss']:.2f}"
        + (f", temperature {final['temperature']:.3f}" if config.spec().anneals_temperature else "")
    )
