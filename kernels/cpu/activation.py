"""ReLU on the CPU, compiled by numba and split over the worker threads of :mod:`parallel`,
alone or fused with the addition before it (the join of a residual block).

(A ReLU right after a BatchNorm is fused into the BatchNorm kernels instead: see
:mod:`minires.kernels.cpu.batchnorm`'s ``relu`` flag.)
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minires.kernels.cpu import parallel

__all__ = ["relu_forward", "relu_backward", "add_relu_forward"]

#: Elements below which a split over the workers costs more than it saves.
MIN_PER_WORKER = 1 << 16


def relu_forward_body(x, y):
    """``y = max(x, 0)`` over flat arrays; NaN stays NaN (``v < 0`` is False for it)."""
    for i in range(x.shape[0]):
        v = x[i]
        y[i] = 0 if v < 0 else v


def relu_backward_body(gy, y, gx):
    """``gx = gy`` where ``y > 0``, else 0, over flat arrays."""
    for i in range(y.shape[0]):
        gx[i] = gy[i] if y[i] > 0 else 0


def add_relu_forward_body(a, b, y):
    """``y = max(a + b, 0)`` over flat arrays: one pass instead of an addition and a ReLU."""
    for i in range(y.shape[0]):
        v = a[i] + b[i]
        y[i] = 0 if v < 0 else v


_jit = njit(nogil=True, cache=True)
_relu_forward = _jit(relu_forward_body)
_relu_backward = _jit(relu_backward_body)
_add_relu_forward = _jit(add_relu_forward_body)


def relu_forward(x):
    """``max(x, 0)`` elementwise, same shape and dtype as ``x``."""
    x = np.ascontiguousarray(x)
    flat, y = x.reshape(-1), np.empty_like(x)
    out = y.reshape(-1)
    parallel.run_split(lambda a, b: _relu_forward(flat[a:b], out[a:b]), flat.size,
                       min_per_worker=MIN_PER_WORKER)
    return y


def relu_backward(gy, y):
    """``gy`` where the forward output ``y`` is positive, else 0."""
    y, gy = np.ascontiguousarray(y), np.ascontiguousarray(gy)
    gx = np.empty_like(gy)
    fg, fy, out = gy.reshape(-1), y.reshape(-1), gx.reshape(-1)
    parallel.run_split(lambda a, b: _relu_backward(fg[a:b], fy[a:b], out[a:b]), fy.size,
                       min_per_worker=MIN_PER_WORKER)
    return gx


def add_relu_forward(a, b):
    """``max(a + b, 0)`` for same-shaped ``a`` and ``b`` of one dtype. Its gradient with respect
    to either input is :func:`relu_backward` of the output."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"add_relu needs two arrays of one shape and dtype, got {a.shape} "
                         f"{a.dtype} and {b.shape} {b.dtype}")
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    y = np.empty_like(a)
    fa, fb, out = a.reshape(-1), b.reshape(-1), y.reshape(-1)
    parallel.run_split(lambda lo, hi: _add_relu_forward(fa[lo:hi], fb[lo:hi], out[lo:hi]),
                       out.size, min_per_worker=MIN_PER_WORKER)
    return y
