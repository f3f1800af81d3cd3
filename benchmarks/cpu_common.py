"""Shared harness of the CPU benchmarks: interleaved timing against PyTorch, environment facts,
tables and JSON results.

Timings on a shared machine are noisy, so minires and PyTorch are always timed in the same
process, on the same inputs, *alternating* repeat by repeat (minires, torch, torch, minires, ...,
the order flipping every round so neither side always runs on a cache warmed by the other), and
compared through the ratio of their medians. Each timed call follows an untimed one of the same
side (see :func:`interleaved`). PyTorch is a benchmark-only dependency
(``pip install torch==2.13.0``, CPU build); the library never imports it.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

from threadpoolctl import threadpool_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def setup_threads(threads: int | None):
    """Give minires's workers and PyTorch the same thread count; returns the torch module."""
    import numba
    import torch

    from minires.kernels.cpu import parallel

    # Starting numba's threading layer (its OpenMP pool may be the libgomp torch uses) resets
    # the OpenMP thread count: start it first, then set torch's.
    numba.get_num_threads()
    n = threads or parallel.num_threads()
    parallel.set_num_threads(n)
    torch.set_num_threads(n)
    return torch


@contextlib.contextmanager
def conv_algorithm(name):
    """``MINIRES_CPU_CONV=name`` inside the block (None: as the environment says)."""
    old = os.environ.get("MINIRES_CPU_CONV")
    if name is not None:
        os.environ["MINIRES_CPU_CONV"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINIRES_CPU_CONV", None)
        else:
            os.environ["MINIRES_CPU_CONV"] = old


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Versions and thread counts of everything that computes (all reported with the results)."""
    import numba
    import numpy as np
    import torch

    from minires.kernels.cpu import parallel

    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__, "numba": numba.__version__, "torch": torch.__version__,
        "minires_threads": parallel.num_threads(),
        "numba_config_threads": int(numba.config.NUMBA_NUM_THREADS),
        "numba_get_num_threads": int(numba.get_num_threads()),
        "numba_threading_layer": _numba_layer(),
        "openblas_threads": parallel.blas_threads(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "openblas_coretype": openblas_coretype(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "MINIRES_CPU_CONV": os.environ.get("MINIRES_CPU_CONV"),
    }
    # Library file names without their folders: results say which library, not where.
    keys = ("internal_api", "num_threads", "version")
    info["threadpools"] = [dict({k: p.get(k) for k in keys},
                                filepath=os.path.basename(p.get("filepath", "")))
                           for p in threadpool_info()]
    return info


def openblas_coretype():
    """The kernel set NumPy's OpenBLAS chose (e.g. "Haswell", "SkylakeX"), or None.

    It decides minires's GEMM speed (PyTorch's convolutions do not use it): an AVX-512 CPU
    runs the products about twice as fast with "SkylakeX" as with "Haswell", which OpenBLAS
    takes when ``OPENBLAS_CORETYPE=Haswell`` is set in the environment."""
    return next((p.get("architecture") for p in threadpool_info()
                 if p.get("internal_api") == "openblas"), None)


def environment_line(env: dict) -> str:
    """The facts every printed result needs: threads, BLAS kernels, convolution path, CPU,
    load."""
    forced = env["OPENBLAS_CORETYPE"]
    return (f"threads: minires {env['minires_threads']}, torch {env['torch_threads']}, numba "
            f"{env['numba_get_num_threads']}, OpenBLAS {env['openblas_threads']}; OpenBLAS "
            f"kernels {env['openblas_coretype']}"
            f"{f' (OPENBLAS_CORETYPE={forced})' if forced else ''}; minires conv "
            f"{env['MINIRES_CPU_CONV'] or 'auto'}; {env['cpu_model']}; load "
            f"{[round(v, 1) for v in env['load_average'] or []]}")


def _numba_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel numba kernel has run in this process
        return None


def interleaved(cases: dict, repeats: int, warmup: int = 1, lead_in: float = 0.05,
                clock=time.perf_counter) -> dict:
    """Time every callable of ``cases`` (name -> fn()) ``repeats`` times, alternating.

    Returns name -> list of seconds. Each round runs every case once, timed, right after
    untimed calls of the same case for at least ``lead_in`` seconds (at least one call); the
    order of the cases is reversed on every other round. The lead-in matters: after an op,
    PyTorch's OpenMP workers (and numba's, for ``parallel=True`` kernels) keep spinning for
    milliseconds, so whatever runs next on a 2-core machine shares the cores with them (a
    minires convolution timed right after torch ones took up to twice its time). The lead-in
    absorbs that tail, and the other side's cache contents, for both sides alike.

    ``clock`` measures the timed call (wall time by default; ``time.process_time`` gives the
    CPU time of the process, which on a machine busy with other work leaves out the time spent
    waiting for a core -- meaningful only with one thread per side, since CPU time would also
    count the spinning of idle worker threads).
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            cases[name]()
            while time.perf_counter() - start < lead_in:
                cases[name]()
            t0 = clock()
            cases[name]()
            times[name].append(clock() - t0)
    return times


def median_ms(ts) -> float:
    return 1e3 * statistics.median(ts)


def summarize(group: str, label: str, times: dict) -> dict:
    """One result row: medians (ms), the ratio to torch of every non-torch entry."""
    row = {"group": group, "case": label, "repeats": len(next(iter(times.values())))}
    for name, ts in times.items():
        row[f"{name}_ms"] = round(median_ms(ts), 3)
    if "torch" in times:
        t = median_ms(times["torch"])
        for name in times:
            if name != "torch":
                row[f"{name}/torch"] = round(median_ms(times[name]) / t, 3)
    return row


def print_table(rows: list, columns: list) -> None:
    """A plain-text table of ``rows`` (dicts) showing ``columns``."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def save_json(name: str, payload: dict, path: str | None = None) -> Path:
    """Write ``payload`` to ``path`` or ``benchmarks/results/<name>-<date>.json``."""
    if path is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS_DIR / f"{name}-{stamp}.json"
    path = Path(path)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
