"""Compare training runs: statistics over seeds per configuration, and shared − unshared pairs.

Runs are grouped by everything that defines their configuration except the seed (dataset,
model, sharing, shortcut, schedule, epochs, learning rate, batch size, subsets). For each group
over its complete runs: final and best test error, final training error and loss, each as mean
and sample standard deviation (n − 1) over seeds, and the mean time of a run. A shared group
(``share`` block or stage) is paired with the unshared group of otherwise equal configuration:
for each seed both have, the difference shared − unshared, then its mean and sample standard
deviation over the pairs. Runs that are not complete are left out of every statistic and listed.

Only run files are read (:mod:`minires.runs`); nothing is recomputed from checkpoints.
"""
from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field

from minires.errors import DataError
from minires.run_dir import dataset_label

# What makes two runs the same configuration (the seed does not).
CONFIG_KEYS = ("dataset", "arch", "depth", "width", "share", "shortcut", "schedule", "epochs",
               "lr", "batch_size", "subset", "test_subset")
# Shown in the table's own columns; the others are stated once, or get a column if they vary.
OTHER_KEYS = ("shortcut", "lr", "batch_size", "subset", "test_subset")
OTHER_LABELS = {"shortcut": "shortcut", "lr": "lr", "batch_size": "batch",
                "subset": "training images", "test_subset": "test images"}
# name -> (value of a complete run's metrics, in percent in Markdown?)
RUN_STATS = {
    "final_test_error": (lambda rows: rows[-1]["test_error"], True),
    "best_test_error": (lambda rows: min(row["test_error"] for row in rows), True),
    "final_train_error": (lambda rows: rows[-1]["train_error"], True),
    "final_train_loss": (lambda rows: rows[-1]["train_loss"], False),
}
PAIRED_STATS = ("final_test_error", "best_test_error", "final_train_error")
SHARE_ORDER = {"none": 0, "block": 1, "stage": 2}


@dataclass
class Group:
    """The runs of one configuration: ``runs`` complete, ``incomplete`` not (yet)."""

    key: tuple
    config: dict
    runs: list = field(default_factory=list)
    incomplete: list = field(default_factory=list)

    @property
    def share(self) -> str:
        return self.config.get("share", "none")

    @property
    def seeds(self) -> list:
        return [run.config.get("seed") for run in self.runs]

    def value(self, name: str, run) -> float:
        """One statistic (a key of :data:`RUN_STATS` or ``seconds``) of one complete run."""
        if name == "seconds":
            return sum(row["seconds"] for row in run.metrics)
        return RUN_STATS[name][0](run.metrics)

    def values(self, name: str) -> list:
        return [self.value(name, run) for run in self.runs]


@dataclass
class Pair:
    """A shared group against its unshared partner, over the seeds both have complete."""

    shared: Group
    unshared: Group
    seeds: list
    # statistic name -> per-seed differences shared − unshared, in the order of ``seeds``
    differences: dict


@dataclass
class Comparison:
    groups: list
    pairs: list
    left_out: list      # runs not in any statistic (incomplete or not started)


def model_name(config: dict) -> str:
    """``resnet20``, ``wrn16-4``."""
    name = f"{config.get('arch', '?')}{config.get('depth', '')}"
    return name + f"-{config.get('width')}" if config.get("arch") == "wrn" else name


def group_runs(runs) -> list:
    """Group :class:`minires.runs.Run` objects by configuration: sorted by dataset, model and
    the other settings, the unshared group before the shared ones of the same settings.

    Runs without a configuration (not started, or no ``config.json``) are in no group.

    Raises:
        DataError: two complete runs with the same configuration and seed.
    """
    groups = {}
    for run in runs:
        if not run.started or not run.config:
            continue
        key = tuple(_hashable(run.config.get(name)) for name in CONFIG_KEYS)
        group = groups.setdefault(key, Group(key, run.config))
        (group.runs if run.complete else group.incomplete).append(run)
    for group in groups.values():
        by_seed = {}
        for run in group.runs:
            seed = run.config.get("seed")
            if seed in by_seed:
                raise DataError(f"{by_seed[seed].path} and {run.path} are both seed {seed} of "
                                f"{model_name(group.config)} share={group.share}: compare one "
                                f"of them")
            by_seed[seed] = run
    return sorted(groups.values(), key=_order)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _order(group: Group) -> tuple:
    """Sort key: every setting but the sharing, then none < block < stage. Numbers sort as
    numbers, None first, and values of different types never meet."""
    values = dict(zip(CONFIG_KEYS, group.key))
    share = values.pop("share")
    key = [(value is not None, isinstance(value, str), value if value is not None else 0)
           for value in values.values()]
    return (*key, SHARE_ORDER.get(share, len(SHARE_ORDER)), str(share))


def pair_groups(groups) -> list:
    """Each shared group with the unshared group of the same configuration, paired by seed."""
    share_index = CONFIG_KEYS.index("share")
    by_key = {group.key: group for group in groups}
    pairs = []
    for group in groups:
        if group.share == "none":
            continue
        partner_key = group.key[:share_index] + ("none",) + group.key[share_index + 1:]
        partner = by_key.get(partner_key)
        if partner is None:
            continue
        unshared = {run.config.get("seed"): run for run in partner.runs}
        matched = [(run.config.get("seed"), run) for run in group.runs
                   if run.config.get("seed") in unshared]
        matched.sort(key=lambda item: item[0])
        if not matched:
            continue
        differences = {name: [group.value(name, run) - partner.value(name, unshared[seed])
                              for seed, run in matched] for name in PAIRED_STATS}
        pairs.append(Pair(group, partner, [seed for seed, _ in matched], differences))
    return pairs


def compare(runs) -> Comparison:
    """Group, summarise and pair ``runs`` (from :func:`minires.runs.find_runs`).

    Raises:
        DataError: no run is complete (names the runs in progress), or see :func:`group_runs`.
    """
    groups = group_runs(runs)
    left_out = [run for run in runs if not run.complete]
    if not any(group.runs for group in groups):
        listed = ", ".join(f"{run.path} ({run.progress()})" for run in left_out[:6])
        more = f" and {len(left_out) - 6} more" if len(left_out) > 6 else ""
        raise DataError(f"no complete run to compare: {listed}{more}")
    return Comparison(groups, pair_groups(groups), left_out)


def mean_std(values) -> tuple:
    """``(mean, sample standard deviation)``; the deviation is None for fewer than 2 values."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


# -- Markdown ----------------------------------------------------------------------------------

def to_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown: the configuration table, the paired differences, notes."""
    groups = comparison.groups
    varying = [key for key in OTHER_KEYS
               if len({_hashable(g.config.get(key)) for g in groups}) > 1]
    header = (["model", "share", "dataset", "schedule", "epochs"]
              + [OTHER_LABELS[key] for key in varying]
              + ["parameters", "runs", "final test error (%)", "best test error (%)",
                 "final train error (%)", "final train loss", "time"])
    lines = [_row(header), _row(["---"] * 5 + ["---:"] * (len(header) - 5))]
    for group in groups:
        cells = _config_cells(group.config) + [_other(key, group.config.get(key))
                                               for key in varying]
        runs = str(len(group.runs))
        if group.incomplete:
            runs += f" (+{len(group.incomplete)} incomplete)"
        cells += [_parameters(group), runs]
        for name, (_, percent) in RUN_STATS.items():
            cells.append(_mean_std(group.values(name), percent))
        seconds = mean_std(group.values("seconds"))[0]
        cells.append("—" if seconds is None else _duration(seconds))
        lines.append(_row(cells))
    constant = [_setting(key, groups[0].config.get(key)) for key in OTHER_KEYS
                if key not in varying]
    lines += ["", "Mean ± sample standard deviation (n − 1) over the complete runs (seeds) of "
              "each configuration; time is the mean of a run's total training and evaluation "
              "time." + (f" All runs: {', '.join(constant)}." if constant else "")]
    if comparison.pairs:
        lines += ["", ("Paired differences shared − unshared, run against run of the same "
                       "seed, in percentage points (negative: sharing has the lower error); mean "
                       "± sample standard deviation over the pairs:"), ""]
        header = (["model", "share", "dataset", "schedule", "epochs", "pairs"]
                  + [f"{name.replace('_', ' ')}" for name in PAIRED_STATS]
                  + ["final test error per seed"])
        lines += [_row(header), _row(["---"] * 5 + ["---:"] * (len(header) - 6) + ["---"])]
        for pair in comparison.pairs:
            cells = _config_cells(pair.shared.config) + [str(len(pair.seeds))]
            cells += [_mean_std(pair.differences[name], True, signed=True)
                      for name in PAIRED_STATS]
            cells.append(", ".join(f"seed {seed}: {100 * d:+.2f}" for seed, d in
                                   zip(pair.seeds, pair.differences["final_test_error"])))
            lines.append(_row(cells))
    if comparison.left_out:
        lines += ["", "Not in the statistics (not complete): " + ", ".join(
            f"`{run.path}` ({run.progress()})" for run in comparison.left_out) + "."]
    return "\n".join(lines) + "\n"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _config_cells(config: dict) -> list:
    return [model_name(config), str(config.get("share", "none")),
            dataset_label(str(config.get("dataset", "?"))),
            str(config.get("schedule", "?")), str(config.get("epochs", "?"))]


def _other(key, value) -> str:
    if key in ("subset", "test_subset") and value is None:
        return "all"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _setting(key, value) -> str:
    """``lr 0.1``, ``all training images``, ``the first 64 test images``..."""
    if key in ("subset", "test_subset"):
        what = f"{'training' if key == 'subset' else 'test'} images"
        return f"all {what}" if value is None else f"the first {value} {what}"
    return f"{OTHER_LABELS[key]} {_other(key, value)}"


def _parameters(group: Group) -> str:
    counts = sorted({run.config.get("num_parameters") for run in group.runs + group.incomplete
                     if run.config.get("num_parameters") is not None})
    return " / ".join(f"{count:,}" for count in counts) or "?"


def _mean_std(values, percent: bool, signed: bool = False) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    scale, digits = (100.0, 2) if percent else (1.0, 4)
    text = f"{scale * mean:{'+' if signed else ''}.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if std is not None else " ± —")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


# -- CSV ---------------------------------------------------------------------------------------

CSV_COLUMNS = (
    ("dataset", "model", "arch", "depth", "width", "share", "shortcut", "schedule", "epochs",
     "lr", "batch_size", "subset", "test_subset", "parameters", "runs", "seeds", "incomplete")
    + tuple(f"{name}_{part}" for name in (*RUN_STATS, "seconds") for part in ("mean", "std"))
    + ("pairs", "paired_seeds")
    + tuple(f"diff_{name}_{part}" for name in PAIRED_STATS for part in ("mean", "std"))
    + ("diff_final_test_error_per_seed",))


def to_csv(comparison: Comparison) -> str:
    """One row per configuration, errors as fractions (as in ``metrics.csv``); the ``diff_``
    columns of a shared configuration hold its paired differences with the unshared one
    (``diff_final_test_error_per_seed``: ``seed:difference`` separated by spaces)."""
    pairs = {id(pair.shared): pair for pair in comparison.pairs}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for group in comparison.groups:
        config = group.config
        row = {key: config.get(key) for key in CONFIG_KEYS}
        row.update(model=model_name(config),
                   parameters=config.get("num_parameters"), runs=len(group.runs),
                   seeds=" ".join(str(seed) for seed in group.seeds),
                   incomplete=len(group.incomplete))
        for name in (*RUN_STATS, "seconds"):
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std(group.values(name))
        pair = pairs.get(id(group))
        if pair is not None:
            row.update(pairs=len(pair.seeds), paired_seeds=" ".join(map(str, pair.seeds)))
            for name in PAIRED_STATS:
                row[f"diff_{name}_mean"], row[f"diff_{name}_std"] = mean_std(
                    pair.differences[name])
            row["diff_final_test_error_per_seed"] = " ".join(
                f"{seed}:{d!r}" for seed, d in zip(pair.seeds,
                                                   pair.differences["final_test_error"]))
        writer.writerow({key: ("" if value is None else value) for key, value in row.items()})
    return buffer.getvalue()


def curves(group: Group, column: str) -> tuple:
    """Per-epoch mean, minimum and maximum of ``column`` over a group's runs.

    All runs with at least one epoch count (complete or not), over the epochs every one of
    them has reached, so the mean never changes which runs it averages along the curve.

    Returns:
        ``(epochs, mean, low, high, n)``: lists of equal length, and the number of runs.
    """
    runs = [run for run in group.runs + group.incomplete if run.metrics]
    if not runs:
        return [], [], [], [], 0
    length = min(len(run.metrics) for run in runs)
    epochs = [row["epoch"] for row in runs[0].metrics[:length]]
    columns = [[run.metrics[i][column] for run in runs] for i in range(length)]
    return (epochs, [statistics.fmean(c) for c in columns], [min(c) for c in columns],
            [max(c) for c in columns], len(runs))
