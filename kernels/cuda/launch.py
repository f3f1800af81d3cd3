"""Launch geometry and argument checks of the CUDA kernels: pure Python, no CuPy, tested on the
CPU.

Kernels index with 32-bit ints and loop grid-stride, so the host may cap a grid and every
element is still visited; :func:`check_int32` refuses arrays too large for that.
"""
from __future__ import annotations

import numpy as np

THREADS = 256              # elementwise kernels
MAX_BLOCKS = 65535         # elementwise kernels loop grid-stride, so a capped grid stays correct
WARPS_PER_BLOCK = 8        # softmax cross-entropy: one warp per row
# A grid-stride loop may step past its end by one stride (at most MAX_BLOCKS * 1024 threads)
# before it stops: keep that step inside int32 too.
INDEX_LIMIT = 2**31 - 1 - MAX_BLOCKS * 1024

#: dtype -> (the kernels' C type T, the NumPy scalar type that matches it).
_DTYPES = {np.dtype(np.float32): ("float", np.float32),
           np.dtype(np.float64): ("double", np.float64)}


def _dtype_info(dtype):
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise TypeError(f"the CUDA kernels take float32 or float64 arrays, got {dtype}")
    return _DTYPES[dtype]


def ctype(dtype) -> str:
    """The C type a kernel is instantiated with for ``dtype``: ``"float"`` or ``"double"``."""
    return _dtype_info(dtype)[0]


def scalar(value, dtype):
    """``value`` as the NumPy scalar that matches a kernel's ``T`` (np.float32 or np.float64):
    CuPy passes a Python float as a double, which a ``float`` parameter would misread."""
    return _dtype_info(dtype)[1](value)


def ints(*values) -> tuple:
    """``values`` as ``np.int32`` kernel arguments (CuPy passes a Python int as 64 bits)."""
    return tuple(np.int32(v) for v in values)


def check_int32(n: int, what: str = "array") -> int:
    """Return ``n`` if the kernels' 32-bit indices can address it, else raise ValueError."""
    if n > INDEX_LIMIT:
        raise ValueError(f"{what} has {n} elements; the CUDA kernels index with 32-bit ints "
                         f"(at most {INDEX_LIMIT} elements): use a smaller batch")
    return int(n)


def same_dtype(dtype, **arrays) -> None:
    """TypeError naming the first array whose dtype is not ``dtype``."""
    for name, a in arrays.items():
        if a.dtype != dtype:
            raise TypeError(f"{name} must be {dtype} like the input, got {a.dtype}")


def elementwise_launch(n: int, threads: int = THREADS, max_blocks: int | None = None) -> tuple:
    """``(grid, block)`` for a grid-stride kernel over ``n`` elements: enough blocks of
    ``threads`` to give every element a thread, at most ``max_blocks`` (default
    :data:`MAX_BLOCKS`), at least one."""
    max_blocks = MAX_BLOCKS if max_blocks is None else max_blocks
    blocks = max(1, min(max_blocks, -(-n // threads)))
    return (blocks,), (threads,)


def planes_launch(planes: int, per_plane: int, threads: int = THREADS) -> tuple:
    """``(grid, block)`` for kernels that give each block one image plane at a time (looping
    over planes grid-stride): a block of at most ``threads`` threads, fewer (whole warps) for
    planes of fewer values, and at most :data:`MAX_BLOCKS` blocks."""
    block = min(threads, max(32, -(-per_plane // 32) * 32))
    return (max(1, min(MAX_BLOCKS, planes)),), (block,)


def reduction_threads(count: int) -> int:
    """Threads per block for a per-channel reduction over ``count`` values: about eight values
    per thread, a power of two between 32 (one warp) and 1024 (the hardware limit)."""
    threads = 32
    while threads < 1024 and threads * 8 < count:
        threads *= 2
    return threads


#: Blocks the BatchNorm reductions aim for in all (several per SM of a large GPU), and the
#: fewest values a thread should sum before more blocks per channel are worth their partials.
CHANNEL_REDUCTION_BLOCKS = 1024
MIN_VALUES_PER_THREAD = 4


def channel_blocks(C: int, count: int) -> int:
    """Blocks per channel ``B`` for reductions over ``count`` values in each of ``C`` channels:
    enough for about :data:`CHANNEL_REDUCTION_BLOCKS` blocks in all, but no more than leave
    each of a block's threads :data:`MIN_VALUES_PER_THREAD` values. A function of the shape
    alone, so the summation order (and the result) does not depend on the GPU."""
    wanted = -(-CHANNEL_REDUCTION_BLOCKS // max(1, C))
    return max(1, min(wanted, count // (THREADS * MIN_VALUES_PER_THREAD)))


def per_channel_launch(C: int, count: int) -> tuple:
    """``(grid, block, B)`` for the BatchNorm reductions: ``B`` blocks per channel
    (:func:`channel_blocks`), so ``C * B`` blocks, each of at most :data:`THREADS` threads
    (a power of two, fewer for short slices)."""
    B = channel_blocks(C, count)
    threads = min(THREADS, reduction_threads(-(-count // B)))
    return (max(1, C) * B,), (threads,), B


def rows_launch(N: int, warps_per_block: int = WARPS_PER_BLOCK) -> tuple:
    """``(grid, block)`` for one warp per row of an ``(N, K)`` matrix."""
    return (max(1, -(-N // warps_per_block)),), (32 * warps_per_block,)
