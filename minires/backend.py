"""The one place that decides on which device work runs: NumPy and ``minires.kernels.cpu`` on
the CPU, CuPy and ``minires.kernels.cuda`` on an NVIDIA GPU.

A Function asks :func:`kernels_for` once per call for the kernel namespace of its input arrays
and calls ``k.conv2d_forward(...)``, ``k.xp.zeros(...)`` and so on; both namespaces provide the
same functions (``minires.kernels.interface``), so no code above this module tests for a device.

CuPy is optional: importing minires never imports it. It is imported when a device is resolved
(``auto``/``cuda``) or when the CUDA kernels first run.
"""
from __future__ import annotations

import functools

import numpy as np

from minires.errors import DeviceError
from minires.kernels import cpu, cuda

DEVICES = ("auto", "cpu", "cuda")


@functools.cache
def _cupy_or_none():
    """Return the ``cupy`` module when it imports and sees a usable GPU, else ``None``."""
    try:
        import cupy  # optional: only when asked whether a GPU is usable
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
    """Return the ``cupy`` module, or raise a DeviceError that says what is missing."""
    cupy = _cupy_or_none()
    if cupy is None:
        raise DeviceError(
            "the CUDA device needs CuPy and a usable NVIDIA GPU; install minires[cuda12] or "
            "minires[cuda13] on a machine with a GPU, or use device 'cpu'")
    return cupy


def kernels_for(*arrays):
    """The kernel namespace for ``arrays``: ``minires.kernels.cuda`` if any is a CuPy array (or a
    Tensor holding one), else ``minires.kernels.cpu``. Its ``xp`` is the array module."""
    for a in arrays:
        if is_cuda_array(a):
            return cuda
    return cpu


def kernels_for_module(xp):
    """The kernel namespace whose array module is ``xp``: the CPU's for ``numpy``, the GPU's for
    any other (``cupy``, or a stand-in for it in tests)."""
    return cpu if xp is np else cuda


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array (or a Tensor holding one), else ``numpy``."""
    return kernels_for(*arrays).xp


def is_array(value) -> bool:
    """True for a NumPy or CuPy array."""
    return isinstance(value, np.ndarray) or _is_cupy_object(value)


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


def device_of(array) -> str:
    """``"cuda"`` for a CuPy array (or a Tensor holding one), else ``"cpu"``."""
    return kernels_for(array).device


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
