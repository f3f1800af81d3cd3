"""The run directory: the files one training run writes, and how they are read back.

``config.json``
    the resolved configuration, the dataset's sizes and normalisation, the model's parameter
    count, the versions of minires and its dependencies, Python, the platform, the BLAS library
    and its kernel set, the CPU convolution algorithm in force, the start time.
``metrics.jsonl`` and ``metrics.csv``
    one row per completed epoch with :data:`METRIC_COLUMNS`. Errors are fractions in [0, 1];
    ``lr`` is the rate at the start of the epoch; ``seconds`` is the whole epoch (training and
    evaluation); ``images_per_s`` counts training images over training time.
``last.h5``
    checkpoint after the last completed epoch (also written before the first epoch).
``best.h5``
    checkpoint of the epoch with the lowest test error.

``run.lock``
    while a run writes into the folder: its owner's pid (:mod:`minires.lockfile`). A second
    run into the same folder is refused; the lock of a killed run is removed by the next one.

Any of the run files means the folder holds a run: a new run refuses such a folder (resume it,
or choose another). Every file is replaced atomically (:mod:`minires.atomicfile`).
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import sys
import warnings
from importlib import metadata

from threadpoolctl import threadpool_info

from minires import __version__
from minires.atomicfile import remove_stale_temps, write_text
from minires.errors import DataError
from minires.kernels.cpu import conv as cpu_conv
from minires.lockfile import LockFile, StaleLockWarning

METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
                  "seconds", "images_per_s")
CONFIG_FILE = "config.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LAST_CHECKPOINT = "last.h5"
BEST_CHECKPOINT = "best.h5"
RUN_FILES = (CONFIG_FILE, METRICS_JSONL, METRICS_CSV, LAST_CHECKPOINT, BEST_CHECKPOINT)
LOCK_FILE = "run.lock"


class RunDirectory:
    """The folder of one run. Paths are strings (as given, not made absolute)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.config_file = os.path.join(self.path, CONFIG_FILE)
        self.last_checkpoint = os.path.join(self.path, LAST_CHECKPOINT)
        self.best_checkpoint = os.path.join(self.path, BEST_CHECKPOINT)
        self.lock = LockFile(os.path.join(self.path, LOCK_FILE), owner="run")
        self.created = False

    def run_files(self) -> list:
        """The names of the run files present."""
        return [name for name in RUN_FILES if os.path.exists(os.path.join(self.path, name))]

    def claim(self, resume: bool) -> None:
        """Make the folder the run's own, for the run about to write into it.

        Creates the folder for a new run, takes its lock (``run.lock``), and removes the
        temporary files that killed processes left beside the run files. Call :meth:`release`
        when the run ends, however it ends. The lock of a killed run is removed with a
        :class:`~minires.lockfile.StaleLockWarning`.

        Raises:
            LockedError: another run is writing into the folder.
            ValueError: a new run (``resume=False``) would overwrite the files of another run.
            DataError: the run to resume has no folder.
        """
        if resume and not os.path.isdir(self.path):
            raise DataError(f"cannot resume: {self.path} does not exist")
        self.created = not os.path.isdir(self.path)
        os.makedirs(self.path, exist_ok=True)
        try:
            note = self.lock.acquire()
            if note:
                warnings.warn(StaleLockWarning(note), stacklevel=2)
            if not resume and self.run_files():
                raise ValueError(f"{self.path} already holds a run "
                                 f"({', '.join(self.run_files())}); resume it (--resume) or "
                                 f"choose another run directory")
            for name in RUN_FILES:
                remove_stale_temps(os.path.join(self.path, name))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give the folder up: remove the lock, and the folder itself when this run created it
        and left nothing in it (a run stopped before its first checkpoint)."""
        self.lock.release()
        if self.created:
            self.created = False
            try:
                os.rmdir(self.path)
            except OSError:
                pass  # not empty: it holds the run

    def write_config(self, record: dict) -> None:
        """Write ``config.json``: ``record`` (the settings and facts of the run, its start time
        included) plus the package versions, Python, the platform and what decides the CPU's
        speed: the BLAS libraries (their kernel set, e.g. OpenBLAS "Haswell" or "SkylakeX") and
        the convolution algorithm (``MINIRES_CPU_CONV``)."""
        info = dict(record, versions=package_versions(), python=sys.version.split()[0],
                    platform=platform.platform(), blas=blas_libraries(),
                    cpu_conv=cpu_conv.algorithm())
        write_text(self.config_file, json.dumps(info, indent=2) + "\n")

    def recorded_start(self) -> str | None:
        """The start time ``config.json`` records; None when it has none or cannot be read. (A
        resumed run takes its start time from its checkpoint, and from here only when the
        checkpoint was written by a minires that did not store it there.)"""
        try:
            return self.read_config().get("started")
        except (DataError, OSError, UnicodeDecodeError):
            return None

    def write_metrics(self, rows) -> None:
        """Write ``metrics.jsonl`` and ``metrics.csv`` for ``rows`` (dicts with the columns)."""
        # Rewritten whole each epoch: a few kB, and a resume that drops rows past its checkpoint
        # cannot leave the two files disagreeing.
        # allow_nan=False: a bare NaN is not JSON; the loop stops before such a row exists.
        jsonl = "".join(json.dumps({k: row[k] for k in METRIC_COLUMNS}, allow_nan=False) + "\n"
                        for row in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in METRIC_COLUMNS})
        write_text(os.path.join(self.path, METRICS_JSONL), jsonl)
        write_text(os.path.join(self.path, METRICS_CSV), buffer.getvalue())

    def read_config(self) -> dict:
        """``config.json`` as a dict ({} when the run has none yet)."""
        if not os.path.isfile(self.config_file):
            return {}
        config = read_json(self.config_file)
        if not isinstance(config, dict):
            raise DataError(f"{self.config_file} should hold a JSON object")
        return config

    def read_metrics(self) -> list:
        """The rows of ``metrics.jsonl`` (else ``metrics.csv``; none when neither exists), each
        a dict with :data:`METRIC_COLUMNS` as numbers. DataError names a row that is not."""
        jsonl = os.path.join(self.path, METRICS_JSONL)
        table = os.path.join(self.path, METRICS_CSV)
        if os.path.isfile(jsonl):
            source, rows = jsonl, []
            with open(jsonl, encoding="utf-8") as f:
                for number, line in enumerate(f, start=1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError:
                            raise DataError(f"{jsonl} line {number} is not valid JSON") from None
        elif os.path.isfile(table):
            source = table
            with open(table, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            return []
        return [_metric_row(row, source, number) for number, row in enumerate(rows, start=1)]


def _metric_row(row, source, number) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{source} row {number} is not an object of metrics")
    missing = [key for key in METRIC_COLUMNS if key not in row]
    if missing:
        raise DataError(f"{source} row {number} lacks {', '.join(missing)}")
    try:
        return {key: (int(row[key]) if key == "epoch" else float(row[key]))
                for key in METRIC_COLUMNS}
    except (TypeError, ValueError):
        raise DataError(f"{source} row {number} has a value that is not a number") from None


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def is_run_dir(path) -> bool:
    """True when ``path`` holds any of the files a training run writes."""
    return any(os.path.isfile(os.path.join(path, name)) for name in RUN_FILES)


def dataset_label(dataset) -> str:
    """A dataset's short name for run folders and tables: a path becomes its file stem, and
    characters other than letters, digits and ``._+-`` become ``_``."""
    base = os.path.basename(os.path.normpath(os.fspath(dataset)))
    stem = os.path.splitext(base)[0] if base.endswith((".h5", ".hdf5")) else base
    return re.sub(r"[^A-Za-z0-9._+-]", "_", stem) or "dataset"


def blas_libraries() -> list:
    """The BLAS libraries loaded in this process (normally NumPy's OpenBLAS): API, version,
    kernel set (``architecture``) and threads, as ``threadpoolctl`` reports them."""
    keys = ("internal_api", "version", "architecture", "num_threads")
    return [{key: library.get(key) for key in keys}
            for library in threadpool_info() if library.get("user_api") == "blas"]


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
