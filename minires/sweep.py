"""A sweep: one training run per configuration (depth x width x sharing) and seed, in one folder.

::

    SWEEP_DIR/
        sweep.json                          the grid and the training options common to all runs
        sweep.lock                          while a sweep runs: its pid and its runs' pids
        cifar10-resnet20-none-seed0/        a run folder (minires train -o ...), plus train.log
        cifar10-resnet20-block-seed0/
        ...

Runs are named by configuration, ``<dataset>-<model>-<share>-seed<k>`` (``model`` is
``resnet20`` or ``wrn16-4``), so a folder says what it holds and a sweep started again finds its
runs by name. Each run's state comes from its files alone (:mod:`minires.runs`): without
``last.h5`` it starts from scratch; with ``last.h5`` and fewer epochs in its metrics than
configured it resumes (``minires train --resume``); otherwise it is complete and skipped.

This module plans; :mod:`minires.sweep_runner` runs the plan as ``minires train`` processes.
"""
from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import asdict, dataclass

from minires import __version__
from minires.atomicfile import write_text
from minires.data.catalog import (DATASET_CHOICES, DATASETS, EMBEDDED, names_a_dataset,
                                  prepared_path)
from minires.errors import ConfigError, DataError, MiniresError
from minires.lockfile import LockFile
from minires.models import ARCHS, DEFAULT_WRN_WIDTH, SHARE_MODES, resnet_blocks_per_stage
from minires.processes import process_alive, process_start_time
from minires.run_dir import dataset_label
from minires.runs import SWEEP_FILE, read_run, read_sweep_file

FORMAT = "minires-sweep"
FORMAT_VERSION = 1
LOCK_FILE = "sweep.lock"
LOG_FILE = "train.log"
# minires train's default ResNet depth; a Wide ResNet's default depends on the image size, so a
# sweep of Wide ResNets names its depths.
RESNET_DEPTH = 20


class SweepError(MiniresError):
    """A sweep cannot start: its folder holds another sweep, or is in use."""


@dataclass(frozen=True)
class Grid:
    """The values a sweep crosses: every depth x width x share, each with every seed.

    ``widths`` is ``(None,)`` for ResNets (they have no width factor).
    """

    arch: str
    depths: tuple
    widths: tuple
    shares: tuple
    seeds: tuple

    def validate(self) -> None:
        """Raise ValueError naming the first value that no run could train."""
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        for name in ("depths", "widths", "shares", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"the sweep needs at least one value of {name}")
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"{name} lists {', '.join(repeated)} more than once")
        for share in self.shares:
            if share not in SHARE_MODES:
                raise ValueError(f"share must be among {', '.join(SHARE_MODES)}, got {share!r}")
        if any(seed < 0 for seed in self.seeds):
            raise ValueError(f"seeds must not be negative, got {list(self.seeds)}")
        if self.arch == "resnet":
            if self.widths != (None,):
                raise ValueError("a ResNet has no width factor: widths are for --arch wrn")
            for depth in self.depths:
                resnet_blocks_per_stage(depth)  # raises, naming the valid depths
        elif any(width is None or width < 1 for width in self.widths):
            raise ValueError(f"widths must be positive integers, got {list(self.widths)}")

    def describe(self) -> str:
        """``depth 20,56 x share none,block x seeds 0,1,2``."""
        parts = [("depth", self.depths), ("width", self.widths), ("share", self.shares),
                 ("seeds", self.seeds)]
        return " x ".join(f"{name} {','.join(str(v) for v in values)}"
                          for name, values in parts if values != (None,))


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its folder name and the grid values it trains with."""

    name: str
    depth: int
    width: int | None
    share: str
    seed: int

    def grid_args(self) -> list:
        """The ``minires train`` options this run adds to the sweep's common ones."""
        args = ["--depth", str(self.depth)]
        if self.width is not None:
            args += ["--width", str(self.width)]
        return args + ["--share", self.share, "--seed", str(self.seed)]


def run_name(dataset: str, arch: str, depth: int, width: int | None, share: str,
             seed: int) -> str:
    """``cifar10-resnet20-block-seed0``, ``imagenet32-wrn28-2-none-seed1``."""
    model = f"{arch}{depth}" + (f"-{width}" if width is not None else "")
    return f"{dataset_label(dataset)}-{model}-{share}-seed{seed}"


def expand(grid: Grid, dataset: str) -> list:
    """The runs of ``grid``, as :class:`RunSpec`, in the order they are trained.

    The seed varies slowest: every configuration gets seed 0 before any gets seed 1, so a sweep
    stopped half-way already holds complete shared/unshared pairs.
    """
    grid.validate()
    return [RunSpec(run_name(dataset, grid.arch, depth, width, share, seed), depth, width,
                    share, seed)
            for seed in grid.seeds for depth in grid.depths for width in grid.widths
            for share in grid.shares]


def default_grid(arch: str, depths=None, widths=None, shares=("none", "block"),
                 seeds=(0, 1, 2)) -> Grid:
    """A :class:`Grid` with minires train's defaults for the values not given.

    Raises:
        ValueError: a Wide ResNet sweep without depths, or widths for a ResNet.
    """
    if depths is None:
        if arch == "wrn":
            raise ValueError("a Wide ResNet sweep needs its depths (--depth): the default "
                             "depends on the image size")
        depths = (RESNET_DEPTH,)
    if widths is None:
        widths = (DEFAULT_WRN_WIDTH,) if arch == "wrn" else (None,)
    return Grid(arch, tuple(depths), tuple(widths), tuple(shares), tuple(int(s) for s in seeds))


def check_dataset(dataset: str, data_dir=None) -> None:
    """Raise DataError when a named dataset is not prepared or a dataset file does not exist,
    so that a sweep fails before its first run rather than once per run."""
    if dataset == EMBEDDED:
        return
    if dataset in DATASETS:
        path = prepared_path(dataset, data_dir)
        if not path.exists():
            raise DataError(f"{dataset} is not prepared: {path} does not exist; run `minires "
                            f"prepare {dataset}` first (or give --data-dir)")
    elif not names_a_dataset(dataset):
        raise ConfigError("dataset", f"dataset must be {DATASET_CHOICES}, got {dataset!r}")
    elif not os.path.isfile(os.path.expanduser(dataset)):
        raise DataError(f"dataset {dataset!r} is neither embedded, one of {', '.join(DATASETS)}, "
                        f"nor an existing prepared .h5 file")


# -- sweep.json --------------------------------------------------------------------------------

def manifest(grid: Grid, specs, train_options: dict, train_args) -> dict:
    """The contents of ``sweep.json``.

    ``train_options`` are the values of the ``minires train`` options that define the runs (all
    of them, defaults included, so that two spellings of the same sweep compare equal);
    ``train_args`` are the common options as given on the command line.
    """
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "minires_version": __version__,
            "grid": {key: value if isinstance(value, str) else list(value)
                     for key, value in asdict(grid).items()},
            "train_options": train_options, "train_args": list(train_args),
            "runs": [spec.name for spec in specs],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def check_manifest(sweep_dir, wanted: dict) -> bool:
    """Compare ``wanted`` with the ``sweep.json`` already in ``sweep_dir``.

    Returns:
        True when the folder already holds this sweep, False when it has no ``sweep.json``.
    Raises:
        SweepError: the folder holds another sweep (names what differs) or is a run folder.
    """
    if os.path.isfile(os.path.join(sweep_dir, "config.json")):
        raise SweepError(f"{sweep_dir} is a run folder, not a sweep folder")
    existing = read_sweep_file(sweep_dir)
    if existing is None:
        return False
    if existing.get("format") != FORMAT:
        raise SweepError(f"{os.path.join(sweep_dir, SWEEP_FILE)} is not a minires sweep file")
    differences = []
    for section in ("grid", "train_options"):
        before, now = existing.get(section, {}), wanted[section]
        # An option only one side knows (added to minires train since) is not a difference.
        keys = set(before) | set(now) if section == "grid" else set(before) & set(now)
        for key in sorted(keys):
            if before.get(key) != now.get(key):
                differences.append(f"{key} {_show(now.get(key))} (the sweep has "
                                   f"{_show(before.get(key))})")
    if differences:
        raise SweepError(f"{sweep_dir} holds another sweep: " + "; ".join(differences)
                         + ". Use another folder (compare and plot accept several)")
    return True


def _show(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else repr(value)


def write_manifest(sweep_dir, contents: dict) -> None:
    os.makedirs(sweep_dir, exist_ok=True)
    write_text(os.path.join(sweep_dir, SWEEP_FILE), json.dumps(contents, indent=2) + "\n")


# -- what each run needs -----------------------------------------------------------------------

@dataclass
class PlannedRun:
    """A run of the sweep and what to do with it: ``start``, ``resume`` or ``skip``."""

    spec: RunSpec
    run_dir: str
    action: str
    progress: str = "not started"

    @property
    def log_path(self) -> str:
        return os.path.join(self.run_dir, LOG_FILE)

    def train_args(self, common_args) -> list:
        """The arguments of ``minires train`` for this run."""
        args = self.spec.grid_args() + ["-o", self.run_dir] + list(common_args)
        return args + ["--resume"] if self.action == "resume" else args


def plan(sweep_dir, specs, epochs: int | None) -> list:
    """What each run needs, from the files in its folder.

    Args:
        sweep_dir: the sweep folder. specs: the runs (:func:`expand`).
        epochs: the epochs the sweep trains for; None: each run's own ``config.json`` says.
    Returns:
        one :class:`PlannedRun` per spec, in order.
    """
    planned = []
    for spec in specs:
        run_dir = os.path.join(os.fspath(sweep_dir), spec.name)
        if not os.path.isfile(os.path.join(run_dir, "last.h5")):
            planned.append(PlannedRun(spec, run_dir, "start"))
            continue
        try:
            run = read_run(run_dir)
        except DataError:  # unreadable metrics: resuming rewrites them from last.h5
            planned.append(PlannedRun(spec, run_dir, "resume", "unreadable metrics"))
            continue
        target = epochs if epochs is not None else run.epochs
        done = target is not None and run.epochs_done >= target
        planned.append(PlannedRun(spec, run_dir, "skip" if done else "resume",
                                  f"epoch {run.epochs_done} of {target or '?'}"))
    return planned


def command_line(args) -> str:
    """``minires train ...`` as a line a shell (or a cluster scheduler) runs as it is."""
    return shlex.join(["minires", "train", *args])


# -- the lock ----------------------------------------------------------------------------------

class SweepLock:
    """``sweep.lock``: one sweep at a time per folder, and no run trained twice at once.

    A :class:`~minires.lockfile.LockFile` that also lists the runs the sweep is training (name
    -> pid and start time). A lock whose sweep is gone is stale and replaced, unless a run it
    started is still alive (a sweep killed outright leaves its runs training).
    """

    def __init__(self, sweep_dir):
        self.sweep_dir = os.fspath(sweep_dir)
        self.path = os.path.join(self.sweep_dir, LOCK_FILE)
        self.lock = LockFile(self.path, owner="sweep")
        self.children = {}

    def acquire(self) -> str | None:
        """Take the lock. Returns a note when a stale lock was replaced.

        Raises:
            LockedError: another sweep is alive. SweepError: a run left by one is alive.
        """
        holder = self.lock.holder()
        if holder is not None and holder.stale():
            for name, child in ((holder.data or {}).get("runs") or {}).items():
                child = child if isinstance(child, dict) else {"pid": child}
                if process_alive(child.get("pid"), child.get("start_time")):
                    raise SweepError(f"run {name} is still being trained by pid {child['pid']}, "
                                     f"started by a sweep that was stopped; wait for it or stop "
                                     f"it (kill -INT {child['pid']})")
        return self.lock.acquire({"runs": self.children})

    def record(self, name: str, pid: int | None) -> None:
        """Note that run ``name`` is trained by ``pid`` (None: it no longer is)."""
        if pid is None:
            self.children.pop(name, None)
        else:
            self.children[name] = {"pid": int(pid), "start_time": process_start_time(int(pid))}
        self.lock.update({"runs": self.children})

    def release(self) -> None:
        self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
