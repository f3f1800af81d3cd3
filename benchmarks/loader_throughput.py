"""Loader throughput on the CPU: images per second with augmentation and normalisation.

    python benchmarks/loader_throughput.py            # 50,000 CIFAR-shaped images, 3 epochs
    python benchmarks/loader_throughput.py --quick    # 10,000 images, 1 epoch
    python benchmarks/loader_throughput.py --data /path/cifar10.h5

Measures full epochs of ``minires.data.Loader`` (shuffle + crop_flip + normalise to float32):
the default single-threaded kernel, the kernel on numba's parallel pool, with prefetch, and the
GPU path's array code run on NumPy (``crop_flip_normalize_array_code``) on the same batches,
each after a warm-up epoch (the first numba call compiles or loads its cache). The consumer only
touches each batch, so this is the loader's own ceiling.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from minires.data import Loader, load_dataset
from minires.kernels.cuda.augment import crop_flip_normalize_array_code


def time_epochs(make_batches, epochs: int, n: int) -> float:
    """Images per second over ``epochs`` passes of ``make_batches(epoch)``."""
    for _ in make_batches(0):            # warm-up: compilation, page faults, thread start
        pass
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for x, _ in make_batches(epoch):
            x[0, 0, 0, 0]                 # touch the batch, as a consumer would
    return epochs * n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 images, 1 epoch")
    parser.add_argument("--data", help="a prepared .h5 file (default: random CIFAR-shaped data)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--augment", default="crop_flip", choices=["crop_flip", "flip", "none"])
    args = parser.parse_args()
    n = 10_000 if args.quick else 50_000
    epochs = args.epochs or (1 if args.quick else 3)
    augment = None if args.augment == "none" else args.augment

    if args.data:
        data = load_dataset(args.data, subset=n)
        images, labels, mean, std = data.train_images, data.train_labels, data.mean, data.std
        source = args.data
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
        source = "random uint8"
    n = len(images)

    def loader(prefetch, parallel=False):
        return Loader(images, labels, args.batch_size, shuffle=True, augment=augment, mean=mean,
                      std=std, seed=0, prefetch=prefetch, parallel=parallel)

    def epoch_batches(ld):
        def batches(epoch):
            ld.set_epoch(epoch)
            return iter(ld)
        return batches

    def reference_batches(epoch):
        ld = loader(False)
        ld.set_epoch(epoch)
        plan = ld.plan()
        for start in range(0, n, args.batch_size):
            index = plan.order[start:start + args.batch_size]
            params = plan.params[start:start + args.batch_size]
            yield crop_flip_normalize_array_code(np, images[index], params.dy, params.dx,
                                                 params.flip, params.pad, ld.scale,
                                                 ld.shift), labels[index]

    print(f"loader throughput: {n:,} images {images.shape[1:]} ({source}), batch "
          f"{args.batch_size}, augment={augment}, {epochs} epoch(s), {os.cpu_count()} CPUs")
    plain = time_epochs(epoch_batches(loader(False)), epochs, n)
    print(f"  numba kernel (default)     {plain:12,.0f} images/s")
    parallel = time_epochs(epoch_batches(loader(False, parallel=True)), epochs, n)
    print(f"  numba kernel, parallel     {parallel:12,.0f} images/s")
    prefetched = time_epochs(epoch_batches(loader(True)), epochs, n)
    print(f"  numba kernel + prefetch    {prefetched:12,.0f} images/s")
    reference = time_epochs(reference_batches, 1, n)
    print(f"  GPU array code on NumPy    {reference:12,.0f} images/s")
    print(f"  kernel / reference         {plain / reference:12.1f} x")


if __name__ == "__main__":
    main()
