"""The array-module layer: NumPy on the CPU, CuPy on an NVIDIA GPU.

Everything above this module writes ``xp = get_array_module(x)`` and calls ``xp.*``, so the same
code runs on both devices. CuPy is imported lazily and only here: importing minires never needs
CuPy or a GPU.
"""
from __future__ import annotations

import functools

import numpy as np

DEVICES = ("auto", "cpu", "cuda")


@functools.cache
def _cupy_or_none():
    """Return the ``cupy`` module when it imports and sees a usable GPU, else ``None``."""
    try:
        import cupy
    except Exception:  # ImportError, or a CUDA library that fails to load
        return None
    try:
        if not cupy.is_available():
            return None
    except Exception:
        return None
    return cupy


def cuda_available() -> bool:
    """True when CuPy imports and a CUDA device is usable."""
    return _cupy_or_none() is not None


def get_cupy():
    """Return the ``cupy`` module, or raise a RuntimeError that says what is missing."""
    cupy = _cupy_or_none()
    if cupy is None:
        raise RuntimeError(
            "the CUDA device needs CuPy and a usable NVIDIA GPU; install minires[cuda12] or "
            "minires[cuda13] on a machine with a GPU, or use device 'cpu'")
    return cupy


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array (or a Tensor holding one), else ``numpy``."""
    for a in arrays:
        if is_cuda_array(a):
            return _cupy_or_none() or np
    return np


def _is_cupy_object(a) -> bool:
    return type(a).__module__.startswith("cupy")


def is_cuda_array(a) -> bool:
    """True for a CuPy array, or a Tensor holding one."""
    if isinstance(a, np.ndarray) or _is_cupy_object(a):
        return _is_cupy_object(a)
    # A Tensor keeps its array in .data; only look there for objects that are not arrays
    # themselves (an ndarray's own .data is its raw buffer).
    return _is_cupy_object(getattr(a, "data", None))


def resolve_device(device: str) -> str:
    """Map ``auto|cpu|cuda`` to ``cpu`` or ``cuda``.

    ``auto`` picks ``cuda`` only when CuPy imports *and* reports a usable device; an explicit
    ``cuda`` without one is an error rather than a silent fall-back to the CPU.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda":
        get_cupy()  # raises with a clear message when unusable
    return device


def xp_for(device: str):
    """The array module for a resolved device name."""
    return get_cupy() if resolve_device(device) == "cuda" else np


def to_device(array, device: str):
    """Return ``array`` on ``device`` (``cpu`` or ``cuda``), copying only when it must move."""
    if resolve_device(device) == "cuda":
        return get_cupy().asarray(array)
    if is_cuda_array(array):
        return array.get()
    return np.asarray(array)


def to_numpy(array) -> np.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    return array.get() if is_cuda_array(array) else np.asarray(array)
