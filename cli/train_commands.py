"""Training commands: ``minires train``, ``eval`` and ``plot``.

Each command builds its arguments, calls one library function and prints the result; the
library itself never prints. Every option can also come from an environment variable
``MINIRES_<COMMAND>_<OPTION>`` (for example ``MINIRES_TRAIN_EPOCHS=10``).
"""
from __future__ import annotations

import click

from minires import train as training
from minires.backend import DEVICES
from minires.cli.errors import reports_errors
from minires.cli.progress import progress_bars, progress_option
from minires.cli.train_options import config_options
from minires.evaluate import evaluate_checkpoint
from minires.plot import METRICS, plot_runs
from minires.run_config import RUN_FIELDS, TrainConfig

# Exit status after Ctrl-C, as a shell reports a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


def format_epoch(row: dict, epochs: int) -> str:
    """The one-line summary of an epoch printed by ``minires train``."""
    digits = len(str(epochs))
    return (f"epoch {row['epoch']:>{digits}}/{epochs}  lr {row['lr']:.4g}  "
            f"train loss {row['train_loss']:.4f} err {100 * row['train_error']:5.2f}%  "
            f"test loss {row['test_loss']:.4f} err {100 * row['test_error']:5.2f}%  "
            f"{row['seconds']:.1f} s  {row['images_per_s']:.0f} img/s")


def _given(ctx, name) -> bool:
    """Whether option ``name`` was given (on the command line or in the environment)."""
    return ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)


@click.command()
@config_options
@click.option("--shared", is_flag=True,
              help="Share one 3x3 weight between the two convolutions of each block (the "
                   "paper's scheme); same as --share block.")
@progress_option
@click.pass_context
@reports_errors
def train(ctx, shared, progress, **settings):
    """Train a ResNet, evaluating on the test split after every epoch.

    Writes config.json, metrics.jsonl, metrics.csv, last.h5 (every epoch) and best.h5 (lowest
    test error) into the run directory, and prints one line per epoch. Ctrl-C stops after
    saving nothing partial: last.h5 keeps the last completed epoch; continue with
    `minires train -o RUN_DIR --resume` (exit status 130).
    """
    if shared:
        if _given(ctx, "share") and settings["share"] != "block":
            raise click.UsageError("--shared means --share block; it cannot be combined with "
                                   f"--share {settings['share']}")
        settings["share"] = "block"
    if settings["milestones"] is not None and not _given(ctx, "schedule"):
        settings["schedule"] = "multistep"  # --milestones alone means: drop the rate there
    if settings["resume"]:
        if settings["run_dir"] is None:
            raise click.UsageError("--resume needs -o/--run-dir, the run to continue")
        for name in RUN_FIELDS:  # the run's own values, unless given (they must then match)
            if name in settings and not (_given(ctx, name) or (name == "share" and shared)):
                settings[name] = None
    bars = progress_bars(progress)

    def on_start(config):
        click.echo(f"{'Resuming' if config.resume else 'Training'} in {config.run_dir}")

    def on_batch(step):
        bars(f"epoch {step.epoch}/{step.epochs}", step.batch, step.num_batches)

    def on_epoch(row):
        if bars is not None:
            bars.close()
        click.echo(format_epoch(row, row["epochs"]))

    try:
        result = training.train(TrainConfig(**settings), on_start=on_start, on_epoch=on_epoch,
                                on_batch=on_batch if bars is not None else None)
    finally:
        if bars is not None:
            bars.close()
    if result.interrupted:
        epoch, batch = result.interrupted_at
        where = f"epoch {epoch}, " + ("while evaluating" if batch is None else f"batch {batch}")
        click.echo(f"Interrupted at {where}. {result.last_checkpoint} holds the state after "
                   f"{result.epochs_done} completed epoch(s); continue with: "
                   f"minires train -o {result.run_dir} --resume", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if result.best_test_error is not None:
        click.echo(f"Best test error {100 * result.best_test_error:.2f}% at epoch "
                   f"{result.best_epoch}; checkpoints {result.last_checkpoint} and "
                   f"{result.best_checkpoint}")


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--dataset", default=None,
              help="Dataset to evaluate on  [default: the one the checkpoint was trained on]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of prepared datasets.")
@click.option("--device", type=click.Choice(DEVICES), default="auto")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=256)
@click.option("--test-subset", type=click.IntRange(min=1), default=None,
              help="Evaluate only the first N test images  [default: all]")
@reports_errors
def eval_command(checkpoint, dataset, data_dir, device, batch_size, test_subset):
    """Test loss and error of a checkpoint (last.h5 or best.h5 of a run)."""
    result = evaluate_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir, device=device,
                                 batch_size=batch_size, test_subset=test_subset)
    click.echo(f"{checkpoint}: {result['model']} after {result['epoch']} epoch(s), "
               f"{result['dataset']} test split ({result['num_images']} images, "
               f"{result['device']})")
    click.echo(f"test loss {result['test_loss']:.4f}  test error "
               f"{100 * result['test_error']:.2f}%")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="errors.png",
              help="PNG file to write.")
@click.option("--metric", type=click.Choice(METRICS), default="error")
@click.option("--title", default=None, help="Figure title  [default: the dataset name]")
@reports_errors
def plot(run_dirs, output, metric, title):
    """Plot train (dashed) and test (solid) curves per epoch of one or more runs.

    Given a sweep folder (or a folder of runs), plot one colour per configuration: the mean
    over its seeds, with a band from the lowest to the highest run at each epoch.
    """
    path = plot_runs(run_dirs, output, metric=metric, title=title)
    click.echo(f"wrote {path}")


COMMANDS = [train, eval_command, plot]
