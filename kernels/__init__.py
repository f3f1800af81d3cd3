"""Hand-written kernels, installed as ``minires.kernels``.

``cpu/`` holds numba kernels for NumPy arrays; ``cuda/`` holds CUDA C compiled through CuPy for
CuPy arrays. The functions here pick the implementation from the array's type, so code above
this layer never asks which device it is on.
"""
from __future__ import annotations


def _on_gpu(array) -> bool:
    return type(array).__module__.startswith("cupy")


def im2col(x, KH, KW, SH, SW, PH, PW):
    """Patches of ``x (N, C, H, W)`` as ``col (N, C, KH, KW, OH, OW)``."""
    if _on_gpu(x):
        from minires.kernels import cuda
        return cuda.im2col(x, KH, KW, SH, SW, PH, PW)
    from minires.kernels.cpu import im2col as cpu
    return cpu.im2col(x, KH, KW, SH, SW, PH, PW)


def col2im(col, H, W, SH, SW, PH, PW):
    """Adjoint of ``im2col``: ``col (N, C, KH, KW, OH, OW)`` summed into ``(N, C, H, W)``."""
    if _on_gpu(col):
        from minires.kernels import cuda
        return cuda.col2im(col, H, W, SH, SW, PH, PW)
    from minires.kernels.cpu import im2col as cpu
    return cpu.col2im(col, H, W, SH, SW, PH, PW)
