"""Train the same ResNet with PyTorch (CPU) as an independent reference for minires's accuracy.

Reads a file made by ``minires prepare`` with h5py directly (no minires code), builds a CIFAR
ResNet of He et al. 2016 with option-A shortcuts, optionally sharing the two 3x3 convolutions
of every same-shape block (``conv2.weight = conv1.weight``), and trains it with the recipe of
``minires train``: SGD momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 50% and 75% of
the epochs, pad-4 random crop and horizontal flip, per-channel normalisation.

    python benchmarks/cifar_reference_torch.py ~/.cache/minires/cifar10.h5 --subset 10000 \
        --epochs 5 [--shared] [--json out.json]

Prints one line per epoch and the final test error; PyTorch is a benchmark-only dependency.
"""
from __future__ import annotations

import argparse
import json
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as tF

from torch_resnet import torch_resnet


def augment(images, rng):
    """Pad 4, random 32x32 crop, random horizontal flip: uint8 (N, 3, 32, 32) in and out."""
    N, _, H, W = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (4, 4), (4, 4)))
    dy, dx = rng.integers(0, 9, N), rng.integers(0, 9, N)
    flip = rng.random(N) < 0.5
    out = np.empty_like(images)
    for i in range(N):
        crop = padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W]
        out[i] = crop[:, :, ::-1] if flip[i] else crop
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("h5")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    with h5py.File(args.h5, "r") as f:
        train_x = f["train/images"][: args.subset]
        train_y = f["train/labels"][: args.subset].astype(np.int64)
        test_x, test_y = f["test/images"][:], f["test/labels"][:].astype(np.int64)
    mean = train_x.reshape(len(train_x), 3, -1).mean(axis=(0, 2)) / 255
    std = (train_x.reshape(len(train_x), 3, -1) / 255).std(axis=(0, 2))

    def normalise(u8):
        x = torch.from_numpy(u8.astype(np.float32) / 255)
        return (x - torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)) / \
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    num_classes = int(max(train_y.max(), test_y.max()) + 1)
    model = torch_resnet(torch, args.depth, "block" if args.shared else "none", num_classes)
    params = list(model.parameters())  # torch de-duplicates shared parameters too
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    milestones = [int(args.epochs * 0.5), int(args.epochs * 0.75)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)
    history = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = rng.permutation(len(train_x))
        aug = augment(train_x[order], rng)
        total_loss = total_wrong = seen = 0
        for i in range(0, len(order), args.batch_size):
            x = normalise(aug[i:i + args.batch_size])
            y = torch.from_numpy(train_y[order[i:i + args.batch_size]])
            logits = model(x)
            loss = tF.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(y)
            total_wrong += (logits.argmax(1) != y).sum().item()
            seen += len(y)
        sched.step()
        model.eval()
        test_wrong = 0
        test_loss = 0.0
        with torch.no_grad():
            for i in range(0, len(test_x), 500):
                logits = model(normalise(test_x[i:i + 500]))
                y = torch.from_numpy(test_y[i:i + 500])
                test_loss += tF.cross_entropy(logits, y, reduction="sum").item()
                test_wrong += (logits.argmax(1) != y).sum().item()
        row = {"epoch": epoch, "train_loss": total_loss / seen, "train_error": total_wrong / seen,
               "test_loss": test_loss / len(test_x), "test_error": test_wrong / len(test_x),
               "seconds": time.perf_counter() - start}
        history.append(row)
        print(json.dumps(row), flush=True)
    print(f"final test error {history[-1]['test_error']:.4f} "
          f"({'shared' if args.shared else 'unshared'}, parameters "
          f"{sum(p.numel() for p in params)})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "history": history}, f, indent=1)


if __name__ == "__main__":
    main()
