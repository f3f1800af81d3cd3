"""numba kernels of the Winograd convolution: the tile transforms, fused with the layout changes.

Notation of Lavin & Gray (arXiv 1509.09308): F(m x m, 3x3) computes an ``m x m`` output tile
from an ``a x a`` input tile, ``a = m + 2``, as ``A^T [(G w G^T) * (B^T d B)] A``; input tiles
are ``m`` apart, so neighbours overlap by two pixels. Per variant (``_f2``: m = 2, ``_f4``:
m = 4) there are four kernels:

==================  ====================  ===============================================
kernel              per tile              used by
==================  ====================  ===============================================
``input_tiles``     ``V = B^T d B``       forward and weight gradient (``d``: a x a of x)
``output_tiles``    ``y = A^T M A``       forward (``M``: the a x a products)
``grad_tiles``      ``Z = A g A^T``       both gradients (``g``: m x m of gy)
``input_adjoint``   ``gd += B Z' B^T``    input gradient (overlapping tiles are added)
==================  ====================  ===============================================

**Layouts.**

* A tile position ``xi = a*l + k`` is row ``k`` (height), column ``l`` (width) of the a x a
  tile: column-major. ``V (a*a, S)`` holds, for each position, the ``(T, C)`` matrix of all
  tiles' values, channels innermost (``S >= T*C``; the caller pads ``S`` so that the ``a*a``
  rows do not fall on the same cache sets). ``V[xi]`` as ``(T, C)`` is the left operand BLAS
  wants for ``V[xi] @ U[xi]`` (long ``M = T``), with no copy.
* An image is copied into a *phase-split channels-last* scratch ``xs (Hs, m*Q*C)``
  (:mod:`winograd_layout`): column ``j`` of the tiles of a tile row (pixel columns ``m*tj + j``
  for all ``tj``) is one contiguous run ``(tj, c)``. The zero border of ``xs`` is the padding
  (and the overhang of the last tiles).

**Loops.** A 2-D transform is two passes of the 1-D one. Pass 1 runs down the columns of a
whole tile row at once (one flat loop over every column and channel of the row); pass 2 runs
along the tile rows, one flat loop over ``(tj, c)`` per output row. Every vectorised loop is
therefore hundreds of elements long, reads and writes a handful of contiguous streams, and
writes streams that stay disjoint across the enclosing loop. Why this shape: numba cannot
tell LLVM that two arrays do not alias, so each vectorised loop carries runtime overlap checks
for every pair of streams; per-tile loops over 16 channels spent more time in those checks
(and in their scalar fallback when the checked ranges of interleaved rows overlapped) than in
the arithmetic, ten times the cost of this layout.

Every kernel is a plain Python function (``*_body``) compiled ``nogil=True`` (see
:mod:`parallel`), for float32 and float64. ``fastmath={"contract"}`` only: LLVM may fuse
``a*b + c`` into one FMA (one rounding instead of two, never less accurate); no reassociation.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minires.kernels.cpu.winograd_layout import from_phase, rows_offsets, rows_to_nchw, to_phase

# ---------------------------------------------------------------- 1-D transforms (scalars)
# Each function applies one matrix to a vector given as scalars, rows grouped to share sums.
# The constants are float32 scalars: with a Python ``4 * d`` numba computes a float32 ``d`` in
# float64 (int64 * float32 -> float64), halving the vector width and adding conversions; a
# float32 constant times a float64 value is float64, so one set serves both dtypes exactly.
TWO, FOUR, FIVE, EIGHT = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


def bt2(d0, d1, d2, d3):
    """``B^T d`` for F(2, 3): rows (1 0 -1 0), (0 1 1 0), (0 -1 1 0), (0 1 0 -1)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def b2(z0, z1, z2, z3):
    """``B z``, the transpose of :func:`bt2`."""
    return z0, z1 - z2 + z3, z1 + z2 - z0, -z3


def at2(m0, m1, m2, m3):
    """``A^T m`` for F(2, 3): rows (1 1 1 0), (0 1 -1 -1)."""
    return m0 + m1 + m2, m1 - m2 - m3


def a2(g0, g1):
    """``A g``, the transpose of :func:`at2`."""
    return g0, g0 + g1, g0 - g1, -g1


def bt4(d0, d1, d2, d3, d4, d5):
    """``B^T d`` for F(4, 3): rows (4 0 -5 0 1 0), (0 -4 -4 1 1 0), (0 4 -4 -1 1 0),
    (0 -2 -1 2 1 0), (0 2 -1 -2 1 0), (0 4 0 -5 0 1)."""
    s1 = d3 + d4 - FOUR * (d1 + d2)
    s2 = d4 - d3 + FOUR * (d1 - d2)
    p = d4 - d2
    q = TWO * (d3 - d1)
    return FOUR * d0 - FIVE * d2 + d4, s1, s2, p + q, p - q, FOUR * d1 - FIVE * d3 + d5


def b4(z0, z1, z2, z3, z4, z5):
    """``B z``, the transpose of :func:`bt4`."""
    s = z1 + z2
    return (FOUR * z0,
            FOUR * (z2 - z1) + TWO * (z4 - z3) + FOUR * z5,
            -(FIVE * z0 + FOUR * s + z3 + z4),
            z1 - z2 + TWO * (z3 - z4) - FIVE * z5,
            z0 + s + z3 + z4,
            z5)


def at4(m0, m1, m2, m3, m4, m5):
    """``A^T m`` for F(4, 3): rows (1 1 1 1 1 0), (0 1 -1 2 -2 0), (0 1 1 4 4 0),
    (0 1 -1 8 -8 1)."""
    s12, d12 = m1 + m2, m1 - m2
    s34, d34 = m3 + m4, m3 - m4
    return m0 + s12 + s34, d12 + TWO * d34, s12 + FOUR * s34, d12 + EIGHT * d34 + m5


def a4(g0, g1, g2, g3):
    """``A g``, the transpose of :func:`at4`."""
    e, o = g0 + g2, g1 + g3
    e4, o2 = g0 + FOUR * g2, TWO * g1 + EIGHT * g3
    return g0, e + o, e - o, e4 + o2, e4 - o2, g3


_inline = njit(inline="always", cache=True)
_bt2, _b2, _at2, _a2 = _inline(bt2), _inline(b2), _inline(at2), _inline(a2)
_bt4, _b4, _at4, _a4 = _inline(bt4), _inline(b4), _inline(at4), _inline(a4)


def tile_geometry(xs, C, m):
    """``(TH, Q)`` of a phase-split input scratch ``xs (m*TH + 2, m*Q*C)``."""
    return (xs.shape[0] - 2) // m, xs.shape[1] // (m * C)


_tile_geometry = _inline(tile_geometry)


# ---------------------------------------------------------------- F(4x4, 3x3)


def input_tiles_f4_body(x, n0, n1, xs, PH, PW, tmp, V):
    """``V[6l + k, t*C + c] = (B^T d B)[k, l]`` for every 6x6 input tile ``d`` of images
    ``x[n0:n1]``, tile ``t = ((n - n0)*TH + ti)*TW + tj``.

    Args:
        x: ``(N, C, H, W)``.
        xs: phase-split scratch ``(4*TH + 2, 4*Q*C)``, ``Q = TW + 1``, zero outside the image
            window at ``(PH, PW)``; still so on return.
        tmp: scratch ``(6, 4*Q*C)``.
        V: ``(36, S)``, ``S >= (n1 - n0)*TH*TW*C``.
    """
    C = x.shape[1]
    TH, Q = _tile_geometry(xs, C, 4)
    TW, L = Q - 1, xs.shape[1]
    R = (Q - 1) * C
    offs = (0, Q * C, 2 * Q * C, 3 * Q * C, C, Q * C + C)  # column j of every tile
    for n in range(n0, n1):
        to_phase(x, n, xs, PH, PW, 4)
        for ti in range(TH):
            d0, d1, d2 = xs[4 * ti], xs[4 * ti + 1], xs[4 * ti + 2]
            d3, d4, d5 = xs[4 * ti + 3], xs[4 * ti + 4], xs[4 * ti + 5]
            q0, q1, q2, q3, q4, q5 = tmp[0], tmp[1], tmp[2], tmp[3], tmp[4], tmp[5]
            for e in range(L):  # down the columns: tmp[k] = (B^T d)[k, :]
                q0[e], q1[e], q2[e], q3[e], q4[e], q5[e] = _bt4(d0[e], d1[e], d2[e], d3[e],
                                                                d4[e], d5[e])
            t0 = ((n - n0) * TH + ti) * TW * C
            for k in range(6):  # along the rows: V[6l + k] = (B^T d B)[k, l]
                row = tmp[k]
                p0, p1, p2 = row[offs[0]:], row[offs[1]:], row[offs[2]:]
                p3, p4, p5 = row[offs[3]:], row[offs[4]:], row[offs[5]:]
                v0, v1, v2 = V[k, t0:], V[6 + k, t0:], V[12 + k, t0:]
                v3, v4, v5 = V[18 + k, t0:], V[24 + k, t0:], V[30 + k, t0:]
                for e in range(R):
                    v0[e], v1[e], v2[e], v3[e], v4[e], v5[e] = _bt4(p0[e], p1[e], p2[e], p3[e],
                                                                    p4[e], p5[e])


def output_tiles_f4_body(M, n0, n1, y, tmp, rows):
    """``y[n]`` tile by tile from ``y = A^T M A``, for images ``n0:n1`` (tiles numbered as in
    :func:`input_tiles_f4_body`).

    Args:
        M: ``(36, S)``: ``M[6l + k, t*OC + oc]``.
        y: ``(N, OC, OH, OW)``, written.
        tmp: scratch ``(24, TW*OC)``; rows: scratch ``(16, TW*OC)``.
    """
    _, OC, OH, OW = y.shape
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    R = TW * OC
    off = rows_offsets(OW, 4, R, OC)
    for n in range(n0, n1):
        for ti in range(TH):
            t0 = ((n - n0) * TH + ti) * R
            for j in range(6):  # down column j: tmp[6a + j] = (A^T M)[a, j]
                m0, m1, m2 = M[6 * j, t0:], M[6 * j + 1, t0:], M[6 * j + 2, t0:]
                m3, m4, m5 = M[6 * j + 3, t0:], M[6 * j + 4, t0:], M[6 * j + 5, t0:]
                q0, q1, q2, q3 = tmp[j], tmp[6 + j], tmp[12 + j], tmp[18 + j]
                for e in range(R):
                    q0[e], q1[e], q2[e], q3[e] = _at4(m0[e], m1[e], m2[e], m3[e], m4[e], m5[e])
            for a in range(4):  # along row a: rows[4b + a] = (A^T M A)[a, b]
                p0, p1, p2 = tmp[6 * a], tmp[6 * a + 1], tmp[6 * a + 2]
                p3, p4, p5 = tmp[6 * a + 3], tmp[6 * a + 4], tmp[6 * a + 5]
                r0, r1, r2, r3 = rows[a], rows[4 + a], rows[8 + a], rows[12 + a]
                for e in range(R):
                    r0[e], r1[e], r2[e], r3[e] = _at4(p0[e], p1[e], p2[e], p3[e], p4[e], p5[e])
            rows_to_nchw(rows, 4, y, n, ti, off)


def grad_tiles_f4_body(gy, n0, n1, gs, tmp, Z):
    """``Z[6l + k, t*OC + oc] = (A g A^T)[k, l]`` for every 4x4 tile ``g`` of ``gy[n0:n1]``.

    Args:
        gy: ``(N, OC, OH, OW)``.
        gs: phase-split scratch ``(4*TH, 4*TW*OC)``, zero outside ``(OH, OW)`` (the overhang
            of the last tiles); still so on return.
        tmp: scratch ``(6, 4*TW*OC)``; Z: ``(36, S)``.
    """
    OC = gy.shape[1]
    TH, TW = gs.shape[0] // 4, gs.shape[1] // (4 * OC)
    L, R = gs.shape[1], TW * OC
    for n in range(n0, n1):
        to_phase(gy, n, gs, 0, 0, 4)
        for ti in range(TH):
            g0, g1, g2, g3 = gs[4 * ti], gs[4 * ti + 1], gs[4 * ti + 2], gs[4 * ti + 3]
            q0, q1, q2, q3, q4, q5 = tmp[0], tmp[1], tmp[2], tmp[3], tmp[4], tmp[5]
            for e in range(L):  # down the columns: tmp[k] = (A g)[k, :]
                q0[e], q1[e], q2[e], q3[e], q4[e], q5[e] = _a4(g0[e], g1[e], g2[e], g3[e])
            t0 = ((n - n0) * TH + ti) * R
            for k in range(6):  # along the rows: Z[6l + k] = (A g A^T)[k, l]
                row = tmp[k]
                p0, p1, p2, p3 = row[0:], row[R:], row[2 * R:], row[3 * R:]
                z0, z1, z2 = Z[k, t0:], Z[6 + k, t0:], Z[12 + k, t0:]
                z3, z4, z5 = Z[18 + k, t0:], Z[24 + k, t0:], Z[30 + k, t0:]
                for e in range(R):
                    z0[e], z1[e], z2[e], z3[e], z4[e], z5[e] = _a4(p0[e], p1[e], p2[e], p3[e])


def input_adjoint_f4_body(Zi, n0, n1, xs, PH, PW, tmp, gx):
    """Adjoint of :func:`input_tiles_f4_body`: ``gx[n] (C, H, W)`` (overwritten) is the sum of
    ``B Z B^T`` over the overlapping 6x6 tiles of image ``n``, ``Z[k, l] = Zi[6l + k, t*C + c]``.

    Args:
        Zi: ``(36, S)``.
        xs: phase-split scratch ``(4*TH + 2, 4*Q*C)`` (any content; the sums are built there).
        tmp: scratch ``(36, TW*C)``; gx: ``(N, C, H, W)``.
    """
    C = gx.shape[1]
    TH, Q = _tile_geometry(xs, C, 4)
    TW = Q - 1
    R = TW * C
    offs = (0, Q * C, 2 * Q * C, 3 * Q * C, C, Q * C + C)
    for n in range(n0, n1):
        xs[:, :] = 0
        for ti in range(TH):
            t0 = ((n - n0) * TH + ti) * R
            for k in range(6):  # along row k: tmp[6j + k] = (Z B^T)[k, j]
                z0, z1, z2 = Zi[k, t0:], Zi[6 + k, t0:], Zi[12 + k, t0:]
                z3, z4, z5 = Zi[18 + k, t0:], Zi[24 + k, t0:], Zi[30 + k, t0:]
                q0, q1, q2 = tmp[k], tmp[6 + k], tmp[12 + k]
                q3, q4, q5 = tmp[18 + k], tmp[24 + k], tmp[30 + k]
                for e in range(R):
                    q0[e], q1[e], q2[e], q3[e], q4[e], q5[e] = _b4(z0[e], z1[e], z2[e], z3[e],
                                                                   z4[e], z5[e])
            for j in range(6):  # down column j, added into the image: (B Z B^T)[i, j]
                p0, p1, p2 = tmp[6 * j], tmp[6 * j + 1], tmp[6 * j + 2]
                p3, p4, p5 = tmp[6 * j + 3], tmp[6 * j + 4], tmp[6 * j + 5]
                o = offs[j]
                s0, s1, s2 = xs[4 * ti, o:], xs[4 * ti + 1, o:], xs[4 * ti + 2, o:]
                s3, s4, s5 = xs[4 * ti + 3, o:], xs[4 * ti + 4, o:], xs[4 * ti + 5, o:]
                for e in range(R):
                    e0, e1, e2, e3, e4, e5 = _b4(p0[e], p1[e], p2[e], p3[e], p4[e], p5[e])
                    s0[e] += e0
                    s1[e] += e1
                    s2[e] += e2
                    s3[e] += e3
                    s4[e] += e4
                    s5[e] += e5
        from_phase(xs, gx, n, PH, PW, 4)


# ---------------------------------------------------------------- F(2x2, 3x3)


def input_tiles_f2_body(x, n0, n1, xs, PH, PW, tmp, V):
    """As :func:`input_tiles_f4_body` for F(2x2, 3x3): 4x4 tiles 2 apart, ``V (16, S)``
    with ``V[4l + k]``, ``xs (2*TH + 2, 2*Q*C)``, ``tmp (4, 2*Q*C)``."""
    C = x.shape[1]
    TH, Q = _tile_geometry(xs, C, 2)
    TW, L = Q - 1, xs.shape[1]
    R = (Q - 1) * C
    offs = (0, Q * C, C, Q * C + C)
    for n in range(n0, n1):
        to_phase(x, n, xs, PH, PW, 2)
        for ti in range(TH):
            d0, d1, d2, d3 = xs[2 * ti], xs[2 * ti + 1], xs[2 * ti + 2], xs[2 * ti + 3]
            q0, q1, q2, q3 = tmp[0], tmp[1], tmp[2], tmp[3]
            for e in range(L):
                q0[e], q1[e], q2[e], q3[e] = _bt2(d0[e], d1[e], d2[e], d3[e])
            t0 = ((n - n0) * TH + ti) * TW * C
            for k in range(4):
                row = tmp[k]
                p0, p1, p2, p3 = row[offs[0]:], row[offs[1]:], row[offs[2]:], row[offs[3]:]
                v0, v1, v2, v3 = V[k, t0:], V[4 + k, t0:], V[8 + k, t0:], V[12 + k, t0:]
                for e in range(R):
                    v0[e], v1[e], v2[e], v3[e] = _bt2(p0[e], p1[e], p2[e], p3[e])


def output_tiles_f2_body(M, n0, n1, y, tmp, rows):
    """As :func:`output_tiles_f4_body` for F(2x2, 3x3): ``M (16, S)``, ``tmp (8, TW*OC)``,
    ``rows (4, TW*OC)``."""
    _, OC, OH, OW = y.shape
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    R = TW * OC
    off = rows_offsets(OW, 2, R, OC)
    for n in range(n0, n1):
        for ti in range(TH):
            t0 = ((n - n0) * TH + ti) * R
            for j in range(4):
                m0, m1 = M[4 * j, t0:], M[4 * j + 1, t0:]
                m2, m3 = M[4 * j + 2, t0:], M[4 * j + 3, t0:]
                q0, q1 = tmp[j], tmp[4 + j]
                for e in range(R):
                    q0[e], q1[e] = _at2(m0[e], m1[e], m2[e], m3[e])
            for a in range(2):
                p0, p1, p2, p3 = tmp[4 * a], tmp[4 * a + 1], tmp[4 * a + 2], tmp[4 * a + 3]
                r0, r1 = rows[a], rows[2 + a]
                for e in range(R):
                    r0[e], r1[e] = _at2(p0[e], p1[e], p2[e], p3[e])
            rows_to_nchw(rows, 2, y, n, ti, off)


def grad_tiles_f2_body(gy, n0, n1, gs, tmp, Z):
    """As :func:`grad_tiles_f4_body` for F(2x2, 3x3): ``gs (2*TH, 2*TW*OC)``,
    ``tmp (4, 2*TW*OC)``, ``Z (16, S)``."""
    OC = gy.shape[1]
    TH, TW = gs.shape[0] // 2, gs.shape[1] // (2 * OC)
    L, R = gs.shape[1], TW * OC
    for n in range(n0, n1):
        to_phase(gy, n, gs, 0, 0, 2)
        for ti in range(TH):
            g0, g1 = gs[2 * ti], gs[2 * ti + 1]
            q0, q1, q2, q3 = tmp[0], tmp[1], tmp[2], tmp[3]
            for e in range(L):
                q0[e], q1[e], q2[e], q3[e] = _a2(g0[e], g1[e])
            t0 = ((n - n0) * TH + ti) * R
            for k in range(4):
                row = tmp[k]
                p0, p1 = row[0:], row[R:]
                z0, z1, z2, z3 = Z[k, t0:], Z[4 + k, t0:], Z[8 + k, t0:], Z[12 + k, t0:]
                for e in range(R):
                    z0[e], z1[e], z2[e], z3[e] = _a2(p0[e], p1[e])


def input_adjoint_f2_body(Zi, n0, n1, xs, PH, PW, tmp, gx):
    """As :func:`input_adjoint_f4_body` for F(2x2, 3x3): ``Zi (16, S)``,
    ``xs (2*TH + 2, 2*Q*C)``, ``tmp (16, TW*C)``."""
    C = gx.shape[1]
    TH, Q = _tile_geometry(xs, C, 2)
    TW = Q - 1
    R = TW * C
    offs = (0, Q * C, C, Q * C + C)
    for n in range(n0, n1):
        xs[:, :] = 0
        for ti in range(TH):
            t0 = ((n - n0) * TH + ti) * R
            for k in range(4):
                z0, z1, z2, z3 = Zi[k, t0:], Zi[4 + k, t0:], Zi[8 + k, t0:], Zi[12 + k, t0:]
                q0, q1, q2, q3 = tmp[k], tmp[4 + k], tmp[8 + k], tmp[12 + k]
                for e in range(R):
                    q0[e], q1[e], q2[e], q3[e] = _b2(z0[e], z1[e], z2[e], z3[e])
            for j in range(4):
                p0, p1, p2, p3 = tmp[4 * j], tmp[4 * j + 1], tmp[4 * j + 2], tmp[4 * j + 3]
                o = offs[j]
                s0, s1 = xs[2 * ti, o:], xs[2 * ti + 1, o:]
                s2, s3 = xs[2 * ti + 2, o:], xs[2 * ti + 3, o:]
                for e in range(R):
                    e0, e1, e2, e3 = _b2(p0[e], p1[e], p2[e], p3[e])
                    s0[e] += e0
                    s1[e] += e1
                    s2[e] += e2
                    s3[e] += e3
        from_phase(xs, gx, n, PH, PW, 2)


_jit = njit(nogil=True, cache=True, fastmath={"contract"})
_input_tiles_f4 = _jit(input_tiles_f4_body)
_output_tiles_f4 = _jit(output_tiles_f4_body)
_grad_tiles_f4 = _jit(grad_tiles_f4_body)
_input_adjoint_f4 = _jit(input_adjoint_f4_body)
_input_tiles_f2 = _jit(input_tiles_f2_body)
_output_tiles_f2 = _jit(output_tiles_f2_body)
_grad_tiles_f2 = _jit(grad_tiles_f2_body)
_input_adjoint_f2 = _jit(input_adjoint_f2_body)
