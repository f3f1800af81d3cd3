"""Phase 2 of benchmarks/run_gpu_checks.sh: minires against PyTorch on the same GPU, float32
and float64, every case from the same NumPy inputs.

Cases:

- ``conv``: every distinct convolution of ResNet-20 (batch 32) and of WRN-28-10 (batch 8), the
  shapes traced from minires' own models: y, gx and gW against ``torch.nn.functional.conv2d``
  (cuDNN);
- ``batchnorm``: BatchNorm and BatchNorm+ReLU at ResNet-20 and WRN-28-10 shapes, training mode
  (running statistics updated, momentum 0.1) and eval mode: y, gx, ggamma, gbeta and both
  running statistics;
- ``cross_entropy``: logits of 100 to 1000 (10 and 1000 classes): loss and gradient against
  PyTorch, and, in float32, against float64 elementwise (each element within 2 float32
  roundings: the double ``log_z`` on the device);
- ``sgd``: five SGD steps (momentum 0.9, weight decay 5e-4) of a whole ResNet-20, unshared and
  shared, from the same weights on the same batches: the loss of every step, and every weight
  and running statistic at the end.

An array's error is ``max |minires - torch| / max |torch|``; the tolerances are in
:data:`TOLERANCE` and in the JSON. PyTorch computes in strict float32 (TF32 off for cuDNN and
cuBLAS). Usage:

    python benchmarks/gpu_crosscheck.py --out OUTDIR/gpu_crosscheck.json
    python benchmarks/gpu_crosscheck.py --list     # the cases, traced on the CPU; no GPU used
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_resnet import torch_resnet  # noqa: E402

DTYPES = ("float32", "float64")
#: kind -> dtype -> largest error accepted (see the module docstring for how it is measured).
TOLERANCE = {
    "conv": {"float32": 1e-4, "float64": 1e-10},
    "batchnorm": {"float32": 1e-4, "float64": 1e-10},
    "cross_entropy": {"float32": 1e-5, "float64": 1e-12},
    "cross_entropy_vs_float64": {"float32": 1.2e-7},   # elementwise relative, not max-scaled
    "sgd_loss": {"float32": 2e-3, "float64": 1e-9},    # relative, each of the five losses
    "sgd_state": {"float32": 2e-2, "float64": 1e-7},   # weights and statistics after 5 steps
}
SGD = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
#: Where PyTorch computes (tests/test_gpu_checks_script.py runs the cases on the CPU, against
#: the emulated CUDA kernels, to check this script's logic without a GPU).
TORCH_DEVICE = "cuda"


def error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


# -- the cases -----------------------------------------------------------------------------------

def conv_shapes() -> list:
    """Every distinct convolution of ResNet-20 and WRN-28-10, traced from a CPU forward pass:
    ``(model, batch, C, H, W, OC, K, stride, pad)``."""
    from minires import models
    from minires.autograd import Tensor, no_grad
    from minires.nn import Conv2d

    found = []
    for label, batch, spec in (("ResNet-20", 32, dict(depth=20)),
                               ("WRN-28-10", 8, dict(arch="wrn", depth=28, width=10))):
        model = models.create(**spec)
        seen = []

        def record(module, inputs, output, seen=seen):
            _, C, H, W = inputs[0].shape
            seen.append((C, H, W, module.out_channels, module.kernel_size[0],
                         module.stride[0], module.pad[0]))

        handles = [m.register_forward_hook(record) for m in model.modules()
                   if isinstance(m, Conv2d)]
        with no_grad():
            model(Tensor(np.zeros((1, 3, 32, 32), np.float32)))
        for h in handles:
            h.remove()
        for shape in dict.fromkeys(seen):  # distinct, in network order
            found.append((label, batch) + shape)
    return found


def batchnorm_shapes() -> list:
    """``(model, N, C, H, W)``: the largest activation of each model's BatchNorms."""
    return [("ResNet-20", 32, 16, 32, 32), ("WRN-28-10", 8, 640, 8, 8)]


def crossentropy_shapes() -> list:
    return [(128, 10), (64, 1000)]


# -- minires and PyTorch on the device ------------------------------------------------------------

def run_conv(cp, torch, shape, dtype, rng):
    import minires.functions as F
    from minires.autograd import Tensor
    _, N, C, H, W, OC, K, stride, pad = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((OC, C, K, K)) * np.sqrt(2.0 / (C * K * K))).astype(dtype)
    OH = (H + 2 * pad - K) // stride + 1
    gy = rng.standard_normal((N, OC, OH, OH)).astype(dtype)
    xt, wt = Tensor(cp.asarray(x), requires_grad=True), Tensor(cp.asarray(w), requires_grad=True)
    y = F.conv2d(xt, wt, stride=stride, pad=pad)
    y.backward(cp.asarray(gy))
    ours = {"y": y.data, "gx": xt.grad, "gW": wt.grad}
    tx, tw = (torch.tensor(a, device=TORCH_DEVICE, requires_grad=True) for a in (x, w))
    ty = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad)
    ty.backward(torch.tensor(gy, device=TORCH_DEVICE))
    theirs = {"y": ty, "gx": tx.grad, "gW": tw.grad}
    return {k: error(cp.asnumpy(ours[k]), theirs[k].detach().cpu().numpy()) for k in ours}


def run_batchnorm(cp, torch, shape, dtype, training, relu, rng):
    import minires.functions as F
    from minires.autograd import Tensor
    _, N, C, H, W = shape
    x = (rng.standard_normal((N, C, H, W)) * 2 + 0.5).astype(dtype)
    gamma, beta = (rng.standard_normal(C) + 1).astype(dtype), rng.standard_normal(C).astype(dtype)
    mean, var = (rng.standard_normal(C) * 0.1).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    running = [cp.array(mean), cp.array(var)]  # copies: updated in place below
    tensors = [Tensor(cp.asarray(a), requires_grad=True) for a in (x, gamma, beta)]
    norm = F.batch_norm_relu if relu else F.batch_norm
    y = norm(*tensors, *running, training, 0.1, 1e-5)
    y.backward(cp.asarray(gy))
    ours = [y.data] + [t.grad for t in tensors] + running
    t_running = [torch.tensor(a, device=TORCH_DEVICE) for a in (mean, var)]
    tx, tg, tb = (torch.tensor(a, device=TORCH_DEVICE, requires_grad=True)
                  for a in (x, gamma, beta))
    ty = torch.nn.functional.batch_norm(tx, *t_running, tg, tb, training=training,
                                        momentum=0.1, eps=1e-5)
    if relu:
        ty = torch.relu(ty)
    ty.backward(torch.tensor(gy, device=TORCH_DEVICE))
    theirs = [ty, tx.grad, tg.grad, tb.grad] + t_running
    names = ("y", "gx", "ggamma", "gbeta", "running_mean", "running_var")
    return {n: error(cp.asnumpy(a), b.detach().cpu().numpy())
            for n, a, b in zip(names, ours, theirs)}


def run_cross_entropy(cp, torch, shape, dtype, rng):
    import minires.functions as F
    from minires.autograd import Tensor
    N, K = shape
    logits = (rng.uniform(100, 1000, (N, 1)) + 3 * rng.standard_normal((N, K))).astype(dtype)
    labels = rng.integers(0, K, N)
    z = Tensor(cp.asarray(logits), requires_grad=True)
    loss = F.softmax_cross_entropy(z, cp.asarray(labels))
    loss.backward()
    tz = torch.tensor(logits, device=TORCH_DEVICE, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tz, torch.tensor(labels, device=TORCH_DEVICE))
    tloss.backward()
    gx = cp.asnumpy(z.grad)
    result = {"loss": error(cp.asnumpy(loss.data), tloss.detach().cpu().numpy()),
              "grad": error(gx, tz.grad.cpu().numpy())}
    if dtype == np.float32:  # each element against float64 computed from the same logits
        z64 = logits.astype(np.float64)
        m = z64.max(axis=1, keepdims=True)
        p = np.exp(z64 - m - np.log(np.exp(z64 - m).sum(axis=1, keepdims=True)))
        p[np.arange(N), labels] -= 1
        want = p / N
        rel = np.abs(gx - want) / np.abs(want)
        result["grad_vs_float64"] = float(np.max(np.where(np.abs(want) < 2e-38, 0.0, rel)))
    return result


def _torch_state(model):
    """minires' parameters and buffers under PyTorch's names (gamma -> weight, ...)."""
    import torch
    from minires.autograd import unwrap
    from minires.backend import to_numpy
    return {name.replace(".gamma", ".weight").replace(".beta", ".bias"):
            torch.from_numpy(np.array(to_numpy(unwrap(value))))
            for name, value in [*model.named_parameters(), *model.named_buffers()]}


def run_sgd(cp, torch, share, dtype, rng, depth=20, batch=32, size=32):
    """Five steps of a ResNet in both frameworks: errors of the losses and of the state."""
    import minires.functions as F
    from minires import models, optim
    from minires.autograd import Tensor
    model = models.create(depth=depth, share=share, seed=0, dtype=dtype)
    net = torch_resnet(torch, depth, share).to(dtype=getattr(torch, np.dtype(dtype).name))
    missing, unexpected = net.load_state_dict(_torch_state(model), strict=False)
    # A shared conv2.weight is conv1's Parameter (stored once, under conv1's name); PyTorch
    # counts BatchNorm batches, which minires does not keep.
    left = [k for k in missing if not k.endswith("num_batches_tracked")
            and not (share == "block" and k.endswith("conv2.weight"))]
    if unexpected or left:
        raise RuntimeError(f"weights did not map onto PyTorch: missing {left}, unexpected "
                           f"{unexpected}")
    net = net.to(TORCH_DEVICE)
    model.to("cuda")
    opt = optim.SGD(model.parameters(), **SGD)
    topt = torch.optim.SGD(net.parameters(), **SGD)
    losses, tlosses = [], []
    for _ in range(5):
        x = rng.standard_normal((batch, 3, size, size)).astype(dtype)
        y = rng.integers(0, 10, batch)
        opt.zero_grad()
        loss = F.softmax_cross_entropy(model(Tensor(cp.asarray(x))), cp.asarray(y))
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(net(torch.tensor(x, device=TORCH_DEVICE)),
                                                  torch.tensor(y, device=TORCH_DEVICE))
        tloss.backward()
        topt.step()
        tlosses.append(float(tloss.detach()))
    theirs = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    state_errors = {k: error(v, theirs[k]) for k, v in
                    ((k, v.numpy()) for k, v in _torch_state(model).items())}
    worst = max(state_errors, key=state_errors.get)
    return {"loss": max(abs(a - b) / abs(b) for a, b in zip(losses, tlosses)),
            "state": state_errors[worst], "worst_state_array": worst,
            "losses": losses, "torch_losses": tlosses}


# -- driver --------------------------------------------------------------------------------------

def cases():
    """``(kind, label, runner arguments)`` of every case, dtype excluded."""
    out = [("conv", f"{s[0]} conv {s[2]}->{s[5]} {s[6]}x{s[6]} s{s[7]} p{s[8]} at {s[3]}x{s[4]}"
            f" (N={s[1]})", ("conv", s)) for s in conv_shapes()]
    for s in batchnorm_shapes():
        for training in (True, False):
            for relu in (False, True):
                out.append(("batchnorm", f"{s[0]} BatchNorm{'+ReLU' if relu else ''} "
                            f"{'train' if training else 'eval'} {s[1:]}",
                            ("batchnorm", s, training, relu)))
    out += [("cross_entropy", f"cross-entropy logits 100-1000 {s}", ("cross_entropy", s))
            for s in crossentropy_shapes()]
    out += [("sgd", f"ResNet-20 share={share}: 5 SGD steps", ("sgd", share))
            for share in ("none", "block")]
    return out


def run_case(cp, torch, args, dtype, rng):
    kind = args[0]
    if kind == "conv":
        return run_conv(cp, torch, args[1], dtype, rng)
    if kind == "batchnorm":
        return run_batchnorm(cp, torch, args[1], dtype, args[2], args[3], rng)
    if kind == "cross_entropy":
        return run_cross_entropy(cp, torch, args[1], dtype, rng)
    return run_sgd(cp, torch, args[1], dtype, rng)


def judge(kind: str, dtype: str, errors: dict) -> list:
    """``[(array, error, tolerance)]`` of one case's numeric results."""
    checks = []
    for name, value in errors.items():
        if not isinstance(value, float):
            continue
        if kind == "sgd":
            tolerance = TOLERANCE[f"sgd_{name}"][dtype]
        elif name == "grad_vs_float64":
            tolerance = TOLERANCE["cross_entropy_vs_float64"][dtype]
        else:
            tolerance = TOLERANCE[kind][dtype]
        checks.append((name, value, tolerance))
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--list", action="store_true", help="list the cases; no GPU used")
    args = parser.parse_args(argv)
    all_cases = cases()
    if args.list:
        for kind, label, _ in all_cases:
            print(f"{kind:14s} {label}")
        print(f"{len(all_cases)} cases x {len(DTYPES)} dtypes; tolerances: {TOLERANCE}")
        return 0
    if args.out is None:
        parser.error("--out is required unless --list")
    import cupy as cp
    import torch
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    report = {"tolerance": TOLERANCE, "error": "max |minires - torch| / max |torch|",
              "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
              "cupy": cp.__version__, "results": [],
              "device": (torch.cuda.get_device_name() if TORCH_DEVICE == "cuda"
                         else TORCH_DEVICE)}
    failed = 0
    start = time.perf_counter()
    for kind, label, case_args in all_cases:
        for dtype in DTYPES:
            rng = np.random.default_rng(len(report["results"]))
            entry = {"kind": kind, "case": label, "dtype": dtype}
            try:
                errors = run_case(cp, torch, case_args, np.dtype(dtype).type, rng)
                checks = judge(kind, dtype, errors)
                entry.update(errors=errors, ok=all(e <= t for _, e, t in checks))
                worst = max(checks, key=lambda c: c[1] / c[2])
                summary = f"worst {worst[0]} {worst[1]:.2e} (tolerance {worst[2]:.0e})"
            except Exception as exc:  # noqa: BLE001 - one failing case must not hide the rest
                entry.update(ok=False, exception=f"{type(exc).__name__}: {exc}")
                summary = entry["exception"]
            failed += not entry["ok"]
            report["results"].append(entry)
            print(f"{'ok  ' if entry['ok'] else 'FAIL'} {dtype} {label}: {summary}", flush=True)
    report.update(seconds=round(time.perf_counter() - start, 1), failed=failed,
                  passed=len(report["results"]) - failed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"crosscheck: {report['passed']} passed, {failed} failed in {report['seconds']} s; "
          f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
