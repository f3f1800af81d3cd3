"""2-D convolution on the GPU as plain GEMMs (cuBLAS, :mod:`.blas`) over a patch matrix
(``im2col.cu``).

Shapes: ``x (N, C, H, W)``, ``W (OC, C, KH, KW)``, ``K = C*KH*KW``, ``P = OH*OW``. The patch
matrix ``col`` is in the GEMM layout ``(K, N*P)``: image ``n`` is the column block
``col[:, n*P:(n+1)*P]``.

* forward: ``im2col``, then ONE strided-batched GEMM ``y[n] (OC, P) = W (OC, K) @ col[:, n]``
  (W's batch stride 0, ``col``'s leading dimension ``N*P``), which writes ``y`` in NCHW order
  directly: no transpose, no pointer arrays. ``col`` is freed at once.
* weight gradient: ``gW (OC, K) = gy^T (OC, N*P) @ col^T``, ONE GEMM with ``K = N*P`` and no
  ``(N, OC, K)`` temporary; ``col`` is rebuilt from ``x`` (an im2col costs far less than keeping
  75 MB per ResNet-20 layer alive until the backward pass), and ``gy`` is laid out channel-major
  by one small transpose kernel.
* input gradient: ONE strided-batched GEMM ``gcol[:, n] = W^T @ gy[n]`` into the same buffer
  (after the weight-gradient GEMM read it: the stream orders them), then ``col2im``.

Kernel launches per convolution: 2 forward, at most 5 backward. With ``gW_into`` (the second
use of a shared weight) the weight-gradient GEMM adds into the existing gradient (``beta = 1``)
instead of writing a new array that the engine would then have to add.
"""
from __future__ import annotations

from minires.kernels.cuda.blas import gemm
from minires.kernels.cuda.launch import check_int32, ints, planes_launch, same_dtype
from minires.kernels.cuda.loader import cupy, kernel
from minires.kernels.interface import ConvSaved, conv_output_size

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward", "conv2d_weight_plan",
           "conv2d_transform_weight", "conv2d_transform_weight_adjoint"]


def _patches(x, KH, KW, SH, SW, PH, PW, gemm_layout):
    cp = cupy()
    x = cp.ascontiguousarray(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    P = OH * OW
    # Checked before anything is allocated: an oversized request is this error, not an
    # out-of-memory one.
    check_int32(N * C * KH * KW * P, "col")
    row_stride, image_stride = (N * P, P) if gemm_layout else (P, C * KH * KW * P)
    shape = (C * KH * KW, N * P) if gemm_layout else (N, C, KH, KW, OH, OW)
    col = cp.empty(shape, dtype=x.dtype)
    grid, block = planes_launch(N * C, P)
    kernel("im2col", x.dtype)(grid, block, (
        x, col, *ints(N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW, row_stride, image_stride)))
    return col


def _add_patches(col, x_shape, KH, KW, OH, OW, SH, SW, PH, PW, gemm_layout):
    cp = cupy()
    N, C, H, W = x_shape
    P = OH * OW
    check_int32(col.size, "col")
    row_stride, image_stride = (N * P, P) if gemm_layout else (P, C * KH * KW * P)
    x = cp.empty(x_shape, dtype=col.dtype)  # every element is written
    grid, block = planes_launch(N * C, H * W)
    kernel("col2im", col.dtype)(grid, block, (
        col, x, *ints(N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW, row_stride, image_stride)))
    return x


def im2col(x, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int):
    """Patches of ``x (N, C, H, W)`` as ``col (N, C, KH, KW, OH, OW)`` (zeros in the padding)."""
    return _patches(x, KH, KW, SH, SW, PH, PW, gemm_layout=False)


def col2im(col, H: int, W: int, SH: int, SW: int, PH: int, PW: int):
    """Adjoint of :func:`im2col`: ``col (N, C, KH, KW, OH, OW)`` summed into ``(N, C, H, W)``,
    deterministically (one thread gathers each pixel's contributions in a fixed order)."""
    col = cupy().ascontiguousarray(col)
    N, C, KH, KW, OH, OW = col.shape
    return _add_patches(col, (N, C, H, W), KH, KW, OH, OW, SH, SW, PH, PW, gemm_layout=False)


def _channel_major(gy):
    """``gy (N, OC, OH, OW)`` as the ``(OC, N*OH*OW)`` matrix of the weight-gradient GEMM."""
    N, OC, OH, OW = gy.shape
    out = cupy().empty((OC, N * OH * OW), dtype=gy.dtype)
    grid, block = planes_launch(N * OC, OH * OW)
    kernel("channel_major", gy.dtype)(grid, block, (gy, out, *ints(N, OC, OH * OW)))
    return out


def conv2d_weight_plan(x_shape, W_shape, SH: int, SW: int, PH: int, PW: int):
    """None: the GPU convolution computes with ``W`` as it is (the interface's weight plans,
    see :mod:`minires.kernels.interface`, are a CPU matter)."""
    return None


def _no_plans(plan):
    raise ValueError(f"the CUDA convolution has no weight plans (conv2d_weight_plan is always "
                     f"None), got {plan!r}")


def conv2d_transform_weight(W, plan):
    """Not offered on the GPU: :func:`conv2d_weight_plan` never returns a plan."""
    _no_plans(plan)


def conv2d_transform_weight_adjoint(gU, plan):
    """Not offered on the GPU: :func:`conv2d_weight_plan` never returns a plan."""
    _no_plans(plan)


def conv2d_forward(x, W, SH: int, SW: int, PH: int, PW: int, need_gW: bool = True, plan=None):
    """Cross-correlation of ``x (N, C, H, W)`` with ``W (OC, C, KH, KW)`` (zero padding ``PH,
    PW``, stride ``SH, SW``); ``plan`` must be None.

    Returns ``(y (N, OC, OH, OW), saved)``; ``saved`` (a :class:`ConvSaved`) keeps the input
    (from which the backward pass rebuilds the patches) only when ``need_gW``.
    """
    if plan is not None:
        _no_plans(plan)
    cp = cupy()
    x, W = cp.ascontiguousarray(x), cp.ascontiguousarray(W)
    same_dtype(x.dtype, W=W)
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(Wd, KW, SW, PW)
    K, P = C * KH * KW, OH * OW
    col = _patches(x, KH, KW, SH, SW, PH, PW, gemm_layout=True)
    y = cp.empty((N, OC, OH, OW), dtype=x.dtype)
    gemm(OC, P, K, W, K, col, N * P, y, P, stride_b=P, stride_c=OC * P, batch=N)
    return y, ConvSaved(x.shape, x if need_gW else None)


def conv2d_backward(gy, W, saved: ConvSaved, SH: int, SW: int, PH: int, PW: int,
                    need_gx: bool = True, need_gW: bool = True, gW_into=None):
    """Gradients ``(gx, gW)`` of :func:`conv2d_forward` for upstream ``gy (N, OC, OH, OW)``;
    an entry is None when not asked for (``need_gW`` needs a forward run with ``need_gW``).

    ``gW_into``: an existing C-contiguous gradient of W's shape and dtype to add the weight
    gradient into (and return as ``gW``), instead of a new array.
    """
    cp = cupy()
    gy, W = cp.ascontiguousarray(gy), cp.ascontiguousarray(W)
    same_dtype(W.dtype, gy=gy)
    N, OC, OH, OW = gy.shape
    _, C, KH, KW = W.shape
    K, P = C * KH * KW, OH * OW
    gx = gW = None
    buffer = None
    if need_gW:
        buffer = _patches(saved.for_gW, KH, KW, SH, SW, PH, PW, gemm_layout=True)
        gW, beta = cp.empty(W.shape, dtype=W.dtype), 0.0
        if gW_into is not None:
            if gW_into.shape != W.shape or not gW_into.flags.c_contiguous:
                raise ValueError(f"gW_into must be a C-contiguous array of shape {W.shape}")
            same_dtype(W.dtype, gW_into=gW_into)
            gW, beta = gW_into, 1.0
        gemm(OC, K, N * P, _channel_major(gy), N * P, buffer, N * P, gW, K, trans_b=True,
             beta=beta)
    if need_gx:
        if buffer is None:
            check_int32(K * N * P, "col")
            buffer = cp.empty((K, N * P), dtype=gy.dtype)
        # gcol[:, n] = W^T @ gy[n], over the patches the weight gradient has finished reading.
        gemm(K, P, OC, W, K, gy, P, buffer, N * P, trans_a=True, stride_b=OC * P, stride_c=P,
             batch=N)
        gx = _add_patches(buffer, saved.x_shape, KH, KW, OH, OW, SH, SW, PH, PW,
                          gemm_layout=True)
    return gx, gW
