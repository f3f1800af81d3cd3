"""Training-step throughput and peak GPU memory: minires (CUDA kernels through CuPy) against
PyTorch eager (cuDNN), float32, the same shared ResNet, the same batch, in one run.

Usage (from the repository root, on a machine with an NVIDIA GPU):

    python benchmarks/gpu_train_step.py                      # ResNet-20 and -56, share=block
    python benchmarks/gpu_train_step.py --depths 20 --shares none block --steps 50

What one measurement is: SGD steps (momentum 0.9, weight decay 1e-4) on one fixed batch of
``--batch-size`` random 3x32x32 float32 images already on the GPU (so data loading and
augmentation are not timed), after ``--warmup`` steps; the GPU is synchronised before and after
the ``--steps`` timed steps and nowhere in between. images/s = steps * batch / wall seconds.

Peak GPU memory, two figures per framework:

* minires "peak used": the high-water mark of ``cupy.get_default_memory_pool().used_bytes()``,
  sampled at every allocation through a hooking allocator during two extra (untimed) steps
  (peaks happen at allocations, so this is exact for memory CuPy's pool hands out);
  "reserved": ``pool.total_bytes()`` after the run, what the pool holds from the driver (it
  keeps freed blocks, so this is its high-water mark too).
* PyTorch: ``torch.cuda.max_memory_allocated()`` (peak used) and ``max_memory_reserved()``.

Neither counts the CUDA context, cuBLAS/cuDNN handles or their workspaces outside the two
allocators. Both frameworks compute in strict float32: TF32 is switched off for PyTorch (it is
off by default in CuPy), and cuDNN may pick its fastest algorithms (``cudnn.benchmark``).

Results go to ``--out`` (default benchmarks/results/) as ``gpu_train_step_<device>_<date>.json``
and ``.md``. Without CuPy and a usable GPU the script says so and exits with status 2.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_resnet import torch_resnet  # noqa: E402,F401  (also used by tests/test_cuda_host.py)

NUM_CLASSES = 10
IMAGE_SIZE = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--shares", nargs="+", default=["block"], choices=["none", "block"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--no-torch", action="store_true", help="measure minires only")
    parser.add_argument("--require-torch", action="store_true",
                        help="fail (status 3) when PyTorch with CUDA is not available")
    return parser.parse_args(argv)


# -- device --------------------------------------------------------------------------------------

def device_info(cp) -> dict:
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
            "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cp.cuda.runtime.driverGetVersion(), "cupy": cp.__version__}


def _batch(batch_size: int):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, batch_size)
    return x, y


def _timed(step, synchronize, warmup: int, steps: int) -> float:
    """Wall seconds of ``steps`` calls of ``step`` after ``warmup`` calls, GPU synchronised at
    both ends only."""
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return time.perf_counter() - start


# -- minires -------------------------------------------------------------------------------------

def bench_minires(cp, depth: int, share: str, batch_size: int, warmup: int, steps: int) -> dict:
    import minires.functions as F
    from minires import models, optim
    from minires.autograd import Tensor

    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    model = models.create(depth=depth, share=share, num_classes=NUM_CLASSES, seed=0,
                          dtype=np.float32).to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x_host, y_host = _batch(batch_size)
    x, y = cp.asarray(x_host), cp.asarray(y_host)
    last = {}

    def step():
        opt.zero_grad()
        loss = F.softmax_cross_entropy(model(Tensor(x)), y)
        loss.backward()
        opt.step()
        last["loss"] = loss.data

    seconds = _timed(step, cp.cuda.Device().synchronize, warmup, steps)
    final_loss = float(last["loss"])

    # Peak of the pool's used bytes, sampled at every allocation of two more steps.
    peak = {"used": pool.used_bytes()}

    def tracking_malloc(size):
        memory = pool.malloc(size)
        peak["used"] = max(peak["used"], pool.used_bytes())
        return memory

    cp.cuda.set_allocator(tracking_malloc)
    try:
        for _ in range(2):
            step()
        cp.cuda.Device().synchronize()
    finally:
        cp.cuda.set_allocator(pool.malloc)
    result = {"framework": "minires", "depth": depth, "share": share,
              "parameters": int(model.num_parameters()),
              "images_per_s": steps * batch_size / seconds, "ms_per_step": 1e3 * seconds / steps,
              "peak_used_mib": peak["used"] / 2**20, "reserved_mib": pool.total_bytes() / 2**20,
              "final_loss": final_loss}
    return result


# -- PyTorch -------------------------------------------------------------------------------------

def bench_torch(torch, depth: int, share: str, batch_size: int, warmup: int, steps: int) -> dict:
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = torch_resnet(torch, depth, share, NUM_CLASSES).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x_host, y_host = _batch(batch_size)
    x, y = torch.from_numpy(x_host).to(device), torch.from_numpy(y_host).to(device)
    last = {}

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        last["loss"] = loss.detach()

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    seconds = _timed(step, torch.cuda.synchronize, warmup, steps)
    result = {"framework": "pytorch", "depth": depth, "share": share,
              "parameters": sum(p.numel() for p in model.parameters()),
              "images_per_s": steps * batch_size / seconds, "ms_per_step": 1e3 * seconds / steps,
              "peak_used_mib": torch.cuda.max_memory_allocated() / 2**20,
              "reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
              "final_loss": float(last["loss"])}
    return result


def load_torch():
    """``torch`` when it imports with CUDA, else ``(None, reason)``."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} sees no CUDA device"
    return torch, None


# -- report --------------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    d = report["device"]
    lines = [f"# Training step: minires vs PyTorch eager ({d['name']}, {report['date']})", "",
             (f"float32, batch {report['batch_size']}, {report['steps']} timed steps after "
              f"{report['warmup']} warm-up steps, SGD momentum 0.9. Memory: see "
              f"benchmarks/gpu_train_step.py."), "",
             ("| model | share | framework | parameters | images/s | ms/step | peak used MiB "
              "| reserved MiB |"),
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        lines.append(f"| ResNet-{r['depth']} | {r['share']} | {r['framework']} | "
                     f"{r['parameters']:,} | {r['images_per_s']:.0f} | {r['ms_per_step']:.1f} | "
                     f"{r['peak_used_mib']:.0f} | {r['reserved_mib']:.0f} |")
    if report.get("torch_skipped"):
        lines += ["", f"PyTorch not measured: {report['torch_skipped']}."]
    lines.append("")
    torch_speed = {(r["depth"], r["share"]): r["images_per_s"] for r in report["results"]
                   if r["framework"] == "pytorch"}
    for r in report["results"]:
        key = (r["depth"], r["share"])
        if r["framework"] == "minires" and key in torch_speed:
            lines.append(f"- ResNet-{key[0]} share={key[1]}: minires runs at "
                         f"{r['images_per_s'] / torch_speed[key]:.2f}x PyTorch's speed")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())]
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def main(argv=None) -> int:
    args = parse_args(argv)
    import minires
    from minires.backend import cuda_available
    if not cuda_available():
        print("gpu_train_step: no usable NVIDIA GPU: this benchmark needs CuPy (pip install "
              "'minires[cuda13]') and a CUDA device; nothing was measured.", file=sys.stderr)
        return 2
    import cupy as cp

    torch, torch_skipped = (None, "--no-torch") if args.no_torch else load_torch()
    if torch is None and args.require_torch:
        print(f"gpu_train_step: {torch_skipped}; the comparison needs PyTorch with CUDA.",
              file=sys.stderr)
        return 3
    report = {"device": device_info(cp), "date": datetime.date.today().isoformat(),
              "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps,
              "versions": {"minires": getattr(minires, "__version__", "dev"),
                           "cupy": cp.__version__, "numpy": np.__version__,
                           "python": platform.python_version()},
              "results": []}
    if torch is not None:
        report["versions"]["torch"] = torch.__version__
        report["versions"]["cudnn"] = torch.backends.cudnn.version()
    else:
        report["torch_skipped"] = torch_skipped
    for depth in args.depths:
        for share in args.shares:
            runs = [("minires", bench_minires, cp)]
            if torch is not None:
                runs.append(("pytorch", bench_torch, torch))
            for name, bench, module in runs:
                result = bench(module, depth, share, args.batch_size, args.warmup, args.steps)
                # Each framework's cached memory goes back before the other one runs.
                cp.get_default_memory_pool().free_all_blocks()
                if torch is not None:
                    torch.cuda.empty_cache()
                report["results"].append(result)
                print(f"ResNet-{depth} share={share} {name}: {result['images_per_s']:.0f} "
                      f"images/s, {result['ms_per_step']:.1f} ms/step, peak used "
                      f"{result['peak_used_mib']:.0f} MiB (reserved {result['reserved_mib']:.0f})",
                      flush=True)
    by_key = {}
    for r in report["results"]:
        by_key.setdefault((r["depth"], r["share"]), {})[r["framework"]] = r
    report["parameter_counts_match"] = all(
        len({r["parameters"] for r in pair.values()}) == 1 for pair in by_key.values())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_train_step_{_slug(report['device']['name'])}_{report['date']}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {out / stem}.json and .md")
    if not report["parameter_counts_match"]:
        print("gpu_train_step: minires and PyTorch models differ in parameter count",
              file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
