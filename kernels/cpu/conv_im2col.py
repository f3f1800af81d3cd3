"""The im2col convolution of the CPU: a few images at a time, patches in GEMM-ready rows, never
the whole batch's patch matrix. :mod:`conv` uses it for every convolution that has no Winograd
path (stride 2, 1x1 kernels) and for any other when told to (``MINIRES_CPU_CONV=im2col``).

The classic im2col builds ``col (N, C*KH*KW, OH*OW)`` for the whole batch (75 MB for one
16-channel 32x32 layer at batch 128), writes it to memory, and reads it back in the matrix
product. Here each worker thread (see :mod:`parallel`) takes a slice of the batch and, for a
chunk of a few images at a time that fits in its L2 cache:

1. copies each image into a zero-bordered *channels-last* scratch ``xpad (H+2PH, (W+2PW)*C)``
   (the border is written once and never again, so padding costs nothing per image);
2. builds ``col (n*OH*OW, KH*KW*C)``, one row per output pixel: for stride 1 a kernel row
   ``(kw, c)`` is one contiguous run of ``KW*C`` values of ``xpad``, so this is a few short
   memcpy's per pixel instead of a bounds test per value;
3. runs one BLAS product ``col @ Wt`` with ``Wt (KH*KW*C, OC)``, whose long ``M = n*OH*OW``
   dimension keeps BLAS efficient even for 16 output channels (``Wm @ col`` with ``M = OC = 16``
   ran at half the speed);
4. transposes the ``(OH*OW, OC)`` rows back into ``y[n] (OC, OH, OW)``.

The backward pass recomputes ``col`` chunk by chunk instead of keeping it from the forward pass
(recomputing from cache is cheaper than storing and re-reading it, and saves ~1 GB for
ResNet-20 at batch 128):

* ``gW = sum_n gy[n] (OC, P) @ col[n] (P, K)``, one partial sum per worker, added in order;
* ``gx`` for stride 1 is itself a convolution: of ``gy`` with the flipped, channel-transposed
  kernel and padding ``KH-1-PH``, so it reuses the forward pipeline and needs no col2im;
* ``gx`` for other strides: ``gcol = gy_rows @ Wt.T``, then a col2im that adds each chunk's
  rows into the channels-last scratch and transposes it back to ``(C, H, W)``.

Every kernel is a plain Python function (``*_body``) compiled with ``nogil=True`` so that the
workers run in parallel; each works for float32 and float64.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minires.kernels.cpu import parallel
from minires.kernels.interface import conv_output_size

#: Bytes of patch rows per chunk: about one core's L2 cache (256 KB to 2 MB measured the same
#: within noise; 1 MB was a little better for the 3-channel first layer).
CHUNK_BYTES = 1024 * 1024
#: Pixels per tile of the NCHW <-> rows transposes.
TILE = 32


# Indexing style: every inner loop indexes a 1-D *view* with a bare ``range`` variable. numba
# follows Python's negative-index semantics, so ``a[i + offset]`` with an offset it cannot prove
# non-negative costs a wrap-around test per element and stops LLVM from vectorising the loop
# (the copies below ran at 7 GB/s that way and at over 40 GB/s written like this).


def pad_hwc_body(x, n, xpad, PH, PW):
    """Copy image ``x[n] (C, H, W)`` into the interior of ``xpad (H+2PH, (W+2PW)*C)``."""
    _, C, H, W = x.shape
    for h in range(H):
        drow = xpad[h + PH]
        for c in range(C):
            src = x[n, c, h]
            dst = drow[PW * C + c:]
            for w in range(W):
                dst[w * C] = src[w]


def im2col_hwc_body(x, n0, n1, xpad, col, KH, KW, SH, SW, PH, PW):
    """Rows of patches of images ``x[n0:n1]`` into ``col (n*OH*OW, KH*KW*C)``, ordered
    ``(kh, kw, c)`` within a row. ``xpad`` is a scratch ``(H+2PH, (W+2PW)*C)`` whose border
    is zero on entry (and stays zero)."""
    _, C, H, W = x.shape
    OH = (H + 2 * PH - KH) // SH + 1
    OW = (W + 2 * PW - KW) // SW + 1
    KWC = KW * C
    for n in range(n0, n1):
        _pad_hwc(x, n, xpad, PH, PW)
        rows = col[(n - n0) * OH * OW:]
        for oh in range(OH):
            for ow in range(OW):
                row = rows[oh * OW + ow]
                for kh in range(KH):
                    src = xpad[oh * SH + kh, ow * SW * C:]
                    dst = row[kh * KWC:]
                    for j in range(KWC):
                        dst[j] = src[j]


def col2im_hwc_body(col, n0, n1, xpad, gx, KH, KW, SH, SW, PH, PW):
    """Adjoint of :func:`im2col_hwc_body`: add the rows ``col (n*OH*OW, KH*KW*C)`` of images
    ``n0:n1`` back into ``gx[n] (C, H, W)`` (overwritten). ``xpad`` is scratch."""
    _, C, H, W = gx.shape
    OH = (H + 2 * PH - KH) // SH + 1
    OW = (W + 2 * PW - KW) // SW + 1
    KWC = KW * C
    for n in range(n0, n1):
        xpad[:, :] = 0
        rows = col[(n - n0) * OH * OW:]
        for oh in range(OH):
            for ow in range(OW):
                row = rows[oh * OW + ow]
                for kh in range(KH):
                    dst = xpad[oh * SH + kh, ow * SW * C:]
                    src = row[kh * KWC:]
                    for j in range(KWC):
                        dst[j] += src[j]
        for h in range(H):
            srow = xpad[h + PH]
            for c in range(C):
                src = srow[PW * C + c:]
                dst = gx[n, c, h]
                for w in range(W):
                    dst[w] = src[w * C]


def rows_to_nchw_body(rows, y, n0):
    """``y[n0 + i, oc, p] = rows[i*P + p, oc]`` for ``rows (n*P, OC)``, ``y (N, OC, P)``.

    Tiled by ``TILE`` pixels: writing a whole row of ``y`` per channel would touch ``OC``
    streams exactly ``P`` floats apart, which for ``P = 1024`` all map to the same cache sets."""
    _, OC, P = y.shape
    for i in range(rows.shape[0] // P):
        yn = y[n0 + i]
        block = rows[i * P:]
        for p0 in range(0, P, TILE):
            tile = block[p0:]
            m = min(TILE, P - p0)
            for oc in range(OC):
                dst = yn[oc, p0:]
                for j in range(m):
                    dst[j] = tile[j, oc]


def nchw_to_rows_body(g, n0, n1, rows):
    """``rows[(n - n0)*P + p, oc] = g[n, oc, p]`` for ``g (N, OC, P)``, ``rows (n*P, OC)``;
    tiled like :func:`rows_to_nchw_body`."""
    _, OC, P = g.shape
    for n in range(n0, n1):
        gn = g[n]
        block = rows[(n - n0) * P:]
        for p0 in range(0, P, TILE):
            tile = block[p0:]
            m = min(TILE, P - p0)
            for oc in range(OC):
                src = gn[oc, p0:]
                for j in range(m):
                    tile[j, oc] = src[j]


_jit = njit(nogil=True, cache=True)
_pad_hwc = _jit(pad_hwc_body)
_im2col_hwc = _jit(im2col_hwc_body)
_col2im_hwc = _jit(col2im_hwc_body)
_rows_to_nchw = _jit(rows_to_nchw_body)
_nchw_to_rows = _jit(nchw_to_rows_body)


def _chunk(per_image_bytes: int) -> int:
    return max(1, CHUNK_BYTES // max(1, per_image_bytes))


def _weight_rows(W):
    """``W (OC, C, KH, KW)`` as ``Wt (KH*KW*C, OC)``, rows ordered like a patch row."""
    OC = W.shape[0]
    return np.ascontiguousarray(W.transpose(2, 3, 1, 0).reshape(-1, OC))


def forward(x, W, SH: int, SW: int, PH: int, PW: int):
    """``y (N, OC, OH, OW)``: the cross-correlation of ``x (N, C, H, W)`` (C-contiguous) with
    ``W (OC, C, KH, KW)``."""
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(Wd, KW, SW, PW)
    P, K = OH * OW, KH * KW * C
    Wt = _weight_rows(W).astype(x.dtype, copy=False)
    y = np.empty((N, OC, P), dtype=x.dtype)
    step = _chunk(P * K * x.itemsize)

    def task(start, stop):
        xpad = np.zeros((H + 2 * PH, (Wd + 2 * PW) * C), dtype=x.dtype)
        col = np.empty((min(step, stop - start) * P, K), dtype=x.dtype)
        rows = np.empty((col.shape[0], OC), dtype=x.dtype)
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            m = (n1 - n0) * P
            _im2col_hwc(x, n0, n1, xpad, col[:m], KH, KW, SH, SW, PH, PW)
            np.matmul(col[:m], Wt, out=rows[:m])
            _rows_to_nchw(rows[:m], y, n0)

    parallel.run_split(task, N)
    return y.reshape(N, OC, OH, OW)


def backward_data(W, gy, x_shape, SH: int, SW: int, PH: int, PW: int):
    """``gx`` of :func:`forward` for upstream ``gy (N, OC, OH, OW)`` (C-contiguous).

    For stride 1 (and ``PH <= KH-1``, ``PW <= KW-1``) a convolution of ``gy`` with the flipped,
    channel-swapped kernel; otherwise products with ``Wt.T`` and a col2im."""
    N, C, H, Wd = x_shape
    OC, _, KH, KW = W.shape
    if SH == 1 and SW == 1 and PH <= KH - 1 and PW <= KW - 1:
        Wflip = np.ascontiguousarray(W.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        return forward(gy, Wflip, 1, 1, KH - 1 - PH, KW - 1 - PW)
    _, _, OH, OW = gy.shape
    P, K = OH * OW, KH * KW * C
    WtT = np.ascontiguousarray(_weight_rows(W).astype(gy.dtype, copy=False).T)  # (OC, K)
    gy3 = gy.reshape(N, OC, P)
    gx = np.empty(x_shape, dtype=gy.dtype)
    step = _chunk(P * K * gy.itemsize)

    def task(start, stop):
        xpad = np.empty((H + 2 * PH, (Wd + 2 * PW) * C), dtype=gy.dtype)
        m_max = min(step, stop - start) * P
        grows = np.empty((m_max, OC), dtype=gy.dtype)
        gcol = np.empty((m_max, K), dtype=gy.dtype)
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            m = (n1 - n0) * P
            _nchw_to_rows(gy3, n0, n1, grows[:m])
            np.matmul(grows[:m], WtT, out=gcol[:m])
            _col2im_hwc(gcol[:m], n0, n1, xpad, gx, KH, KW, SH, SW, PH, PW)

    parallel.run_split(task, N)
    return gx


def backward_weight(x, gy, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int):
    """``gW (OC, C, KH, KW)`` of :func:`forward` for input ``x`` and upstream ``gy``, both
    C-contiguous and of one dtype."""
    N, C, H, Wd = x.shape
    _, OC, OH, OW = gy.shape
    P, K = OH * OW, KH * KW * C
    gy3 = gy.reshape(N, OC, P)
    step = _chunk(P * K * x.itemsize)

    def task(start, stop):
        xpad = np.zeros((H + 2 * PH, (Wd + 2 * PW) * C), dtype=x.dtype)
        col = np.empty((min(step, stop - start) * P, K), dtype=x.dtype)
        acc = np.zeros((OC, K), dtype=x.dtype)
        part = np.empty((OC, K), dtype=x.dtype)
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            _im2col_hwc(x, n0, n1, xpad, col, KH, KW, SH, SW, PH, PW)
            for n in range(n0, n1):
                i = n - n0
                np.matmul(gy3[n], col[i * P:(i + 1) * P], out=part)
                acc += part
        return acc

    partials = parallel.run_split(task, N)
    gWt = partials[0]
    for p in partials[1:]:
        gWt += p
    # (OC, KH*KW*C) with columns ordered (kh, kw, c) -> (OC, C, KH, KW)
    return np.ascontiguousarray(gWt.reshape(OC, KH, KW, C).transpose(0, 3, 1, 2))
