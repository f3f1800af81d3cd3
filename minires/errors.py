"""Exceptions the library raises on purpose; the CLI prints their message as ``Error: ...``."""
from __future__ import annotations


class MiniresError(Exception):
    """Base class: the message says what was expected and what was found."""


class DataError(MiniresError):
    """A dataset archive or HDF5 file is missing, corrupt, or not in the expected format."""


class ChecksumError(DataError):
    """An archive's checksum differs from the official one."""


class TrainingError(MiniresError):
    """Training cannot go on (for example a NaN or infinite loss)."""


class ConfigError(MiniresError, ValueError):
    """A setting of a run is out of range. ``name`` is the setting (a ``TrainConfig`` field), or
    None when several settings do not fit together."""

    def __init__(self, name: str | None, message: str):
        super().__init__(message)
        self.name = name


class LockedError(MiniresError):
    """A folder is in use by another minires process (its lock file names the owner)."""


class DeviceError(MiniresError, RuntimeError):
    """The device asked for cannot be used here (for example ``cuda`` without CuPy or a GPU)."""


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP, SIGINT) turned into an exception, so that it unwinds the
    program exactly as Ctrl-C does: files being written are discarded, a run saves its last
    completed epoch. ``signum`` is the signal; a program stopped by it exits ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)
