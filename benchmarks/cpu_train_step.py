"""Full training-step CPU benchmark: minires ResNet-20/56 against the same network in PyTorch.

One step = forward, softmax cross-entropy, backward, SGD update (momentum 0.9, weight decay
1e-4), batch 128, float32, option-A shortcuts, ``share="none"`` and ``share="block"`` (in
PyTorch the sharing is ``block.conv2.weight = block.conv1.weight``, the same Parameter). Both
models start from the same weights (copied from minires) and see the same batch; the first
step's losses are compared as a sanity check. Steps alternate minires / torch; medians over
repeats; the ratio minires / torch is the figure of merit.

    python benchmarks/cpu_train_step.py --quick            # ResNet-20 only, about a minute
    python benchmarks/cpu_train_step.py                    # ResNet-20 and ResNet-56
    python benchmarks/cpu_train_step.py --profile          # + per-op breakdown and cProfile
    python benchmarks/cpu_train_step.py --also im2col      # + minires with im2col only

``--also im2col`` (or ``winograd2``, ``winograd4``) times a second minires model forced onto
that convolution algorithm (``MINIRES_CPU_CONV``) in the same interleaved run, from the same
weights: the gain of the default rule, measured under the same load. On a machine busy with
other work, ``--threads 1 --clock cpu`` (process CPU time, one thread per side) is the least
load-sensitive comparison: PyTorch's OpenMP workers spin-wait, so a loaded machine inflates its
wall time far more than minires's.

``--profile`` adds, for ResNet-20 unshared: minires time per Function class (forward and
backward) and per optimizer step, PyTorch's ``torch.profiler`` self-CPU time per op, both from
the same process, and the top of a cProfile of the minires step.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_common import (conv_algorithm, environment, environment_line, interleaved,  # noqa: E402
                        print_table, save_json, setup_threads, summarize)
from torch_resnet import torch_resnet  # noqa: E402


def copy_weights(torch, model, net):
    """Load minires ``model``'s parameters and buffers into the PyTorch ``net``."""
    state = {}
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        tname = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        state[tname] = torch.from_numpy(np.array(getattr(p, "data", p)))
    missing = net.load_state_dict(state, strict=False)
    # A shared conv2.weight is listed once by minires and reached through conv1 in torch.
    left = [k for k in missing.missing_keys if not k.endswith("num_batches_tracked")
            and not k.endswith("conv2.weight")]
    if left or missing.unexpected_keys:
        raise RuntimeError(f"weight copy mismatch: missing {left}, unexpected "
                           f"{missing.unexpected_keys}")


def make_steps(torch, depth, share, batch, also=(), seed=0):
    """Matching training steps on one fixed batch, from the same initial weights: ``minires``
    (the convolution algorithm of the environment), ``minires-<name>`` for each algorithm in
    ``also``, and ``torch``. Returns ``(steps, first losses, parameter counts)``."""
    import minires.functions as F
    from minires.models import resnet
    from minires.optim import SGD

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    losses, steps = {}, {}

    def minires_step(name, algorithm):
        model = resnet(depth=depth, num_classes=10, share=share, shortcut="A", seed=seed)
        model.train()
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

        def step():
            with conv_algorithm(algorithm):
                opt.zero_grad()
                loss = F.softmax_cross_entropy(model(x), labels)
                loss.backward()
                opt.step()
            losses.setdefault(name, float(loss.item()))
        return model, step

    model, steps["minires"] = minires_step("minires", None)
    for algorithm in also:
        steps[f"minires-{algorithm}"] = minires_step(f"minires-{algorithm}", algorithm)[1]
    net = torch_resnet(torch, depth, share)
    copy_weights(torch, model, net)
    net.train()
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    tx, tlabels = torch.from_numpy(x), torch.from_numpy(labels)

    def torch_step():
        topt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(tx), tlabels)
        loss.backward()
        topt.step()
        losses.setdefault("torch", float(loss.item()))
    steps["torch"] = torch_step

    n_params = (sum(int(np.prod(p.shape)) for p in model.parameters()),
                sum(p.numel() for p in net.parameters()))
    return steps, losses, n_params


def breakdown(torch, minires_step, torch_step, steps=3):
    """Per-op time of each side over ``steps`` steps: minires by Function class and direction
    (wall time inside forward/backward), torch by profiler op (self CPU time)."""
    from minires.autograd import Function
    from minires.optim import SGD

    totals = defaultdict(float)
    patched = []
    depth = [0]  # only the outermost call counts (BatchNormReLU.forward calls BatchNorm's)

    def wrap(cls, meth):
        original = cls.__dict__[meth]

        def timed(self, *args):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return original(self, *args)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    totals[f"{type(self).__name__}.{meth}"] += time.perf_counter() - t0
        setattr(cls, meth, timed)
        patched.append((cls, meth, original))

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    for cls in set(subclasses(Function)):
        for meth in ("forward", "backward"):
            if meth in cls.__dict__:
                wrap(cls, meth)
    wrap(SGD, "step")
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            minires_step()
        total = time.perf_counter() - t0
    finally:
        for cls, meth, original in patched:
            setattr(cls, meth, original)
    minires_rows = sorted(((k, v / steps * 1e3) for k, v in totals.items()), key=lambda r: -r[1])
    minires_rows.append(("(everything else: engine, graph, numpy glue)",
                         (total - sum(totals.values())) / steps * 1e3))

    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            torch_step()
    events = prof.key_averages()
    torch_rows = sorted(((e.key, e.self_cpu_time_total / 1e3 / steps) for e in events),
                        key=lambda r: -r[1])
    return minires_rows, total / steps * 1e3, torch_rows


def cprofile_top(step, steps=3, top=25) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs()  # file names without their folders
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-20 only, few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--depths", default=None, help="comma-separated (default 20,56)")
    parser.add_argument("--shares", default="none,block")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--lead-in", type=float, default=0.05,
                        help="seconds of untimed steps before each timed one (at least one "
                             "step; absorbs the spinning of the other side's threads)")
    parser.add_argument("--also", default="",
                        help="comma-separated convolution algorithms (im2col, winograd2, "
                             "winograd4) to time as extra minires sides")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="wall time, or the process's CPU time (needs --threads 1)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (CPU time counts spinning worker threads)")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    also = [a for a in args.also.split(",") if a]
    torch = setup_threads(args.threads)
    depths = [int(d) for d in (args.depths or ("20" if args.quick else "20,56")).split(",")]
    repeats = args.repeats or (5 if args.quick else 11)
    rows, extra = [], {}
    for depth in depths:
        for share in args.shares.split(","):
            steps, losses, n_params = make_steps(torch, depth, share, args.batch, also)
            times = interleaved(steps, repeats, warmup=2, lead_in=args.lead_in, clock=clock)
            row = summarize("train step", f"ResNet-{depth} share={share}", times)
            row.update(params_minires=n_params[0], params_torch=n_params[1],
                       **{f"first_loss_{k}": round(v, 5) for k, v in losses.items()})
            rows.append(row)
            print(f"# {row['case']}: " + ", ".join(
                f"{name} {row[name + '_ms']} ms" for name in steps) + "; " + ", ".join(
                f"{name}/torch {row[name + '/torch']}" for name in steps if name != "torch") +
                " (first losses " + " / ".join(f"{v:.5f}" for v in losses.values()) + ")",
                flush=True)
            if args.profile and depth == depths[0] and share == "none":
                m_step, t_step = steps["minires"], steps["torch"]
                m_rows, m_total, t_rows = breakdown(torch, m_step, t_step)
                extra["breakdown"] = {"minires_total_ms": m_total, "minires": m_rows,
                                      "torch": t_rows[:25]}
                extra["cprofile"] = cprofile_top(m_step)
    env = environment()
    print(f"# minires vs torch, training step, batch {args.batch}, float32, {repeats} repeats, "
          f"{args.clock} time, lead-in {args.lead_in} s; {environment_line(env)}")
    sides = ["minires"] + [f"minires-{a}" for a in also]
    print_table(rows, ["case"] + [f"{s}_ms" for s in sides + ["torch"]] +
                [f"{s}/torch" for s in sides] + ["params_minires", "params_torch"])
    if "breakdown" in extra:
        b = extra["breakdown"]
        print(f"\n# minires per-op breakdown (ResNet-{depths[0]}, ms per step; total "
              f"{b['minires_total_ms']:.1f})")
        for name, ms in b["minires"]:
            print(f"  {ms:8.2f}  {name}")
        print("\n# torch per-op self CPU time (ms per step)")
        for name, ms in b["torch"]:
            print(f"  {ms:8.2f}  {name}")
        print("\n# cProfile of the minires step (3 steps, by own time)")
        print(extra["cprofile"])
    path = save_json("cpu_train_step", {"environment": env, "batch": args.batch,
                                        "repeats": repeats, "lead_in": args.lead_in,
                                        "clock": args.clock,
                                        "rows": rows, **extra}, args.json)
    print(f"# saved {path}")


if __name__ == "__main__":
    main()
