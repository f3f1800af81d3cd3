"""Batch normalisation (optionally followed by ReLU) on the CPU, compiled by numba.

Arrays are viewed as ``x3 (N, C, P)`` with ``P = H*W`` (1 for a 2-D input). The work is split
over channels between the worker threads of :mod:`parallel` (one channel's values are one
independent problem), and each kernel makes as few passes over memory as the maths allows:

* forward, training: the sum and the sum of squares in one pass (float64 accumulators, so
  ``E[x^2] - E[x]^2`` loses nothing that matters for float32 data), then
  ``y = x*scale + shift`` (with ``scale = gamma*inv_std``, ``shift = beta - mean*scale``) and the
  optional ReLU in the same write pass. Nothing but the per-channel ``mean`` and ``inv_std`` is
  saved: the backward pass recomputes ``xhat`` from ``x`` instead of storing it;
* backward: one pass for ``sum(g)`` and ``sum(g*xhat)`` per channel (``g`` is ``gy`` masked by
  ``y > 0`` when the ReLU is fused), and one pass writing ``gx``.

Each kernel is a plain Python function (``*_body``) compiled with ``nogil=True``; each works
for float32 and float64.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minires.kernels.cpu import parallel
from minires.kernels.interface import BatchNormSaved

__all__ = ["batch_norm_forward", "batch_norm_backward"]


# Inner loops index 1-D row views with bare ``range`` variables: numba then needs no negative-
# index test per element and LLVM vectorises them (see minires.kernels.cpu.conv).


def bn_forward_body(x3, c0, c1, gamma, beta, mean, var, inv_std, training, eps, relu, y3):
    """Normalise channels ``c0:c1`` of ``x3`` into ``y3``. In training mode the batch mean,
    biased variance and ``1/sqrt(var + eps)`` are written to ``mean``, ``var`` and ``inv_std``;
    otherwise ``mean`` and ``inv_std`` are read."""
    N, _, P = x3.shape
    count = N * P
    for c in range(c0, c1):
        if training:
            # Sum and sum of squares in one pass, in float64 (no cancellation to speak of for
            # activations, and a pass over memory fewer than mean-then-variance).
            s = 0.0
            s2 = 0.0
            for n in range(N):
                row = x3[n, c]
                for p in range(P):
                    v = np.float64(row[p])
                    s += v
                    s2 += v * v
            m = s / count
            v = max(s2 / count - m * m, 0.0)
            mean[c] = m
            var[c] = v
            inv_std[c] = 1.0 / np.sqrt(v + eps)
        scale = gamma[c] * inv_std[c]
        shift = beta[c] - mean[c] * scale
        for n in range(N):
            row = x3[n, c]
            out = y3[n, c]
            for p in range(P):
                v = row[p] * scale + shift
                if relu and v < 0:  # not max(v, 0): a NaN must come through, as in torch
                    v = 0
                out[p] = v


def bn_backward_body(x3, y3, gy3, c0, c1, gamma, mean, inv_std, training, relu, need_gx,
                     gx3, ggamma, gbeta):
    """Gradients of channels ``c0:c1``: ``ggamma = sum(g*xhat)``, ``gbeta = sum(g)`` and, when
    ``need_gx``, ``gx3``. ``g`` is ``gy3``, masked by ``y3 > 0`` when ``relu``."""
    N, _, P = x3.shape
    count = N * P
    coef = np.empty(3, dtype=gx3.dtype)  # float64 sums, but the per-value pass in x's dtype
    for c in range(c0, c1):
        m, s = mean[c], inv_std[c]
        sum_g = 0.0
        sum_gx = 0.0
        for n in range(N):
            xrow, yrow, grow = x3[n, c], y3[n, c], gy3[n, c]
            for p in range(P):
                g = grow[p]
                if relu:
                    g = g if yrow[p] > 0 else 0
                sum_g += g
                sum_gx += g * (xrow[p] - m)
        sum_gx *= s  # sum(g * xhat)
        ggamma[c] = sum_gx
        gbeta[c] = sum_g
        if not need_gx:
            continue
        scale = gamma[c] * s
        if training:
            # The batch statistics depend on x: subtract the mean gradient and the component
            # along xhat (the standard closed form).
            a = sum_g / count
            b = sum_gx / count
        else:
            a = 0.0
            b = 0.0
        # gx = scale * (g - a - xhat * b) with xhat = (x - m) * s, as one multiply-add per value
        coef[0] = scale
        coef[1] = scale * s * b
        coef[2] = -scale * a + scale * s * b * m
        k, k1, k0 = coef[0], coef[1], coef[2]
        for n in range(N):
            xrow, yrow, grow, out = x3[n, c], y3[n, c], gy3[n, c], gx3[n, c]
            for p in range(P):
                g = grow[p]
                if relu:
                    g = g if yrow[p] > 0 else 0
                out[p] = k * g - k1 * xrow[p] + k0


# reassoc lets LLVM vectorise the sums (several partial accumulators); nothing else is relaxed.
_jit = njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
_bn_forward = _jit(bn_forward_body)
_bn_backward = _jit(bn_backward_body)


def _as3(x):
    x = np.ascontiguousarray(x)
    return x.reshape(x.shape[0], x.shape[1], -1)


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training: bool,
                       momentum: float = 0.1, eps: float = 1e-5, relu: bool = False):
    """Batch normalisation of ``x (N, C)`` or ``(N, C, H, W)`` per channel, followed by ReLU
    when ``relu``.

    Args:
        gamma, beta: ``(C,)``.
        running_mean, running_var: ``(C,)`` arrays updated in place in training mode, PyTorch's
            way (unbiased variance, weight ``momentum``; both may be None there); the
            statistics that normalise in eval mode.
    Returns:
        ``(y, saved)``: ``y`` shaped like ``x`` and a :class:`BatchNormSaved` for the backward.
    """
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    x3 = _as3(x)
    N, C, P = x3.shape
    dtype = x3.dtype
    gamma = np.ascontiguousarray(gamma, dtype=dtype)
    beta = np.ascontiguousarray(beta, dtype=dtype)
    var = np.empty(C, np.float64)
    if training:
        mean, inv_std = np.empty(C, dtype), np.empty(C, dtype)
    else:
        mean = np.ascontiguousarray(running_mean, dtype=dtype)
        inv_std = (1 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)).astype(dtype)
    y3 = np.empty_like(x3)

    def task(c0, c1):
        _bn_forward(x3, c0, c1, gamma, beta, mean, var, inv_std, training, eps, relu, y3)

    parallel.run_split(task, C)
    if training and running_mean is not None:
        count = N * P
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (count / max(count - 1, 1))  # unbiased
    y = y3.reshape(x.shape)
    return y, BatchNormSaved(x, y if relu else None, gamma, mean, inv_std, bool(training),
                             bool(relu))


def batch_norm_backward(gy, saved: BatchNormSaved, need_gx: bool = True):
    """Gradients ``(gx, ggamma, gbeta)`` of :func:`batch_norm_forward` for the upstream ``gy``
    (shaped like x); ``gx`` is None unless ``need_gx``."""
    x3, gy3 = _as3(saved.x), _as3(gy)
    y3 = _as3(saved.y) if saved.relu else gy3  # read only when relu was fused
    N, C, P = x3.shape
    dtype = x3.dtype
    gx3 = np.empty_like(x3) if need_gx else x3  # x3 is never written when not need_gx
    ggamma, gbeta = np.empty(C, dtype), np.empty(C, dtype)

    def task(c0, c1):
        _bn_backward(x3, y3, gy3, c0, c1, saved.gamma, saved.mean, saved.inv_std,
                     saved.training, saved.relu, need_gx, gx3, ggamma, gbeta)

    parallel.run_split(task, C)
    return (gx3.reshape(saved.x.shape) if need_gx else None), ggamma, gbeta
