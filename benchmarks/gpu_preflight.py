"""Phase 0 of benchmarks/run_gpu_checks.sh: is the minires that runs this checkout, is the
environment complete, and does every kernel compile and run on this device?

Usage (run_gpu_checks.sh calls it; any directory):

    python benchmarks/gpu_preflight.py --root CHECKOUT --out OUTDIR/environment.json [--dry-run]

Steps, each one line on stdout; the first that fails prints ``preflight: ...`` on stderr and
exits with status 1:

1. ``minires``, ``minires.kernels`` and ``minires.cli`` are imported from CHECKOUT (not from an
   older install);
2. the modules the GPU checks need import (versions recorded; PyTorch with ``--need-torch``);
3. numba compiles and runs (a CPU kernel of minires: the references of the GPU tests);
4. CuPy sees a GPU (device properties recorded), and so does PyTorch with ``--need-torch``
   (phases 2-4 compare against it); ``--dry-run`` stops before this step;
5. one float64 SGD step of a WRN-10-1 with dropout and an indexing backward, each on the GPU
   and on the CPU, agree to 1e-9, and a float32 batch of the data loader to 1e-6: this runs
   every kernel family once on tiny inputs;
6. every kernel instantiation the loader names is compiled through its ``cupy.RawModule`` (as
   at run time) and accepts a 1024-thread block on this device; registers and local memory
   are recorded.

Everything found goes to ``--out`` as JSON.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

REQUIRED = ("numpy", "numba", "h5py", "click", "pytest", "threadpoolctl", "cupy")
OPTIONAL = ("matplotlib", "PIL")  # plots; decoding the JPEG copy of CIFAR-10 (phase 5)
AGREE = dict(rtol=1e-9, atol=1e-12)
# CuPy's own elementwise kernels (the GPU loader's normalisation) may fuse a multiply and an add
# into one rounding, so float32 pixels can differ from the CPU's by an ulp or so
AGREE_FLOAT32 = dict(rtol=1e-6, atol=1e-6)


class PreflightError(Exception):
    """One line saying what is wrong."""


def say(message: str) -> None:
    print(f"preflight: {message}", flush=True)


def check_checkout(root: Path) -> dict:
    import minires
    import minires.cli
    import minires.kernels
    found = {}
    for module, folder in ((minires, "minires"), (minires.kernels, "kernels"),
                           (minires.cli, "cli")):
        where = Path(module.__file__).resolve().parent
        if where != (root / folder).resolve():
            raise PreflightError(f"{module.__name__} is imported from {where}, not from this "
                                 f"checkout's {root / folder}: install it with pip install "
                                 f"--no-deps --no-build-isolation -e {root}")
        found[module.__name__] = str(where)
    say(f"minires {minires.__version__} is this checkout ({root})")
    return found


def check_modules(need_torch: bool) -> dict:
    versions = {"python": platform.python_version()}
    required = REQUIRED + (("torch",) if need_torch else ())
    for name in required + OPTIONAL + (() if need_torch else ("torch",)):
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - ImportError, or a library that fails to load
            if name not in required:
                versions[name] = None
                continue
            raise PreflightError(f"{name} does not import ({type(exc).__name__}: {exc}); the "
                                 f"GPU checks need {', '.join(required)}") from exc
        with warnings.catch_warnings():  # click deprecates its __version__
            warnings.simplefilter("ignore", DeprecationWarning)
            versions[name] = getattr(module, "__version__", "?")
    if versions["torch"] is not None:
        import torch
        versions["torch_cuda"] = torch.version.cuda
    say("modules: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return versions


def check_numba() -> float:
    """Compile and run a CPU kernel; returns the seconds it took (numba's first compile)."""
    start = time.perf_counter()
    try:
        from minires.kernels import cpu
        y = cpu.relu_forward(np.array([-1.0, 2.0]))
    except Exception as exc:  # noqa: BLE001 - a broken numba or llvmlite fails here
        raise PreflightError(f"numba cannot compile minires' CPU kernels ({type(exc).__name__}: "
                             f"{exc}); the GPU tests compare against them") from exc
    if y.tolist() != [0.0, 2.0]:
        raise PreflightError(f"numba's ReLU gave {y.tolist()}, expected [0.0, 2.0]")
    seconds = time.perf_counter() - start
    say(f"numba compiles and runs minires' CPU kernels ({seconds:.1f} s)")
    return seconds


def check_device(need_torch: bool) -> dict:
    from minires.backend import cuda_available
    import cupy
    if not cuda_available():
        try:
            cupy.cuda.runtime.getDeviceCount()
            reason = "cupy.is_available() is False"
        except Exception as exc:  # noqa: BLE001 - the driver's own words
            reason = f"{type(exc).__name__}: {exc}"
        raise PreflightError(f"CuPy sees no usable NVIDIA GPU ({reason})")
    if need_torch:
        import torch
        if not torch.cuda.is_available():
            raise PreflightError(f"PyTorch {torch.__version__} sees no CUDA device; the "
                                 f"cross-check and the benchmark compare against it on the GPU")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    from cupy.cuda import compiler
    device = {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
              "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
              "multiprocessors": props.get("multiProcessorCount"),
              "l2_cache_mib": round(props.get("l2CacheSize", 0) / 2**20, 1),
              "registers_per_block": props.get("regsPerBlock"),
              "max_threads_per_block": props.get("maxThreadsPerBlock"),
              "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
              "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
              "nvrtc": ".".join(map(str, compiler._get_nvrtc_version()))}
    say("device: " + ", ".join(f"{k} {v}" for k, v in device.items()))
    return device


def tiny_step(xp):
    """One SGD step of a float64 WRN-10-1 with dropout, an indexing backward with a repeated
    index, and one augmented float32 loader batch, computed with ``xp`` (numpy or cupy):
    ``(float64 arrays, the loader batch)`` as NumPy arrays."""
    import minires.functions as F
    from minires import models, optim
    from minires.autograd import Tensor
    from minires.data.loader import Loader

    device = "cpu" if xp is np else "cuda"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 10, 6)
    loader = Loader(xp.asarray(images), xp.asarray(labels), batch_size=4, shuffle=True,
                    augment="crop_flip", mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], seed=1,
                    xp=xp)
    batch, _ = next(iter(loader))
    model = models.create(arch="wrn", depth=10, width=1, dropout=0.3, seed=2,
                          dtype=np.float64).to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    x = xp.asarray(rng.standard_normal((4, 3, 8, 8)))
    loss = F.softmax_cross_entropy(model(Tensor(x)), xp.asarray(labels[:4]))
    loss.backward()
    opt.step()
    t = Tensor(xp.asarray(rng.standard_normal((5, 3))), requires_grad=True)
    (t[xp.asarray([0, 2, 0, 4])] * 2.0).sum().backward()
    outputs = {"loss": loss.data, "grad_of_indexing": t.grad, **model.state_dict()}
    host = {k: np.asarray(v.get() if hasattr(v, "get") else v) for k, v in outputs.items()}
    return host, np.asarray(batch.get() if hasattr(batch, "get") else batch)


def check_tiny_step_on_the_device() -> dict:
    from minires.kernels.cuda import loader
    import cupy
    (cpu, cpu_batch), (gpu, gpu_batch) = tiny_step(np), tiny_step(cupy)
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], err_msg=key, **AGREE)
    np.testing.assert_allclose(gpu_batch, cpu_batch, err_msg="loader batch", **AGREE_FLOAT32)
    say(f"a tiny training step and indexing backward agree with the CPU ({len(cpu)} float64 "
        f"arrays, rtol {AGREE['rtol']}), and so does a loader batch (float32, rtol "
        f"{AGREE_FLOAT32['rtol']})")
    report = {"arrays_compared": len(cpu) + 1, "float64": AGREE, "float32": AGREE_FLOAT32}
    built = getattr(loader.module, "cache_info", lambda: None)()
    if built is not None:  # sources the step compiled (the others are compiled in step 6)
        report["sources_used_by_the_step"] = f"{built.currsize} of {len(loader.KERNELS)}"
    return report


def check_every_kernel() -> dict:
    """Compile every instantiation the loader names through its RawModule (as at run time) and
    read its attributes on this device."""
    from minires.kernels.cuda import loader
    start = time.perf_counter()
    kernels = {}
    for source in loader.source_names():
        module = loader.module(source)
        for expression in loader.name_expressions(source):
            k = module.get_function(expression)
            kernels[expression] = {
                "source": source, "registers": k.num_regs,
                "max_threads_per_block": k.max_threads_per_block,
                "local_bytes": k.local_size_bytes, "static_shared_bytes": k.shared_size_bytes}
    small = [n for n, a in kernels.items() if a["max_threads_per_block"] < 1024]
    if small:
        raise PreflightError(f"kernels that cannot run 1024-thread blocks here: {small}")
    registers = [a["registers"] for a in kernels.values()]
    say(f"{len(kernels)} kernels compiled by CuPy, each accepts 1024-thread blocks; registers "
        f"{min(registers)}-{max(registers)} ({time.perf_counter() - start:.1f} s)")
    return kernels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="the checkout")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--dry-run", action="store_true", help="stop before the GPU")
    parser.add_argument("--need-torch", action="store_true",
                        help="PyTorch with CUDA is required (the cross-check, the benchmark)")
    args = parser.parse_args(argv)
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
              "dry_run": args.dry_run}
    try:
        report["checkout"] = check_checkout(args.root.resolve())
        report["versions"] = check_modules(args.need_torch)
        report["numba_first_compile_s"] = check_numba()
        if args.dry_run:
            tiny_step(np)  # the CPU half of step 5: its code runs without a GPU
            say("dry run: the CPU half of the tiny step runs; the device steps need a GPU")
        else:
            report["device"] = check_device(args.need_torch)
            report["tiny_step"] = check_tiny_step_on_the_device()
            report["kernels"] = check_every_kernel()
    except PreflightError as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return 1
    except AssertionError as exc:
        first = str(exc).strip().splitlines()
        print(f"preflight: the GPU disagrees with the CPU: {' '.join(first[:3])}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the traceback for the log, then one line
        traceback.print_exc()
        print(f"preflight: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
