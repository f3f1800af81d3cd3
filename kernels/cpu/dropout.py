"""Dropout on the CPU, compiled by numba: the same counter-based masks as the CUDA kernels
(the hash is defined in :mod:`minires.kernels.interface`), so a run's masks do not depend on
the device, and the CPU is the GPU kernels' exact reference.

A mask is never stored: the backward pass recomputes it from the saved ``[key, call]`` stream.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minires.kernels.cpu import parallel
from minires.kernels.interface import (GOLDEN, MIX1, MIX2, DropoutSaved, check_dropout_state,
                                       dropout_scale, dropout_threshold)

__all__ = ["dropout_forward", "dropout_backward"]

#: Elements below which a split over the workers costs more than it saves.
MIN_PER_WORKER = 1 << 16

# numba types a bare Python int as int64, and int64 mixed with uint64 as float64: every constant
# of the hash is a uint64, so that all of its arithmetic wraps modulo 2^64 as in CUDA C.
_GOLDEN, _MIX1, _MIX2 = np.uint64(GOLDEN), np.uint64(MIX1), np.uint64(MIX2)
_S27, _S30, _S31, _S33 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(33)
_ONE = np.uint64(1)


def mix64_body(z):
    """SplitMix64's finaliser on a uint64 (see dropout.cu's ``mix64``)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


_mix64 = njit(nogil=True, cache=True)(mix64_body)


def stream_base_body(key, call):
    """The start of call ``call``'s stream: ``mix64(key ^ mix64(call))``."""
    return _mix64(np.uint64(key) ^ _mix64(np.uint64(call)))


_stream_base = njit(nogil=True, cache=True)(stream_base_body)


def dropout_body(x, y, base, threshold, scale, start):
    """``y[j] = x[j] * scale`` where element ``start + j`` of the stream at ``base`` is kept,
    else 0, over flat arrays (``start``: where this slice begins in the whole array)."""
    for j in range(x.shape[0]):
        bits = _mix64(base + (np.uint64(start + j) + _ONE) * _GOLDEN)
        y[j] = x[j] * scale if np.int64(bits >> _S33) >= threshold else 0


_dropout = njit(nogil=True, cache=True)(dropout_body)


def _apply(x, stream, p):
    """``x`` masked by the stream ``[key, call]`` and scaled."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    flat, out = x.reshape(-1), y.reshape(-1)
    # numba hands a uint64 back as a Python int, which it would read back as an int64
    base = np.uint64(_stream_base(int(stream[0]), int(stream[1])))
    threshold, scale = dropout_threshold(p), x.dtype.type(dropout_scale(p))
    parallel.run_split(lambda a, b: _dropout(flat[a:b], out[a:b], base, threshold, scale, a),
                       flat.size, min_per_worker=MIN_PER_WORKER)
    return y


def dropout_forward(x, p, state):
    """Zero each element of ``x`` (any shape) with probability ``p`` and scale the others by
    ``1 / (1 - p)``; advances ``state`` (int64 ``[key, calls]``) by one call.

    Returns:
        ``(y, saved)``: ``y`` shaped like ``x``, ``saved`` a :class:`DropoutSaved`.
    """
    check_dropout_state(state)
    stream = state.copy()
    state[1] += 1
    return _apply(x, stream, p), DropoutSaved(stream, float(p))


def dropout_backward(gy, saved: DropoutSaved):
    """``gy`` masked and scaled as the forward pass masked and scaled its input."""
    return _apply(gy, saved.stream, saved.p)
