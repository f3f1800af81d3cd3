"""Training commands: ``minires train``, ``eval`` and ``plot``.

Each command builds its arguments, calls one library function and prints the result; the
library itself never prints. Every option can also come from an environment variable
``MINIRES_<COMMAND>_<OPTION>`` (for example ``MINIRES_TRAIN_EPOCHS=10``).
"""
from __future__ import annotations

import os
import shlex

import click

from minires import train as training
from minires.backend import DEVICES
from minires.cli.errors import (describe_os_error, echo_quietly, notes_on_stderr,
                                reports_errors, signal_name, stop_signal)
from minires.cli.progress import progress_bars, progress_option
from minires.cli.train_options import config_options
from minires.evaluate import evaluate_checkpoint
from minires.plot import METRICS, plot_runs
from minires.run_config import RUN_FIELDS, TrainConfig
from minires.run_dir import BEST_CHECKPOINT, LAST_CHECKPOINT, is_run_dir
from minires.runs import SWEEP_FILE


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
    test error) into the run directory, and prints one line per epoch. Ctrl-C, SIGTERM and
    SIGHUP stop it after saving nothing partial: last.h5 keeps the last completed epoch;
    continue with `minires train -o RUN_DIR --resume` (exit status 130, 143, 129). A run whose
    loss or weights become NaN or infinite stops before saving that epoch (exit status 1).
    One run at a time writes into a run directory.
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
    started = []

    def on_start(config):
        started.append(config)
        click.echo(f"{'Resuming' if config.resume else 'Training'} in {config.run_dir}")

    def on_batch(step):
        bars(f"epoch {step.epoch}/{step.epochs}", step.batch, step.num_batches)

    def on_epoch(row):
        if bars is not None:
            bars.close()
        click.echo(format_epoch(row, row["epochs"]))

    try:
        with notes_on_stderr():
            result = training.train(TrainConfig(**settings), on_start=on_start,
                                    on_epoch=on_epoch,
                                    on_batch=on_batch if bars is not None else None)
    except KeyboardInterrupt as stop:
        if not started:
            raise  # nothing was written yet: reported as such by reports_errors
        # A second signal while the run was saving what it had: its files are still whole.
        echo_quietly(f"Interrupted by {signal_name(stop_signal(stop))} while stopping. "
                     f"{started[0].run_dir}/last.h5 holds the last completed epoch; continue "
                     f"with: {resume_command(started[0].run_dir)}")
        raise click.exceptions.Exit(128 + stop_signal(stop)) from None
    except OSError as exc:
        if not started:
            raise
        # The run has files: they hold its last completed epoch, and it can go on from there.
        raise click.ClickException(
            f"{describe_os_error(exc, hint=False)}; {started[0].run_dir}/last.h5 holds the last "
            f"completed epoch: once that is fixed, continue with: "
            f"{resume_command(started[0].run_dir)}") from exc
    finally:
        if bars is not None:
            bars.close()
    if result.interrupted:
        echo_quietly(f"Interrupted by {signal_name(result.stop_signal)} "
                     f"{_where(result)}. {result.last_checkpoint} holds the state after "
                     f"{result.epochs_done} completed epoch(s); continue with: "
                     f"{resume_command(result.run_dir)}")
        ctx.exit(128 + result.stop_signal)
    if result.best_test_error is not None:
        click.echo(f"Best test error {100 * result.best_test_error:.2f}% at epoch "
                   f"{result.best_epoch}; checkpoints {result.last_checkpoint} and "
                   f"{result.best_checkpoint}")


def resume_command(run_dir) -> str:
    return f"minires train -o {shlex.quote(str(run_dir))} --resume"


def _where(result) -> str:
    """``at epoch 2, batch 3``, ``at epoch 2, while evaluating``..."""
    epoch, batch = result.interrupted_at
    phase = result.interrupted_while
    if phase == "starting":
        return f"before epoch {epoch} started"
    if phase == "training":
        return f"at epoch {epoch}, batch {batch}" if batch else f"at the start of epoch {epoch}"
    return f"at epoch {epoch}, while {phase}" + (" its checkpoints" if phase == "saving" else "")


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
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
    if os.path.isdir(checkpoint):
        raise click.BadParameter(_folder_instead_of_checkpoint(checkpoint),
                                 param_hint="'CHECKPOINT'")
    result = evaluate_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir, device=device,
                                 batch_size=batch_size, test_subset=test_subset)
    click.echo(f"{checkpoint}: {result['model']} after {result['epoch']} epoch(s), "
               f"{result['dataset']} test split ({result['num_images']} images, "
               f"{result['device']})")
    click.echo(f"test loss {result['test_loss']:.4f}  test error "
               f"{100 * result['test_error']:.2f}%")


def _folder_instead_of_checkpoint(folder) -> str:
    if is_run_dir(folder):
        return (f"{folder} is a run folder; give one of its checkpoints: "
                f"{os.path.join(folder, BEST_CHECKPOINT)} or "
                f"{os.path.join(folder, LAST_CHECKPOINT)}")
    if os.path.isfile(os.path.join(folder, SWEEP_FILE)):
        return (f"{folder} is a sweep folder; give a checkpoint of one of its runs "
                f"({os.path.join(folder, '<run>', BEST_CHECKPOINT)}), or compare its runs with "
                f"`minires compare {folder}`")
    return f"{folder} is a folder; expected a checkpoint file (last.h5 or best.h5 of a run)"


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
