"""Winograd minimal filtering for 3x3 stride-1 convolutions on the CPU: F(2x2, 3x3), F(4x4, 3x3).

Lavin & Gray (arXiv 1509.09308): an ``m x m`` output tile of a 3x3 convolution is
``A^T [ sum_c (G w G^T) * (B^T d B) ] A`` with ``d`` the ``a x a`` input tile (``a = m + 2``).
Summed over the channels, the elementwise products become, for each of the ``a*a`` tile
positions ``xi``, one matrix product over channels:

    M[xi] (T, OC) = V[xi] (T, C) @ U[xi] (C, OC)      V = B^T d B, U = G w G^T, T tiles

That is ``a*a/m^2`` products per output instead of 9: 4 for F(2x2) (2.25x fewer), 2.25 for
F(4x4) (4x fewer). The transforms cost a few additions per value, and F(4x4)'s larger
constants cost float32 accuracy (see the tests for the measured error per layer shape).

Shapes (``a*a`` positions, column-major within the tile, see :mod:`winograd_tiles`)::

    W  (OC, C, 3, 3)     weight              U  (a*a, C, OC)    transformed weight
    x  (N, C, H, W)      input               y  (N, OC, OH, OW) OH = H + 2*PH - 2
    gU (a*a, C, OC)      gradient w.r.t. U;  gW = weight_transform_adjoint(gU)

The weight transform is split out so that a weight used twice (a shared block) is transformed
once per step and its two gradients are added in the transformed domain before one adjoint
transform: ``gW = G^T (gU_1 + gU_2) G``.

How the work is cut: each worker thread (:mod:`parallel`) takes a contiguous slice of the batch
and goes through it a few images at a time, so that the transformed tiles of one chunk (``V``,
``M``; about :data:`CHUNK_BYTES`) stay in its L2 cache between the transform, the ``a*a``
single-threaded BLAS products and the inverse transform. Weight gradients are summed per worker
and the partial sums added in order (deterministic).
"""
from __future__ import annotations

import numpy as np

from minires.kernels.cpu import parallel
from minires.kernels.cpu import winograd_tiles as tiles

#: Output tile sizes ``m`` available: F(2x2, 3x3) and F(4x4, 3x3).
TILE_SIZES = (2, 4)
#: Bytes of transformed tiles (all buffers of a chunk) per worker: about its L2 cache (2 MB on
#: the Zen 5 we measured on; 1.5-4 MB measured within noise of each other, 256 KB up to 30%
#: slower in the backward pass, whose per-chunk weight-gradient sums favour longer chunks).
CHUNK_BYTES = 2 * 1024 * 1024

# G (a x 3) of F(m, 3), in float64; the data transforms live in winograd_tiles.
_G = {
    2: np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
    4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
}
_KERNELS = {  # m -> (input_tiles, output_tiles, grad_tiles, input_adjoint)
    2: (tiles._input_tiles_f2, tiles._output_tiles_f2, tiles._grad_tiles_f2,
        tiles._input_adjoint_f2),
    4: (tiles._input_tiles_f4, tiles._output_tiles_f4, tiles._grad_tiles_f4,
        tiles._input_adjoint_f4),
}


def _check_tile(m):
    if m not in TILE_SIZES:
        raise ValueError(f"Winograd output tile size must be one of {TILE_SIZES}, got {m!r}")


def choose_tile_size(x_shape, W_shape, stride, pad, workers: int = 1):
    """The output tile ``m`` (4 or 2) to compute this convolution with, or None for im2col.

    Args:
        x_shape: ``(N, C, H, W)``; W_shape: ``(OC, C, KH, KW)``; stride, pad: ``(SH, SW)``,
            ``(PH, PW)``; workers: threads the batch is split over.

    The rule follows the per-layer measurements (``benchmarks/cpu_conv_layers.py``):

    * only 3x3 stride-1 kernels have a Winograd path; for those, F(2x2) or F(4x4) was faster
      than im2col on every shape measured (ResNet-20's layers including the 3-channel first
      one, 2x2 to 64x64 images, 16 to 640 channels);
    * F(4x4) needs ``36`` products per 6x6 tile against ``16`` per 4x4 tile for F(2x2): on
      small images its overhanging tiles waste that advantage (2x2 outputs: 36 against 16),
      so it is used only when ``36 * tiles4 < 16 * tiles2``;
    * its transformed weight ``U`` is 36/9 the size of ``W`` and every chunk's products read all
      of it, so F(4x4) also needs enough tiles per worker to amortise ``U``:
      ``tiles4 / workers >= C*OC / (2*(C + OC))`` (a 640-channel 8x8 layer at batch 4 has 16
      tiles: F(2x2) was 2.4x faster there; ResNet-20's 64-channel 8x8 layer at batch 128 has 256
      per worker against a threshold of 16).
    """
    N, C, H, W = x_shape
    OC, _, KH, KW = W_shape
    (SH, SW), (PH, PW) = stride, pad
    OH, OW = H + 2 * PH - 2, W + 2 * PW - 2
    if (KH, KW) != (3, 3) or (SH, SW) != (1, 1) or OH < 1 or OW < 1:
        return None
    tiles4 = N * -(-OH // 4) * -(-OW // 4)
    tiles2 = N * -(-OH // 2) * -(-OW // 2)
    if 36 * tiles4 < 16 * tiles2 and 2 * tiles4 * (C + OC) >= C * OC * max(1, workers):
        return 4
    return 2


def _kron(m):
    """``K (a*a, 9)`` with ``K[a*l + k, 3*i + j] = G[k, i] G[l, j]``: then ``U = G W G^T`` for
    every channel pair at once is the single product ``K @ W (9, C*OC)`` (an einsum over the
    six indices took milliseconds for 64 channels, longer than the convolution)."""
    G = _G[m]
    return np.einsum("ki,lj->lkij", G, G).reshape((m + 2) ** 2, 9)


_KRON = {m: _kron(m) for m in TILE_SIZES}


def _serial_product(a, b):
    """``a @ b`` with single-threaded BLAS (through :func:`parallel.run_split` with one slice):
    the weight-side products are too small to gain from threads, and a multi-threaded BLAS
    call on a busy machine waits for its descheduled helpers (6 ms instead of 0.1)."""
    return parallel.run_split(lambda start, stop: a @ b, 1)[0]


def weight_transform(W, m: int):
    """``U (a*a, C, OC)`` with ``U[a*l + k, c, oc] = (G W[oc, c] G^T)[k, l]``, ``a = m + 2``.

    Args:
        W: ``(OC, C, 3, 3)``, float32 or float64; ``U`` is computed and returned in its dtype
            (each entry is a sum of at most 9 products: float32 adds about 1e-7, far below
            F(4x4)'s own error, and halves the memory traffic, which matters for wide layers).
        m: output tile size (2 or 4).
    """
    _check_tile(m)
    OC, C, KH, KW = W.shape
    if (KH, KW) != (3, 3):
        raise ValueError(f"Winograd F(m, 3) needs a 3x3 kernel, got {KH}x{KW}")
    Wt = W.transpose(2, 3, 1, 0).reshape(9, C * OC)  # rows (i, j); a copy
    return _serial_product(_KRON[m].astype(W.dtype), Wt).reshape(-1, C, OC)


def weight_transform_adjoint(gU, m: int):
    """``gW (OC, C, 3, 3) = G^T gU G`` per channel pair: the gradient w.r.t. ``W`` of
    ``sum(gU * weight_transform(W))``. ``gU (a*a, C, OC)``; computed in its dtype."""
    _check_tile(m)
    _, C, OC = gU.shape
    gWt = _serial_product(_KRON[m].T.astype(gU.dtype), gU.reshape(-1, C * OC))  # (9, C*OC)
    return np.ascontiguousarray(gWt.reshape(3, 3, C, OC).transpose(3, 2, 0, 1))


class _Geometry:
    """Tile counts and scratch shapes of one convolution (see :mod:`winograd_tiles`)."""

    def __init__(self, x_shape, OC, m, PH, PW):
        N, C, H, W = x_shape
        self.N, self.C, self.H, self.W, self.OC, self.m = N, C, H, W, OC, m
        self.PH, self.PW, self.a = PH, PW, m + 2
        self.OH, self.OW = H + 2 * PH - 2, W + 2 * PW - 2
        if self.OH < 1 or self.OW < 1:
            raise ValueError(f"3x3 kernel does not fit input {H}x{W} with padding {PH},{PW}")
        self.TH, self.TW = -(-self.OH // m), -(-self.OW // m)
        self.tiles = self.TH * self.TW  # per image

    def images_per_chunk(self, channels: int, itemsize: int) -> int:
        """Images per chunk: the chunk's transformed tiles (``a*a`` positions x ``channels``,
        summed over its buffers) near :data:`CHUNK_BYTES`, so that they stay in L2 -- but at
        least as many bytes as ``U (a*a, C, OC)``, because every chunk's products read all of
        ``U``: for wide layers (640 channels: 59 MB for F(4x4)) one image per chunk made the
        convolution a stream of ``U`` from memory, 4x slower than im2col."""
        per_image = self.a * self.a * self.tiles * channels * itemsize
        U_bytes = self.a * self.a * self.C * self.OC * itemsize
        return max(1, max(CHUNK_BYTES, U_bytes) // per_image)

    def input_scratch(self, dtype):
        """Zeroed phase-split image ``xs (m*TH + 2, m*Q*C)``, ``Q = TW + 1``."""
        m = self.m
        return np.zeros((m * self.TH + 2, m * (self.TW + 1) * self.C), dtype=dtype)

    def grad_scratch(self, dtype):
        """Zeroed phase-split output gradient ``gs (m*TH, m*TW*OC)``."""
        m = self.m
        return np.zeros((m * self.TH, m * self.TW * self.OC), dtype=dtype)

    def positions(self, images: int, channels: int, dtype):
        """A ``(a*a, S)`` buffer for ``images`` images' tiles, ``S >= images*tiles*channels``
        rounded to an odd number of 64-byte lines: the ``a*a`` rows are read and written
        together, and rows a multiple of 4 KB apart would all compete for the same cache
        sets (measured: 2-3x slower transforms)."""
        itemsize = np.dtype(dtype).itemsize
        lines = -(-images * self.tiles * channels * itemsize // 64)
        lines += 1 - lines % 2
        return np.empty((self.a * self.a, lines * 64 // itemsize), dtype=dtype)

    def matrices(self, buf, images: int, channels: int):
        """The first ``images`` images of a :meth:`positions` buffer as ``(a*a, T, channels)``
        (a view: each position's ``(T, channels)`` block is contiguous)."""
        T = images * self.tiles
        return buf[:, :T * channels].reshape(self.a * self.a, T, channels)


def _check_transformed_weight(U, C, m):
    _check_tile(m)
    a = m + 2
    if U.ndim != 3 or U.shape[0] != a * a or U.shape[1] != C:
        raise ValueError(f"U must be (a*a, C, OC) = ({a * a}, {C}, OC) for F({m}x{m}, 3x3) and "
                         f"{C} input channels, got {U.shape}")


def winograd_forward(x, U, m: int, PH: int, PW: int):
    """``y (N, OC, OH, OW)``: the stride-1 cross-correlation of ``x (N, C, H, W)`` with the 3x3
    weight ``W`` whose transform is ``U = weight_transform(W, m)`` (zero padding ``PH, PW``)."""
    x = np.ascontiguousarray(x)
    _check_transformed_weight(U, x.shape[1], m)
    U = U.astype(x.dtype, copy=False)
    g = _Geometry(x.shape, U.shape[2], m, PH, PW)
    input_tiles, output_tiles, _, _ = _KERNELS[m]
    y = np.empty((g.N, g.OC, g.OH, g.OW), dtype=x.dtype)
    step = g.images_per_chunk(g.C + g.OC, x.itemsize)

    def task(start, stop):
        n = min(step, stop - start)
        xs = g.input_scratch(x.dtype)
        tmp = np.empty((g.a, xs.shape[1]), dtype=x.dtype)
        V, M = g.positions(n, g.C, x.dtype), g.positions(n, g.OC, x.dtype)
        tmp_out = np.empty((g.a * m, g.TW * g.OC), dtype=x.dtype)
        rows = np.empty((m * m, g.TW * g.OC), dtype=x.dtype)
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            input_tiles(x, n0, n1, xs, PH, PW, tmp, V)
            np.matmul(g.matrices(V, n1 - n0, g.C), U, out=g.matrices(M, n1 - n0, g.OC))
            output_tiles(M, n0, n1, y, tmp_out, rows)

    parallel.run_split(task, g.N)
    return y


def winograd_backward(x, gy, U, m: int, PH: int, PW: int, need_gx: bool = True,
                      need_gU: bool = True, x_shape=None):
    """Gradients ``(gx, gU)`` of :func:`winograd_forward` for upstream ``gy (N, OC, OH, OW)``.

    ``gx (N, C, H, W)``; ``gU (a*a, C, OC)`` is the gradient w.r.t. ``U`` (apply
    :func:`weight_transform_adjoint` for ``gW``, after adding the ``gU`` of every use of a
    shared weight). An entry is None when not asked for. ``U`` is only read for ``gx`` (may be
    None otherwise); ``x`` only for ``gU`` (may be None otherwise, and then ``x_shape`` gives
    ``(N, C, H, W)``).

    One pass over the batch: each chunk's ``Z = A gy A^T`` serves both products,
    ``gU[xi] += V[xi]^T Z[xi]`` and ``Zi[xi] = Z[xi] U[xi]^T`` (then ``gx += B Zi B^T``).
    """
    gy = np.ascontiguousarray(gy)
    shape = tuple(x.shape if x is not None else x_shape)
    _check_tile(m)
    if need_gU and x is None:
        raise ValueError("winograd_backward: the weight gradient needs x")
    if need_gx:
        _check_transformed_weight(U, shape[1], m)
    a = m + 2
    g = _Geometry(shape, gy.shape[1], m, PH, PW)
    if gy.shape != (g.N, g.OC, g.OH, g.OW):
        raise ValueError(f"gy must be {(g.N, g.OC, g.OH, g.OW)}, got {gy.shape}")
    if not (need_gx or need_gU):
        return None, None
    if g.N == 0:  # no chunk would write the weight gradient
        return (np.empty(shape, dtype=gy.dtype) if need_gx else None,
                np.zeros((a * a, g.C, g.OC), dtype=gy.dtype) if need_gU else None)
    input_tiles, _, grad_tiles, input_adjoint = _KERNELS[m]
    dtype = gy.dtype
    if need_gU:
        x = np.ascontiguousarray(x, dtype=dtype)
    UT = np.ascontiguousarray(U.transpose(0, 2, 1), dtype=dtype) if need_gx else None
    gx = np.empty(shape, dtype=dtype) if need_gx else None
    step = g.images_per_chunk(g.OC + (g.C if need_gU else 0) + (g.C if need_gx else 0),
                              gy.itemsize)

    def task(start, stop):
        n = min(step, stop - start)
        gs = g.grad_scratch(dtype)
        tmp_grad = np.empty((a, gs.shape[1]), dtype=dtype)
        Z = g.positions(n, g.OC, dtype)
        if need_gU:
            xs = g.input_scratch(dtype)
            tmp_in = np.empty((a, xs.shape[1]), dtype=dtype)
            V = g.positions(n, g.C, dtype)
            gU, part = (np.empty((a * a, g.C, g.OC), dtype=dtype) for _ in range(2))
        if need_gx:
            xs_adj = g.input_scratch(dtype)
            tmp_adj = np.empty((a * a, g.TW * g.C), dtype=dtype)
            Zi = g.positions(n, g.C, dtype)
        for n0 in range(start, stop, step):
            n1 = min(n0 + step, stop)
            grad_tiles(gy, n0, n1, gs, tmp_grad, Z)
            Zm = g.matrices(Z, n1 - n0, g.OC)
            if need_gU:
                input_tiles(x, n0, n1, xs, PH, PW, tmp_in, V)
                first = n0 == start
                np.matmul(g.matrices(V, n1 - n0, g.C).transpose(0, 2, 1), Zm,
                          out=gU if first else part)
                if not first:
                    gU += part
            if need_gx:
                np.matmul(Zm, UT, out=g.matrices(Zi, n1 - n0, g.C))
                input_adjoint(Zi, n0, n1, xs_adj, PH, PW, tmp_adj, gx)
        return gU if need_gU else None

    partials = parallel.run_split(task, g.N)
    gU = None
    if need_gU:
        gU = partials[0]
        for p in partials[1:]:
            gU += p
    return gx, gU


def winograd_backward_data(gy, U, m: int, PH: int, PW: int, x_shape):
    """``gx (N, C, H, W)`` of :func:`winograd_forward` (see :func:`winograd_backward`)."""
    return winograd_backward(None, gy, U, m, PH, PW, need_gx=True, need_gU=False,
                             x_shape=x_shape)[0]


def winograd_backward_weight(x, gy, m: int, PH: int, PW: int):
    """``gU (a*a, C, OC)`` of :func:`winograd_forward` (see :func:`winograd_backward`)."""
    return winograd_backward(x, gy, None, m, PH, PW, need_gx=False, need_gU=True)[1]
