"""The run directory: the files one training run writes, and how they are read back.

``config.json``
    the resolved configuration, the dataset's sizes and normalisation, the model's parameter
    count, the versions of minires and its dependencies, Python, the platform, the start time.
``metrics.jsonl`` and ``metrics.csv``
    one row per completed epoch with :data:`METRIC_COLUMNS`. Errors are fractions in [0, 1];
    ``lr`` is the rate at the start of the epoch; ``seconds`` is the whole epoch (training and
    evaluation); ``images_per_s`` counts training images over training time.
``last.h5``
    checkpoint after the last completed epoch (also written before the first epoch).
``best.h5``
    checkpoint of the epoch with the lowest test error.

Any of these files means the folder holds a run: a new run refuses such a folder (resume it,
or choose another). Every file is replaced atomically (:mod:`minires.atomicfile`).
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import time
from importlib import metadata

from minires import __version__
from minires.atomicfile import remove_stale_temps, write_text
from minires.errors import DataError

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
                  "seconds", "images_per_s")
CONFIG_FILE = "config.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LAST_CHECKPOINT = "last.h5"
BEST_CHECKPOINT = "best.h5"
RUN_FILES = (CONFIG_FILE, METRICS_JSONL, METRICS_CSV, LAST_CHECKPOINT, BEST_CHECKPOINT)


class RunDirectory:
    """The folder of one run. Paths are strings (as given, not made absolute)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.config_file = os.path.join(self.path, CONFIG_FILE)
        self.last_checkpoint = os.path.join(self.path, LAST_CHECKPOINT)
        self.best_checkpoint = os.path.join(self.path, BEST_CHECKPOINT)

    def run_files(self) -> list:
        """The names of the run files present."""
        return [name for name in RUN_FILES if os.path.exists(os.path.join(self.path, name))]

    def claim(self, resume: bool) -> None:
        """Make the folder ready for the run about to write into it.

        Creates it if needed, and removes the temporary files that killed processes left
        beside the run files. Raises ValueError when a new run (``resume=False``) would
        overwrite the files of another run.
        """
        if not resume and self.run_files():
            raise ValueError(f"{self.path} already holds a run ({', '.join(self.run_files())}); "
                             f"resume it or choose another run directory")
        os.makedirs(self.path, exist_ok=True)
        for name in RUN_FILES:
            remove_stale_temps(os.path.join(self.path, name))

    def write_config(self, record: dict) -> None:
        """Write ``config.json``: ``record`` plus package versions, Python, the platform and the
        start time (a resumed run keeps the time its first part started)."""
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        if os.path.isfile(self.config_file):
            started = self.read_config().get("started", started)
        info = dict(record, versions=package_versions(), python=sys.version.split()[0],
                    platform=platform.platform(), started=started)
        write_text(self.config_file, json.dumps(info, indent=2) + "\n")

    def write_metrics(self, rows) -> None:
        """Write ``metrics.jsonl`` and ``metrics.csv`` for ``rows`` (dicts with the columns)."""
        # Rewritten whole each epoch: a few kB, and a resume that drops rows past its checkpoint
        # cannot leave the two files disagreeing.
        jsonl = "".join(json.dumps({k: row[k] for k in METRIC_COLUMNS}) + "\n" for row in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in METRIC_COLUMNS})
        write_text(os.path.join(self.path, METRICS_JSONL), jsonl)
        write_text(os.path.join(self.path, METRICS_CSV), buffer.getvalue())

    def read_config(self) -> dict:
        """``config.json`` as a dict ({} when the run has none)."""
        if not os.path.isfile(self.config_file):
            return {}
        with open(self.config_file, encoding="utf-8") as f:
            return json.load(f)

    def read_metrics(self) -> list:
        """The rows of ``metrics.jsonl``; DataError when the folder has none."""
        path = os.path.join(self.path, METRICS_JSONL)
        if not os.path.isfile(path):
            raise DataError(f"{self.path} is not a run directory: it has no {METRICS_JSONL}")
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


def package_versions() -> dict:
    """Versions of minires and its dependencies (and CuPy when it is installed)."""
    versions = {"minires": __version__}
    for name in ("numpy", "numba", "h5py", "click"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    for name in ("cupy-cuda13x", "cupy-cuda12x", "cupy"):
        try:
            versions["cupy"] = metadata.version(name)
            break
        except metadata.PackageNotFoundError:
            continue
    return versions
