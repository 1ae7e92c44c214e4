"""Command line of the comparison: ``python -m experiments.reproduce [flags]``.

``--phase all`` (the default) tunes, trains the final runs and writes the report; rerunning the
same command skips every finished run and continues an interrupted one from its checkpoint.

Exit status: 0 on success; 3 when a run the phases needed failed (diverged: it is reported as
failed, without a result, and the campaign goes on; the failed runs are named last); 2 for
a usage error, a data failure, runs that cannot be used or are missing, or a folder that cannot
be written or that another run holds (one line on stderr); 130 after Ctrl-C and 143 after SIGTERM
(the current run saves a checkpoint first).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import jax

from experiments.mnist import cli as mnist_cli
from experiments.mnist import input_pipeline
from experiments.mnist.config import LR_SCHEDULES, ConfigError
from experiments.reproduce import campaign, grid, report
from gumbel_jax import estimators

PHASES = ("tune", "final", "all", "report")
# The tables that tune on a validation split, by latent type; the fixed-settings protocols.
LATENT_TABLES = ("categorical", "bernoulli")
PROTOCOLS = ("validation", "tutorial")
# The flags of the tuning grid (argparse destinations), which a protocol without tuning refuses.
TUNING_FLAGS = (
    "tune_epochs",
    "tune_lrs",
    "tune_lr_schedules",
    "tune_temperatures",
    "floored_temperatures",
    "anneal_rate",
    "anneal_every",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.reproduce",
        description=(
            "Compare gumbel_jax's estimators on the VAE of experiments.mnist, on "
            + " or ".join(spec.title for spec in input_pipeline.DATASETS.values())
            + " (--dataset; dynamically binarized): the categorical table (20x10 latents) or "
            "the binary one (200 Bernoulli latents, the DisARM paper's nonlinear model). Tune "
            "each estimator on a validation split, train it with several seeds, and write a "
            "table, a JSON file and a figure of the test results."
        ),
        formatter_class=mnist_cli.HelpFormatter,
    )
    _add_table_flags(parser)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of each final run (default: "
        + ", ".join(f"{t.epochs} for {name}" for name, t in grid.TABLES.items())
        + ")",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=(0, 1, 2), help="seeds of each final run"
    )
    _add_tuning_flags(parser)
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="k of the importance-weighted bound at the end of each run (default: "
        + ", ".join(f"{t.eval_samples} for {name}" for name, t in grid.TABLES.items())
        + ")",
    )
    _add_data_and_output_flags(parser)
    return parser


def _add_table_flags(parser: argparse.ArgumentParser) -> None:
    """What to run: the phase, the table (latent type and protocol) and its estimators."""
    parser.add_argument(
        "--phase",
        choices=PHASES,
        default="all",
        help="tune: the validation grid; final: the chosen settings with every seed, then the "
        "report; all: tune, final and report; report: only the report, from finished runs (the "
        "tuning must be finished)",
    )
    parser.add_argument(
        "--latent-type",
        choices=LATENT_TABLES,
        default="categorical",
        help="the validation-tuned table: categorical (20x10 latents) or bernoulli (200 binary "
        "latents)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="validation",
        help="validation: each estimator's settings chosen on a validation split "
        "(--latent-type's table); tutorial: the tutorial's model (30x10 latents, grey-level "
        "targets) trained 160 epochs with RAdam and the ReinMax paper's fixed settings per "
        "estimator, no tuning (estimators: " + ", ".join(grid.TABLES["tutorial"].variants) + ")",
    )
    parser.add_argument(
        "--estimators",
        nargs="+",
        default=None,
        metavar="NAME",
        help="estimators to compare: the tables' names ("
        + ", ".join(grid.VARIANTS)
        + "), any registered estimator ("
        + ", ".join(estimators.names())
        + "), with options as NAME[OPTION=VALUE,...], or MODULE:ATTRIBUTE, a "
        "gumbel_jax.estimators.Spec in your own module (default: the table's: "
        + "; ".join(f"{name}: {' '.join(t.variants)}" for name, t in grid.TABLES.items())
        + ")",
    )


def _add_tuning_flags(parser: argparse.ArgumentParser) -> None:
    """The tuning grid's flags: learning rates, their schedules, temperature schedules."""
    tuning = parser.add_argument_group("tuning grid (every learning rate x every schedule)")
    tuning.add_argument("--tune-epochs", type=int, default=20, help="epochs of each tuning run")
    tuning.add_argument(
        "--tune-lrs",
        type=float,
        nargs="+",
        default=grid.LEARNING_RATES,
        metavar="LR",
        help="Adam learning rates to try",
    )
    tuning.add_argument(
        "--tune-lr-schedules",
        nargs="+",
        choices=LR_SCHEDULES,
        default=None,
        metavar="SCHEDULE",
        help="learning-rate schedules to try: constant, cosine (decayed to 0 over the run) "
        "(default: "
        + "; ".join(
            f"{' '.join(t.lr_schedules)} for {name}" for name, t in grid.TABLES.items() if t.tuned
        )
        + ")",
    )
    tuning.add_argument(
        "--tune-temperatures",
        nargs="+",
        default=grid.TEMPERATURES,
        metavar="SCHEDULE",
        help="schedules of the sample estimators without a temperature floor: T (constant) or "
        "T0:TMIN (annealed)",
    )
    tuning.add_argument(
        "--floored-temperatures",
        "--reinmax-temperatures",  # its name before every floor came from the spec
        dest="floored_temperatures",
        nargs="+",
        default=grid.FLOORED_TEMPERATURES,
        metavar="SCHEDULE",
        help="schedules of the estimators whose spec sets a temperature floor (min_temperature: "
        + ", ".join(
            f"{name} {estimators.spec(name).min_temperature:g}"
            for name in estimators.names()
            if estimators.spec(name).min_temperature is not None
        )
        + "); every temperature must respect the floor",
    )
    tuning.add_argument(
        "--anneal-rate",
        type=float,
        default=grid.ANNEAL_RATE,
        help="r of the annealed schedules max(TMIN, T0 exp(-r step))",
    )
    tuning.add_argument(
        "--anneal-every",
        type=int,
        default=grid.ANNEAL_EVERY,
        help="steps between temperature updates of the annealed schedules",
    )


# Where the runs and the report of a data set other than MNIST go (``grid.dataset_folder``).
_OTHER_DATASETS = (
    "with a --dataset other than mnist, in its subfolder (ROOT/fashion_mnist/..., "
    "RESULTS/fashion_mnist/...), so that two data sets never share a run folder"
)


def _add_data_and_output_flags(parser: argparse.ArgumentParser) -> None:
    """Where the data, the runs, the report and the compilation cache are; progress; smoke test."""
    io = parser.add_argument_group("data and outputs")
    mnist_cli.add_settings(io, ["dataset", "data_dir", "allow_unverified_data"])
    io.add_argument(
        "--root",
        default=None,
        help="folder of the runs' workdirs, one per run (default: "
        + ", ".join(f"{t.root} for {name}" for name, t in grid.TABLES.items())
        + f"); {_OTHER_DATASETS}",
    )
    io.add_argument(
        "--results",
        default=None,
        help="folder for reproduction.{json,md} and the figure (default: "
        + ", ".join(f"{t.results} for {name}" for name, t in grid.TABLES.items())
        + f"); {_OTHER_DATASETS}",
    )
    io.add_argument(
        "--compilation-cache",
        default=None,
        metavar="DIR",
        help="JAX's persistent compilation cache, shared by the runs (default: ROOT/jax_cache; "
        "'none' to disable; a cache already set through JAX_COMPILATION_CACHE_DIR is kept)",
    )
    mnist_cli.add_settings(io, ["progress"])
    io.add_argument(
        "--limit-examples",
        type=int,
        default=None,
        metavar="N",
        help="smoke test: use only the first N images of each part of the data (runs go to "
        "ROOT/limitN; the report says so)",
    )


def _check_args(args: argparse.Namespace) -> tuple[tuple[grid.TemperatureSchedule, ...], ...]:
    """Checks the flags (filling in the table's defaults and reading ``--estimators`` into
    ``args.variants``); returns the two families of temperature schedules.

    Raises:
      ValueError: a flag's value is invalid.
    """
    table = args.table
    args.estimators = args.estimators or table.variants
    if args.eval_samples is None:
        args.eval_samples = table.eval_samples
    if args.epochs is None:
        args.epochs = table.epochs
    variants = {}
    for text in dict.fromkeys(args.estimators):
        try:
            found = grid.variant(text)
            found.spec.check_distribution(table.latent_type)
        except ValueError as error:
            raise ValueError(f"--estimators {text}: {str(error).rstrip('.')}") from None
        if not table.tuned and found.name not in dict(table.settings):
            raise ValueError(
                f"--estimators {text}: --protocol {table.name} has no settings for it; its "
                f"estimators are {', '.join(name for name, _ in table.settings)}"
            )
        variants.setdefault(found.name, found)
    args.variants = tuple(variants.values())
    for name in ("epochs", "tune_epochs", "eval_samples", "anneal_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit_examples is not None and args.limit_examples < 100:
        raise ValueError("--limit-examples must be at least 100 (one batch)")
    if any(seed < 0 for seed in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    if any(not lr > 0 for lr in args.tune_lrs):
        raise ValueError(f"--tune-lrs must be positive, got {args.tune_lrs}")
    if not args.anneal_rate > 0:
        raise ValueError(f"--anneal-rate must be positive, got {args.anneal_rate}")

    def temperature_schedules(specs):
        return tuple(
            dict.fromkeys(
                grid.parse_temperature_schedule(s, rate=args.anneal_rate, every=args.anneal_every)
                for s in specs
            )
        )

    floored = temperature_schedules(args.floored_temperatures)
    _check_annealing(args, temperature_schedules(args.tune_temperatures), floored)
    for variant in args.variants:
        floor = variant.min_temperature
        if floor is not None and any(s.minimum < floor for s in floored):
            raise ValueError(
                f"--floored-temperatures must stay >= {floor:g} for {variant.name} (its spec's "
                f"min_temperature), got {' '.join(args.floored_temperatures)}"
            )
    return temperature_schedules(args.tune_temperatures), floored


def _check_annealing(args: argparse.Namespace, *families) -> None:
    """``--anneal-rate`` or ``--anneal-every`` given while no schedule the variants use anneals
    (every one constant, or no variant with a temperature): they would change nothing.

    Raises:
      ValueError: naming the flags.
    """
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("anneal_rate", "anneal_every")
        if getattr(args, name) != getattr(grid, name.upper())
    ]
    used = [
        s
        for variant in args.variants
        if variant.anneals_temperature
        for s in families[variant.min_temperature is not None]
    ]
    if given and not any(s.minimum < s.start for s in used):
        raise ValueError(
            f"{' and '.join(given)} would change nothing: no schedule of --tune-temperatures or "
            "--floored-temperatures that these --estimators use is annealed (T0:TMIN); drop "
            f"{' and '.join(given)} or pass an annealed schedule"
        )


def _table(args: argparse.Namespace, given: frozenset[str]) -> grid.Table:
    """The table ``--protocol`` and ``--latent-type`` name.

    Raises:
      ValueError: a protocol without tuning with tuning flags, ``--phase tune`` or another
        latent type.
    """
    if args.protocol == "validation":
        return grid.TABLES[args.latent_type]
    table = grid.TABLES[args.protocol]
    refused = [f"--{name.replace('_', '-')}" for name in TUNING_FLAGS if name in given]
    if refused:
        raise ValueError(
            f"--protocol {args.protocol} fixes each estimator's settings and does not tune: drop "
            + " ".join(refused)
        )
    if args.latent_type != table.latent_type:
        raise ValueError(
            f"--protocol {args.protocol} has {table.latent_type} latents: drop --latent-type "
            f"{args.latent_type}"
        )
    if args.phase == "tune":
        raise ValueError(
            f"--protocol {args.protocol} does not tune: pass --phase final, all or report"
        )
    return table


def plan_from_args(args: argparse.Namespace, given: frozenset[str] = frozenset()) -> campaign.Plan:
    """The campaign the parsed flags ask for.

    Args:
      args: the parsed flags.
      given: the flags given on the command line (``experiments.mnist.cli.given_flags``), as
        opposed to left at their defaults.

    Raises:
      ValueError: a flag's value is invalid.
    """
    args.table = table = _table(args, given)
    temperatures, floored_temperatures = _check_args(args)
    # Paths are resolved once, here.
    root = Path(args.root or table.root).expanduser().resolve()
    if args.limit_examples is not None:
        root = root / f"limit{args.limit_examples}"
    variants = args.variants
    lr_schedules = tuple(dict.fromkeys(args.tune_lr_schedules or table.lr_schedules))
    tune_runs = tuple(
        grid.tune_run(root, v, c, epochs=args.tune_epochs, table=table, dataset=args.dataset)
        for v in variants
        if table.tuned
        for c in grid.candidates(
            v, tuple(args.tune_lrs), temperatures, floored_temperatures, lr_schedules
        )
    )
    results = Path(args.results or table.results).expanduser().resolve()
    results = grid.dataset_folder(results, args.dataset)
    _check_paths(args, root, results)
    plan = campaign.Plan(
        phase=args.phase,
        table=table,
        root=root,
        variants=variants,
        tune_runs=tune_runs,
        epochs=args.epochs,
        seeds=tuple(args.seeds),
        results=results,
        limit_examples=args.limit_examples,
        config_options={
            "eval_samples": args.eval_samples,
            "data_dir": input_pipeline.resolve_data_dir(args.data_dir, args.dataset),
            "allow_unverified_data": args.allow_unverified_data,
            "progress": args.progress,
        },
        compilation_cache=args.compilation_cache,
        dataset=args.dataset,
    )
    _check_run_settings(plan)
    return plan


def _check_paths(args: argparse.Namespace, root: Path, results: Path) -> None:
    """The folders the campaign writes, checked (writing nothing) before any data loads.

    Raises:
      ValueError: naming the flag, the path and what it is.
    """
    from experiments.mnist import workdir

    folders = {"--results": results}
    if args.phase != "report":  # the report only reads the runs
        folders["--root"] = root
        cache = args.compilation_cache
        # A folder given is checked even when a cache set before keeps it unused; the default
        # only when it would be used.
        if cache not in (None, "none"):
            folders["--compilation-cache"] = Path(cache)
        elif cache is None and not jax.config.jax_compilation_cache_dir:
            folders["--compilation-cache"] = root / "jax_cache"
    for name, path in folders.items():
        if (problem := workdir.folder_problem(path, writable=True)) is not None:
            raise ValueError(f"{name} {path} {problem}: pass a folder you can write")


# The flag that sets each run setting the grid varies.
_FLAGS = {
    "learning_rate": "--tune-lrs",
    "temperature": "--tune-temperatures / --floored-temperatures",
    "temperature_min": "--tune-temperatures / --floored-temperatures",
    "estimator_options": "--estimators",
    "anneal_rate": "--anneal-rate",
    "anneal_every": "--anneal-every",
    "seed": "--seeds",
    "epochs": "--epochs",
}


def _check_run_settings(plan: campaign.Plan) -> None:
    """Builds the settings of every tuning run and of every final seed, so that a value the
    experiment refuses is a usage error before anything runs.

    Raises:
      ValueError: naming the flag.
    """
    if plan.table.tuned:
        finals = [
            grid.final_run(
                plan.root,
                first.variant,
                first.candidate,
                seed=seed,
                epochs=plan.epochs,
                table=plan.table,
                dataset=plan.dataset,
            )
            for first in plan.tune_runs[:1]
            for seed in plan.seeds
        ]
    else:
        finals = [run for runs in plan.final_runs(plan.choices()).values() for run in runs]
    try:
        for run in (*plan.tune_runs, *finals):
            run.config(**plan.config_options)
        # Each estimator's first step, traced once (a plug-in that raises or returns the wrong
        # shape is a usage error now, not a failure after the data loads).
        firsts = {run.variant.name: run for run in (*plan.tune_runs, *finals)}.values()
        for run in firsts:
            mnist_cli.check_first_step(run.config(**plan.config_options), flag="--estimators")
    except ConfigError as error:
        if error.field is None:  # settings that conflict: the message says which
            raise ValueError(error.problem) from None
        raise ValueError(f"{_FLAGS.get(error.field, error.field)} {error.problem}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the phases asked for; returns the exit status."""
    parser = build_parser()
    try:
        plan = plan_from_args(parser.parse_args(argv), mnist_cli.given_flags(argv, build_parser()))
    except ValueError as error:
        parser.error(str(error))

    from experiments.mnist import checkpoints, run, workdir

    lost: list[str] = []
    try:
        executed = campaign.execute(plan, lost=lost)
        reported = None if executed is None else report.write_plan(plan, *executed)
    except (
        input_pipeline.DataError,
        campaign.CampaignError,
        checkpoints.CheckpointError,
        workdir.WorkdirError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {workdir.describe_write_failure(error)}", file=sys.stderr)
        return 2
    except jax.errors.JaxRuntimeError as error:
        if (message := mnist_cli.describe_out_of_memory(error)) is None:
            raise
        print(f"error: {message}; rerun the same command to continue", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "error: the host ran out of memory (MemoryError): lower --eval-samples or the "
            "estimators' samples (--estimators NAME[num_samples=N]); rerun the same command to "
            "continue",
            file=sys.stderr,
        )
        return 2
    except run.Interrupted as interruption:
        print(f"{interruption}, which also continues the campaign", file=sys.stderr)
        return interruption.exit_status
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue the campaign", file=sys.stderr)
        return 130
    if reported is not None:
        summary, paths = reported
        print()
        print(report.markdown(summary))
        print("Written: " + ", ".join(str(p) for p in paths.values()))
    if lost:  # last, so that it is what the user sees
        print(
            f"error: {len(lost)} run(s) failed (training diverged) and have no result: "
            f"{'; '.join(lost)}",
            file=sys.stderr,
        )
        return mnist_cli.DIVERGED
    return 0
