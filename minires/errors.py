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
