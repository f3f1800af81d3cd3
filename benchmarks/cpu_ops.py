"""Per-operation CPU benchmark: minires against PyTorch (CPU build) in one process.

Sections: every ResNet-20 convolution shape (forward; backward = gx and gW), BatchNorm and ReLU
(training mode) at the three activation shapes, im2col/col2im alone (whole batch, the GEMM layout
``(N, C*KH*KW, OH*OW)``, against ``torch.nn.functional.unfold/fold``), and the option-A shortcut
(stride-2 slice + channel zero-padding). ``legacy`` columns time the previous whole-batch
im2col + batched-GEMM convolution, kept here as the "before" reference.

    python benchmarks/cpu_ops.py --quick          # about a minute
    python benchmarks/cpu_ops.py --repeats 21     # the full table

Prints a table (medians over repeats, ms; ratios minires/torch) and writes JSON to
``benchmarks/results/cpu_ops-<date>.json`` (or ``--json PATH``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_common import (environment, interleaved, print_table, save_json,  # noqa: E402
                        setup_threads, summarize)

# (C, OC, H, stride): the six convolution shapes of ResNet-20 on 32x32 inputs; all 3x3, pad 1.
CONV_SHAPES = [(3, 16, 32, 1), (16, 16, 32, 1), (16, 32, 32, 2), (32, 32, 16, 1),
               (32, 64, 16, 2), (64, 64, 8, 1)]
ACTIVATION_SHAPES = [(16, 32), (32, 16), (64, 8)]  # (C, H=W) after each stage


class LegacyConv:
    """The previous CPU convolution: whole-batch im2col, one batched GEMM, col kept for gW."""

    def __init__(self, stride, pad):
        self.S, self.P = stride, pad

    def forward(self, x, W):
        from minires.kernels.cpu import im2col
        N, C, H, Wd = x.shape
        OC, _, KH, KW = W.shape
        col = im2col(x, KH, KW, self.S, self.S, self.P, self.P)
        OH, OW = col.shape[4:]
        self.col = col.reshape(N, C * KH * KW, OH * OW)
        self.W, self.hw = W, (H, Wd)
        return (W.reshape(OC, -1) @ self.col).reshape(N, OC, OH, OW)

    def backward(self, gy):
        from minires.kernels.cpu import col2im
        N, OC, OH, OW = gy.shape
        _, C, KH, KW = self.W.shape
        gy3 = gy.reshape(N, OC, OH * OW)
        gcol = (self.W.reshape(OC, -1).T @ gy3).reshape(N, C, KH, KW, OH, OW)
        gx = col2im(gcol, *self.hw, self.S, self.S, self.P, self.P)
        gW = (gy3 @ self.col.transpose(0, 2, 1)).sum(axis=0).reshape(self.W.shape)
        return gx, gW


def bench_conv(torch, N, measure, legacy):
    from minires.functions.conv import Conv2d
    from minires.kernels import cpu
    rows = []
    rng = np.random.default_rng(0)
    for C, OC, H, S in CONV_SHAPES:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        W = (rng.standard_normal((OC, C, 3, 3), dtype=np.float32) * 0.1)
        need_gx = C != 3  # the network input needs no gradient
        fn = Conv2d(S, 1)
        fn.needs_input_grad, fn.k = (need_gx, True), cpu
        y = fn.forward(x, W)
        gy = rng.standard_normal(y.shape, dtype=np.float32)
        tx = torch.from_numpy(x).requires_grad_(need_gx)
        tW = torch.from_numpy(W).requires_grad_(True)
        tgy = torch.from_numpy(gy)
        ty = torch.nn.functional.conv2d(tx, tW, stride=S, padding=1)
        inputs = (tx, tW) if need_gx else (tW,)
        old = LegacyConv(S, 1)
        old.forward(x, W)
        label = f"{C}->{OC} {H}x{H} s{S}"

        fwd = {"minires": lambda: fn.forward(x, W),
               "torch": lambda: torch.nn.functional.conv2d(tx, tW, stride=S, padding=1)}
        bwd = {"minires": lambda: fn.backward(gy),
               "torch": lambda: torch.autograd.grad(ty, inputs, tgy, retain_graph=True)}
        for group, cases, legacy_case in (("conv fwd", fwd, lambda: old.forward(x, W)),
                                          ("conv bwd", bwd, lambda: old.backward(gy))):
            times = measure(cases)
            if legacy:
                # Timed on its own: its numba parallel=True kernels leave spinning OpenMP
                # workers behind, which would slow whatever the harness runs next.
                times["legacy"] = measure({"legacy": legacy_case})["legacy"]
            rows.append(summarize(group, label, times))
    return rows


def bench_bn_relu(torch, N, measure):
    from minires.functions.activation import ReLU
    from minires.functions.batchnorm import BatchNorm
    from minires.kernels import cpu
    rows = []
    rng = np.random.default_rng(1)
    for C, H in ACTIVATION_SHAPES:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        gy = rng.standard_normal(x.shape, dtype=np.float32)
        gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        bn = BatchNorm(rm, rv, True)
        bn.needs_input_grad, bn.k = (True, True, True), cpu
        bn.forward(x, gamma, beta)
        tbn = torch.nn.BatchNorm2d(C)
        tx = torch.from_numpy(x).requires_grad_(True)
        ty = tbn(tx)
        tgy = torch.from_numpy(gy)
        params = (tx, tbn.weight, tbn.bias)
        label = f"{C}x{H}x{H}"
        rows.append(summarize("batchnorm fwd", label, measure(
            {"minires": lambda: bn.forward(x, gamma, beta), "torch": lambda: tbn(tx)})))
        rows.append(summarize("batchnorm bwd", label, measure(
            {"minires": lambda: bn.backward(gy),
             "torch": lambda: torch.autograd.grad(ty, params, tgy, retain_graph=True)})))

        relu = ReLU()
        relu.needs_input_grad, relu.k = (True,), cpu
        relu.forward(x)
        tr = torch.relu(tx)
        rows.append(summarize("relu fwd", label, measure(
            {"minires": lambda: relu.forward(x), "torch": lambda: torch.relu(tx)})))
        rows.append(summarize("relu bwd", label, measure(
            {"minires": lambda: relu.backward(gy),
             "torch": lambda: torch.autograd.grad(tr, (tx,), tgy, retain_graph=True)})))
    return rows


def bench_im2col(torch, N, measure):
    from minires.kernels.cpu import col2im, im2col
    rows = []
    rng = np.random.default_rng(2)
    for C, OC, H, S in CONV_SHAPES:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        tx = torch.from_numpy(x)
        col = im2col(x, 3, 3, S, S, 1, 1)
        tcol = torch.from_numpy(col.reshape(N, C * 9, -1))
        label = f"{C}x{H}x{H} s{S}"
        rows.append(summarize("im2col", label, measure(
            {"minires": lambda: im2col(x, 3, 3, S, S, 1, 1),
             "torch": lambda: torch.nn.functional.unfold(tx, 3, padding=1, stride=S)})))
        rows.append(summarize("col2im", label, measure(
            {"minires": lambda: col2im(col, H, H, S, S, 1, 1),
             "torch": lambda: torch.nn.functional.fold(tcol, (H, H), 3, padding=1, stride=S)})))
    return rows


def bench_shortcut(torch, N, measure):
    import minires.functions as F
    from minires.autograd import Tensor
    rows = []
    rng = np.random.default_rng(3)
    for C, H in ACTIVATION_SHAPES[:2]:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        tx = torch.from_numpy(x).requires_grad_(True)
        p = C // 2

        def minires_step():
            t = Tensor(x, requires_grad=True)
            y = F.pad(t[:, :, ::2, ::2], ((0, 0), (p, p), (0, 0), (0, 0)))
            y.backward(np.ones(y.shape, np.float32))

        def torch_step():
            y = torch.nn.functional.pad(tx[:, :, ::2, ::2], (0, 0, 0, 0, p, p))
            torch.autograd.grad(y, (tx,), torch.ones_like(y))
        rows.append(summarize("shortcut A fwd+bwd", f"{C}x{H}x{H} -> {2 * C}",
                              measure({"minires": minires_step, "torch": torch_step})))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (about a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for minires and torch (default: NUMBA_NUM_THREADS)")
    parser.add_argument("--no-legacy", action="store_true",
                        help="skip the previous whole-batch im2col convolution")
    parser.add_argument("--sections", default="conv,bn,im2col,shortcut")
    parser.add_argument("--lead-in", type=float, default=0.05,
                        help="seconds of untimed calls before each timed one (at least one "
                             "call; absorbs the spinning of the other side's threads)")
    parser.add_argument("--json", default=None, help="output path (default: results/)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 15)
    torch = setup_threads(args.threads)

    def measure(cases):
        return interleaved(cases, repeats, lead_in=args.lead_in)
    sections = set(args.sections.split(","))
    rows = []
    if "conv" in sections:
        rows += bench_conv(torch, args.batch, measure, legacy=not args.no_legacy)
    if "bn" in sections:
        rows += bench_bn_relu(torch, args.batch, measure)
    if "im2col" in sections:
        rows += bench_im2col(torch, args.batch, measure)
    if "shortcut" in sections:
        rows += bench_shortcut(torch, args.batch, measure)
    env = environment()
    print(f"# minires vs torch, CPU ops, batch {args.batch}, float32, {repeats} repeats; "
          f"threads: minires {env['minires_threads']}, torch {env['torch_threads']}, "
          f"numba {env['numba_get_num_threads']}, OpenBLAS {env['openblas_threads']}; "
          f"lead-in {args.lead_in} s; {env['cpu_model']}; load {env['load_average']}")
    print_table(rows, ["group", "case", "minires_ms", "legacy_ms", "torch_ms", "minires/torch",
                       "legacy/torch"])
    path = save_json("cpu_ops", {"environment": env, "batch": args.batch, "repeats": repeats,
                                 "lead_in": args.lead_in, "rows": rows}, args.json)
    print(f"# saved {path}")


if __name__ == "__main__":
    main()
