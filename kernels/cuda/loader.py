"""Sources and compiled modules of the CUDA kernels.

The ``.cu`` sources beside this file are package data. Every kernel is a C++ template
``template <typename T> __global__ void name(...)``; :func:`module` compiles a source once per
process through ``cupy.RawModule`` with the name expressions ``name<float>`` and
``name<double>``, so NVRTC instantiates both and :func:`kernel` finds the one for an array's
dtype. ``common.cuh`` is pasted into every source that includes it (:func:`source`), so NVRTC
sees one self-contained translation unit and the compile tests can hand ``nvcc`` the same text.

CuPy is an optional dependency: it is imported by :func:`cupy` when a kernel first runs, never
when this module is imported, so reading the sources works without CuPy or a GPU.
"""
from __future__ import annotations

import functools
import re
from importlib import resources

from minires.kernels.cuda.launch import ctype

#: Kernels each source defines; each is compiled for float and double.
KERNELS = {
    "im2col.cu": ("im2col", "col2im", "channel_major"),
    "batchnorm.cu": ("bn_partial_sums", "bn_normalize", "bn_forward_eval",
                     "bn_backward_partial_sums", "bn_backward_apply"),
    "activation.cu": ("relu_forward", "relu_backward", "add_relu_forward"),
    "softmax_ce.cu": ("softmax_ce_forward", "softmax_ce_backward"),
    "sgd.cu": ("sgd_update",),
    "dropout.cu": ("dropout_forward", "dropout_backward"),
}

#: Options for NVRTC (CuPy adds ``-arch`` for the current device, then ``-ftz=true``). The
#: compile test passes the same standard to nvcc.
COMPILE_OPTIONS = ("--std=c++14",)

#: Options some sources need on top of :data:`COMPILE_OPTIONS`. The SGD update must round like
#: NumPy: ``--fmad=false`` keeps NVRTC from contracting ``a * b + c`` into one fused
#: multiply-add (which rounds once instead of twice).
SOURCE_OPTIONS = {"sgd.cu": ("--fmad=false",)}

_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$', re.MULTILINE)


def cupy():
    """The ``cupy`` module, imported on first use (see the module docstring)."""
    import cupy  # optional dependency: never imported when minires is
    return cupy


def source_names() -> tuple:
    """Names of the ``.cu`` sources shipped with the package, sorted."""
    files = resources.files(__package__)
    return tuple(sorted(f.name for f in files.iterdir() if f.name.endswith(".cu")))


def source(name: str) -> str:
    """The text NVRTC compiles for ``name`` (e.g. ``"im2col.cu"``): the file with every
    ``#include "local.cuh"`` replaced by that header's text. Headers are only ever local; NVRTC
    has no host headers, so a ``#include <...>`` is an error."""
    files = resources.files(__package__)
    text = files.joinpath(name).read_text(encoding="utf-8")
    if re.search(r"^\s*#include\s*<", text, re.MULTILINE):
        raise ValueError(f"{name}: system headers cannot be included in an NVRTC source")

    def paste(match):
        return files.joinpath(match.group(1)).read_text(encoding="utf-8")

    return _INCLUDE.sub(paste, text)


def kernel_name(name: str, dtype) -> str:
    """The name expression of kernel ``name`` for ``dtype``: ``"im2col", float32 ->
    "im2col<float>"``; TypeError for dtypes without a kernel."""
    return f"{name}<{ctype(dtype)}>"


def name_expressions(source_name: str) -> tuple:
    """Every instantiation compiled for a source: each kernel for float and double."""
    return tuple(f"{name}<{t}>" for name in KERNELS[source_name] for t in ("float", "double"))


def compile_options(source_name: str) -> tuple:
    """The options minires hands NVRTC for ``source_name`` (CuPy appends its own)."""
    return COMPILE_OPTIONS + SOURCE_OPTIONS.get(source_name, ())


@functools.cache
def module(source_name: str):
    """The ``cupy.RawModule`` for a source, built once per process (compilation itself happens
    on first use and is cached on disk by CuPy)."""
    return cupy().RawModule(code=source(source_name), options=compile_options(source_name),
                            name_expressions=name_expressions(source_name))


def source_of(name: str) -> str:
    """The source that defines kernel ``name``; KeyError naming the known kernels otherwise."""
    for source_name, names in KERNELS.items():
        if name in names:
            return source_name
    raise KeyError(f"no CUDA kernel named {name!r}; known: "
                   f"{', '.join(n for names in KERNELS.values() for n in names)}")


@functools.cache
def _kernel_cached(name: str, expression: str):
    return module(source_of(name)).get_function(expression)


def kernel(name: str, dtype):
    """The compiled ``cupy.RawKernel`` of kernel ``name`` for ``dtype`` (float32 or float64)."""
    return _kernel_cached(name, kernel_name(name, dtype))


def clear_caches() -> None:
    """Forget every compiled module and kernel (tests swap ``cupy`` for an emulator)."""
    module.cache_clear()
    _kernel_cached.cache_clear()
