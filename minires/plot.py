"""Error (or loss) curves of training runs, like the figures of He et al. and Dai et al.

Each run directory contributes one colour: its test curve solid, its train curve dashed. Given
a sweep folder, each configuration contributes one colour instead: the mean over its seeds,
with a band from the lowest to the highest run. The data are the runs' ``metrics.jsonl``; the
labels come from their ``config.json`` (e.g. ``resnet20 shared (block)``). matplotlib is an
optional dependency (``minires[plot]``) and is imported only when a figure is drawn; the figure
is rendered with the Agg canvas directly, so no GUI backend and no global ``pyplot`` state are
involved.
"""
from __future__ import annotations

import io
import os

from minires.atomicfile import write_bytes
from minires.compare import CONFIG_KEYS, curves, group_runs
from minires.errors import DataError, MiniresError
from minires.run_dir import is_run_dir
from minires.runs import find_runs, read_run

METRICS = ("error", "loss")


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
    if not all(is_run_dir(path) for path in run_dirs):
        return plot_sweeps(run_dirs, out_path, metric=metric, title=title)
    figure, axes = _new_figure()
    runs = [(run.path, run.config, run.metrics) for run in map(read_run, run_dirs)]
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
    datasets = sorted({str(config.get("dataset", "?")) for _, config, _ in runs})
    return _save(figure, axes, out_path, metric,
                 title if title is not None else ", ".join(datasets))


def plot_sweeps(paths, out_path, metric: str = "error", title: str | None = None) -> str:
    """Draw the mean train (dashed) and test (solid) curves of each configuration in sweep or
    run folders, with a band from the lowest to the highest run at each epoch.

    Runs are grouped as ``minires compare`` groups them (all settings but the seed); a group's
    curves cover the epochs all its runs have reached, runs in progress included.

    Args:
        paths: sweep folders and run folders (:func:`minires.runs.find_runs`).
        out_path: the PNG to write. metric: ``error`` (in percent) or ``loss``.
        title: figure title; defaults to the dataset name(s) and what the band shows.
    Returns:
        ``out_path`` as a string.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    figure, axes = _new_figure()
    groups = [group for group in group_runs(find_runs(paths))
              if any(run.metrics for run in group.runs + group.incomplete)]
    if not groups:
        raise DataError(f"no run in {', '.join(map(os.fspath, paths))} has a completed epoch "
                        f"to plot")
    scale = 100.0 if metric == "error" else 1.0
    for i, (group, label) in enumerate(zip(groups, group_labels(groups))):
        color = f"C{i % 10}"
        for split, style, alpha in (("test", "-", 0.25), ("train", "--", 0.12)):
            epochs, mean, low, high, count = curves(group, f"{split}_{metric}")
            axes.plot(epochs, [scale * v for v in mean], color=color, linestyle=style,
                      linewidth=1.5 if split == "test" else 1, label=f"{label} {split}, n={count}")
            axes.fill_between(epochs, [scale * v for v in low], [scale * v for v in high],
                              color=color, alpha=alpha, linewidth=0)
    datasets = sorted({str(group.config.get("dataset", "?")) for group in groups})
    default_title = f"{', '.join(datasets)}: mean over seeds, band from lowest to highest run"
    return _save(figure, axes, out_path, metric, title if title is not None else default_title)


def group_labels(groups) -> list:
    """A legend label per configuration group (:class:`minires.compare.Group`): the run label
    (``resnet20 shared (block)``), plus the settings that tell apart groups sharing it."""
    labels = [run_label(group.config, "?") for group in groups]
    result = []
    for label, group in zip(labels, groups):
        same = [other for other, other_label in zip(groups, labels) if other_label == label]
        differing = [key for key in CONFIG_KEYS
                     if len({str(other.config.get(key)) for other in same}) > 1]
        extra = ", ".join(f"{key} {group.config.get(key)}" for key in differing)
        result.append(f"{label}, {extra}" if extra else label)
    return result


def _new_figure():
    """A figure on the Agg canvas and its axes; a one-line error without matplotlib."""
    try:  # here, not at the top: matplotlib is an optional dependency (minires[plot])
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MiniresError("plotting needs matplotlib, which is not installed: "
                           "pip install 'minires[plot]'") from exc
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure, axes, out_path, metric: str, title: str) -> str:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("error (%)" if metric == "error" else "cross-entropy loss")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    write_bytes(out_path, png.getvalue())
    return os.fspath(out_path)
