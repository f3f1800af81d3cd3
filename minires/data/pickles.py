"""Reading the pickled batches of CIFAR and of the older downsampled-ImageNet zips, safely.

Those batches are dicts of NumPy arrays, lists, numbers and strings, written by Python 2
(``str`` keys) or Python 3. Unpickling runs whatever a pickle names, so the unpickler here
resolves only the handful of NumPy reconstruction functions such batches need and refuses
anything else with a :class:`~minires.errors.DataError`.
"""
from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

from minires.errors import DataError

try:  # NumPy >= 2 keeps the internals in numpy._core; old pickles still name numpy.core.
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

PICKLE_MAGIC = b"\x80"          # protocol 2+ pickles start with PROTO (0x80) and a version byte
ZIP_MAGIC = b"PK\x03\x04"       # .npz files (and .zip archives) are zip files

_ALLOWED = {
    ("multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("multiarray", "scalar"): _multiarray.scalar,
    ("numeric", "_frombuffer"): getattr(_numeric, "_frombuffer", None),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 protocol-2 pickles store bytes
}


def _lookup(module: str, name: str):
    """The allowed object for ``module.name`` or None; numpy.core and numpy._core both map."""
    if module in ("numpy", "_codecs"):
        return _ALLOWED.get((module, name))
    for prefix in ("numpy.core.", "numpy._core."):
        if module.startswith(prefix):
            return _ALLOWED.get((module[len(prefix):], name))
    return None


class _Refused(Exception):
    """The pickle names something a dataset batch never holds."""


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        obj = _lookup(module, name)
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj


def describe_magic(head: bytes) -> str:
    """Name the kind of file whose first bytes are ``head`` (for error messages)."""
    if head.startswith(ZIP_MAGIC):
        return "a zip file (an .npz or .zip archive)"
    if head.startswith(PICKLE_MAGIC) and len(head) > 1:
        return f"a Python pickle (protocol {head[1]})"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if not head:
        return "an empty file"
    return f"an unknown format (first bytes {head[:8]!r})"


def load_batch_pickle(payload: bytes, what: str) -> dict:
    """Unpickle one batch and return it as a dict with ``str`` keys.

    Args:
        payload: the pickle's bytes.
        what: how to name the batch in error messages (a path or archive member).
    Raises:
        DataError: not a pickle, truncated or corrupt, unsafe content, or not a dict.
    """
    if not payload.startswith(PICKLE_MAGIC):
        raise DataError(f"{what} is {describe_magic(payload[:8])}, expected a pickled batch "
                        "(a Python pickle, starting with bytes 80 02)")
    try:
        # encoding="bytes": Python 2 str (keys, raw array buffers) come back as bytes, which
        # NumPy needs for the array buffers; keys are decoded below.
        obj = _BatchUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except _Refused as refused:
        raise DataError(f"refusing to unpickle {what}: it would call {refused}, and a dataset "
                        "batch holds only NumPy arrays, lists, numbers and strings (nothing of "
                        "it was run; the file is not the official one)") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... from damaged data
        raise DataError(f"{what} is a truncated or corrupt pickle ({type(exc).__name__}: {exc})"
                        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{what} holds a pickled {type(obj).__name__}, expected a dict of "
                        "arrays (keys such as 'data' and 'labels')")
    return {_as_str(k): v for k, v in obj.items()}


def _as_str(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def as_str_list(values, what: str) -> list[str]:
    """Decode a list of Python-2 strings (bytes) or str to a list of str."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise DataError(f"{what} should be a list of names, found {type(values).__name__}")
    return [_as_str(v).strip() if isinstance(v, (bytes, str)) else str(v) for v in values]
