"""2-D convolution on the CPU: the conv family of the backend interface.

Two algorithms, chosen per layer shape by :func:`conv2d_weight_plan`:

* **Winograd** (:mod:`winograd`, F(4x4, 3x3) or F(2x2, 3x3)) for 3x3 stride-1 convolutions:
  2.25 to 4 times fewer multiplications than a direct or im2col convolution, for the price of
  transforming the weight ``W`` into ``U = G W G^T`` first. The transform is its own step of
  the interface (:func:`conv2d_transform_weight` and its adjoint), so that a weight used by two
  convolutions (a shared block) is transformed once and its two gradients are added as ``gU``
  before one adjoint transform (``minires.functions.conv`` builds that graph).
* **im2col** (:mod:`conv_im2col`) for every other shape (stride 2, 1x1 kernels), and for any
  shape when told to.

The rule (measured with ``benchmarks/cpu_conv_layers.py``, see docs/performance.md): Winograd
wherever it applies, F(4x4) unless its tiles overhang too much or are too few to amortise ``U``
(:func:`winograd.choose_tile_size`). The environment variable ``MINIRES_CPU_CONV`` forces one
path for comparisons: ``auto`` (the rule), ``im2col``, ``winograd2`` or ``winograd4`` (Winograd
applies to 3x3 stride-1 convolutions only; the others stay im2col whatever is forced).

The whole-batch ``im2col``/``col2im`` of the interface (NCHW patches ``(N, C, KH, KW, OH, OW)``,
the layout the CUDA kernels use) are here too: the convolutions do not need them, but
``max_pool2d`` takes its windows through them on both devices.
"""
from __future__ import annotations

import os

import numpy as np
from numba import njit, prange

from minires.kernels.cpu import conv_im2col, parallel, winograd
from minires.kernels.interface import ConvSaved, conv_output_size

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward", "conv2d_weight_plan",
           "conv2d_transform_weight", "conv2d_transform_weight_adjoint"]

#: Values of ``MINIRES_CPU_CONV``.
ALGORITHMS = ("auto", "im2col", "winograd2", "winograd4")
ENV_VARIABLE = "MINIRES_CPU_CONV"
#: The plans :func:`conv2d_weight_plan` hands out: the domain a weight is computed in.
PLANS = {2: "winograd F(2x2,3x3)", 4: "winograd F(4x4,3x3)"}
_TILE_OF_PLAN = {plan: m for m, plan in PLANS.items()}


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


# Whole-batch kernels on numba's own thread pool: they run alone, never between BLAS calls.
_im2col_nchw = njit(parallel=True, cache=True)(im2col_body)
_col2im_nchw = njit(parallel=True, cache=True)(col2im_body)


def im2col(x, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int):
    """Patches of ``x (N, C, H, W)`` as ``col (N, C, KH, KW, OH, OW)`` (zeros in the padding)."""
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    col = np.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    _im2col_nchw(np.ascontiguousarray(x), col, SH, SW, PH, PW)
    return col


def col2im(col, H: int, W: int, SH: int, SW: int, PH: int, PW: int):
    """Adjoint of :func:`im2col`: ``col (N, C, KH, KW, OH, OW)`` summed into ``(N, C, H, W)``."""
    N, C = col.shape[:2]
    x = np.zeros((N, C, H, W), dtype=col.dtype)
    _col2im_nchw(np.ascontiguousarray(col), x, SH, SW, PH, PW)
    return x


def algorithm() -> str:
    """The algorithm in force: ``MINIRES_CPU_CONV`` (read on every call, so that tests and
    benchmarks can switch within a process), ``auto`` when it is not set."""
    name = os.environ.get(ENV_VARIABLE, "auto")
    if name not in ALGORITHMS:
        raise ValueError(f"{ENV_VARIABLE} must be one of {', '.join(ALGORITHMS)}, got {name!r}")
    return name


def conv2d_weight_plan(x_shape, W_shape, SH: int, SW: int, PH: int, PW: int):
    """The domain the convolution of ``x (N, C, H, W)`` with ``W (OC, C, KH, KW)`` computes
    its weight in: a Winograd plan (then pass ``conv2d_transform_weight(W, plan)`` and the plan
    to :func:`conv2d_forward`), or None for ``W`` as it is (im2col)."""
    name = algorithm()
    if name == "im2col":
        return None
    m = winograd.choose_tile_size(x_shape, W_shape, (SH, SW), (PH, PW),
                                  workers=parallel.num_threads())
    if m is None:  # no Winograd path for this shape
        return None
    return PLANS[{"winograd2": 2, "winograd4": 4}.get(name, m)]


def _tile(plan) -> int:
    if plan not in _TILE_OF_PLAN:
        raise ValueError(f"unknown CPU convolution plan {plan!r}; expected one of "
                         f"{', '.join(map(repr, PLANS.values()))} or None")
    return _TILE_OF_PLAN[plan]


def conv2d_transform_weight(W, plan):
    """``W (OC, C, 3, 3)`` in the domain of ``plan``: Winograd's ``U (a*a, C, OC)``."""
    return winograd.weight_transform(W, _tile(plan))


def conv2d_transform_weight_adjoint(gU, plan):
    """The gradient w.r.t. ``W`` for a gradient ``gU`` w.r.t. ``conv2d_transform_weight(W,
    plan)`` (the adjoint of the transform; ``gU`` may be the sum over several uses)."""
    return winograd.weight_transform_adjoint(gU, _tile(plan))


def conv2d_forward(x, W, SH: int, SW: int, PH: int, PW: int, need_gW: bool = True, plan=None):
    """Cross-correlation of ``x (N, C, H, W)`` with the weight ``W`` (zero padding ``PH, PW``,
    stride ``SH, SW``).

    ``W``: ``(OC, C, KH, KW)`` when ``plan`` is None (im2col), else the weight in that plan's
    domain (:func:`conv2d_transform_weight`). Returns ``(y (N, OC, OH, OW), saved)``; ``saved``
    (a :class:`ConvSaved`) keeps the input for the weight gradient only when ``need_gW``.
    """
    x = np.ascontiguousarray(x)
    saved = ConvSaved(x.shape, x if need_gW else None, plan)
    if plan is None:
        return conv_im2col.forward(x, W, SH, SW, PH, PW), saved
    _check_winograd_stride(SH, SW)
    return winograd.winograd_forward(x, W, _tile(plan), PH, PW), saved


def conv2d_backward(gy, W, saved: ConvSaved, SH: int, SW: int, PH: int, PW: int,
                    need_gx: bool = True, need_gW: bool = True, gW_into=None):
    """Gradients ``(gx, gW)`` of :func:`conv2d_forward` for upstream ``gy (N, OC, OH, OW)``;
    ``W`` and ``gW`` are in the domain of the forward pass's plan (``saved.plan``). An entry is
    None when not asked for (``need_gW`` needs a forward run with ``need_gW``).

    ``gW_into``: an existing gradient of W's shape and dtype to add the weight gradient into
    (and return as ``gW``), instead of a new array.
    """
    gy = np.ascontiguousarray(gy)
    x = None
    if need_gW:
        if saved.for_gW is None:
            raise ValueError("conv2d_backward: the weight gradient needs a forward pass run "
                             "with need_gW=True")
        x = np.ascontiguousarray(saved.for_gW, dtype=gy.dtype)
    if saved.plan is None:
        KH, KW = W.shape[2:]
        gx = conv_im2col.backward_data(W, gy, saved.x_shape, SH, SW, PH, PW) if need_gx else None
        gW = conv_im2col.backward_weight(x, gy, KH, KW, SH, SW, PH, PW) if need_gW else None
    else:
        _check_winograd_stride(SH, SW)
        gx, gW = winograd.winograd_backward(x, gy, W, _tile(saved.plan), PH, PW, need_gx,
                                            need_gW, saved.x_shape)
    if gW is not None:
        gW = gW.astype(W.dtype, copy=False)
        if gW_into is not None:
            if gW_into.shape != W.shape or gW_into.dtype != W.dtype:
                raise ValueError(f"gW_into must be a {W.dtype} array of shape {W.shape}")
            gW_into += gW
            gW = gW_into
    return gx, gW


def _check_winograd_stride(SH, SW):
    if (SH, SW) != (1, 1):
        raise ValueError(f"a Winograd plan needs stride 1, got {SH}x{SW}")
