"""Matrix products of 2-D arrays on the CPU: NumPy's (BLAS), which reads transposed views in
place."""
from __future__ import annotations

import numpy as np

__all__ = ["matmul"]


def matmul(a, b):
    """``a @ b`` for 2-D arrays ``a (M, K)`` and ``b (K, N)`` -> a new ``(M, N)`` array."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul expects (M, K) and (K, N) operands, got {a.shape} and "
                         f"{b.shape}")
    return np.matmul(a, b)
