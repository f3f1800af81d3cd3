"""Layout copies of the Winograd convolution: NCHW images into the *phase-split channels-last*
scratch its tile transforms read, and transformed output rows back to NCHW.

An image is copied into a scratch ``xs (Hs, m*Q*C)``: padded column ``w`` of a row is stored at
``((w % m)*Q + w // m)*C``, i.e. the columns are grouped by ``w mod m``. Column ``j`` of the
tiles of a tile row (pixel columns ``m*tj + j`` for all ``tj``) is then one contiguous run
``(tj, c)``, which :mod:`winograd_tiles` transforms with long vectorised loops. The zero border
of ``xs`` is the padding (and the overhang of the last tiles).

Every kernel is a plain Python function (``*_body``) compiled ``nogil=True`` (see
:mod:`parallel`), for float32 and float64.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Scalar by nature (an NCHW <-> channels-last transpose, about 1 cycle a value): LLVM turns a
# transpose into vector shuffles only for interleaves of at most 8 values (8 source rows into
# dst[8*w + c]: 5x faster), and a pixel here holds all C >= 16 channels; a two-step copy through
# 8-channel blocks gained 20% for 16 channels and lost for 64. The column offsets come from a
# table because a division by the runtime ``m`` per element would cost more than the copy.


def phase_offsets_body(W, PW, m, Q, C):
    """Offset in a phase-split row of each image column ``w`` (padded column ``w + PW``)."""
    off = np.empty(W, dtype=np.int64)
    for w in range(W):
        wp = w + PW
        off[w] = ((wp % m) * Q + wp // m) * C
    return off


def to_phase_body(x, n, xs, PH, PW, m):
    """Copy ``x[n] (C, H, W)`` into the phase-split scratch ``xs (Hs, m*Q*C)`` at padded row
    ``PH``, column ``PW``; entries outside the image are left as they are (zero).

    Eight channels at a time: eight source rows read in step, eight adjacent values written per
    pixel (0.25 ns a value against 0.31 channel by channel; more rows at once would compete
    for the same cache sets when the planes are 4 KB apart, as for 32x32 float32 images)."""
    _, C, H, W = x.shape
    off = phase_offsets(W, PW, m, xs.shape[1] // (m * C), C)
    xn = x[n]
    for h in range(H):
        drow = xs[h + PH]
        for c0 in range(0, C - 7, 8):
            s0, s1, s2, s3 = xn[c0, h], xn[c0 + 1, h], xn[c0 + 2, h], xn[c0 + 3, h]
            s4, s5, s6, s7 = xn[c0 + 4, h], xn[c0 + 5, h], xn[c0 + 6, h], xn[c0 + 7, h]
            for w in range(W):
                d = drow[off[w] + c0:]
                d[0], d[1], d[2], d[3] = s0[w], s1[w], s2[w], s3[w]
                d[4], d[5], d[6], d[7] = s4[w], s5[w], s6[w], s7[w]
        for c in range(C - C % 8, C):
            src = xn[c, h]
            dst = drow[c:]
            for w in range(W):
                dst[off[w]] = src[w]


def from_phase_body(xs, gx, n, PH, PW, m):
    """``gx[n] (C, H, W)`` = the image window at ``(PH, PW)`` of the phase-split ``xs``
    (the inverse of :func:`to_phase_body`, blocked the same way)."""
    _, C, H, W = gx.shape
    off = phase_offsets(W, PW, m, xs.shape[1] // (m * C), C)
    gn = gx[n]
    for h in range(H):
        srow = xs[h + PH]
        for c0 in range(0, C - 7, 8):
            d0, d1, d2, d3 = gn[c0, h], gn[c0 + 1, h], gn[c0 + 2, h], gn[c0 + 3, h]
            d4, d5, d6, d7 = gn[c0 + 4, h], gn[c0 + 5, h], gn[c0 + 6, h], gn[c0 + 7, h]
            for w in range(W):
                s = srow[off[w] + c0:]
                d0[w], d1[w], d2[w], d3[w] = s[0], s[1], s[2], s[3]
                d4[w], d5[w], d6[w], d7[w] = s[4], s[5], s[6], s[7]
        for c in range(C - C % 8, C):
            src = srow[c:]
            dst = gn[c, h]
            for w in range(W):
                dst[w] = src[off[w]]


phase_offsets = njit(nogil=True, cache=True)(phase_offsets_body)
to_phase = njit(nogil=True, cache=True)(to_phase_body)
from_phase = njit(nogil=True, cache=True)(from_phase_body)


def rows_offsets_body(OW, m, R, OC):
    """Offset in the flattened ``rows`` of :func:`rows_to_nchw_body` of output column ``w``
    (row ``m*(w % m)``, entry ``(w // m)*OC``)."""
    off = np.empty(OW, dtype=np.int64)
    for w in range(OW):
        off[w] = m * (w % m) * R + (w // m) * OC
    return off


def rows_to_nchw_body(rows, m, y, n, ti, off):
    """Write one tile row of output back to ``y[n] (OC, OH, OW)``: ``rows (m*m, R)``,
    ``R = TW*OC``, holds output pixel ``(m*ti + a, m*tj + b)`` at row ``m*b + a``, entry
    ``tj*OC + oc``; ``off`` from :func:`rows_offsets_body`. Pixels beyond ``OH, OW`` (the
    overhang of the last tiles) are dropped."""
    _, OC, OH, OW = y.shape
    R = rows.shape[1]
    flat = rows.reshape(rows.size)
    for a in range(min(m, OH - m * ti)):
        h = m * ti + a
        for oc in range(OC):
            src = flat[a * R + oc:]
            dst = y[n, oc, h]
            for w in range(OW):
                dst[w] = src[off[w]]


rows_offsets = njit(nogil=True, cache=True)(rows_offsets_body)
rows_to_nchw = njit(nogil=True, cache=True)(rows_to_nchw_body)
