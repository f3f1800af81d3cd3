"""Error (or loss) curves of training runs, like the figures of He et al. and Dai et al.

Each run directory contributes one colour: its test curve solid, its train curve dashed. The
data are the run's ``metrics.jsonl``; the label comes from its ``config.json``
(e.g. ``resnet20 shared (block)``). matplotlib is an optional dependency (``minires[plot]``) and
is imported only when a figure is drawn; the figure is rendered with the Agg canvas directly, so
no GUI backend and no global ``pyplot`` state are involved.
"""
from __future__ import annotations

import io
import os

from minires.atomicfile import write_bytes
from minires.errors import DataError, MiniresError
from minires.run_dir import RunDirectory

METRICS = ("error", "loss")


def read_run(run_dir) -> tuple[dict, list]:
    """Return ``(config, metric rows)`` of a run directory (``config.json``, ``metrics.jsonl``)."""
    run = RunDirectory(run_dir)
    return run.read_config(), run.read_metrics()


def run_label(config: dict, run_dir) -> str:
    """A short legend label: ``resnet20 shared (block)``, ``wrn16-4 unshared``..."""
    arch = config.get("arch")
    if arch is None:
        return os.path.basename(os.path.normpath(os.fspath(run_dir)))
    name = f"{arch}{config.get('depth', '')}"
    if arch == "wrn":
        name += f"-{config.get('width', '')}"
    share = config.get("share", "none")
    return f"{name} {'unshared' if share == 'none' else f'shared ({share})'}"


def run_labels(runs) -> list:
    """One legend label per ``(run_dir, config)``, made distinct: runs that share the short
    label get their seed added, and, if that is not enough, their directory name."""
    labels = [run_label(config, run_dir) for run_dir, config in runs]
    for extra in (lambda run_dir, config: f"seed {config.get('seed', '?')}",
                  lambda run_dir, config: os.path.basename(os.path.normpath(os.fspath(run_dir)))):
        labels = [f"{label}, {extra(*run)}" if labels.count(label) > 1 else label
                  for label, run in zip(labels, runs)]
    return labels


def plot_runs(run_dirs, out_path, metric: str = "error", title: str | None = None) -> str:
    """Draw the train and test curves of one or more runs per epoch into a PNG file.

    Args:
        run_dirs: run directories written by ``minires.train.train``.
        out_path: the PNG to write.
        metric: ``error`` (in percent) or ``loss``.
        title: figure title; defaults to the dataset name(s).
    Returns:
        ``out_path`` as a string.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not run_dirs:
        raise ValueError("plot needs at least one run directory")
    try:  # here, not at the top: matplotlib is an optional dependency (minires[plot])
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise MiniresError("plotting needs matplotlib, which is not installed: "
                           "pip install 'minires[plot]'") from exc

    runs = [(run_dir, *read_run(run_dir)) for run_dir in run_dirs]
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    scale = 100.0 if metric == "error" else 1.0
    labels = run_labels([(run_dir, config) for run_dir, config, _ in runs])
    for i, ((run_dir, config, rows), label) in enumerate(zip(runs, labels)):
        if not rows:
            raise DataError(f"{run_dir} has no completed epoch to plot")
        color = f"C{i % 10}"
        epochs = [row["epoch"] for row in rows]
        axes.plot(epochs, [row[f"test_{metric}"] * scale for row in rows], color=color,
                  linestyle="-", label=f"{label} test")
        axes.plot(epochs, [row[f"train_{metric}"] * scale for row in rows], color=color,
                  linestyle="--", linewidth=1, label=f"{label} train")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("error (%)" if metric == "error" else "cross-entropy loss")
    datasets = sorted({str(config.get("dataset", "?")) for _, config, _ in runs})
    axes.set_title(title if title is not None else ", ".join(datasets))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    write_bytes(out_path, png.getvalue())
    return os.fspath(out_path)
