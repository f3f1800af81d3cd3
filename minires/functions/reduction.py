"""Reductions: sum and mean over axes."""
from __future__ import annotations

from minires.autograd import Function


def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return tuple(a % ndim for a in axes)


class Sum(Function):
    """Sum over ``axis`` (None: all axes); ``scale`` multiplies the result (mean uses 1/n)."""

    def __init__(self, axis=None, keepdims=False, scale=None):
        self.axis, self.keepdims, self.scale = axis, keepdims, scale

    def forward(self, x):
        self.x_shape = x.shape
        self.axes = _normalize_axes(self.axis, x.ndim)
        y = x.sum(axis=self.axes, keepdims=self.keepdims)
        if self.scale is not None:
            y = y * x.dtype.type(self.scale)
        return y

    def backward(self, gy):
        xp = self.k.xp
        if not self.keepdims:
            gy = xp.expand_dims(gy, self.axes)
        if self.scale is not None:
            gy = gy * gy.dtype.type(self.scale)
        # A contiguous copy, not a broadcast view: later ops may need a writable array.
        return xp.ascontiguousarray(xp.broadcast_to(gy, self.x_shape))


def sum(x, axis=None, keepdims=False):  # noqa: A001 - mirrors numpy's name
    """Sum of ``x`` over ``axis`` (an int, a tuple, or None for all axes)."""
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    """Mean of ``x`` over ``axis`` (an int, a tuple, or None for all axes)."""
    axes = _normalize_axes(axis, x.ndim)
    count = 1
    for a in axes:
        count *= x.shape[a]
    return Sum(axis, keepdims, scale=1.0 / count)(x)
