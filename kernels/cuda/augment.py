"""Crop, flip and normalise a batch of uint8 images on the GPU, as CuPy array code.

A handful of gathers and elementwise operations over a batch of small images: fast enough on a
GPU that a hand-written kernel would buy little. :func:`crop_flip_normalize_array_code` is
written against an array module ``xp``, so the tests run the very same code on NumPy and check
it against the numba kernel and a plain loop.
"""
from __future__ import annotations

from minires.kernels.cuda.loader import cupy

__all__ = ["crop_flip_normalize"]


def crop_flip_normalize(images, index, dy, dx, flip, pad: int, scale, shift,
                        parallel: bool = False):
    """Gather ``images[index]`` and augment them on the device.

    Args:
        images: (N, C, H, W) uint8 on the device.
        index: (B,) integer indices into ``images``.
        dy, dx: (B,) crop origins in padded coordinates; flip: (B,) bool.
        pad: zero padding on each side.
        scale, shift: (C,) float32 normalisation constants (``x * scale - shift``).
        parallel: ignored (it chooses a CPU thread pool); kept for the common signature.
    Returns:
        (B, C, H, W) float32, C-contiguous, on the device.
    """
    cp = cupy()
    batch = images[cp.asarray(index)]
    return crop_flip_normalize_array_code(cp, batch, dy, dx, flip, pad, scale, shift)


def crop_flip_normalize_array_code(xp, batch, dy, dx, flip, pad: int, scale, shift):
    """Augment every image of ``batch (B, C, H, W)`` uint8 with array module ``xp``: zero-pad
    by ``pad``, cut the window at ``(dy[i], dx[i])``, mirror it when ``flip[i]``, normalise.
    Returns (B, C, H, W) float32, C-contiguous."""
    B, C, H, W = batch.shape
    padded = xp.pad(batch, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else batch
    dy = xp.asarray(dy).reshape(B, 1)
    dx = xp.asarray(dx).reshape(B, 1)
    flip = xp.asarray(flip).reshape(B, 1)
    rows = dy + xp.arange(H).reshape(1, H)                       # (B, H) rows of the padded image
    cols_in_crop = xp.where(flip, xp.arange(W - 1, -1, -1), xp.arange(W))  # (B, W)
    cols = dx + cols_in_crop                                     # (B, W)
    crop = padded[xp.arange(B).reshape(B, 1, 1, 1), xp.arange(C).reshape(1, C, 1, 1),
                  rows.reshape(B, 1, H, 1), cols.reshape(B, 1, 1, W)]
    scale = xp.asarray(scale, dtype=xp.float32).reshape(1, C, 1, 1)
    shift = xp.asarray(shift, dtype=xp.float32).reshape(1, C, 1, 1)
    return xp.ascontiguousarray(crop.astype(xp.float32) * scale - shift)
