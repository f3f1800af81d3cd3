"""Dataset commands: ``minires prepare`` and ``minires info``."""
from __future__ import annotations

import warnings
from pathlib import Path

import click

from minires.cli.errors import reports_errors
from minires.cli.progress import progress_bars, progress_option
from minires.data import DATASETS, ChecksumWarning, describe_store
from minires.data import prepare as prepare_dataset


@click.command()
@click.argument("dataset", type=click.Choice(DATASETS), metavar="DATASET")
@click.option("--from", "sources", multiple=True, type=click.Path(path_type=Path),
              metavar="PATH",
              help="CIFAR: the official .tar.gz or its extracted folder (default: download it "
                   "into the data directory). ImageNet: folders, zips or batch files (repeat "
                   "for the 64x64 part1/part2 zips); required.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="MINIRES_DATA", show_envvar=True,
              help="Where the HDF5 file goes  [default: ~/.cache/minires]")
@click.option("--allow-checksum-mismatch", is_flag=True,
              help="CIFAR: use an archive whose md5 differs from the official one (a warning "
                   "is printed and the actual md5 recorded).")
@click.option("--wnids", type=click.Path(dir_okay=False, path_type=Path),
              help="ImageNet: the devkit's map_clsloc.txt (or one wnid per line) to store class "
                   "ids and names.")
@progress_option
@reports_errors
def prepare(dataset, sources, data_dir, allow_checksum_mismatch, wnids, progress):
    """Convert DATASET's official archive once into DATA_DIR/DATASET.h5.

    DATASET is one of cifar10, cifar100, imagenet16, imagenet32, imagenet64.
    """
    bars = progress_bars(progress)
    source = list(sources) if dataset.startswith("imagenet") else \
        (list(sources) if len(sources) > 1 else (sources[0] if sources else None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ChecksumWarning)
        try:
            path = prepare_dataset(dataset, source=source, data_dir=data_dir,
                                   allow_checksum_mismatch=allow_checksum_mismatch,
                                   wnids=wnids, progress=bars)
        finally:
            if bars is not None:
                bars.close()
            for w in caught:
                click.echo(f"Warning: {w.message}", err=True)
    click.echo(f"Wrote {path}")


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@reports_errors
def info(file):
    """Summarise a prepared HDF5 FILE: splits, shapes, classes, checksum."""
    click.echo(describe_store(file))


COMMANDS = [prepare, info]
