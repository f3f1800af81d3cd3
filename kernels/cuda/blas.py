"""Matrix products on the GPU: cuBLAS GEMMs on a handle of our own, called through ctypes.

Why not ``cupy.matmul``, nor CuPy's own cuBLAS bindings:

* ``cupy.matmul`` of operands with more than two dimensions makes both contiguous first (a
  transposed view of a large patch matrix is a full copy) and broadcasts a 2-D weight over a
  batch through pointer arrays; the convolution needs strided batches and leading dimensions
  that only the cuBLAS call itself can express.
* A CUDA graph cannot contain them: every cuBLAS wrapper in ``cupy_backends.cuda.libs.cublas``
  (which ``cupy.matmul`` uses too) starts with ``setStream``, and that raises
  ``NotImplementedError`` whenever the current stream is capturing. cuBLAS itself supports
  stream capture (GEMMs with host-side ``alpha``/``beta`` are captured with their values).

So this module opens the cuBLAS library CuPy has already loaded, creates its own handle per
device (so CuPy's handle and its settings are never touched), binds it to the current CuPy
stream before each call, and keeps TF32 off (``CUBLAS_DEFAULT_MATH``): float32 products are
computed in float32, as PyTorch's with TF32 disabled.

:func:`gemm` speaks row-major (NumPy's order) and translates to cuBLAS's column-major call.
:func:`library` is the one place that creates the handle: the CPU emulator replaces it with a
NumPy implementation of the very same cuBLAS call (tests/cuda_emulator.py), so that leading
dimensions, strides and transposes are checked without a GPU.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

from minires.kernels.cuda.loader import cupy

__all__ = ["gemm", "library", "SCALAR_DTYPES"]

OP_N, OP_T = 0, 1                    # cublasOperation_t
POINTER_MODE_HOST = 0                # alpha and beta are host values, captured by a graph
DEFAULT_MATH = 0                     # cublasMath_t: no TF32 tensor-core rounding
_STATUS = {0: "SUCCESS", 1: "NOT_INITIALIZED", 3: "ALLOC_FAILED", 7: "INVALID_VALUE",
           8: "ARCH_MISMATCH", 11: "MAPPING_ERROR", 13: "EXECUTION_FAILED",
           14: "INTERNAL_ERROR", 15: "NOT_SUPPORTED", 16: "LICENSE_ERROR"}
_LIBRARY_NAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so")

_p, _i, _ll = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
#: name -> argument types after the handle (the plain GEMM and the strided-batched one).
_GEMM_ARGS = {
    "gemm": [_i, _i, _i, _i, _i, _p, _p, _i, _p, _i, _p, _p, _i],
    "gemm_strided_batched": [_i, _i, _i, _i, _i, _p, _p, _i, _ll, _p, _i, _ll, _p, _p, _i,
                             _ll, _i],
}
_SYMBOLS = {("gemm", np.dtype(np.float32)): "cublasSgemm_v2",
            ("gemm", np.dtype(np.float64)): "cublasDgemm_v2",
            ("gemm_strided_batched", np.dtype(np.float32)): "cublasSgemmStridedBatched",
            ("gemm_strided_batched", np.dtype(np.float64)): "cublasDgemmStridedBatched"}
_SCALARS = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}
#: The dtypes cuBLAS multiplies here.
SCALAR_DTYPES = tuple(_SCALARS)


def _loaded_library_path():
    """The path of the libcublas CuPy loaded (it links its cuBLAS bindings against it), so that
    our handle lives in the very same library; None if it cannot be told."""
    import cupy_backends.cuda.libs.cublas  # noqa: F401  (loads libcublas into the process)
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.split()[-1]
                name = path.rsplit("/", 1)[-1]
                if name.startswith("libcublas.so"):
                    return path
    except OSError:
        pass
    return None


def _open_library():
    path = _loaded_library_path()
    for name in ((path,) if path else ()) + _LIBRARY_NAMES:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise RuntimeError("cannot load cuBLAS (libcublas.so.13 or .12), which CuPy's matrix "
                       "products need too: install CuPy's CUDA libraries (minires[cuda13])")


class Cublas:
    """One cuBLAS handle on the current device, with the two GEMMs minires uses.

    The methods take cuBLAS's own (column-major) arguments; ``A``, ``B``, ``C`` are CuPy arrays
    whose first element is where cuBLAS starts reading (or writing).
    """

    def __init__(self, lib=None):
        self.lib = lib if lib is not None else _open_library()
        # Every prototype is declared: ctypes would pass an undeclared Python int (a stream
        # address) as a 32-bit C int.
        for name, argtypes in (("cublasCreate_v2", [ctypes.POINTER(ctypes.c_void_p)]),
                               ("cublasSetStream_v2", [_p, _p]),
                               ("cublasSetMathMode", [_p, _i]),
                               ("cublasSetPointerMode_v2", [_p, _i])):
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
        for (kind, _), symbol in _SYMBOLS.items():
            fn = getattr(self.lib, symbol)
            fn.argtypes, fn.restype = [_p] + _GEMM_ARGS[kind], ctypes.c_int
        handle = ctypes.c_void_p()
        self._check("cublasCreate_v2", self.lib.cublasCreate_v2(ctypes.byref(handle)))
        self.handle = handle
        self._check("cublasSetMathMode", self.lib.cublasSetMathMode(handle, DEFAULT_MATH))
        self._check("cublasSetPointerMode_v2",
                    self.lib.cublasSetPointerMode_v2(handle, POINTER_MODE_HOST))
        self.stream = None

    @staticmethod
    def _check(name, status):
        if status != 0:
            raise RuntimeError(f"cuBLAS {name} failed: CUBLAS_STATUS_"
                               f"{_STATUS.get(status, status)}")

    def _bind_current_stream(self):
        stream = cupy().cuda.get_current_stream().ptr
        if stream != self.stream:
            self._check("cublasSetStream_v2", self.lib.cublasSetStream_v2(self.handle, stream))
            self.stream = stream

    def gemm_strided_batched(self, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
                             strideB, beta, C, ldc, strideC, batch):
        """``C_i = alpha op(A_i) op(B_i) + beta C_i`` for ``i < batch`` (column-major, cuBLAS's
        arguments); one plain GEMM when ``batch == 1``."""
        self._bind_current_stream()
        dtype = np.dtype(C.dtype)
        scalar = _SCALARS[dtype]
        a, b, c = (ctypes.c_void_p(x.data.ptr) for x in (A, B, C))
        alpha, beta = ctypes.byref(scalar(alpha)), ctypes.byref(scalar(beta))
        if batch == 1:
            symbol = _SYMBOLS[("gemm", dtype)]
            status = getattr(self.lib, symbol)(self.handle, transa, transb, m, n, k, alpha, a,
                                               lda, b, ldb, beta, c, ldc)
        else:
            symbol = _SYMBOLS[("gemm_strided_batched", dtype)]
            status = getattr(self.lib, symbol)(self.handle, transa, transb, m, n, k, alpha, a,
                                               lda, strideA, b, ldb, strideB, beta, c, ldc,
                                               strideC, batch)
        self._check(symbol, status)


@functools.cache
def _library_for_device(device_id: int) -> Cublas:
    return Cublas()


def library():
    """The :class:`Cublas` of the current device, created on first use."""
    return _library_for_device(cupy().cuda.Device().id)


def gemm(M, N, K, A, lda, B, ldb, C, ldc, *, trans_a=False, trans_b=False, stride_a=0,
         stride_b=0, stride_c=0, batch=1, alpha=1.0, beta=0.0):
    """``C_i = alpha * op(A_i) @ op(B_i) + beta * C_i`` in row-major terms, for ``i < batch``.

    ``op(A_i)`` is ``M x K``: without ``trans_a`` it is stored as M rows of K values, rows
    ``lda`` elements apart, starting ``i * stride_a`` elements into ``A``; with ``trans_a`` the
    array holds its transpose (K rows of M values, ``lda`` apart). Likewise ``op(B_i)`` is
    ``K x N`` and ``C_i`` is M rows of N values, ``ldc`` apart. Arrays are C-contiguous (their
    first element is where the matrices start) and of one dtype, float32 or float64.

    cuBLAS is column-major: a row-major ``C = op(A) op(B)`` is its ``C^T = op(B)^T op(A)^T``, so
    the call swaps the operands; no data moves.
    """
    for name, x in (("A", A), ("B", B), ("C", C)):
        if x.dtype != C.dtype or not x.flags.c_contiguous:
            raise ValueError(f"gemm: {name} must be C-contiguous {C.dtype}, got {x.dtype}")
    library().gemm_strided_batched(
        OP_T if trans_b else OP_N, OP_T if trans_a else OP_N, N, M, K, alpha, B, ldb,
        stride_b, A, lda, stride_a, beta, C, ldc, stride_c, batch)
