"""Exceptions the library raises on purpose; the CLI prints their message as ``Error: ...``."""


class MiniresError(Exception):
    """Base class: the message says what was expected and what was found."""


class DataError(MiniresError):
    """A dataset archive or HDF5 file is missing, corrupt, or not in the expected format."""


class ChecksumError(DataError):
    """An archive's checksum differs from the official one."""


class TrainingError(MiniresError):
    """Training cannot go on (for example a NaN or infinite loss)."""
