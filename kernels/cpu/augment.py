"""Numba kernel: gather, pad, crop, flip and normalise a batch of uint8 images in one pass.

The body is plain Python so it can be stepped through in a debugger (call
``crop_flip_normalize_body`` on small arrays); the compiled versions below are what
:func:`crop_flip_normalize` calls. Random numbers never enter the kernel: crop offsets and flip
flags are drawn in NumPy (``minires.data.augment``) and passed in, which keeps the result a pure
function of its arguments and testable against a plain loop.

Geometry: ``images`` is (N, C, H, W) uint8; output ``out`` is (B, C, OH, OW) float32. The image
is conceptually zero-padded by ``pad`` pixels on every side (value 0 in uint8 space, as
torchvision's ``RandomCrop(size, padding=pad)``), an OH x OW window is cut at row ``dy[i]`` and
column ``dx[i]`` of the padded image, mirrored left-right when ``flip[i]``, and normalised as
``x * scale[c] - shift[c]`` with ``scale = 1 / (255 std)`` and ``shift = mean / std``.
"""
from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

__all__ = ["crop_flip_normalize"]


def crop_flip_normalize_body(images, index, dy, dx, flip, pad, scale, shift, out):
    """Fill ``out[i]`` from ``images[index[i]]``; see the module docstring for the geometry.

    Args:
        images: (N, C, H, W) uint8, C-contiguous.
        index: (B,) int64, which image feeds output row i (the gather is fused in).
        dy, dx: (B,) int64 crop origins in padded coordinates, 0 <= dy <= H + 2 pad - OH.
        flip: (B,) bool, mirror the crop horizontally.
        pad: int, zero padding on each side.
        scale, shift: (C,) float32 normalisation constants.
        out: (B, C, OH, OW) float32, written in place.
    """
    B, C, OH, OW = out.shape
    H = images.shape[2]
    W = images.shape[3]
    for i in prange(B):
        n = index[i]
        y0 = dy[i] - pad  # source row of output row 0
        x0 = dx[i] - pad  # source column of crop column 0
        # Crop columns whose source column lies inside the image; the rest is padding.
        lo = max(0, -x0)
        hi = min(OW, W - x0)
        for c in range(C):
            s = scale[c]
            t = shift[c]
            fill = -t  # a zero (padding) pixel after normalisation: 0 * s - t
            for y in range(OH):
                sy = y + y0
                if sy < 0 or sy >= H or lo >= hi:
                    for x in range(OW):
                        out[i, c, y, x] = fill
                    continue
                if flip[i]:
                    # Output column x shows crop column OW - 1 - x.
                    for x in range(OW):
                        k = OW - 1 - x
                        if k < lo or k >= hi:
                            out[i, c, y, x] = fill
                        else:
                            out[i, c, y, x] = np.float32(images[n, c, sy, k + x0]) * s - t
                else:
                    for x in range(lo):
                        out[i, c, y, x] = fill
                    for x in range(lo, hi):
                        out[i, c, y, x] = np.float32(images[n, c, sy, x + x0]) * s - t
                    for x in range(hi, OW):
                        out[i, c, y, x] = fill


def _renamed(func, name):
    """A copy of ``func`` under another name. numba names its cache files after the function's
    qualified name and line, so two dispatchers of one function with different options would
    share one cache entry and load each other's machine code."""
    clone = types.FunctionType(func.__code__, func.__globals__, name, func.__defaults__,
                               func.__closure__)
    clone.__qualname__ = name
    clone.__doc__ = func.__doc__
    return clone


# nogil: the loader's prefetch thread runs the serial version while the training thread keeps
# going. The serial version is the loader's default: one thread is already far faster than
# training needs, and it never competes with the training kernels for cores or for numba's
# parallel thread pool.
_parallel = njit(parallel=True, cache=True, nogil=True)(
    _renamed(crop_flip_normalize_body, "crop_flip_normalize_parallel"))
_serial = njit(cache=True, nogil=True)(
    _renamed(crop_flip_normalize_body, "crop_flip_normalize_serial"))


def crop_flip_normalize(images, index, dy, dx, flip, pad: int, scale, shift,
                        parallel: bool = False):
    """Gather ``images[index]`` and augment them: see the module docstring for the geometry.

    Args:
        images: (N, C, H, W) uint8 (made C-contiguous if it is not).
        index: (B,) integer indices into ``images``.
        dy, dx: (B,) crop origins in padded coordinates; flip: (B,) bool.
        pad: zero padding on each side.
        scale, shift: (C,) float32 normalisation constants.
        parallel: run on numba's parallel thread pool (False: one thread, e.g. for a
            background producer).
    Returns:
        (B, C, H, W) float32, C-contiguous.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    index = np.ascontiguousarray(index, dtype=np.int64)
    N, C, H, W = images.shape
    B = index.shape[0]
    if B and (index.min() < 0 or index.max() >= N):
        raise IndexError(f"image index out of range 0..{N - 1}")
    out = np.empty((B, C, H, W), np.float32)
    kernel = _parallel if parallel else _serial
    kernel(images, index, np.ascontiguousarray(dy, np.int64), np.ascontiguousarray(dx, np.int64),
           np.ascontiguousarray(flip, np.bool_), int(pad), np.ascontiguousarray(scale, np.float32),
           np.ascontiguousarray(shift, np.float32), out)
    return out
