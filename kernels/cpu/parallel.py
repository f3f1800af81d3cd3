"""One pool of CPU worker threads for the numba kernels *and* the BLAS calls between them.

Why not ``njit(parallel=True)`` plus a multi-threaded BLAS: numba's OpenMP workers and
OpenBLAS's workers each spin for a while after their parallel region, so alternating a numba
kernel with a matrix product (what a convolution does, chunk after chunk) makes two thread pools
fight over the same cores; on a loaded 2-core machine that turned milliseconds into seconds.
Here the batch is cut into one contiguous slice per worker; each worker runs *serial* numba
kernels (compiled ``nogil=True``) and *single-threaded* BLAS calls on its slice, one chunk at a
time, so its patches stay in its own L2 cache and no two pools ever compete.

BLAS is switched to one thread only for the duration of :func:`run_split`, through OpenBLAS's
``*_set_num_threads`` entry point in the library NumPy loaded; when that library cannot be found
(another BLAS, another platform) the work runs on the calling thread alone and BLAS keeps its own
threads.

The number of workers defaults to ``numba.config.NUMBA_NUM_THREADS`` (so ``NUMBA_NUM_THREADS``
in the environment applies) and can be changed with :func:`set_num_threads`.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba

_state = {"threads": int(numba.config.NUMBA_NUM_THREADS), "pool": None, "blas": False}
_lock = threading.Lock()


def num_threads() -> int:
    """Number of worker threads the CPU kernels use."""
    return _state["threads"]


def set_num_threads(n: int) -> None:
    """Use ``n >= 1`` worker threads from now on (the pool is rebuilt on next use)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads expects a positive thread count, got {n}")
    with _lock:
        if _state["pool"] is not None:
            _state["pool"].shutdown(wait=True)
        _state["threads"], _state["pool"] = n, None


def _find_openblas():
    """``(get, set)`` ctypes functions of the OpenBLAS that NumPy loaded, or None."""
    import numpy as np

    paths = []
    try:  # the library already mapped into this process is the one NumPy calls
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps
                            if "openblas" in os.path.basename(line.split()[-1]).lower()})
    except (OSError, IndexError):
        pass
    libs_dir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    paths += glob.glob(os.path.join(libs_dir, "*openblas*"))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                               ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                return get, put
    return None


def blas_threads():
    """``(get, set)`` for NumPy's OpenBLAS thread count, or None when it cannot be controlled."""
    if _state["blas"] is False:
        _state["blas"] = _find_openblas()
    return _state["blas"]


def _pool() -> ThreadPoolExecutor:
    """The helpers of the calling thread: ``num_threads() - 1`` of them (at least one)."""
    with _lock:
        # A forked child inherits the executor but not its threads: build a new one there.
        if _state["pool"] is None or _state.get("pid") != os.getpid():
            _state["pool"] = ThreadPoolExecutor(max(1, _state["threads"] - 1),
                                                thread_name_prefix="minires-cpu")
            _state["pid"] = os.getpid()
        return _state["pool"]


def split(total: int, parts: int) -> list:
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(total)``, none empty."""
    parts = max(1, min(parts, total))
    bounds = [total * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def run_split(task, total: int, min_per_worker: int = 1) -> list:
    """Run ``task(start, stop)`` over contiguous slices of ``range(total)`` on the workers.

    The calling thread takes the first slice itself. Returns the results in slice order, so a
    reduction over them (adding partial weight gradients) is deterministic.
    """
    n = min(num_threads(), max(1, total // max(1, min_per_worker)))
    blas = blas_threads()
    if blas is None:  # BLAS keeps its own threads: do not add ours on top
        return [task(0, total)]
    ranges = split(total, n)
    get, put = blas
    previous = get()
    put(1)  # also with one worker: small per-chunk products lose more than they gain by threads
    futures = []
    try:
        futures = [_pool().submit(task, a, b) for a, b in ranges[1:]]
        results = [task(*ranges[0])]
        results += [f.result() for f in futures]
    finally:
        for f in futures:  # never give BLAS its threads back while a worker still runs
            f.exception()
        put(previous)
    return results
