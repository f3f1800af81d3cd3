"""Batches for training and evaluation: seeded shuffling, augmentation, normalisation, prefetch.

Reproducibility: everything random about an epoch (the order of the images, each image's crop
and flip) is drawn up front from generators seeded with ``(seed, epoch)`` alone. An epoch's
batches therefore never depend on what ran before it, so a training run resumed at epoch ``e``
(``loader.set_epoch(e)``) sees exactly the batches an uninterrupted run would, and turning
prefetch on or off changes nothing but the timing.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np

from minires import backend
from minires.data.augment import (DEFAULT_PAD, AugmentParams, apply, check_policy, draw_params,
                                  normalization_constants)

PREFETCH_DEPTH = 3      # batches the background thread may run ahead


@dataclass(frozen=True)
class EpochPlan:
    """All random choices of one epoch: ``order`` (N,) int64 image indices in visiting order
    and ``params``, the augmentation of the image at each position."""
    order: np.ndarray
    params: AugmentParams


class _Failure:
    def __init__(self, exc):
        self.exc = exc


_END = object()


class Loader:
    """Iterate over ``(x, y)`` batches of a uint8 image array.

    Args:
        images: (N, C, H, W) uint8 NumPy array (or CuPy array when ``xp`` is CuPy).
        labels: (N,) integer labels.
        batch_size: images per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: visit images in a random order each epoch (seeded by ``(seed, epoch)``).
        augment: None, ``"crop_flip"`` (pad ``pad`` zeros, random crop, random flip) or
            ``"flip"`` (random horizontal flip).
        mean, std: (C,) per-channel statistics on the 0..1 scale; ``x = (pixel/255 - mean)/std``.
        seed: non-negative int; with the epoch it determines every random choice.
        drop_last: skip the last incomplete batch.
        prefetch: prepare batches in a background thread (same batches, overlapped with the
            caller's work).
        xp: array module of the yielded batches (``numpy``: numba kernel on the CPU; ``cupy``:
            uint8 batches are moved to the GPU and augmented there).
        pad: zero padding of ``"crop_flip"`` (4 for CIFAR, as He et al. 2016).
        parallel: run the numba kernel on numba's parallel thread pool. Off by default: one
            thread already delivers several hundred thousand 32x32 images per second, far above
            what training consumes, and an idle OpenMP pool that spins between batches would
            take cores from the training kernels. The prefetch thread always runs it serially.

    Iterating yields ``x`` (B, C, H, W) float32 C-contiguous and ``y`` (B,) int64, both on
    ``xp``. Call :meth:`set_epoch` before each epoch; iterating twice without it repeats the
    same epoch exactly.
    """

    def __init__(self, images, labels, batch_size: int, *, shuffle: bool, augment=None,
                 mean, std, seed: int = 0, drop_last: bool = False, prefetch: bool = False,
                 xp=np, pad: int = DEFAULT_PAD, parallel: bool = False):
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 of shape (N, C, H, W), got {images.dtype} "
                             f"{images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if int(pad) < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.scale, self.shift = normalization_constants(mean, std)
        if self.scale.shape[0] != images.shape[1]:
            raise ValueError(f"mean/std have {self.scale.shape[0]} channels, images have "
                             f"{images.shape[1]}")
        # C order once here, rather than a copy of the whole set per batch in the kernel.
        self.images = images if images.flags.c_contiguous else images.copy()
        self.labels = np.asarray(backend.to_numpy(labels), np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = check_policy(augment)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.prefetch = bool(prefetch)
        self.xp = xp
        # Decided once, by the device of the batches: on the CPU the producer (the prefetch
        # thread, if any) makes whole batches with the fused kernel; for a GPU it only gathers
        # uint8 images on the host (a quarter of the bytes of float32 to move), and the device
        # augments them in the consumer's thread.
        self.augment_in_producer = backend.kernels_for_module(xp).device == "cpu"
        self.pad = int(pad)
        self.parallel = bool(parallel)
        self.epoch = 0

    def __len__(self):
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __repr__(self):
        return (f"Loader(n={self.images.shape[0]}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, augment={self.augment!r}, seed={self.seed}, "
                f"epoch={self.epoch}, prefetch={self.prefetch}, xp={self.xp.__name__})")

    def set_epoch(self, epoch: int):
        """Select the epoch whose order and augmentation the next iteration uses."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch}")
        self.epoch = int(epoch)

    def plan(self, epoch: int | None = None) -> EpochPlan:
        """The random choices of ``epoch`` (default: the current one); a pure function of
        ``(seed, epoch)``. Separate streams for order and augmentation, so that switching
        shuffling on or off leaves the augmentation draws unchanged."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = self.images.shape[0]
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, 0]).permutation(n)
        else:
            order = np.arange(n)
        params = draw_params(np.random.default_rng([self.seed, epoch, 1]), n, self.augment,
                             self.pad)
        return EpochPlan(order.astype(np.int64), params)

    def __iter__(self):
        plan = self.plan()
        if self.prefetch:
            return self._prefetched(plan)
        return (self._finish(self._produce(plan, b, parallel=self.parallel))
                for b in range(len(self)))

    def _produce(self, plan: EpochPlan, b: int, parallel: bool):
        """The producer's part of batch ``b`` (see ``augment_in_producer``): the whole batch on
        the CPU; for a GPU, only the gather of its uint8 images, on their own device."""
        start = b * self.batch_size
        index = plan.order[start:start + self.batch_size]
        params = plan.params[start:start + self.batch_size]
        y = self.labels[index]
        if self.augment_in_producer:
            return apply(self.images, index, params, self.scale, self.shift, parallel), y
        batch = self.images[backend.get_array_module(self.images).asarray(index)]
        return batch, y, params

    def _finish(self, item):
        """The consumer's part of a batch: moving it to the device and augmenting it there."""
        if self.augment_in_producer:
            return item
        batch, y, params = item
        x = apply(self.xp.asarray(batch), np.arange(len(batch)), params, self.scale, self.shift)
        return x, self.xp.asarray(y)

    def _prefetched(self, plan: EpochPlan):
        """Generator: a daemon thread produces batches ahead; stops cleanly on early exit."""
        items = queue.Queue(maxsize=PREFETCH_DEPTH)
        stop = threading.Event()

        def put(item):
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for b in range(len(self)):
                    # The serial kernel: the caller's thread keeps numba's parallel pool.
                    if not put(self._produce(plan, b, parallel=False)):
                        return
                put(_END)
            except BaseException as exc:  # handed to the consumer, raised there
                put(_Failure(exc))

        thread = threading.Thread(target=work, name="minires-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = items.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield self._finish(item)
        finally:
            stop.set()
            thread.join()
