"""Dropout on the GPU (``dropout.cu``): the mask comes from a counter-based hash computed in the
kernel (:mod:`minires.kernels.interface` defines it), so no random numbers are drawn on the host
and nothing is copied to the device; the CPU kernels compute the very same masks.

Forward: one kernel, then ``state[1] += 1`` on the device (one small CuPy kernel), so the next
call draws a new mask. Backward: one kernel that recomputes the mask from the saved stream.
"""
from __future__ import annotations

import numpy as np

from minires.kernels.cuda.launch import check_int32, elementwise_launch, ints, scalar
from minires.kernels.cuda.loader import cupy, kernel
from minires.kernels.interface import (DropoutSaved, check_dropout_state, dropout_scale,
                                       dropout_threshold)

__all__ = ["dropout_forward", "dropout_backward"]


def dropout_forward(x, p, state):
    """Zero each element of ``x`` (any shape) with probability ``p`` and scale the others by
    ``1 / (1 - p)``; advances ``state`` (int64 ``[key, calls]`` on the device) by one call.

    Returns:
        ``(y, saved)``: ``y`` shaped like ``x``, ``saved`` a :class:`DropoutSaved`.
    """
    cp = cupy()
    check_dropout_state(state)
    threshold = dropout_threshold(p)
    x = cp.ascontiguousarray(x)
    y = cp.empty_like(x)
    stream = cp.empty(2, dtype=np.int64)
    grid, block = elementwise_launch(check_int32(x.size))
    kernel("dropout_forward", x.dtype)(grid, block, (
        x, state, stream, y, *ints(threshold), scalar(dropout_scale(p), x.dtype),
        *ints(x.size)))
    state[1:] += 1
    return y, DropoutSaved(stream, float(p))


def dropout_backward(gy, saved: DropoutSaved):
    """``gy`` masked and scaled as the forward pass masked and scaled its input."""
    cp = cupy()
    gy = cp.ascontiguousarray(gy)
    gx = cp.empty_like(gy)
    grid, block = elementwise_launch(check_int32(gy.size))
    kernel("dropout_backward", gy.dtype)(grid, block, (
        gy, saved.stream, gx, *ints(dropout_threshold(saved.p)),
        scalar(dropout_scale(saved.p), gy.dtype), *ints(gy.size)))
    return gx
