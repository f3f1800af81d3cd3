"""Softmax cross-entropy on the CPU, in NumPy (an ``(N, K)`` problem this small gains nothing
from a compiled kernel).

The forward pass returns, with the mean loss, ``log_z (N,)``, the log of each row's partition
function, in float64 whatever the logits' dtype; the backward pass recomputes the probabilities
``exp(logits - log_z)`` from it, as the CUDA kernels do, instead of keeping an ``(N, K)``
matrix. Both passes compute in float64 and round once: a float32 ``log_z`` near 1000 is only
good to about 3e-5, and ``exp(logits - log_z)`` would carry that error into every probability.
"""
from __future__ import annotations

import numpy as np

__all__ = ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward"]


def softmax_cross_entropy_forward(logits, labels):
    """Mean over rows of ``-log softmax(logits)[label]`` for ``logits (N, K)``, ``labels (N,)``.

    Labels are checked here (on the CPU this costs nothing): ValueError unless they are
    integers in ``[0, K)``.

    Returns:
        ``(loss, log_z)``: a 0-d array of logits' dtype and the ``(N,)`` float64 log-partition
        values that :func:`softmax_cross_entropy_backward` needs.
    """
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, K), got {logits.shape}")
    N, K = logits.shape
    if labels.shape != (N,):
        raise ValueError(f"softmax_cross_entropy: labels must be shaped ({N},), got "
                         f"{labels.shape}")
    if labels.dtype.kind not in "iu" or int(labels.min()) < 0 or int(labels.max()) >= K:
        raise ValueError(f"softmax_cross_entropy: labels must be integers in [0, {K})")
    z = logits.astype(np.float64, copy=False)
    row_max = z.max(axis=1, keepdims=True)  # subtracted before exp, against overflow
    log_z = (row_max + np.log(np.exp(z - row_max).sum(axis=1, keepdims=True))).reshape(N)
    loss = (log_z - z[np.arange(N), labels]).mean()
    return np.asarray(loss, dtype=logits.dtype), log_z


def softmax_cross_entropy_backward(gy, logits, labels, log_z):
    """Gradient of the mean loss with respect to ``logits (N, K)``: ``(softmax - onehot) * gy/N``
    for the upstream scalar ``gy``."""
    N = logits.shape[0]
    g = np.exp(logits.astype(np.float64, copy=False) - log_z[:, None])
    g[np.arange(N), labels] -= 1
    g *= np.float64(gy) / N
    return g.astype(logits.dtype, copy=False)
