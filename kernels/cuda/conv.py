"""2-D convolution on the GPU: im2col/col2im (``im2col.cu``) and GEMMs.

``col (N, C*KH*KW, OH*OW)`` holds one GEMM-ready patch matrix per image, so the forward pass is
``y[n] = W.reshape(OC, C*KH*KW) @ col[n]``, already in NCHW order; the patch matrix is kept for
the weight gradient ``gW = sum_n gy[n] @ col[n].T``, and the input gradient is
``col2im(W.reshape(OC, -1).T @ gy[n])``.
"""
from __future__ import annotations

from minires.kernels.cuda.launch import check_int32, elementwise_launch, ints
from minires.kernels.cuda.loader import cupy, kernel
from minires.kernels.interface import ConvSaved, conv_output_size

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward"]


def im2col(x, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int):
    """Patches of ``x (N, C, H, W)`` as ``col (N, C, KH, KW, OH, OW)`` (zeros in the padding)."""
    cp = cupy()
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    col = cp.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    grid, block = elementwise_launch(check_int32(col.size, "col"))
    kernel("im2col", x.dtype)(grid, block, (
        x, col, *ints(N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW)))
    return col


def col2im(col, H: int, W: int, SH: int, SW: int, PH: int, PW: int):
    """Adjoint of :func:`im2col`: ``col (N, C, KH, KW, OH, OW)`` summed into ``(N, C, H, W)``,
    deterministically (one thread gathers each pixel's contributions in a fixed order)."""
    cp = cupy()
    col = cp.ascontiguousarray(col)
    N, C, KH, KW, OH, OW = col.shape
    check_int32(col.size, "col")
    x = cp.empty((N, C, H, W), dtype=col.dtype)  # every element is written
    grid, block = elementwise_launch(x.size)
    kernel("col2im", col.dtype)(grid, block, (
        col, x, *ints(N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW)))
    return x


def conv2d_forward(x, W, SH: int, SW: int, PH: int, PW: int, need_gW: bool = True):
    """Cross-correlation of ``x (N, C, H, W)`` with ``W (OC, C, KH, KW)`` (zero padding ``PH,
    PW``, stride ``SH, SW``).

    Returns ``(y (N, OC, OH, OW), saved)``; ``saved`` (a :class:`ConvSaved`) keeps the patch
    matrix for the weight gradient only when ``need_gW``.
    """
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(Wd, KW, SW, PW)
    col = im2col(x, KH, KW, SH, SW, PH, PW).reshape(N, C * KH * KW, OH * OW)
    y = (W.reshape(OC, -1) @ col).reshape(N, OC, OH, OW)
    return y, ConvSaved(x.shape, col if need_gW else None)


def conv2d_backward(gy, W, saved: ConvSaved, SH: int, SW: int, PH: int, PW: int,
                    need_gx: bool = True, need_gW: bool = True):
    """Gradients ``(gx, gW)`` of :func:`conv2d_forward` for upstream ``gy (N, OC, OH, OW)``;
    an entry is None when not asked for (``need_gW`` needs a forward run with ``need_gW``)."""
    N, OC, OH, OW = gy.shape
    _, C, KH, KW = W.shape
    gy3 = gy.reshape(N, OC, OH * OW)
    gx = gW = None
    if need_gx:
        gcol = W.reshape(OC, -1).T @ gy3                   # (N, C*KH*KW, OH*OW)
        gx = col2im(gcol.reshape(N, C, KH, KW, OH, OW), *saved.x_shape[2:], SH, SW, PH, PW)
    if need_gW:
        # Sum over images of gy[n] @ col[n].T; the transposed view costs no copy.
        gW = (gy3 @ saved.for_gW.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)
    return gx, gW
