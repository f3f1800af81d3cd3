"""im2col and col2im on the CPU, compiled by numba.

Layout (shared with the CUDA kernels and chainer's): ``col`` is ``(N, C, KH, KW, OH, OW)``,
which in memory is ``(N, C*KH*KW, OH*OW)``: one GEMM-ready matrix per image, so the convolution
is ``W.reshape(OC, C*KH*KW) @ col[n]`` and lands directly in NCHW order.

Each kernel is written as a plain Python function first (``*_body``) and compiled second, so a
reader can step through the body with a debugger or call it on tiny arrays without numba.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


def conv_output_size(size: int, k: int, s: int, p: int) -> int:
    """Output length of a convolution along one axis: ``(size + 2p - k) // s + 1``."""
    return (size + 2 * p - k) // s + 1


def im2col_body(x, col, SH, SW, PH, PW):
    """Fill ``col (N, C, KH, KW, OH, OW)`` with the patches of ``x (N, C, H, W)``; zeros where
    a patch reaches into the padding."""
    N, C, H, W = x.shape
    KH, KW, OH, OW = col.shape[2], col.shape[3], col.shape[4], col.shape[5]
    for nc in prange(N * C):  # each (image, channel) plane is independent
        n = nc // C
        c = nc % C
        for kh in range(KH):
            for kw in range(KW):
                for oh in range(OH):
                    ih = oh * SH - PH + kh
                    if ih < 0 or ih >= H:
                        for ow in range(OW):
                            col[n, c, kh, kw, oh, ow] = 0
                        continue
                    for ow in range(OW):
                        iw = ow * SW - PW + kw
                        if 0 <= iw < W:
                            col[n, c, kh, kw, oh, ow] = x[n, c, ih, iw]
                        else:
                            col[n, c, kh, kw, oh, ow] = 0


def col2im_body(col, x, SH, SW, PH, PW):
    """Sum the patches ``col (N, C, KH, KW, OH, OW)`` back into ``x (N, C, H, W)``, which must
    be zeroed: the adjoint of ``im2col``. One thread owns one (image, channel) plane and adds in
    a fixed order, so the result is deterministic."""
    N, C, H, W = x.shape
    KH, KW, OH, OW = col.shape[2], col.shape[3], col.shape[4], col.shape[5]
    for nc in prange(N * C):
        n = nc // C
        c = nc % C
        for kh in range(KH):
            for kw in range(KW):
                for oh in range(OH):
                    ih = oh * SH - PH + kh
                    if ih < 0 or ih >= H:
                        continue
                    for ow in range(OW):
                        iw = ow * SW - PW + kw
                        if 0 <= iw < W:
                            x[n, c, ih, iw] += col[n, c, kh, kw, oh, ow]


_im2col = njit(parallel=True, cache=True)(im2col_body)
_col2im = njit(parallel=True, cache=True)(col2im_body)


def im2col(x: np.ndarray, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int) -> np.ndarray:
    """Patches of ``x (N, C, H, W)`` as ``col (N, C, KH, KW, OH, OW)``."""
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    col = np.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), col, SH, SW, PH, PW)
    return col


def col2im(col: np.ndarray, H: int, W: int, SH: int, SW: int, PH: int, PW: int) -> np.ndarray:
    """Adjoint of :func:`im2col`: ``col (N, C, KH, KW, OH, OW)`` summed into ``(N, C, H, W)``."""
    N, C = col.shape[:2]
    x = np.zeros((N, C, H, W), dtype=col.dtype)
    _col2im(np.ascontiguousarray(col), x, SH, SW, PH, PW)
    return x
