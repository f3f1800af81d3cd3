"""Training curves of the same runs with different CPU convolution algorithms, side by side.

Winograd F(4x4, 3x3) convolutions carry a larger float32 rounding error than im2col (about
1e-6 to 6e-6 of the largest value against 1e-7 to 7e-7, see tests/test_winograd.py). This script
shows what that does to training: runs that differ only in ``MINIRES_CPU_CONV`` (same seed,
same data order and augmentation), per epoch, next to the spread between seeds and, as the
floor of rounding noise, a run of the same path that differs only in how sums are split
between threads. Make the runs first, e.g. for seeds 0, 1, 2::

    MINIRES_CPU_CONV=auto minires train --depth 20 --share block --dataset cifar10 \\
        --subset 10000 --epochs 5 --seed 0 -o runs/auto-seed0
    MINIRES_CPU_CONV=im2col minires train ... --seed 0 -o runs/im2col-seed0

then::

    python benchmarks/conv_algorithm_curves.py auto=runs/auto-seed0,runs/auto-seed1 \\
        im2col=runs/im2col-seed0,runs/im2col-seed1 --plot curves.png

Each argument is ``LABEL=RUN_DIR,RUN_DIR,...`` with the runs in seed order; the first two labels
are paired seed by seed. Prints a Markdown table per epoch: test error of every run, the paired
differences, and the standard deviation over seeds of the first label's runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from minires.runs import read_run


def load(groups: list) -> dict:
    """``label -> [metrics rows of each run]`` for ``LABEL=DIR,DIR`` arguments."""
    runs = {}
    for spec in groups:
        label, _, dirs = spec.partition("=")
        if not dirs:
            raise SystemExit(f"Error: expected LABEL=RUN_DIR[,RUN_DIR...], got {spec!r}")
        runs[label] = [read_run(Path(d)).metrics for d in dirs.split(",")]
    return runs


def table(runs: dict, metric: str) -> str:
    labels = list(runs)
    first, second = labels[0], labels[1] if len(labels) > 1 else None
    epochs = min(len(rows) for group in runs.values() for rows in group)
    header = ["epoch"] + [f"{label} s{i}" for label in labels for i in range(len(runs[label]))]
    if second:
        header += [f"{first}-{second} s{i}"
                   for i in range(min(len(runs[first]), len(runs[second])))]
    header += [f"std over seeds ({first})"]
    lines = ["| " + " | ".join(header) + " |", "|" + " ---: |" * len(header)]
    for e in range(epochs):
        values = {label: [100 * rows[e][metric] for rows in group]
                  for label, group in runs.items()}
        cells = [str(e + 1)] + [f"{v:.2f}" for label in labels for v in values[label]]
        if second:
            cells += [f"{a - b:+.2f}" for a, b in zip(values[first], values[second])]
        spread = statistics.stdev(values[first]) if len(values[first]) > 1 else float("nan")
        cells.append(f"{spread:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict, path: str, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    styles = ["-", "--", ":", "-."]
    for i, (label, group) in enumerate(runs.items()):
        for seed, rows in enumerate(group):
            epochs = [row["epoch"] for row in rows]
            axes.plot(epochs, [100 * row["test_error"] for row in rows],
                      color=f"C{seed % 10}", linestyle=styles[i % len(styles)],
                      label=f"{label}, seed {seed}")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("test error (%)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="+", help="LABEL=RUN_DIR[,RUN_DIR...]")
    parser.add_argument("--plot", default=None, help="PNG of the test-error curves")
    parser.add_argument("--title", default="test error per epoch")
    args = parser.parse_args(argv)
    runs = load(args.groups)
    for metric in ("test_error", "train_error"):
        print(f"\n{metric} (%)\n")
        print(table(runs, metric))
    if args.plot:
        plot(runs, args.plot, args.title)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    sys.exit(main())
