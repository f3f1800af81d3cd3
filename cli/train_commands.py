"""Training commands: ``minires train``, ``eval``, ``gradcheck``, ``explain``, ``plot``.

Each command builds its arguments, calls one library function and prints the result; the
library itself never prints. Every option can also come from an environment variable
``MINIRES_<COMMAND>_<OPTION>`` (for example ``MINIRES_TRAIN_EPOCHS=10``).
"""
from __future__ import annotations

import sys
import time

import click
import numpy as np

from minires.backend import DEVICES
from minires.cli.errors import reports_errors

# Exit status after Ctrl-C, as a shell reports a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


def _parse_milestones(ctx, param, value):
    if value is None:
        return None
    try:
        milestones = [int(part) for part in value.replace(" ", "").split(",") if part]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated epochs such as 82,123, got {value!r}")
    if not milestones or any(m < 1 for m in milestones) or milestones != sorted(milestones):
        raise click.BadParameter(f"expected increasing positive epochs such as 82,123, got "
                                 f"{value!r}")
    return milestones


class _ProgressLine:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.last_draw = 0.0
        self.visible = False

    def update(self, progress) -> None:
        now = time.monotonic()
        done = progress.batch == progress.num_batches
        if not done and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        filled = round(self.width * progress.batch / progress.num_batches)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\repoch {progress.epoch}/{progress.epochs} [{bar}] "
                          f"{progress.batch}/{progress.num_batches}")
        self.stream.flush()
        self.visible = True

    def clear(self) -> None:
        if self.visible:
            self.stream.write("\r" + " " * (self.width + 40) + "\r")
            self.stream.flush()
            self.visible = False


def format_epoch(row: dict, epochs: int) -> str:
    """The one-line summary of an epoch printed by ``minires train``."""
    digits = len(str(epochs))
    return (f"epoch {row['epoch']:>{digits}}/{epochs}  lr {row['lr']:.4g}  "
            f"train loss {row['train_loss']:.4f} err {100 * row['train_error']:5.2f}%  "
            f"test loss {row['test_loss']:.4f} err {100 * row['test_error']:5.2f}%  "
            f"{row['seconds']:.1f} s  {row['images_per_s']:.0f} img/s")


# Options of `train` whose value defines the run: with --resume only the ones given explicitly
# are passed on (and must match the run), the rest come from the run's own configuration.
_RUN_OPTIONS = ("dataset", "arch", "depth", "width", "share", "shortcut", "batch_size", "lr",
                "momentum", "weight_decay", "nesterov", "schedule", "milestones", "gamma",
                "warmup_epochs", "seed", "subset", "test_subset", "no_decay_bn")


@click.command()
@click.option("--dataset", default="embedded",
              help="embedded (generated, no download), cifar10, cifar100, imagenet16/32/64 "
                   "(prepared with `minires prepare`), or the path of a prepared .h5 file.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Folder of prepared datasets  [default: $MINIRES_DATA or ~/.cache/minires]")
@click.option("--arch", type=click.Choice(["resnet", "wrn"]), default="resnet",
              help="ResNet of He et al. (CIFAR style) or wide ResNet.")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              show_default="20 for resnet; 20/28/36 for wrn on 16/32/64-pixel images",
              help="Depth: 6n+2 for resnet (8, 20, 32, 44, 56, 110), 2nS+4 for wrn.")
@click.option("--width", type=click.IntRange(min=1), default=None,
              show_default="1 for resnet, 10 for wrn", help="Widening factor (wrn only).")
@click.option("--shared", is_flag=True,
              help="Share one 3x3 weight between the two convolutions of each block (the "
                   "paper's scheme); same as --share block.")
@click.option("--share", type=click.Choice(["none", "block", "stage"]), default="none",
              help="Weight sharing scheme.")
@click.option("--shortcut", type=click.Choice(["A", "B"]), default=None,
              show_default="A for resnet, B for wrn",
              help="Shortcut where the shape changes: A zero-padding identity, B 1x1 projection.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              show_default="164 on CIFAR, 40 on ImageNet, 3 on embedded", help="Epochs.")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), default=128)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1,
              help="Initial learning rate.")
@click.option("--momentum", type=click.FloatRange(min=0), default=0.9)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4)
@click.option("--nesterov", is_flag=True, help="Nesterov momentum.")
@click.option("--schedule", type=click.Choice(["step", "multistep", "cosine", "constant"]),
              default="step",
              help="step: x0.1 at 50% and 75% of the epochs (He et al.); multistep: at "
                   "--milestones; cosine; constant.")
@click.option("--milestones", callback=_parse_milestones, default=None,
              help="Comma-separated epochs where the rate is multiplied by --gamma (implies "
                   "--schedule multistep).")
@click.option("--gamma", type=click.FloatRange(min=0, min_open=True), default=0.1,
              help="Factor applied at each milestone.")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=0.0,
              help="Linear warm-up of the learning rate over this many epochs.")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seeds the weights, the data subset, shuffling and augmentation.")
@click.option("--device", type=click.Choice(DEVICES), default="auto",
              help="auto: cuda when CuPy sees a GPU, else cpu.")
@click.option("-o", "--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where config, metrics and checkpoints go  "
                   "[default: runs/<dataset>-<arch><depth>-<share>-<time>]")
@click.option("--resume", is_flag=True,
              help="Continue the run in --run-dir from its last.h5 (settings come from the run).")
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="Train on only the first N training images.")
@click.option("--test-subset", type=click.IntRange(min=1), default=None,
              help="Evaluate on only the first N test images.")
@click.option("--no-decay-bn", is_flag=True,
              help="No weight decay on BatchNorm parameters and biases.")
@click.option("--prefetch/--no-prefetch", default=False,
              help="Prepare the next batch in a background thread.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr  [default: when stderr is a terminal]")
@click.pass_context
@reports_errors
def train(ctx, shared, resume, progress, **options):
    """Train a ResNet, evaluating on the test split after every epoch.

    Writes config.json, metrics.jsonl, metrics.csv, last.h5 (every epoch) and best.h5 (lowest
    test error) into the run directory, and prints one line per epoch. Ctrl-C stops after
    saving nothing partial: last.h5 keeps the last completed epoch; continue with
    `minires train -o RUN_DIR --resume` (exit status 130).
    """
    from minires.train import TrainConfig, train as run_train

    source = ctx.get_parameter_source
    explicit_share = source("share") not in (click.core.ParameterSource.DEFAULT, None)
    if shared:
        if explicit_share and options["share"] != "block":
            raise click.UsageError("--shared means --share block; it cannot be combined with "
                                   f"--share {options['share']}")
        options["share"] = "block"
    if options["milestones"] is not None and source("schedule") in (
            click.core.ParameterSource.DEFAULT, None):
        options["schedule"] = "multistep"  # --milestones alone means: drop the rate there
    if resume:
        if options["run_dir"] is None:
            raise click.UsageError("--resume needs -o/--run-dir, the run to continue")
        for name in _RUN_OPTIONS:
            given = source(name) not in (click.core.ParameterSource.DEFAULT, None)
            if name == "share":
                given = given or shared
            if not given:
                options[name] = None  # taken from the run being resumed
    config = TrainConfig(resume=resume, **options)
    if config.run_dir is None:
        config.run_dir = config.resolved().run_dir  # named after the resolved depth

    if progress is None:
        progress = sys.stderr.isatty()
    bar = _ProgressLine() if progress else None

    def on_epoch(row):
        if bar is not None:
            bar.clear()
        click.echo(format_epoch(row, row["epochs"]))

    verb = "Resuming" if resume else "Training"
    click.echo(f"{verb} in {config.run_dir}")
    result = run_train(config, on_epoch=on_epoch,
                       on_batch=bar.update if bar is not None else None)
    if bar is not None:
        bar.clear()
    if result.interrupted:
        epoch, batch = result.interrupted_at
        click.echo(f"Interrupted at epoch {epoch}, batch {batch}. {result.last_checkpoint} holds "
                   f"the state after {result.epochs_done} completed epoch(s); continue with: "
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
    from minires.train import evaluate_checkpoint

    result = evaluate_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir, device=device,
                                 batch_size=batch_size, test_subset=test_subset)
    click.echo(f"{checkpoint}: {result['model']} after {result['epoch']} epoch(s), "
               f"{result['dataset']} test split ({result['num_images']} images, "
               f"{result['device']})")
    click.echo(f"test loss {result['test_loss']:.4f}  test error "
               f"{100 * result['test_error']:.2f}%")


@click.command()
@click.option("--device", type=click.Choice(DEVICES), default="auto")
@reports_errors
def gradcheck(device):
    """Check the engine's gradients against central differences (float64, random gy).

    Prints one row per function; exits with status 1 if any check fails.
    """
    from minires import gradcheck as gc
    from minires.backend import resolve_device, xp_for

    device = resolve_device(device)
    xp = xp_for(device)
    rows = []
    for case in gc.standard_cases(xp):
        result = gc.gradcheck(case.f, case.inputs)
        rows.append((case.name, max(result.max_abs_error, default=0.0),
                     max(result.max_rel_error, default=0.0), result.ok))
    width = max([len("function")] + [len(r[0]) for r in rows])
    click.echo(f"gradient checks on {device}, float64")
    click.echo(f"{'function':<{width}}  {'max abs error':>13}  {'max rel error':>13}  ok")
    for name, abs_error, rel_error, ok in rows:
        click.echo(f"{name:<{width}}  {abs_error:13.3e}  {rel_error:13.3e}  "
                   f"{'yes' if ok else 'NO'}")
    failed = [r[0] for r in rows if not r[3]]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(rows)} gradient checks failed: "
                                   + ", ".join(failed))
    click.echo(f"all {len(rows)} gradient checks passed")


@click.command()
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seeds input and weight.")
@click.option("--channels", type=click.IntRange(min=1, max=8), default=2)
@click.option("--size", type=click.IntRange(min=2, max=16), default=4, help="Input height/width.")
@click.option("--entries", type=click.IntRange(min=1), default=6,
              help="Weight entries to show side by side.")
@reports_errors
def explain(seed, channels, size, entries):
    """Show where the gradient of a shared convolution weight comes from.

    One 3x3 weight W is used by both convolutions of a small residual block (each use with its
    own BatchNorm, a ReLU between). Its gradient is the sum of what each use contributes: the
    engine's W.grad equals that sum, and the numerical gradient agrees.
    """
    from minires.explain import explain_shared_gradient

    report = explain_shared_gradient(channels=channels, size=size, seed=seed)
    N, C, H, W = report.input_shape
    click.echo(f"A residual block on x of shape ({N}, {C}, {H}, {W}):")
    click.echo("    h = relu(bn1(conv(x, W)));  y = relu(bn2(conv(h, W)) + x)")
    click.echo(f"W {tuple(report.weight.shape)} is ONE Parameter used by both convolutions; "
               "each use has its own BatchNorm.")
    click.echo("Objective: sum(y * gy) for a random gy, float64.\n")
    header = ("W index", "use 1", "use 2", "use1+use2", "engine", "numerical")
    click.echo("  ".join(f"{h:>12}" for h in header))
    flat = {name: getattr(report, name).reshape(-1) for name in
            ("grad_use1", "grad_use2", "grad_sum", "grad_engine", "grad_numerical")}
    count = min(entries, report.weight.size)
    for k in np.linspace(0, report.weight.size - 1, count).round().astype(int):
        index = ",".join(str(i) for i in np.unravel_index(k, report.weight.shape))
        values = [flat[name][k] for name in flat]
        click.echo(f"{'[' + index + ']':>12}  " + "  ".join(f"{v:12.6f}" for v in values))
    click.echo(f"\nmax |use1 + use2 - engine|    = {report.max_diff_engine:.3e}")
    click.echo(f"max |engine - numerical|      = {report.max_diff_numerical:.3e}")
    click.echo("The engine adds the gradients of both uses into W.grad (see accumulate in\n"
               "minires/autograd/engine.py); the optimizer then steps W once.")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="errors.png",
              help="PNG file to write.")
@click.option("--metric", type=click.Choice(["error", "loss"]), default="error")
@click.option("--title", default=None, help="Figure title  [default: the dataset name]")
@reports_errors
def plot(run_dirs, output, metric, title):
    """Plot train (dashed) and test (solid) curves per epoch of one or more runs.

    Given a sweep folder (or a folder of runs), plot one colour per configuration: the mean
    over its seeds, with a band from the lowest to the highest run at each epoch.
    """
    from minires.plot import plot_runs

    path = plot_runs(run_dirs, output, metric=metric, title=title)
    click.echo(f"wrote {path}")


COMMANDS = [train, eval_command, gradcheck, explain, plot]
