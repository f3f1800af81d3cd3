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

import os
from dataclasses import dataclass, field

from minires.errors import DataError
from minires.run_dir import RUN_FILES, RunDirectory, is_run_dir, read_json

SWEEP_FILE = "sweep.json"


@dataclass
class Run:
    """One run folder as found on disk.

    Attributes:
        path: the folder. name: its base name.
        config: the contents of ``config.json`` ({} when the run has none yet).
        metrics: one dict per completed epoch (``minires.run_dir.METRIC_COLUMNS``), in order.
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


def read_run(path) -> Run:
    """Read a run folder.

    Raises:
        DataError: the folder is not a run, or its config or metrics cannot be read.
    """
    path = os.fspath(path)
    if not os.path.isdir(path) or not is_run_dir(path):
        raise DataError(f"{path} is not a run folder: it has none of {', '.join(RUN_FILES)}")
    run = RunDirectory(path)
    return Run(path=path, name=os.path.basename(os.path.normpath(path)),
               config=run.read_config(), metrics=run.read_metrics(),
               has_checkpoint=os.path.isfile(run.last_checkpoint))


def read_sweep_file(path) -> dict | None:
    """The contents of ``path/sweep.json``, or None when there is none."""
    sweep_path = os.path.join(path, SWEEP_FILE)
    if not os.path.isfile(sweep_path):
        return None
    manifest = read_json(sweep_path)
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
