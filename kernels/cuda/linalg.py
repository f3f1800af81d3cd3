"""Matrix products of 2-D arrays on the GPU, through cuBLAS (:mod:`.blas`), never through
``cupy.matmul``: they must also run inside a CUDA graph (see :mod:`.blas` for why)."""
from __future__ import annotations

import numpy as np

from minires.kernels.cuda.blas import SCALAR_DTYPES, gemm
from minires.kernels.cuda.loader import cupy

__all__ = ["matmul"]


def _as_stored(a):
    """``(array to hand cuBLAS, transposed, leading dimension)`` for a 2-D operand: a
    C-contiguous array as it is; the transpose of one (``W.T``) as that array, transposed; any
    other layout as a contiguous copy."""
    if a.flags.c_contiguous:
        return a, False, max(1, a.shape[1])
    if a.flags.f_contiguous:
        return a.T, True, max(1, a.shape[0])
    return cupy().ascontiguousarray(a), False, max(1, a.shape[1])


def matmul(a, b):
    """``a @ b`` for 2-D float32/float64 arrays ``a (M, K)`` and ``b (K, N)`` -> a new
    ``(M, N)`` array; transposed views (``W.T``) are read in place."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul expects (M, K) and (K, N) operands, got {a.shape} and "
                         f"{b.shape}")
    if a.dtype != b.dtype or np.dtype(a.dtype) not in SCALAR_DTYPES:
        raise TypeError(f"matmul takes two float32 or two float64 arrays, got {a.dtype} and "
                        f"{b.dtype}")
    (M, K), N = a.shape, b.shape[1]
    c = cupy().empty((M, N), dtype=a.dtype)
    if c.size == 0:
        return c
    if K == 0:
        c.fill(0)
        return c
    A, trans_a, lda = _as_stored(a)
    B, trans_b, ldb = _as_stored(b)
    gemm(M, N, K, A, lda, B, ldb, c, max(1, N), trans_a=trans_a, trans_b=trans_b)
    return c
