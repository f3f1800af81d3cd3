"""Per-layer CPU convolution benchmark: minires Winograd F(2x2) / F(4x4), minires im2col and
PyTorch, for every convolution shape of ResNet-20, forward and backward, in one process.

Shapes (batch 128, 3x3, pad 1): the stride-1 layers 16ch 32x32, 32ch 16x16, 64ch 8x8 (where
Winograd applies), plus for reference the 3-channel first layer (Winograd applies but has few
channels to share the transforms over) and the two stride-2 layers (no Winograd: im2col and
torch only). Passes:

* ``fwd``: the forward pass; for Winograd it includes the weight transform ``U = G W G^T``
  (done once per forward pass in training).
* ``bwd-data``: ``gx`` only. ``bwd-weight``: ``gW`` only (Winograd: ``gU`` and the adjoint
  transform). ``bwd``: both, as a training step needs them (Winograd computes both in one pass
  sharing the transformed ``gy``); the first layer needs no ``gx`` in training, so its ``bwd``
  is ``gW`` only.

PyTorch runs ``torch.nn.functional.conv2d`` and ``torch.autograd.grad`` for the gradients
asked for (its autograd computes only those), with ``torch.set_num_threads`` equal to minires's
worker count. All sides are timed interleaved (see ``cpu_common.interleaved``), medians over
repeats, ratios to torch.

    python benchmarks/cpu_conv_layers.py --quick          # about two minutes
    python benchmarks/cpu_conv_layers.py --repeats 21     # the table for the record

On a machine shared with other work, read the ratios, not the milliseconds, and repeat;
``--threads 1 --clock cpu`` (process CPU time, one thread per side) leaves out the time spent
waiting for a core and is the least load-sensitive comparison.

The OpenBLAS kernels in use are printed and saved (``openblas_coretype``): minires's products
run through NumPy's OpenBLAS, which picks its kernels for the CPU when it is loaded, unless
``OPENBLAS_CORETYPE`` in the environment names a set; ``OPENBLAS_CORETYPE=Haswell`` on an
AVX-512 CPU halves the speed of the small products (see docs/performance.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_common import (environment, environment_line, interleaved, print_table,  # noqa: E402
                        save_json, setup_threads, summarize)

# (C, OC, H, stride): the convolution shapes of ResNet-20 on 32x32 inputs; all 3x3, pad 1.
LAYERS = [(16, 16, 32, 1), (32, 32, 16, 1), (64, 64, 8, 1), (3, 16, 32, 1), (16, 32, 32, 2),
          (32, 64, 16, 2)]
PASSES = ("fwd", "bwd-data", "bwd-weight", "bwd")


def layer_cases(torch, C, OC, H, S, N, tiles, dtype):
    """``{pass: {side: callable}}`` for one layer shape; every callable computes one pass."""
    from minires.kernels.cpu import conv as im2col
    from minires.kernels.cpu import winograd as wg

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, H)).astype(dtype)
    W = (rng.standard_normal((OC, C, 3, 3)) * np.sqrt(2.0 / (9 * C))).astype(dtype)
    OH = (H + 2 - 3) // S + 1
    gy = rng.standard_normal((N, OC, OH, OH)).astype(dtype)
    first = C == 3  # the network input: no gx in training
    tx = torch.from_numpy(x).requires_grad_(True)
    tW = torch.from_numpy(W).requires_grad_(True)
    tgy = torch.from_numpy(gy)
    ty = torch.nn.functional.conv2d(tx, tW, stride=S, padding=1)

    def torch_grad(inputs):
        return lambda: torch.autograd.grad(ty, inputs, tgy, retain_graph=True)

    _, saved = im2col.conv2d_forward(x, W, S, S, 1, 1)

    def im2col_backward(need_gx, need_gW):
        return lambda: im2col.conv2d_backward(gy, W, saved, S, S, 1, 1, need_gx, need_gW)

    cases = {
        "fwd": {"torch": lambda: torch.nn.functional.conv2d(tx, tW, stride=S, padding=1),
                "im2col": lambda: im2col.conv2d_forward(x, W, S, S, 1, 1)},
        "bwd-data": {"torch": torch_grad((tx,)), "im2col": im2col_backward(True, False)},
        "bwd-weight": {"torch": torch_grad((tW,)), "im2col": im2col_backward(False, True)},
        "bwd": {"torch": torch_grad((tW,) if first else (tx, tW)),
                "im2col": im2col_backward(not first, True)},
    }
    if S == 1:
        for m in tiles:
            U = wg.weight_transform(W, m)
            side = f"F{m}"

            def forward(m=m):
                return wg.winograd_forward(x, wg.weight_transform(W, m), m, 1, 1)

            def backward(need_gx, need_gW, m=m, U=U):
                gx, gU = wg.winograd_backward(x, gy, U, m, 1, 1, need_gx, need_gW)
                return gx, (wg.weight_transform_adjoint(gU, m) if need_gW else None)

            cases["fwd"][side] = forward
            cases["bwd-data"][side] = lambda b=backward: b(True, False)
            cases["bwd-weight"][side] = lambda b=backward: b(False, True)
            cases["bwd"][side] = lambda b=backward: b(not first, True)
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 11)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for minires and torch (default: NUMBA_NUM_THREADS)")
    parser.add_argument("--tiles", default="2,4", help="Winograd output tiles to time")
    parser.add_argument("--layers", default=None,
                        help="comma-separated indices into the layer list (default all)")
    parser.add_argument("--passes", default=",".join(PASSES))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--lead-in", type=float, default=0.05,
                        help="seconds of untimed calls before each timed one")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="wall time, or the process's CPU time (needs --threads 1)")
    parser.add_argument("--json", default=None, help="output path (default: results/)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 11)
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (CPU time counts spinning worker threads)")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch = setup_threads(args.threads)
    tiles = [int(t) for t in args.tiles.split(",") if t]
    layers = ([LAYERS[int(i)] for i in args.layers.split(",")] if args.layers else LAYERS)
    passes = args.passes.split(",")
    rows = []
    for C, OC, H, S in layers:
        cases = layer_cases(torch, C, OC, H, S, args.batch, tiles, np.dtype(args.dtype))
        label = f"{C}->{OC} {H}x{H} s{S}"
        for name in passes:
            times = interleaved(cases[name], repeats, warmup=2, lead_in=args.lead_in,
                                clock=clock)
            row = summarize(name, label, times)
            rows.append(row)
            print(f"# {name:10s} {label:16s} " + "  ".join(
                f"{k[:-3]} {v:.2f}" for k, v in row.items() if k.endswith("_ms")) + "  | " +
                "  ".join(f"{k} {v:.2f}" for k, v in row.items() if k.endswith("/torch")),
                flush=True)
    env = environment()
    sides = ["torch", "im2col"] + [f"F{m}" for m in tiles]
    columns = (["group", "case"] + [f"{s}_ms" for s in sides] +
               [f"{s}/torch" for s in sides if s != "torch"])
    print(f"\n# convolution layers, batch {args.batch}, {args.dtype}, {repeats} interleaved "
          f"repeats, {args.clock} time, medians (ms) and ratios to torch; "
          f"{environment_line(env)}")
    print_table(rows, columns)
    path = save_json("cpu_conv_layers", {"environment": env, "batch": args.batch,
                                         "dtype": args.dtype, "repeats": repeats,
                                         "clock": args.clock,
                                         "lead_in": args.lead_in, "rows": rows}, args.json)
    print(f"# saved {path}")


if __name__ == "__main__":
    main()
