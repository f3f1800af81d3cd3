"""Sweep commands: ``minires sweep`` (a grid of training runs) and ``minires compare``.

``sweep`` takes its grid (depths, widths, sharing schemes, seeds) and passes every other option
on to ``minires train``: they are parsed by the train command itself before any run starts, so a
typo fails at once with one line, and the runs get exactly what ``minires train`` would.
"""
from __future__ import annotations

import os
import shlex

import click

from minires import sweep as msweep
from minires.atomicfile import write_text
from minires.cli.errors import reports_errors
from minires.compare import compare, to_csv, to_markdown
from minires.models import SHARE_MODES
from minires.runs import find_runs
from minires.sweep_runner import run_plan

# Exit status after Ctrl-C, as a shell reports a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

# Options of `minires train` that the sweep sets for each run, and what to use instead.
CONTROLLED = {
    "run_dir": "each run's folder is SWEEP_DIR/<run name>; give the sweep folder with -o",
    "seed": "use --seeds (3 means seeds 0,1,2; a list such as 0,3 names them)",
    "depth": "use the sweep's --depth", "width": "use the sweep's --width",
    "share": "use the sweep's --share",
    "shared": "use --share block (the sweep's --share takes a list such as none,block)",
    "resume": "the sweep resumes its interrupted runs by itself",
}
# Options of `minires train` that may change when a sweep is started again: they do not change
# what a run computes.
FREE_OPTIONS = ("device", "data_dir", "prefetch", "progress")


class PassThroughError(click.ClickException):
    """A mistake in the options passed on to ``minires train``: one line, exit status 2 (a usage
    error; the sweep's own usage text would not list the train options)."""

    exit_code = 2


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        values = tuple(int(part) for part in value.replace(" ", "").split(",") if part)
    except ValueError:
        values = ()
    if not values:
        raise click.BadParameter(f"expected comma-separated integers such as 20,56, got "
                                 f"{value!r}")
    return values


def _share_list(ctx, param, value):
    shares = tuple(part for part in value.replace(" ", "").split(",") if part)
    unknown = [share for share in shares if share not in SHARE_MODES]
    if not shares or unknown:
        raise click.BadParameter(f"expected a comma-separated list of {', '.join(SHARE_MODES)}"
                                 f", got {value!r}")
    return shares


def _seed_list(ctx, param, value):
    text = value.replace(" ", "")
    if text.isdigit():
        if int(text) < 1:
            raise click.BadParameter("the number of seeds must be at least 1 (for seed 0 alone "
                                     "write 0,)")
        return tuple(range(int(text)))
    return _int_list(ctx, param, text)


def _parse_train_options(ctx, args):
    """Parse ``args`` with the ``minires train`` command itself (its types, its environment
    variables ``MINIRES_TRAIN_*``) and return every option's value; an error in them, or an
    option the sweep sets itself, raises :class:`PassThroughError`."""
    root = ctx.find_root()
    train_command = root.command.get_command(root, "train")
    try:
        train_ctx = train_command.make_context("train", list(args), parent=root)
    except click.UsageError as exc:
        raise PassThroughError(f"in the options passed on to minires train: "
                               f"{exc.format_message()}") from None
    source = click.core.ParameterSource
    given = {name for name in train_ctx.params
             if train_ctx.get_parameter_source(name) in (source.COMMANDLINE, source.ENVIRONMENT)}
    on_command_line = {name for name in given
                       if train_ctx.get_parameter_source(name) == source.COMMANDLINE}
    for name, instead in CONTROLLED.items():
        # From the environment only the flags matter: the sweep's explicit values override
        # MINIRES_TRAIN_SEED and the like, but cannot switch a flag off.
        if name in on_command_line or (name in given and name in ("shared", "resume")):
            option = "--" + name.replace("_", "-")
            where = "" if name in on_command_line else " (set in the environment)"
            raise PassThroughError(f"{option}{where} is set by the sweep for each run: {instead}")
    return train_ctx.params


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("-o", "--sweep-dir", required=True, type=click.Path(file_okay=False),
              help="The sweep folder: sweep.json and one run folder per configuration and seed.")
@click.option("--depth", "depths", callback=_int_list, default=None, metavar="LIST",
              show_default="20 for resnet; required for wrn",
              help="Comma-separated depths, e.g. 20,32,56.")
@click.option("--width", "widths", callback=_int_list, default=None, metavar="LIST",
              show_default="10 for wrn", help="Comma-separated widening factors (--arch wrn).")
@click.option("--share", "shares", callback=_share_list, default="none,block", metavar="LIST",
              help="Comma-separated sharing schemes among none, block (the paper's), stage.")
@click.option("--seeds", callback=_seed_list, default="3", metavar="N|LIST",
              help="A number N means seeds 0..N-1; a list such as 0,3 (or 5, for seed 5 alone) "
                   "names them.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1,
              help="Runs trained at once. On the CPU keep 1 (one run already uses every core); "
                   "several small runs share one GPU well.")
@click.option("--dry-run", is_flag=True,
              help="Print the `minires train` command of every run that is not complete, one "
                   "per line (for a cluster scheduler), and write nothing.")
@click.pass_context
@reports_errors
def sweep(ctx, sweep_dir, depths, widths, shares, seeds, jobs, dry_run):
    """Train a grid of runs: every depth x width x share, each with every seed.

    Every other option is passed on to each `minires train` (see minires train --help), e.g.
    --dataset, --epochs, --schedule, --lr, --subset, --test-subset, --device, --no-progress.
    Runs go to SWEEP_DIR/<dataset>-<model>-<share>-seed<k>, each with its train.log. Started
    again, the sweep skips complete runs (metrics up to the configured epochs), resumes
    interrupted ones and starts the rest; a failed run does not stop the others (the exit
    status is 1 if any failed). Ctrl-C lets every run save its last completed epoch (exit
    status 130); the same command resumes them.

    \b
    minires sweep --depth 20,56 --share none,block --seeds 3 -o sweeps/c10 \\
        --dataset cifar10 --epochs 30 --schedule cosine
    minires compare sweeps/c10
    """
    args = list(ctx.args)
    params = _parse_train_options(ctx, args)
    try:
        grid = msweep.default_grid(params["arch"], depths, widths, shares, seeds)
        specs = msweep.expand(grid, params["dataset"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    msweep.check_dataset(params["dataset"], params["data_dir"])
    options = {name: value for name, value in params.items()
               if name not in CONTROLLED and name not in FREE_OPTIONS}
    wanted = msweep.manifest(grid, specs, options, args)
    epochs = params["epochs"]

    if dry_run:
        if os.path.isdir(sweep_dir):
            msweep.check_manifest(sweep_dir, wanted)
        for run in msweep.plan(sweep_dir, specs, epochs):
            if run.action == "skip":
                click.echo(f"# {run.spec.name}: complete ({run.progress}), nothing to do",
                           err=True)
            else:
                click.echo(msweep.command_line(run.train_args(args)))
        return

    os.makedirs(sweep_dir, exist_ok=True)
    with msweep.SweepLock(sweep_dir) as lock:
        note = lock.acquire()
        if note:
            click.echo(f"Note: {note}", err=True)
        if not msweep.check_manifest(sweep_dir, wanted):
            msweep.write_manifest(sweep_dir, wanted)
        planned = msweep.plan(sweep_dir, specs, epochs)
        click.echo(f"Sweep in {sweep_dir}: {len(planned)} runs ({grid.describe()}), {jobs} at "
                   f"a time; options for every run: {shlex.join(args) or 'none'}")
        result = run_plan(planned, args, jobs=jobs, on_event=_Reporter(planned), lock=lock)

    click.echo(f"{len(planned)} runs: {result.count('done')} trained, {len(result.skipped)} "
               f"already complete, {result.count('failed')} failed, "
               f"{result.count('interrupted')} interrupted.")
    if result.interrupted:
        click.echo("Interrupted: the runs in progress saved their last completed epoch; the "
                   "same command resumes them.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if result.failed:
        raise click.ClickException(
            f"{len(result.failed)} of {len(planned)} runs failed: " + "; ".join(
                f"{o.name} (exit {o.returncode}, log {o.log_path})" for o in result.failed))
    click.echo(f"Compare them: minires compare {shlex.quote(sweep_dir)}")


class _Reporter:
    """Prints one line per event of the sweep: ``[3/12] name  what happened``."""

    def __init__(self, planned):
        self.index = {run.spec.name: i for i, run in enumerate(planned, start=1)}
        self.total = len(planned)
        self.width = max(len(name) for name in self.index)

    def __call__(self, kind, run, outcome):
        prefix = f"[{self.index[run.spec.name]}/{self.total}] {run.spec.name:<{self.width}}  "
        if kind == "skip":
            message = f"complete ({run.progress}), skipped"
        elif kind == "start":
            what = "start" if run.action == "start" else f"resume from {run.progress}"
            message = f"{what}, log {run.log_path}"
        elif outcome.status == "done":
            message = (f"done in {outcome.seconds:.1f} s, final test error "
                       f"{100 * outcome.final_test_error:.2f}%")
        elif outcome.status == "interrupted":
            message = f"interrupted: {outcome.detail}"
        else:
            message = (f"FAILED (exit {outcome.returncode}): {outcome.detail}; "
                       f"log {outcome.log_path}")
        click.echo(prefix + message)


@click.command("compare")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["md", "csv"]), default="md",
              help="Markdown tables, or CSV with one row per configuration (errors as "
                   "fractions, as in metrics.csv).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file instead of standard output.")
@reports_errors
def compare_command(paths, fmt, output):
    """Compare runs by configuration: mean ± std over seeds, and shared − unshared pairs.

    PATHS are run folders and sweep folders. For each configuration (model, sharing, dataset,
    schedule, epochs and the other settings): parameters, number of complete runs, final and
    best test error, final training error and loss as mean ± sample standard deviation over
    seeds, and the mean time of a run. Each shared configuration is then paired with the
    unshared one, seed by seed: the differences shared − unshared and their mean ± std. Runs
    that are not complete are left out of the statistics and listed.
    """
    comparison = compare(find_runs(paths))
    text = to_markdown(comparison) if fmt == "md" else to_csv(comparison)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_text(output, text)
        click.echo(f"wrote {output}")
    if fmt == "csv" and comparison.left_out:
        click.echo(f"Note: {len(comparison.left_out)} runs are not complete and not in the "
                   "statistics: " + ", ".join(f"{run.path} ({run.progress()})"
                                              for run in comparison.left_out), err=True)


COMMANDS = [sweep, compare_command]
