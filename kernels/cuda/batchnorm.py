"""Batch normalisation, optionally fused with ReLU, on the GPU (``batchnorm.cu``).

Training: two kernels each way (per-block partial sums, then the per-channel totals applied),
over several blocks per channel (:func:`~minires.kernels.cuda.launch.per_channel_launch`), so a
16-channel layer keeps a large GPU busy. Evaluation forward: one elementwise kernel.
"""
from __future__ import annotations

import numpy as np

from minires.kernels.cuda.launch import (check_int32, ints, per_channel_launch, planes_launch,
                                         same_dtype, scalar)
from minires.kernels.cuda.loader import cupy, kernel
from minires.kernels.interface import BatchNormSaved

__all__ = ["batch_norm_forward", "batch_norm_backward"]


def _channel_geometry(x):
    if x.ndim < 2:
        raise ValueError(f"batch_norm needs an input (N, C, ...), got shape {x.shape}")
    N, C = x.shape[0], x.shape[1]
    S = 1
    for d in x.shape[2:]:
        S *= d
    check_int32(x.size, "x")
    return N, C, S


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training: bool,
                       momentum: float = 0.1, eps: float = 1e-5, relu: bool = False):
    """Batch normalisation of ``x (N, C)`` or ``(N, C, H, W)`` per channel, followed by ReLU
    when ``relu``.

    Args:
        gamma, beta: ``(C,)`` of x's dtype.
        running_mean, running_var: ``(C,)`` arrays updated in place in training mode, PyTorch's
            way (unbiased variance, weight ``momentum``; both may be None there); the
            statistics that normalise in eval mode.
    Returns:
        ``(y, saved)``: ``y`` shaped like ``x`` and a :class:`BatchNormSaved` for the backward.
    """
    cp = cupy()
    x = cp.ascontiguousarray(x)
    N, C, S = _channel_geometry(x)
    dtype = x.dtype
    gamma, beta = cp.ascontiguousarray(gamma), cp.ascontiguousarray(beta)
    same_dtype(dtype, gamma=gamma, beta=beta)
    y = cp.empty_like(x)
    mean = cp.empty(C, dtype=dtype)
    inv_std = cp.empty(C, dtype=dtype)
    if training:
        update = running_mean is not None and running_var is not None
        # The kernel updates contiguous arrays of x's dtype; anything else gets a scratch copy
        # written back afterwards, so the caller's arrays are always the ones updated.
        rm = _kernel_view(running_mean, dtype) if update else mean
        rv = _kernel_view(running_var, dtype) if update else inv_std
        grid, block, B = per_channel_launch(C, N * S)
        partial = cp.empty(C * B * 2, dtype=np.float64)
        kernel("bn_partial_sums", dtype)(grid, block, (x, partial, *ints(N, C, S, B)))
        kernel("bn_normalize", dtype)(grid, block, (
            x, gamma, beta, partial, y, mean, inv_std, rm, rv, *ints(N, C, S, B),
            scalar(eps, dtype), scalar(momentum, dtype), *ints(update, relu)))
        if update:
            _write_back(rm, running_mean)
            _write_back(rv, running_var)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        rm = cp.ascontiguousarray(running_mean, dtype=dtype)
        rv = cp.ascontiguousarray(running_var, dtype=dtype)
        grid, block = planes_launch(N * C, S)
        kernel("bn_forward_eval", dtype)(grid, block, (
            x, gamma, beta, rm, rv, y, mean, inv_std, *ints(N, C, S), scalar(eps, dtype),
            *ints(relu)))
    saved = BatchNormSaved(x, y if relu else None, gamma, mean, inv_std, bool(training),
                           bool(relu))
    return y, saved


def _kernel_view(a, dtype):
    """``a`` itself when the kernel can update it in place, else a contiguous copy in dtype."""
    if a.dtype == dtype and a.flags.c_contiguous:
        return a
    return cupy().ascontiguousarray(a, dtype=dtype)


def _write_back(scratch, target):
    if scratch is not target:
        target[...] = scratch


def batch_norm_backward(gy, saved: BatchNormSaved, need_gx: bool = True):
    """Gradients ``(gx, ggamma, gbeta)`` of :func:`batch_norm_forward` for the upstream ``gy``
    (shaped like x); ``gx`` is None unless ``need_gx``."""
    cp = cupy()
    x = saved.x
    gy = cp.ascontiguousarray(gy)
    same_dtype(x.dtype, gy=gy)
    N, C, S = _channel_geometry(x)
    ggamma = cp.empty(C, dtype=x.dtype)
    gbeta = cp.empty(C, dtype=x.dtype)
    gx = cp.empty_like(x) if need_gx else ggamma  # any valid pointer when not written
    y = saved.y if saved.relu else x                # read only when relu was fused
    grid, block, B = per_channel_launch(C, N * S)
    partial = cp.empty(C * B * 2, dtype=np.float64)
    kernel("bn_backward_partial_sums", x.dtype)(grid, block, (
        gy, x, y, saved.mean, saved.inv_std, partial, *ints(N, C, S, B, saved.relu)))
    kernel("bn_backward_apply", x.dtype)(grid, block, (
        gy, x, y, saved.gamma, saved.mean, saved.inv_std, partial, gx, ggamma, gbeta,
        *ints(N, C, S, B, saved.training, saved.relu, need_gx)))
    return (gx if need_gx else None), ggamma, gbeta
