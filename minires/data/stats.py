"""Per-channel mean and standard deviation of uint8 images, accumulated batch by batch.

A 256-bin histogram per channel is exact (integer counts), cheap to update and never holds
more than one batch, so the statistics of ImageNet64's 15 GB training set cost no memory.
"""
from __future__ import annotations

import numpy as np


class ChannelStats:
    """Accumulates histograms of (N, C, H, W) uint8 batches; reports mean/std on the 0..1 scale."""

    def __init__(self, channels: int = 3):
        self.hist = np.zeros((channels, 256), np.int64)

    def update(self, images: np.ndarray, rows: int = 4096):
        """Add a (N, C, H, W) uint8 batch (processed ``rows`` images at a time)."""
        for start in range(0, len(images), rows):
            part = images[start:start + rows]
            for c in range(self.hist.shape[0]):
                self.hist[c] += np.bincount(part[:, c].ravel(), minlength=256)

    @property
    def count(self) -> int:
        """Pixels seen per channel."""
        return int(self.hist[0].sum())

    def mean_std(self):
        """``(mean, std)``, each (C,) float32 on the 0..1 scale (population std)."""
        if self.count == 0:
            raise ValueError("no images were seen: cannot compute mean and std")
        values = np.arange(256, dtype=np.float64) / 255.0
        n = self.hist.sum(axis=1).astype(np.float64)
        mean = (self.hist * values).sum(axis=1) / n
        var = (self.hist * (values - mean[:, None]) ** 2).sum(axis=1) / n
        return mean.astype(np.float32), np.sqrt(var).astype(np.float32)
