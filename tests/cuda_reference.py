"""NumPy references for the CUDA kernels: same names, arguments and results as the wrappers in
:mod:`minires.kernels.cuda`, written for clarity rather than speed.

The emulator and GPU tests check each kernel against its reference here; the CPU tests check
each reference against the library's own CPU path (the numba kernels, ``minires.functions``,
``torch.optim.SGD``), so a kernel that passes agrees with what training on the CPU computes.
"""
from __future__ import annotations

import numpy as np

from minires.kernels.interface import (GOLDEN, MIX1, MIX2, BatchNormSaved, DropoutSaved,
                                       conv_output_size, dropout_scale, dropout_threshold)


def im2col(x, KH, KW, SH, SW, PH, PW):
    """``x (N, C, H, W)`` -> ``col (N, C, KH, KW, OH, OW)`` with zeros in the padding."""
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    padded = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    col = np.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            col[:, :, kh, kw] = padded[:, :, kh:kh + SH * (OH - 1) + 1:SH,
                                       kw:kw + SW * (OW - 1) + 1:SW]
    return col


def col2im(col, H, W, SH, SW, PH, PW):
    """Adjoint of :func:`im2col`; adds in (kh, kw) order per pixel, as the kernel does."""
    N, C, KH, KW, OH, OW = col.shape
    padded = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=col.dtype)
    for kh in range(KH):
        for kw in range(KW):
            padded[:, :, kh:kh + SH * (OH - 1) + 1:SH, kw:kw + SW * (OW - 1) + 1:SW] += \
                col[:, :, kh, kw]
    return np.ascontiguousarray(padded[:, :, PH:PH + H, PW:PW + W])


def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(gy, y):
    return np.where(y > 0, gy, 0).astype(y.dtype)


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                       eps=1e-5, relu=False):
    """Returns ``(y, saved)``; updates ``running_mean``/``running_var`` in place in training.

    Statistics are computed in float64 (as the kernel accumulates) and rounded to x's dtype."""
    dtype = x.dtype
    C = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, C) + (1,) * (x.ndim - 2)
    x64 = x.astype(np.float64)
    if training:
        mean = x64.mean(axis=axes)
        var = x64.var(axis=axes)
        count = x.size // C
        if running_mean is not None and running_var is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = ((1 - momentum) * running_var
                                + momentum * var * count / max(count - 1, 1))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        mean = np.asarray(running_mean, np.float64)
        var = np.asarray(running_var, np.float64)
    inv_std = 1 / np.sqrt(var + eps)
    y = ((x64 - mean.reshape(bshape)) * (gamma.astype(np.float64) * inv_std).reshape(bshape)
         + beta.reshape(bshape)).astype(dtype)
    if relu:
        y = np.maximum(y, 0)
    saved = BatchNormSaved(x, y if relu else None, gamma, mean.astype(dtype),
                           inv_std.astype(dtype), bool(training), bool(relu))
    return y, saved


def batch_norm_backward(gy, saved: BatchNormSaved, need_gx=True):
    """Returns ``(gx or None, ggamma, gbeta)``; see batchnorm.cu for the formulas."""
    x = saved.x
    C = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, C) + (1,) * (x.ndim - 2)
    g = gy.astype(np.float64)
    if saved.relu:
        g = np.where(saved.y > 0, g, 0.0)
    mean = saved.mean.astype(np.float64).reshape(bshape)
    inv_std = saved.inv_std.astype(np.float64).reshape(bshape)
    xhat = (x.astype(np.float64) - mean) * inv_std
    gbeta = g.sum(axis=axes)
    ggamma = (g * xhat).sum(axis=axes)
    gx = None
    if need_gx:
        scale = saved.gamma.astype(np.float64).reshape(bshape) * inv_std
        if saved.training:
            count = x.size // C
            gx = scale * (g - (gbeta.reshape(bshape) + xhat * ggamma.reshape(bshape)) / count)
        else:
            gx = scale * g
        gx = gx.astype(x.dtype)
    return gx, ggamma.astype(x.dtype), gbeta.astype(x.dtype)


def softmax_cross_entropy_forward(logits, labels):
    """Returns ``(mean loss as a 0-d array, log_z (N,) in float64)``, both computed in float64;
    out-of-range labels give NaN."""
    z = logits.astype(np.float64)
    N, K = z.shape
    m = z.max(axis=1)
    log_z = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    valid = (labels >= 0) & (labels < K)
    picked = z[np.arange(N), np.where(valid, labels, 0)]
    losses = np.where(valid, log_z - picked, np.nan)
    return np.asarray(losses.mean(), dtype=logits.dtype), log_z


def softmax_cross_entropy_backward(gy, logits, labels, log_z):
    """``(softmax - onehot) * gy / N`` for ``logits (N, K)``, in float64, rounded once."""
    N = logits.shape[0]
    p = np.exp(logits.astype(np.float64) - np.asarray(log_z, np.float64)[:, None])
    p[np.arange(N), labels] -= 1
    return (p * (float(gy) / N)).astype(logits.dtype)


_U64 = 2**64 - 1


def _mix64(z: int) -> int:
    """SplitMix64's finaliser, in Python ints (no NumPy wrap-around rules involved)."""
    z = ((z ^ (z >> 30)) * MIX1) & _U64
    z = ((z ^ (z >> 27)) * MIX2) & _U64
    return z ^ (z >> 31)


def dropout_bits(key: int, call: int, n: int) -> np.ndarray:
    """The 31 random bits of each of ``n`` elements in call ``call`` of the layer ``key``, in
    Python ints, one element at a time, straight from the definition in kernels/interface.py
    (an element is kept when its bits are at least the threshold)."""
    base = _mix64((key & _U64) ^ _mix64(call))
    return np.array([_mix64((base + (i + 1) * GOLDEN) & _U64) >> 33 for i in range(n)],
                    dtype=np.int64)


def dropout_forward(x, p, state):
    """Returns ``(y, saved)``; advances ``state`` (``[key, calls]``) by one call."""
    stream = np.array(state, dtype=np.int64)
    state[1] += 1
    return dropout_backward(x, DropoutSaved(stream, p)), DropoutSaved(stream, p)


def dropout_backward(gy, saved):
    """``gy * scale`` where the saved stream keeps an element, else 0."""
    bits = dropout_bits(int(saved.stream[0]), int(saved.stream[1]), gy.size)
    keep = (bits >= dropout_threshold(saved.p)).reshape(gy.shape)
    return np.where(keep, gy * gy.dtype.type(dropout_scale(saved.p)), 0).astype(gy.dtype)


def sgd_step(params, grads, velocities, lr, momentum, weight_decays, nesterov):
    """In-place SGD step on every array of ``params`` (and ``velocities``, zero before the first
    step), PyTorch's semantics."""
    for i, (param, grad) in enumerate(zip(params, grads)):
        d = grad + weight_decays[i] * param
        if momentum != 0:
            velocities[i][...] = momentum * velocities[i] + d
            d = d + momentum * velocities[i] if nesterov else velocities[i]
        param -= (lr * d).astype(param.dtype)


def conv2d_forward(x, W, SH, SW, PH, PW):
    """Cross-correlation ``y (N, OC, OH, OW)`` through the patch matrix, in float64."""
    OC, C, KH, KW = W.shape
    col = im2col(x.astype(np.float64), KH, KW, SH, SW, PH, PW)  # (N, C, KH, KW, OH, OW)
    return np.einsum("ockl,nckluv->nouv", W.astype(np.float64), col).astype(x.dtype)


def conv2d_backward(gy, x, W, SH, SW, PH, PW):
    """``(gx, gW)`` of :func:`conv2d_forward`, in float64 then rounded to x's dtype."""
    OC, C, KH, KW = W.shape
    H, Wd = x.shape[2:]
    col = im2col(x.astype(np.float64), KH, KW, SH, SW, PH, PW)
    g = gy.astype(np.float64)
    gW = np.einsum("nouv,nckluv->ockl", g, col)
    gcol = np.einsum("ockl,nouv->nckluv", W.astype(np.float64), g)
    gx = col2im(gcol, H, Wd, SH, SW, PH, PW)
    return gx.astype(x.dtype), gW.astype(W.dtype)
