"""Model commands: ``minires summary`` (layers, shared weights, parameter counts, MACs)."""
from __future__ import annotations

import click

from minires import models
from minires.cli.errors import reports_errors


@click.command()
@click.option("--arch", type=click.Choice(models.ARCHS), default="resnet",
              show_default=True, help="CIFAR ResNet (He et al.) or Wide ResNet.")
@click.option("--depth", type=int, default=None,
              help=f"ResNet: 6n+2 (default {models.DEFAULT_RESNET_DEPTH}). WRN: 2nS+4 for S "
                   "stages (default 20/28/36 at input size 16/32/64).")
@click.option("--width", type=int, default=None,
              help=f"WRN widening factor k (default {models.DEFAULT_WRN_WIDTH}).")
@click.option("--num-classes", type=int, default=10, show_default=True)
@click.option("--share", type=click.Choice(models.SHARE_MODES), default=None,
              help="Weight sharing: none, block (the paper: a block's two 3x3 convs share) or "
                   "stage (same-shape blocks of a stage share).  [default: none]")
@click.option("--shared", is_flag=True, help="Same as --share block.")
@click.option("--shortcut", type=click.Choice(models.SHORTCUTS), default=None,
              help="ResNet shortcut where shapes change: A (pad, no parameters) or B "
                   "(1x1 conv + BN).  [default: A; a WRN always uses B]")
@click.option("--input-size", type=int, default=32, show_default=True,
              help="Image side; a WRN has 2/3/4 stages at 16/32/64.")
@reports_errors
def summary(arch, depth, width, num_classes, share, shared, shortcut, input_size):
    """Print a model's layers, output shapes, shared weights and parameter totals."""
    if shared and share not in (None, "block"):
        raise click.UsageError(f"--shared means --share block, but --share {share} was given")
    share = "block" if shared else (share or "none")
    spec = dict(arch=arch, depth=depth, width=width, num_classes=num_classes, share=share,
                shortcut=shortcut, input_size=input_size)
    model = models.create(**spec)
    unshared = model if share == "none" else models.create(**{**spec, "share": "none"})
    result = models.summarize(model, (1, 3, input_size, input_size), unshared_model=unshared)
    click.echo(result.table())


COMMANDS = [summary]
