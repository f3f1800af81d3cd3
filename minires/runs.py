"""Training runs read back through their files, and sweep folders expanded into their runs.

A run folder is what ``minires train`` writes: ``config.json`` (the resolved configuration,
with ``epochs`` and ``num_parameters``), ``metrics.jsonl`` or ``metrics.csv`` (one row per
completed epoch) and ``last.h5``. Nothing here imports the training code: a run is known only
by those files, so runs made by another minires version or copied from a cluster read the same.

A run is *complete* when its metrics reach the ``epochs`` of its configuration; anything less is
a run in progress, an interrupted run or a failed one, which the files cannot tell apart.

A sweep folder holds one run folder per configuration and seed and a ``sweep.json`` listing
them (see :mod:`minires.sweep`); a folder without ``sweep.json`` whose sub-folders are runs (for
example runs made on a cluster from ``minires sweep --dry-run``) is read the same way.
"""
from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field

from minires.errors import DataError

SWEEP_FILE = "sweep.json"
METRIC_KEYS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
               "seconds", "images_per_s")
# Any of these makes a folder a run folder (``last.h5`` alone: interrupted before epoch 1).
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.csv", "last.h5")


@dataclass
class Run:
    """One run folder as found on disk.

    Attributes:
        path: the folder. name: its base name.
        config: the contents of ``config.json`` ({} when the run has none yet).
        metrics: one dict per completed epoch (keys :data:`METRIC_KEYS`), in epoch order.
        has_checkpoint: ``last.h5`` exists, so ``minires train --resume`` can continue it.
        started: False for a run a sweep lists but that has no folder yet.
    """

    path: str
    name: str
    config: dict = field(default_factory=dict)
    metrics: list = field(default_factory=list)
    has_checkpoint: bool = False
    started: bool = True

    @property
    def epochs_done(self) -> int:
        return int(self.metrics[-1]["epoch"]) if self.metrics else 0

    @property
    def epochs(self) -> int | None:
        """The epochs the run was configured for (None when ``config.json`` is missing)."""
        value = self.config.get("epochs")
        return int(value) if value is not None else None

    @property
    def complete(self) -> bool:
        return self.epochs is not None and self.epochs_done >= self.epochs

    def progress(self) -> str:
        """``epoch 3 of 30``, ``not started``..."""
        if not self.started:
            return "not started"
        if not self.config:
            return "no config.json"
        total = "?" if self.epochs is None else self.epochs
        return f"epoch {self.epochs_done} of {total}"


def dataset_label(dataset: str) -> str:
    """A dataset's short name (for run names and tables): a path becomes its file stem, and
    characters other than letters, digits and ``._+-`` become ``_``."""
    base = os.path.basename(os.path.normpath(os.fspath(dataset)))
    stem = os.path.splitext(base)[0] if base.endswith((".h5", ".hdf5")) else base
    return re.sub(r"[^A-Za-z0-9._+-]", "_", stem) or "dataset"


def is_run_dir(path) -> bool:
    """True when ``path`` holds any of the files a training run writes."""
    return any(os.path.isfile(os.path.join(path, name)) for name in RUN_FILES)


def read_run(path) -> Run:
    """Read a run folder.

    Raises:
        DataError: the folder is not a run, or its config or metrics cannot be read.
    """
    path = os.fspath(path)
    if not os.path.isdir(path) or not is_run_dir(path):
        raise DataError(f"{path} is not a run folder: it has none of {', '.join(RUN_FILES)}")
    config = {}
    config_path = os.path.join(path, "config.json")
    if os.path.isfile(config_path):
        config = _read_json(config_path)
        if not isinstance(config, dict):
            raise DataError(f"{config_path} should hold a JSON object")
    return Run(path=path, name=os.path.basename(os.path.normpath(path)), config=config,
               metrics=read_metrics(path),
               has_checkpoint=os.path.isfile(os.path.join(path, "last.h5")))


def read_metrics(path) -> list:
    """The metric rows of a run folder: ``metrics.jsonl``, else ``metrics.csv``, else none."""
    jsonl = os.path.join(path, "metrics.jsonl")
    table = os.path.join(path, "metrics.csv")
    rows = []
    if os.path.isfile(jsonl):
        with open(jsonl, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        raise DataError(f"{jsonl} line {number} is not valid JSON") from None
        source = jsonl
    elif os.path.isfile(table):
        with open(table, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        source = table
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{source} row {number} is not an object of metrics")
        missing = [key for key in METRIC_KEYS if key not in row]
        if missing:
            raise DataError(f"{source} row {number} lacks {', '.join(missing)}")
        try:
            rows[number - 1] = {key: (int(row[key]) if key == "epoch" else float(row[key]))
                                for key in METRIC_KEYS}
        except (TypeError, ValueError):
            raise DataError(f"{source} row {number} has a value that is not a number") from None
    return rows


def read_sweep_file(path) -> dict | None:
    """The contents of ``path/sweep.json``, or None when there is none."""
    sweep_path = os.path.join(path, SWEEP_FILE)
    if not os.path.isfile(sweep_path):
        return None
    manifest = _read_json(sweep_path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
        raise DataError(f"{sweep_path} is not a minires sweep file (no list of runs)")
    return manifest


def find_runs(paths) -> list:
    """Expand run folders and sweep folders into a list of :class:`Run`, each folder once.

    A sweep folder contributes the runs its ``sweep.json`` lists, in that order, including those
    not started yet (``started=False``); a folder without one contributes its sub-folders that
    are runs, sorted by name.

    Raises:
        DataError: a path is neither a run folder nor a folder of runs.
    """
    runs, seen = [], set()
    for path in paths:
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise DataError(f"{path} is not a folder")
        if is_run_dir(path):
            found = [read_run(path)]
        else:
            manifest = read_sweep_file(path)
            if manifest is not None:
                names = [str(name) for name in manifest["runs"]]
            else:
                names = sorted(entry for entry in os.listdir(path)
                               if is_run_dir(os.path.join(path, entry)))
                if not names:
                    raise DataError(f"{path} is neither a run folder ({', '.join(RUN_FILES)}) "
                                    f"nor a sweep folder ({SWEEP_FILE} or run folders inside)")
            found = [read_run(os.path.join(path, name))
                     if is_run_dir(os.path.join(path, name))
                     else Run(path=os.path.join(path, name), name=name, started=False)
                     for name in names]
        for run in found:
            key = os.path.realpath(run.path)
            if key not in seen:
                seen.add(key)
                runs.append(run)
    return runs


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
