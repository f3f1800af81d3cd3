"""Training-step throughput and peak GPU memory on one GPU, in one run: minires eager and
minires replayed from a CUDA graph (``minires.cuda_graph``) against PyTorch eager (cuDNN) and
PyTorch under ``torch.cuda.graphs``; ResNet-20 and ResNet-56, shared and unshared, batch 128,
float32 with TF32 off on both sides. Also the projected time of the paper's 164-epoch ResNet-20
recipe, and (``--profile``) kernel launches per step, GPU-busy time and the top kernels.

Usage (from the repository root):

    python benchmarks/gpu_train_step.py --out-dir OUT            # everything below the profile
    python benchmarks/gpu_train_step.py --quick --out-dir OUT    # ResNet-20 shared, short
    python benchmarks/gpu_train_step.py --profile --out-dir OUT  # OUT/gpu_profile.txt
    python benchmarks/gpu_train_step.py --dry-run                # any machine: arguments, imports

What a timing is: SGD steps (momentum 0.9, weight decay 1e-4) on one fixed batch of random
3x32x32 images already on the GPU; the four variants of a model are timed in turn, round after
round (the order rotating), ``--steps`` steps per round with the GPU synchronised before and
after; medians over rounds, the spread as min-max, and minires over PyTorch as ratios of
medians. Peak memory is measured for each variant alone (fresh pools): for minires the largest
``used_bytes`` of CuPy's pool seen at any allocation, plus, for the graph, everything its private
pool holds; for PyTorch ``max_memory_allocated``. Without a usable GPU the script exits with
status 2 (``--dry-run`` exits 0 after its checks).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_resnet import torch_resnet  # noqa: E402

NUM_CLASSES, IMAGE_SIZE = 10, 32
VARIANTS = ("minires eager", "minires graph", "pytorch eager", "pytorch graph")
RECIPE = dict(epochs=164, train_images=50_000, test_images=10_000, batch=128)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--shares", nargs="+", default=["none", "block"],
                        choices=["none", "block"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out-dir", help="write gpu_train_step.json/.md (and gpu_profile.txt)")
    parser.add_argument("--quick", action="store_true",
                        help="ResNet-20 shared only, 3 rounds of 10 steps, short projection")
    parser.add_argument("--profile", action="store_true",
                        help="only the step profile (needs PyTorch's profiler)")
    parser.add_argument("--no-projection", action="store_true")
    parser.add_argument("--projection-batches", type=int, default=100)
    parser.add_argument("--no-torch", action="store_true", help="measure minires only")
    parser.add_argument("--require-torch", action="store_true",
                        help="fail (status 3) when PyTorch with CUDA is not available")
    parser.add_argument("--dry-run", action="store_true",
                        help="check arguments, imports and models; measure nothing")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.steps, args.rounds, args.projection_batches) < 1 or \
            args.warmup < 0:
        parser.error("--batch-size, --steps, --rounds and --projection-batches must be >= 1")
    for depth in args.depths:
        if depth < 8 or (depth - 2) % 6:
            parser.error(f"--depths: a CIFAR ResNet has depth 6n+2 (8, 20, 56...), got {depth}")
    if args.quick:
        args.depths, args.shares, args.rounds, args.steps = [20], ["block"], 3, 10
        args.projection_batches = min(args.projection_batches, 30)
    return args


# -- the four variants ---------------------------------------------------------------------------

def _batch(batch_size: int):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, batch_size))


class MiniresRun:
    """A minires model, its SGD and one batch on the GPU; ``step()`` trains once."""

    def __init__(self, cp, depth, share, batch_size, graph: bool):
        from minires import models, optim
        from minires.cuda_graph import GraphedTrainStep
        from minires.train import train_step
        self.cp = cp
        self.model = models.create(depth=depth, share=share, num_classes=NUM_CLASSES, seed=0,
                                   dtype=np.float32).to("cuda")
        self.opt = optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        x, y = _batch(batch_size)
        self.x, self.y = cp.asarray(x), cp.asarray(y)
        self.train_step = GraphedTrainStep(train_step) if graph else train_step
        self.parameters = int(self.model.num_parameters())

    def step(self):
        self.loss, _ = self.train_step(self.model, self.opt, self.x, self.y)

    def sync(self):
        self.cp.cuda.get_current_stream().synchronize()

    def final_loss(self) -> float:
        return float(self.loss)


class TorchRun:
    """The same network in PyTorch, eager or whole-step ``torch.cuda.graphs`` capture."""

    def __init__(self, torch, depth, share, batch_size, graph: bool):
        self.torch = torch
        torch.manual_seed(0)
        self.model = torch_resnet(torch, depth, share, NUM_CLASSES).cuda()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9,
                                   weight_decay=1e-4)
        x, y = _batch(batch_size)
        self.x, self.y = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.graph = self._capture() if graph else None

    def _eager(self):
        self.opt.zero_grad(set_to_none=True)
        self.loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        self.loss.backward()
        self.opt.step()

    def _capture(self):
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as PyTorch's docs do
            for _ in range(3):
                self._eager()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            self._eager()
        return graph

    def step(self):
        if self.graph is None:
            self._eager()
        else:
            self.graph.replay()

    def sync(self):
        self.torch.cuda.synchronize()

    def final_loss(self) -> float:
        return float(self.loss)


def make_run(variant, cp, torch, depth, share, batch_size):
    framework, mode = variant.split()
    if framework == "minires":
        return MiniresRun(cp, depth, share, batch_size, mode == "graph")
    return TorchRun(torch, depth, share, batch_size, mode == "graph")


# -- memory --------------------------------------------------------------------------------------

def peak_memory(variant, cp, torch, depth, share, batch_size, warmup) -> float:
    """MiB at the peak of ``warmup + 2`` steps of ``variant`` alone on the GPU."""
    if variant.startswith("pytorch"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        run = make_run(variant, cp, torch, depth, share, batch_size)
        for _ in range(warmup + 2):
            run.step()
        run.sync()
        peak = torch.cuda.max_memory_allocated()
        del run
        torch.cuda.empty_cache()
        return peak / 2**20
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    peak = {"used": 0}

    def tracking_malloc(size):
        memory = pool.malloc(size)
        peak["used"] = max(peak["used"], pool.used_bytes())
        return memory

    cp.cuda.set_allocator(tracking_malloc)
    try:
        run = make_run(variant, cp, torch, depth, share, batch_size)
        for _ in range(warmup + 2):
            run.step()
        run.sync()
    finally:
        cp.cuda.set_allocator(pool.malloc)
    graph_pool = getattr(run.train_step, "pool", None)  # what the graph's private pool holds
    total = peak["used"] + (graph_pool.total_bytes() if graph_pool is not None else 0)
    del run
    pool.free_all_blocks()
    return total / 2**20


# -- timing --------------------------------------------------------------------------------------

def interleaved(runs: dict, warmup: int, steps: int, rounds: int) -> dict:
    """``{variant: [ms per step of each round]}``: every variant warmed up, then timed round by
    round, the order rotating each round."""
    for run in runs.values():
        for _ in range(warmup):
            run.step()
        run.sync()
    names, times = list(runs), {name: [] for name in runs}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run = runs[name]
            run.sync()
            start = time.perf_counter()
            for _ in range(steps):
                run.step()
            run.sync()
            times[name].append(1e3 * (time.perf_counter() - start) / steps)
    return times


def measure_model(cp, torch, depth, share, args, variants) -> list:
    rows = []
    memory = {v: peak_memory(v, cp, torch, depth, share, args.batch_size, args.warmup)
              for v in variants}
    runs = {v: make_run(v, cp, torch, depth, share, args.batch_size) for v in variants}
    times = interleaved(runs, args.warmup, args.steps, args.rounds)
    for v in variants:
        ms = statistics.median(times[v])
        rows.append({"depth": depth, "share": share, "variant": v,
                     "parameters": runs[v].parameters, "ms_per_step": ms,
                     "ms_min": min(times[v]), "ms_max": max(times[v]),
                     "images_per_s": args.batch_size * 1e3 / ms, "peak_mib": memory[v],
                     "final_loss": runs[v].final_loss(), "rounds_ms": times[v]})
    del runs
    cp.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        torch.cuda.empty_cache()
    return rows


# -- the 164-epoch recipe ------------------------------------------------------------------------

def project_recipe(cp, shares, batches: int, depth: int = 20, image_size: int = 32) -> dict:
    """Seconds for 164 epochs of ResNet-20 on CIFAR-sized data (50,000 training, 10,000 test
    images, random uint8 on the GPU, the real loader with crop+flip, graphed steps, evaluation
    after every epoch), from ``batches`` timed batches and one timed evaluation; each share mode
    alone, and all of them trained at once (one stream each, batches alternating)."""
    from minires import models, optim
    from minires.cuda_graph import GraphedTrainStep
    from minires.data import Loader
    from minires.evaluate import evaluate
    from minires.train import train_step
    rng = np.random.default_rng(0)
    shape = (3, image_size, image_size)
    train_images = cp.asarray(rng.integers(0, 256, (RECIPE["train_images"], *shape),
                                           dtype=np.uint8))
    test_images = cp.asarray(rng.integers(0, 256, (RECIPE["test_images"], *shape),
                                          dtype=np.uint8))
    labels = rng.integers(0, NUM_CLASSES, RECIPE["train_images"])
    stats = dict(mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26], xp=cp)
    per_epoch = -(-RECIPE["train_images"] // RECIPE["batch"])

    def member(share):
        model = models.create(depth=depth, share=share, num_classes=NUM_CLASSES, seed=0)
        model.to("cuda")
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        loader = Loader(train_images, labels, RECIPE["batch"], shuffle=True,
                        augment="crop_flip", **stats)
        return dict(model=model, opt=opt, batches=iter(loader), step=GraphedTrainStep(
            train_step), stream=cp.cuda.Stream(non_blocking=True))

    def train_batches(members, n):
        start = time.perf_counter()
        for _ in range(n):
            for m in members:
                with m["stream"]:
                    x, y = next(m["batches"])
                    m["step"](m["model"], m["opt"], x, y)
        for m in members:
            m["stream"].synchronize()
        return time.perf_counter() - start

    test = Loader(test_images, labels[:RECIPE["test_images"]], 500, shuffle=False, **stats)
    batches = min(batches, per_epoch - 2)  # all full batches of one epoch
    result = {}
    for group in [[s] for s in shares] + ([list(shares)] if len(shares) > 1 else []):
        members = [member(s) for s in group]
        train_batches(members, 1)  # the first call warms up and captures
        seconds = train_batches(members, batches)
        start = time.perf_counter()
        for m in members:
            evaluate(m["model"], test)
        eval_seconds = time.perf_counter() - start
        epoch = seconds / batches * per_epoch + eval_seconds
        result[" + ".join(group)] = {"epoch_s": epoch, "recipe_min": RECIPE["epochs"] * epoch / 60,
                                     "train_batch_ms": 1e3 * seconds / batches,
                                     "eval_s": eval_seconds}
        del members
        cp.get_default_memory_pool().free_all_blocks()
    return result


# -- profile: launches, GPU-busy time, top kernels ------------------------------------------------

def _count_launch_points():
    """Wrap minires' launch points (its RawKernels, its cuBLAS calls); returns the counter and
    a function that undoes the wrapping."""
    from collections import Counter

    from minires.kernels.cuda import activation, batchnorm, blas, conv, loss, sgd
    counts, undo = Counter(), []
    for module in (activation, batchnorm, conv, loss, sgd):
        original = getattr(module, "kernel", None)
        if original is None:  # a wrapper that launches through something else: not counted
            continue

        def counting(name, dtype, original=original):
            launch = original(name, dtype)

            def counted(*args, **kwargs):
                counts[name] += 1
                return launch(*args, **kwargs)
            return counted
        module.kernel = counting
        undo.append((module, "kernel", original))
    original_library = blas.library

    class CountingCublas:
        def __init__(self, inner):
            self.inner = inner

        def gemm_strided_batched(self, *args):
            counts["cuBLAS GEMM"] += 1
            return self.inner.gemm_strided_batched(*args)

    blas.library = lambda: CountingCublas(original_library())
    undo.append((blas, "library", original_library))
    return counts, lambda: [setattr(m, name, value) for m, name, value in undo]


def _kernel_events(torch, run, steps):
    """The CUDA kernels of ``steps`` steps, as (name, start_us, end_us), from PyTorch's profiler
    (CUPTI sees every kernel of the process: CuPy's, cuBLAS's, graph replays')."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run.step()
        run.sync()
    events = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith("Mem"):
            events.append((e.name, e.time_range.start, e.time_range.end))
    return events


def _busy_us(events) -> float:
    """Time during which at least one kernel ran (the union of their intervals)."""
    busy, end = 0.0, -float("inf")
    for _, start, stop in sorted(events, key=lambda e: e[1]):
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def profile_steps(cp, torch, args) -> str:
    depth, share, steps = args.depths[0], args.shares[-1], max(args.steps, 10)
    lines = [f"Step profile: ResNet-{depth} share={share}, batch {args.batch_size}, float32, "
             f"{steps} steps after {args.warmup} warm-up steps", ""]
    variants = VARIANTS if torch is not None else VARIANTS[:2]
    for variant in variants:
        run = make_run(variant, cp, torch, depth, share, args.batch_size)
        for _ in range(max(args.warmup, 3)):
            run.step()
        run.sync()
        counts, undo = _count_launch_points() if variant == "minires eager" else (None, None)
        start = time.perf_counter()
        for _ in range(steps):
            run.step()
        host_ms = 1e3 * (time.perf_counter() - start) / steps  # queueing, before the sync
        run.sync()
        if undo is not None:
            undo()
        lines.append(f"== {variant}")
        lines.append(f"host time per step (to queue it): {host_ms:.2f} ms")
        if counts is not None:
            ours = sum(counts.values()) / steps
            lines.append(f"minires launch points per step (its kernels + cuBLAS calls): "
                         f"{ours:.0f}: " + ", ".join(f"{k} {v / steps:.0f}"
                                                    for k, v in counts.most_common()))
        if torch is None:
            lines.append("(kernel counts need PyTorch's profiler: not available)")
        else:
            events = _kernel_events(torch, run, steps)
            totals = {}
            for name, begin, end in events:
                count, total = totals.get(name, (0, 0.0))
                totals[name] = (count + 1, total + end - begin)
            lines.append(f"kernels launched per step: {len(events) / steps:.1f}")
            lines.append(f"GPU-busy time per step: {_busy_us(events) / steps / 1e3:.2f} ms")
            lines.append("top kernels by GPU time (calls per step, ms per step):")
            for name, (count, total) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:10]:
                lines.append(f"  {total / steps / 1e3:7.3f} ms  {count / steps:5.1f}x  {name[:90]}")
        lines.append("")
        del run
        cp.get_default_memory_pool().free_all_blocks()
    return "\n".join(lines) + "\n"


# -- report --------------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    d = report["device"]
    lines = [f"# Training step on {d['name']} ({report['date']})", "",
             f"float32 (TF32 off), batch {report['batch_size']}, {report['rounds']} interleaved "
             f"rounds of {report['steps']} steps after {report['warmup']} warm-up steps; median "
             f"ms per step (min-max over rounds). Peak: MiB at the peak of a few steps of the "
             f"variant alone (see benchmarks/gpu_train_step.py).", "",
             "| model | share | variant | parameters | images/s | ms/step (min-max) | peak MiB |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in report["results"]:
        lines.append(f"| ResNet-{r['depth']} | {r['share']} | {r['variant']} | "
                     f"{r['parameters']:,} | {r['images_per_s']:.0f} | {r['ms_per_step']:.2f} "
                     f"({r['ms_min']:.2f}-{r['ms_max']:.2f}) | {r['peak_mib']:.0f} |")
    by_model = {}
    for r in report["results"]:
        by_model.setdefault((r["depth"], r["share"]), {})[r["variant"]] = r
    lines.append("")
    for (depth, share), rows in by_model.items():
        base = rows.get("pytorch eager")
        if base is None:
            continue
        for variant in ("minires eager", "minires graph"):
            if variant in rows:
                r = rows[variant]
                lines.append(f"- ResNet-{depth} share={share}, {variant}: "
                             f"{r['images_per_s'] / base['images_per_s']:.2f}x PyTorch eager's "
                             f"throughput, {r['peak_mib'] / base['peak_mib']:.2f}x its peak memory")
    if report.get("torch_skipped"):
        lines += ["", f"PyTorch not measured: {report['torch_skipped']}."]
    if report.get("projection"):
        lines += ["", f"## The {RECIPE['epochs']}-epoch ResNet-20 recipe, projected", "",
                  "Graphed steps with the real loader (crop+flip on the GPU) on random "
                  "CIFAR-sized data, evaluation after each epoch.", "",
                  "| trained at once | s per epoch | train ms/batch | eval s | 164 epochs (min) |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for group, p in report["projection"].items():
            lines.append(f"| {group} | {p['epoch_s']:.2f} | {p['train_batch_ms']:.2f} | "
                         f"{p['eval_s']:.2f} | {p['recipe_min']:.1f} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())]
    return "\n".join(lines) + "\n"


def device_info(cp) -> dict:
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
            "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cp.cuda.runtime.driverGetVersion()}


def load_torch():
    """``(torch, None)`` when it imports with CUDA, else ``(None, reason)``."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} sees no CUDA device"
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch, None


def dry_run(args) -> int:
    """Check what a GPU run needs, without a GPU: imports, the models, the output folder."""
    from minires import models
    print(f"gpu_train_step dry run: depths {args.depths}, shares {args.shares}, batch "
          f"{args.batch_size}, {args.rounds} rounds x {args.steps} steps, profile={args.profile}")
    for module in ("minires.cuda_graph", "minires.kernels.cuda.blas", "minires.data"):
        __import__(module)
    try:
        import cupy
        print(f"cupy {cupy.__version__}")
    except Exception as exc:  # noqa: BLE001 - reported, a GPU run would stop here
        print(f"cupy: not importable ({type(exc).__name__}): a GPU run needs it")
    try:
        import torch
        print(f"torch {torch.__version__}")
    except ImportError:
        torch = None
        print("torch: not installed (a GPU run measures minires only)")
    for depth in args.depths:
        for share in args.shares:
            count = models.create(depth=depth, share=share, num_classes=NUM_CLASSES)\
                .num_parameters()
            if torch is not None:
                theirs = sum(p.numel() for p in torch_resnet(torch, depth, share).parameters())
                if theirs != count:
                    print(f"ResNet-{depth} share={share}: minires has {count} parameters, the "
                          f"PyTorch model {theirs}", file=sys.stderr)
                    return 4
            print(f"ResNet-{depth} share={share}: {count:,} parameters")
    if args.out_dir is not None:
        print(f"results would go to {Path(args.out_dir).resolve()}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
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
    out = Path(args.out_dir) if args.out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if args.profile:
        text = profile_steps(cp, torch, args)
        print(text, end="")
        if out is not None:
            (out / "gpu_profile.txt").write_text(text)
        return 0
    report = {"device": device_info(cp), "date": datetime.date.today().isoformat(),
              "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps,
              "rounds": args.rounds, "results": [],
              "versions": {"minires": getattr(minires, "__version__", "dev"),
                           "cupy": cp.__version__, "numpy": np.__version__,
                           "python": platform.python_version()}}
    if torch is not None:
        report["versions"].update(torch=torch.__version__, cudnn=torch.backends.cudnn.version())
    else:
        report["torch_skipped"] = torch_skipped
    variants = VARIANTS if torch is not None else VARIANTS[:2]
    for depth in args.depths:
        for share in args.shares:
            rows = measure_model(cp, torch, depth, share, args, variants)
            report["results"] += rows
            for r in rows:
                print(f"ResNet-{depth} share={share} {r['variant']}: {r['images_per_s']:.0f} "
                      f"images/s, {r['ms_per_step']:.2f} ms/step, peak {r['peak_mib']:.0f} MiB",
                      flush=True)
    if not args.no_projection:
        report["projection"] = project_recipe(cp, args.shares, args.projection_batches)
        for group, p in report["projection"].items():
            print(f"164 epochs of ResNet-20 ({group}): {p['recipe_min']:.1f} min", flush=True)
    text = markdown(report)
    print(text, end="")
    if out is not None:
        (out / "gpu_train_step.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "gpu_train_step.md").write_text(text)
        print(f"wrote {out / 'gpu_train_step.json'} and .md")
    counts = {}
    for r in report["results"]:
        counts.setdefault((r["depth"], r["share"]), set()).add(r["parameters"])
    if any(len(c) > 1 for c in counts.values()):
        print("gpu_train_step: minires and PyTorch models differ in parameter count",
              file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
