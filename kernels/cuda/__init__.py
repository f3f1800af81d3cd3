"""CUDA C kernels for CuPy arrays, compiled once per process through ``cupy.RawModule``.

The ``.cu`` sources beside this file are package data. Each kernel body is a C++ template and
each source exports ``extern "C"`` wrappers ``<kernel>_f32`` / ``<kernel>_f64``; :func:`kernel`
picks the one that matches an array's dtype. ``common.cuh`` is pasted into every source that
includes it (:func:`source`), so NVRTC sees one self-contained translation unit and the compile
test can hand ``nvcc`` exactly the same text.

CuPy is imported lazily inside the functions that launch kernels: importing this module, reading
the sources and computing launch shapes all work without CuPy or a GPU.

Every wrapper has a NumPy reference with the same name and meaning in
:mod:`minires.kernels.cuda.reference`; the GPU tests compare the two.

Sources and their kernels (each as ``_f32`` and ``_f64``) -> wrappers here:

- ``im2col.cu``: im2col, col2im -> :func:`im2col`, :func:`col2im`
- ``batchnorm.cu``: bn_forward_train, bn_forward_eval, bn_backward -> :func:`batch_norm_forward`,
  :func:`batch_norm_backward` (ReLU optionally fused)
- ``activation.cu``: relu_forward, relu_backward -> :func:`relu_forward`, :func:`relu_backward`
- ``softmax_ce.cu``: softmax_ce_forward, softmax_ce_backward ->
  :func:`softmax_cross_entropy_forward`, :func:`softmax_cross_entropy_backward`
- ``sgd.cu``: sgd_update -> :func:`sgd_update`
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

#: Kernels each source defines, by base name; every one exists as ``<base>_f32`` and ``_f64``.
KERNELS = {
    "im2col.cu": ("im2col", "col2im"),
    "batchnorm.cu": ("bn_forward_train", "bn_forward_eval", "bn_backward"),
    "activation.cu": ("relu_forward", "relu_backward"),
    "softmax_ce.cu": ("softmax_ce_forward", "softmax_ce_backward"),
    "sgd.cu": ("sgd_update",),
}

#: Options for NVRTC (CuPy adds ``-arch`` for the current device). The compile test passes the
#: same standard to nvcc.
COMPILE_OPTIONS = ("--std=c++14",)

#: dtype -> (kernel name suffix, NumPy scalar type that matches the kernel's T).
_DTYPES = {np.dtype(np.float32): ("f32", np.float32), np.dtype(np.float64): ("f64", np.float64)}

THREADS = 256              # elementwise kernels
MAX_BLOCKS = 65535         # elementwise kernels loop grid-stride, so a capped grid stays correct
WARPS_PER_BLOCK = 8        # softmax cross-entropy: one warp per row
# Kernels index with 32-bit ints. A grid-stride loop may step past its end by one stride
# (at most MAX_BLOCKS * 1024 threads) before it stops: keep that step inside int32 too.
INDEX_LIMIT = 2**31 - 1 - MAX_BLOCKS * 1024

_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.MULTILINE)


# -- sources and modules -------------------------------------------------------------------------

def source_names() -> tuple:
    """Names of the ``.cu`` sources shipped with the package, sorted."""
    files = resources.files(__name__)
    return tuple(sorted(f.name for f in files.iterdir() if f.name.endswith(".cu")))


def source(name: str) -> str:
    """The text NVRTC compiles for ``name`` (e.g. ``"im2col.cu"``): the file with every
    ``#include "local.cuh"`` replaced by that header's text. Headers are only ever local; NVRTC
    has no host headers, so a ``#include <...>`` is an error."""
    files = resources.files(__name__)
    text = files.joinpath(name).read_text(encoding="utf-8")
    if re.search(r"^\s*#include\s*<", text, re.MULTILINE):
        raise ValueError(f"{name}: system headers cannot be included in an NVRTC source")

    def paste(match):
        return files.joinpath(match.group(1)).read_text(encoding="utf-8")

    return _INCLUDE.sub(paste, text)


@functools.cache
def module(name: str):
    """The ``cupy.RawModule`` for source ``name``, built once per process (compilation itself
    happens on first use and is cached on disk by CuPy)."""
    import cupy
    return cupy.RawModule(code=source(name), options=COMPILE_OPTIONS)


def _source_of(base: str) -> str:
    for name, bases in KERNELS.items():
        if base in bases:
            return name
    raise KeyError(f"no CUDA kernel named {base!r}; known: "
                   f"{', '.join(b for bases in KERNELS.values() for b in bases)}")


def kernel_name(base: str, dtype) -> str:
    """``"im2col", float32 -> "im2col_f32"``; TypeError for dtypes without a kernel."""
    return f"{base}_{_dtype_info(dtype)[0]}"


@functools.cache
def _kernel_cached(base: str, dtype_str: str):
    return module(_source_of(base)).get_function(kernel_name(base, dtype_str))


def kernel(base: str, dtype):
    """The compiled ``cupy.RawKernel`` ``<base>_f32`` or ``<base>_f64`` for ``dtype``."""
    return _kernel_cached(base, np.dtype(dtype).str)


# -- launch shapes (pure Python, tested on the CPU) ----------------------------------------------

def _dtype_info(dtype):
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise TypeError(f"the CUDA kernels take float32 or float64 arrays, got {dtype}")
    return _DTYPES[dtype]


def scalar(value, dtype):
    """``value`` as the NumPy scalar that matches a kernel's ``T`` (np.float32 or np.float64):
    CuPy passes a Python float as a double, which a ``float`` parameter would misread."""
    return _dtype_info(dtype)[1](value)


def check_int32(n: int, what: str = "array") -> int:
    """Return ``n`` if the kernels' 32-bit indices can address it, else raise ValueError."""
    if n > INDEX_LIMIT:
        raise ValueError(f"{what} has {n} elements; the CUDA kernels index with 32-bit ints "
                         f"(at most {INDEX_LIMIT} elements): use a smaller batch")
    return int(n)


def elementwise_launch(n: int, threads: int = THREADS, max_blocks: int | None = None) -> tuple:
    """``(grid, block)`` for a grid-stride kernel over ``n`` elements: enough blocks of
    ``threads`` to give every element a thread, at most ``max_blocks`` (default
    :data:`MAX_BLOCKS`), at least one."""
    max_blocks = MAX_BLOCKS if max_blocks is None else max_blocks
    blocks = max(1, min(max_blocks, -(-n // threads)))
    return (blocks,), (threads,)


def reduction_threads(count: int) -> int:
    """Threads per block for a per-channel reduction over ``count`` values: about eight values
    per thread, a power of two between 32 (one warp) and 1024 (the hardware limit)."""
    threads = 32
    while threads < 1024 and threads * 8 < count:
        threads *= 2
    return threads


def per_channel_launch(C: int, count: int) -> tuple:
    """``(grid, block)`` for the BatchNorm reductions: one block per channel."""
    return (max(1, C),), (reduction_threads(count),)


def rows_launch(N: int, warps_per_block: int = WARPS_PER_BLOCK) -> tuple:
    """``(grid, block)`` for one warp per row of an ``(N, K)`` matrix."""
    return (max(1, -(-N // warps_per_block)),), (32 * warps_per_block,)


def _contiguous(a):
    import cupy
    return cupy.ascontiguousarray(a)


def _same_dtype(dtype, **arrays):
    for name, a in arrays.items():
        if a.dtype != dtype:
            raise TypeError(f"{name} must be {dtype} like the input, got {a.dtype}")


# -- im2col / col2im -----------------------------------------------------------------------------

def conv_output_size(size: int, k: int, s: int, p: int) -> int:
    """Output length of a convolution along one axis: ``(size + 2p - k) // s + 1``."""
    return (size + 2 * p - k) // s + 1


def im2col(x, KH: int, KW: int, SH: int, SW: int, PH: int, PW: int):
    """Patches of ``x (N, C, H, W)`` as ``col (N, C, KH, KW, OH, OW)`` (zeros in the padding)."""
    import cupy
    x = _contiguous(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    col = cupy.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    check_int32(col.size, "col")
    grid, block = elementwise_launch(col.size)
    kernel("im2col", x.dtype)(grid, block, (
        x, col, *(np.int32(v) for v in (N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW))))
    return col


def col2im(col, H: int, W: int, SH: int, SW: int, PH: int, PW: int):
    """Adjoint of :func:`im2col`: ``col (N, C, KH, KW, OH, OW)`` summed into ``(N, C, H, W)``,
    deterministically (one thread gathers each pixel's contributions in a fixed order)."""
    import cupy
    col = _contiguous(col)
    N, C, KH, KW, OH, OW = col.shape
    check_int32(col.size, "col")
    x = cupy.empty((N, C, H, W), dtype=col.dtype)  # every element is written
    grid, block = elementwise_launch(x.size)
    kernel("col2im", col.dtype)(grid, block, (
        col, x, *(np.int32(v) for v in (N, C, H, W, KH, KW, OH, OW, SH, SW, PH, PW))))
    return x


# -- ReLU ----------------------------------------------------------------------------------------

def relu_forward(x):
    """``max(x, 0)`` elementwise, same shape and dtype as ``x``."""
    import cupy
    x = _contiguous(x)
    y = cupy.empty_like(x)
    grid, block = elementwise_launch(check_int32(x.size))
    kernel("relu_forward", x.dtype)(grid, block, (x, y, np.int32(x.size)))
    return y


def relu_backward(gy, y):
    """``gy`` where the forward output ``y`` is positive, else 0."""
    import cupy
    gy, y = _contiguous(gy), _contiguous(y)
    _same_dtype(y.dtype, gy=gy)
    gx = cupy.empty_like(y)
    grid, block = elementwise_launch(check_int32(y.size))
    kernel("relu_backward", y.dtype)(grid, block, (gy, y, gx, np.int32(y.size)))
    return gx


# -- BatchNorm -----------------------------------------------------------------------------------

@dataclass
class BatchNormSaved:
    """What :func:`batch_norm_backward` needs from the forward pass.

    ``x``: the input; ``y``: the output (kept only with ``relu``, for the ReLU mask); ``gamma``;
    ``mean``, ``inv_std``: ``(C,)`` statistics the forward pass normalised with (batch ones in
    training, running ones in eval); ``training``; ``relu``: whether ReLU was fused.
    """

    x: object
    y: object
    gamma: object
    mean: object
    inv_std: object
    training: bool
    relu: bool


def _channel_geometry(x):
    if x.ndim < 2:
        raise ValueError(f"batch_norm needs an input (N, C, ...), got shape {x.shape}")
    N, C = x.shape[0], x.shape[1]
    S = 1
    for d in x.shape[2:]:
        S *= d
    check_int32(x.size, "x")
    return N, C, S


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training: bool,
                       momentum: float = 0.1, eps: float = 1e-5, relu: bool = False):
    """Batch normalisation of ``x (N, C)`` or ``(N, C, H, W)`` per channel, optionally followed
    by ReLU, in one kernel.

    Args:
        gamma, beta: ``(C,)`` of x's dtype.
        running_mean, running_var: ``(C,)`` arrays updated in place in training mode (both may
            be None there); the statistics used in eval mode.
        training: batch statistics (and running-statistics update) or running statistics.
        momentum, eps: as in PyTorch. relu: apply ``max(., 0)`` to the output.
    Returns:
        ``(y, saved)``: ``y`` shaped like ``x`` and a :class:`BatchNormSaved` for the backward.
    """
    import cupy
    x = _contiguous(x)
    N, C, S = _channel_geometry(x)
    dtype = x.dtype
    gamma, beta = _contiguous(gamma), _contiguous(beta)
    _same_dtype(dtype, gamma=gamma, beta=beta)
    y = cupy.empty_like(x)
    mean = cupy.empty(C, dtype=dtype)
    inv_std = cupy.empty(C, dtype=dtype)
    if training:
        update = running_mean is not None and running_var is not None
        # The kernel updates contiguous arrays of x's dtype; anything else gets a scratch copy
        # written back afterwards, so the caller's arrays are always the ones updated.
        rm = _kernel_view(running_mean, dtype) if update else mean
        rv = _kernel_view(running_var, dtype) if update else inv_std
        grid, block = per_channel_launch(C, N * S)
        kernel("bn_forward_train", dtype)(grid, block, (
            x, gamma, beta, y, mean, inv_std, rm, rv, np.int32(N), np.int32(C), np.int32(S),
            scalar(eps, dtype), scalar(momentum, dtype), np.int32(update), np.int32(relu)))
        if update:
            _write_back(rm, running_mean)
            _write_back(rv, running_var)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        rm = cupy.ascontiguousarray(running_mean, dtype=dtype)
        rv = cupy.ascontiguousarray(running_var, dtype=dtype)
        grid, block = elementwise_launch(x.size)
        kernel("bn_forward_eval", dtype)(grid, block, (
            x, gamma, beta, rm, rv, y, mean, inv_std, np.int32(N), np.int32(C), np.int32(S),
            scalar(eps, dtype), np.int32(relu)))
    saved = BatchNormSaved(x, y if relu else None, gamma, mean, inv_std, bool(training),
                           bool(relu))
    return y, saved


def _kernel_view(a, dtype):
    """``a`` itself when the kernel can update it in place, else a contiguous copy in dtype."""
    import cupy
    if a.dtype == dtype and a.flags.c_contiguous:
        return a
    return cupy.ascontiguousarray(a, dtype=dtype)


def _write_back(scratch, target):
    if scratch is not target:
        target[...] = scratch


def batch_norm_backward(gy, saved: BatchNormSaved, need_gx: bool = True):
    """Gradients of :func:`batch_norm_forward` for the upstream gradient ``gy`` (shaped like x).

    Returns:
        ``(gx, ggamma, gbeta)``; ``gx`` is None when ``need_gx`` is False.
    """
    import cupy
    x = saved.x
    gy = _contiguous(gy)
    _same_dtype(x.dtype, gy=gy)
    N, C, S = _channel_geometry(x)
    ggamma = cupy.empty(C, dtype=x.dtype)
    gbeta = cupy.empty(C, dtype=x.dtype)
    gx = cupy.empty_like(x) if need_gx else ggamma  # any valid pointer when not written
    y = saved.y if saved.relu else x                # read only when relu was fused
    grid, block = per_channel_launch(C, N * S)
    kernel("bn_backward", x.dtype)(grid, block, (
        gy, x, y, saved.gamma, saved.mean, saved.inv_std, gx, ggamma, gbeta, np.int32(N),
        np.int32(C), np.int32(S), np.int32(saved.training), np.int32(saved.relu),
        np.int32(need_gx)))
    return (gx if need_gx else None), ggamma, gbeta


# -- softmax cross-entropy -----------------------------------------------------------------------

def _labels_int64(labels, N: int):
    import cupy
    labels = cupy.asarray(labels)
    if labels.shape != (N,):
        raise ValueError(f"softmax_cross_entropy: labels must be shaped ({N},), got "
                         f"{labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"softmax_cross_entropy: labels must be integers, got {labels.dtype}")
    return cupy.ascontiguousarray(labels, dtype=cupy.int64)


def softmax_cross_entropy_forward(logits, labels):
    """Mean over rows of ``-log softmax(logits)[label]`` for ``logits (N, K)``, ``labels (N,)``.

    Labels are not range-checked on the host (that would synchronise every step): a label
    outside ``[0, K)`` makes its row's loss, hence the mean, NaN.

    Returns:
        ``(loss, log_z)``: a 0-d array of logits' dtype, and ``(N,)`` log-partition values that
        :func:`softmax_cross_entropy_backward` needs.
    """
    import cupy
    logits = _contiguous(logits)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must be (N, K), got {logits.shape}")
    N, K = logits.shape
    check_int32(logits.size, "logits")
    labels = _labels_int64(labels, N)
    losses = cupy.empty(N, dtype=logits.dtype)
    log_z = cupy.empty(N, dtype=logits.dtype)
    grid, block = rows_launch(N)
    kernel("softmax_ce_forward", logits.dtype)(grid, block, (
        logits, labels, losses, log_z, np.int32(N), np.int32(K)))
    return losses.mean(dtype=logits.dtype), log_z


def softmax_cross_entropy_backward(gy, logits, labels, log_z):
    """Gradient of the mean loss with respect to ``logits (N, K)``: ``(softmax - onehot) * gy/N``.

    ``gy`` (the upstream scalar) may be a device array; it is read on the device.
    """
    import cupy
    logits = _contiguous(logits)
    N, K = logits.shape
    labels = _labels_int64(labels, N)
    gy = cupy.ascontiguousarray(cupy.asarray(gy, dtype=logits.dtype).reshape(1))
    gx = cupy.empty_like(logits)
    grid, block = elementwise_launch(logits.size)
    kernel("softmax_ce_backward", logits.dtype)(grid, block, (
        logits, labels, _contiguous(log_z), gy, gx, np.int32(N), np.int32(K)))
    return gx


# -- SGD -----------------------------------------------------------------------------------------

def sgd_update(param, grad, velocity, lr: float, momentum: float = 0.0,
               weight_decay: float = 0.0, nesterov: bool = False, first_step: bool = False):
    """One in-place SGD step on ``param`` (and ``velocity``), PyTorch's semantics.

    Args:
        param: contiguous array, updated in place.
        grad: its gradient, same shape and dtype.
        velocity: the momentum buffer (same shape and dtype), updated in place; may be None
            when ``momentum`` is 0.
        first_step: True on the parameter's first step, when the buffer is set to the gradient
            instead of being decayed (its old contents are ignored).
    """
    if not param.flags.c_contiguous:
        raise ValueError("sgd_update updates param in place and needs it C-contiguous")
    grad = _contiguous(grad)
    _same_dtype(param.dtype, grad=grad)
    if grad.shape != param.shape:
        raise ValueError(f"grad shape {grad.shape} does not match param shape {param.shape}")
    if momentum != 0:
        if velocity is None or velocity.shape != param.shape or not velocity.flags.c_contiguous:
            raise ValueError("momentum needs a C-contiguous velocity shaped like param")
        _same_dtype(param.dtype, velocity=velocity)
    else:
        velocity = param  # never touched when momentum is 0
    n = check_int32(param.size, "param")
    dtype = param.dtype
    grid, block = elementwise_launch(n)
    kernel("sgd_update", dtype)(grid, block, (
        param, grad, velocity, np.int32(n), scalar(lr, dtype), scalar(momentum, dtype),
        scalar(weight_decay, dtype), np.int32(nesterov), np.int32(first_step)))


def sgd_step(param, grad, buffers: dict, key, lr: float, momentum: float = 0.0,
             weight_decay: float = 0.0, nesterov: bool = False):
    """:func:`sgd_update` with the momentum buffer kept in ``buffers[key]``: created (and set to
    the first step's update direction by the kernel) when missing, so an optimizer can keep its
    buffers as its CPU path does. Nothing is stored when ``momentum`` is 0."""
    velocity, first_step = buffers.get(key), False
    if momentum != 0 and velocity is None:
        import cupy
        velocity = buffers[key] = cupy.empty_like(param)
        first_step = True
    sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov, first_step)
