"""Softmax cross-entropy on the GPU (``softmax_ce.cu``): one launch forward (the mean loss
included), one backward.

Labels are not range-checked on the host (that would synchronise every step): a label outside
``[0, K)`` makes its row's loss, hence the mean, NaN, and its row's gradient NaN.
"""
from __future__ import annotations

import numpy as np

from minires.kernels.cuda.launch import check_int32, elementwise_launch, ints
from minires.kernels.cuda.loader import cupy, kernel

__all__ = ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward"]


def forward_launch(N: int) -> tuple:
    """``(grid, block)`` of the forward kernel: one block with a warp per row, up to 32 warps
    (more rows than warps: each warp takes several)."""
    return (1,), (32 * min(32, max(1, N)),)


def _labels_int64(labels, N: int):
    cp = cupy()
    labels = cp.asarray(labels)
    if labels.shape != (N,):
        raise ValueError(f"softmax_cross_entropy: labels must be shaped ({N},), got "
                         f"{labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy: labels must be integers, got {labels.dtype}")
    return cp.ascontiguousarray(labels, dtype=np.int64)


def softmax_cross_entropy_forward(logits, labels):
    """Mean over rows of ``-log softmax(logits)[label]`` for ``logits (N, K)``, ``labels (N,)``.

    Returns:
        ``(loss, log_z)``: a 0-d array of logits' dtype and the ``(N,)`` float64 log-partition
        values that :func:`softmax_cross_entropy_backward` needs.
    """
    cp = cupy()
    logits = cp.ascontiguousarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, K), got {logits.shape}")
    N, K = logits.shape
    check_int32(logits.size, "logits")
    labels = _labels_int64(labels, N)
    loss = cp.empty((), dtype=logits.dtype)
    log_z = cp.empty(N, dtype=np.float64)
    grid, block = forward_launch(N)
    kernel("softmax_ce_forward", logits.dtype)(grid, block, (
        logits, labels, loss, log_z, *ints(N, K)))
    return loss, log_z


def softmax_cross_entropy_backward(gy, logits, labels, log_z):
    """Gradient of the mean loss with respect to ``logits (N, K)``: ``(softmax - onehot) * gy/N``
    for the upstream scalar ``gy``, which may be a device array: it is read on the device."""
    cp = cupy()
    logits = cp.ascontiguousarray(logits)
    N, K = logits.shape
    labels = _labels_int64(labels, N)
    gy = cp.ascontiguousarray(cp.asarray(gy, dtype=logits.dtype).reshape(1))
    gx = cp.empty_like(logits)
    grid, block = elementwise_launch(logits.size)
    kernel("softmax_ce_backward", logits.dtype)(grid, block, (
        logits, labels, cp.ascontiguousarray(log_z, dtype=np.float64), gy, gx, *ints(N, K)))
    return gx
