"""One pool of CPU worker threads for the numba kernels *and* the BLAS calls between them.

Why not ``njit(parallel=True)`` plus a multi-threaded BLAS: numba's OpenMP workers and
OpenBLAS's workers each spin for a while after their parallel region, so alternating a numba
kernel with a matrix product (what a convolution does, chunk after chunk) makes two thread pools
fight over the same cores; on a loaded 2-core machine that turned milliseconds into seconds.
Here the batch is cut into one contiguous slice per worker; each worker runs *serial* numba
kernels (compiled ``nogil=True``) and *single-threaded* BLAS calls on its slice, one chunk at a
time, so its patches stay in its own L2 cache and no two pools ever compete.

BLAS is switched to one thread only for the duration of :func:`run_split`, through
``threadpoolctl`` (OpenBLAS, MKL and BLIS, on every OS); when it finds no BLAS it can control,
the work runs on the calling thread alone and BLAS keeps its own threads. The libraries are
looked up once, on first use, and the selection is kept: ``threadpool_limits(1,
user_api="blas")`` would look them up again on every call (about 200 us, and a training step
makes about a hundred calls), limiting the kept selection costs about 6 us.

The number of workers defaults to ``numba.config.NUMBA_NUM_THREADS`` (so ``NUMBA_NUM_THREADS``
in the environment applies) and can be changed with :func:`set_num_threads`.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
from threadpoolctl import ThreadpoolController

_state = {"threads": int(numba.config.NUMBA_NUM_THREADS), "pool": None, "blas": None}
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


def _blas():
    """The BLAS libraries loaded in this process, as one ``threadpoolctl`` selection (empty
    when there is none it can control)."""
    if _state["blas"] is None:
        _state["blas"] = ThreadpoolController().select(user_api="blas")
    return _state["blas"]


def blas_threads():
    """The number of threads BLAS uses now (the largest over its libraries), or None when no BLAS
    can be controlled."""
    libraries = _blas().lib_controllers
    return max(lib.num_threads for lib in libraries) if libraries else None


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
    blas = _blas()
    if not blas.lib_controllers:  # BLAS keeps its own threads: do not add ours on top
        return [task(0, total)]
    ranges = split(total, n)
    futures = []
    # Also with one worker: small per-chunk products lose more than they gain by threads.
    with blas.limit(limits=1):
        try:
            futures = [_pool().submit(task, a, b) for a, b in ranges[1:]]
            results = [task(*ranges[0])]
            results += [f.result() for f in futures]
        finally:
            for f in futures:  # never give BLAS its threads back while a worker still runs
                f.exception()
    return results
