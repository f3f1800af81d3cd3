"""How far float32 training drifts from float64 training, per CPU convolution algorithm.

Winograd F(4x4, 3x3) rounds more than im2col in float32 (tests/test_winograd.py). Training is
chaotic: any rounding difference grows step by step until two runs from one seed are as
different as two seeds. The question is whether Winograd's larger error drifts *faster* than
the rounding every float32 run has. This script trains, on the same batches from the same
initial weights, a float64 model (the reference: its rounding is 1e-9 times smaller) and
float32 models:

* ``im2col``: float32, im2col convolutions;
* ``im2col-1thread``: the same on one worker thread: only the order of the weight-gradient
  sums differs (the noise floor of float32 rounding);
* ``winograd``: float32, the default rule (F(4x4) on every 3x3 stride-1 layer of ResNet-20).

and prints, at chosen steps, each float32 model's distance to the float64 one: of the weights
(``|p - p64| / |p64|`` over all parameters) and of the training loss. Example (real CIFAR-10,
prepared with ``minires prepare cifar10``)::

    python benchmarks/conv_rounding_divergence.py --data-dir ~/.cache/minires --steps 200
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_common import conv_algorithm  # noqa: E402

import minires.functions as F  # noqa: E402
from minires.data import Loader, load_dataset  # noqa: E402
from minires.kernels.cpu import parallel  # noqa: E402
from minires.models import resnet  # noqa: E402
from minires.optim import SGD  # noqa: E402

# name -> (dtype, MINIRES_CPU_CONV, worker threads or None for the default)
SIDES = {"float64": (np.float64, "im2col", None), "im2col": (np.float32, "im2col", None),
         "im2col-1thread": (np.float32, "im2col", 1), "winograd": (np.float32, "auto", None)}


def distance(model, reference) -> float:
    """``|p - p_ref| / |p_ref|`` over all parameters, in float64."""
    num = den = 0.0
    for p, q in zip(model.parameters(), reference.parameters()):
        num += float(((p.data.astype(np.float64) - q.data) ** 2).sum())
        den += float((q.data ** 2).sum())
    return (num / den) ** 0.5


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--share", default="block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset, data_dir=args.data_dir, subset=args.subset, seed=args.seed)
    loader = Loader(data.train_images, data.train_labels, 128, shuffle=True,
                    augment=data.augment, mean=data.mean, std=data.std, seed=args.seed,
                    drop_last=True)
    models, optimizers = {}, {}
    for name, (dtype, _, _) in SIDES.items():
        models[name] = resnet(depth=args.depth, num_classes=data.num_classes, share=args.share,
                              seed=args.seed, dtype=dtype)
        optimizers[name] = SGD(models[name].parameters(), lr=args.lr, momentum=0.9,
                               weight_decay=1e-4)
    threads = parallel.num_threads()
    report = {"args": vars(args), "steps": []}
    check = {1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 400, 500, 750, 1000, args.steps}
    print("step  " + "  ".join(f"{n:>22s}" for n in SIDES if n != "float64") +
          "   (weight distance to float64 | loss difference)")
    step = 0
    while step < args.steps:
        loader.set_epoch(step // len(loader))
        for x, y in loader:
            step += 1
            losses = {}
            for name, (dtype, algorithm, workers) in SIDES.items():
                parallel.set_num_threads(workers or threads)
                with conv_algorithm(algorithm):
                    opt, model = optimizers[name], models[name]
                    opt.zero_grad()
                    loss = F.softmax_cross_entropy(model(x.astype(dtype)), y)
                    loss.backward()
                    opt.step()
                losses[name] = loss.item()
            parallel.set_num_threads(threads)
            if step in check:
                row = {"step": step, "loss_float64": losses["float64"]}
                for name in SIDES:
                    if name != "float64":
                        row[f"{name}_weights"] = distance(models[name], models["float64"])
                        row[f"{name}_loss"] = losses[name] - losses["float64"]
                report["steps"].append(row)
                print(f"{step:4d}  " + "  ".join(
                    f"{row[n + '_weights']:9.2e} | {row[n + '_loss']:+9.2e}"
                    for n in SIDES if n != "float64"), flush=True)
            if step == args.steps:
                break
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"# {args.dataset} subset {args.subset}, ResNet-{args.depth} share={args.share}, "
          f"seed {args.seed}, lr {args.lr}, batch 128; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE')}")


if __name__ == "__main__":
    main()
