"""The embedded default dataset: procedurally drawn shapes, no download needed.

Ten classes of geometric shapes, each drawn once per 32x32 RGB image with a random foreground
and background colour, a background gradient, random position, size and rotation, and Gaussian
pixel noise. The class is carried only by the outline of the shape: colours are drawn
independently of the class, so no single pixel or colour predicts it, and a linear classifier on
raw pixels stays near chance (11-14% test accuracy, chance 10%; see tests/test_data_embedded.py)
while a convolutional network learns it fast: the default ``minires train`` (ResNet-20, three
epochs, about 70 s of CPU time) ends between 22% and 30% test error (seeds 0-2). Shape
size, noise and colour contrast (``RADIUS``, ``NOISE_SIGMA``, ``MIN_COLOUR_DISTANCE``) set that
balance.

Images are a pure function of ``seed``: the training and test sets come from independent random
streams, so changing ``n_train`` does not change the test images.
"""
from __future__ import annotations

import numpy as np

from minires.data.stats import ChannelStats

CLASS_NAMES = ("disk", "ring", "square", "frame", "triangle", "cross", "star", "half_disk",
               "two_dots", "bar")
IMAGE_SIZE = 32
DEFAULT_TRAIN = 10000
DEFAULT_TEST = 2000
MIN_COLOUR_DISTANCE = 120.0  # RGB distance between shape and background, so shapes stay visible
RADIUS = (0.25, 0.4)         # range of the shape's radius, as a fraction of the image size
NOISE_SIGMA = (2.0, 8.0)     # range of the standard deviation of the pixel noise (0..255)


def _box(u, v, a, b):
    """Approximate signed distance (shape units) to an axis-aligned box of half-sizes a, b."""
    return np.maximum(np.abs(u) - a, np.abs(v) - b)


def _sdf(label: int, u, v):
    """Signed distance (in units of the shape radius, negative inside) of shape ``label``."""
    r = np.hypot(u, v)
    if label == 0:      # disk
        return r - 0.9
    if label == 1:      # ring
        return np.abs(r - 0.72) - 0.2
    if label == 2:      # filled square
        return _box(u, v, 0.72, 0.72)
    if label == 3:      # square outline
        return np.abs(_box(u, v, 0.72, 0.72)) - 0.17
    if label == 4:      # equilateral triangle, circumradius 1 (inradius 0.5)
        d = None
        for k in range(3):
            a = -np.pi / 2 + k * 2 * np.pi / 3
            side = u * np.cos(a) + v * np.sin(a) - 0.5
            d = side if d is None else np.maximum(d, side)
        return d
    if label == 5:      # plus-shaped cross
        return np.minimum(_box(u, v, 0.95, 0.24), _box(u, v, 0.24, 0.95))
    if label == 6:      # five-pointed star (lobed outline)
        phi = np.arctan2(v, u)
        return r - (0.6 + 0.38 * np.cos(5 * phi))
    if label == 7:      # half disk
        return np.maximum(r - 0.95, v)
    if label == 8:      # two dots
        return np.minimum(np.hypot(u - 0.55, v), np.hypot(u + 0.55, v)) - 0.38
    if label == 9:      # bar
        return _box(u, v, 0.95, 0.2)
    raise ValueError(f"no shape for label {label}")


def _colours(rng, n):
    """Foreground and background colours, (n, 3) float64 each, at least MIN_COLOUR_DISTANCE
    apart."""
    fg = rng.uniform(0, 255, (n, 3))
    bg = rng.uniform(0, 255, (n, 3))
    close = np.linalg.norm(fg - bg, axis=1) < MIN_COLOUR_DISTANCE
    while close.any():   # redraw the few pairs that are too similar; terminates quickly
        fg[close] = rng.uniform(0, 255, (close.sum(), 3))
        close = np.linalg.norm(fg - bg, axis=1) < MIN_COLOUR_DISTANCE
    return fg, bg


def render(rng: np.random.Generator, n: int, size: int = IMAGE_SIZE):
    """Draw ``n`` images with balanced classes.

    Returns:
        images (n, 3, size, size) uint8, labels (n,) int64.
    """
    S = size
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    radius = rng.uniform(*RADIUS, n) * S                        # shape size in pixels
    margin = 0.75 * radius
    cx = rng.uniform(margin, S - margin)
    cy = rng.uniform(margin, S - margin)
    theta = rng.uniform(0, 2 * np.pi, n)
    fg, bg = _colours(rng, n)
    gradient = rng.uniform(-40, 40, (n, 3, 2))                  # background tilt, per channel
    noise_sigma = rng.uniform(*NOISE_SIGMA, n)
    noise = rng.standard_normal((n, 3, S, S), dtype=np.float32)

    grid = (np.arange(S, dtype=np.float32) + 0.5)
    xx = grid[None, None, :]
    yy = grid[:, None][None]
    mask = np.empty((n, S, S), np.float32)
    for label in range(len(CLASS_NAMES)):
        i = np.flatnonzero(labels == label)
        if not len(i):
            continue
        c = np.cos(theta[i])[:, None, None].astype(np.float32)
        s = np.sin(theta[i])[:, None, None].astype(np.float32)
        r = radius[i][:, None, None].astype(np.float32)
        dx = xx - cx[i][:, None, None].astype(np.float32)
        dy = yy - cy[i][:, None, None].astype(np.float32)
        u = (c * dx + s * dy) / r
        v = (-s * dx + c * dy) / r
        # Distance in pixels, clipped to a one-pixel ramp: anti-aliased edges.
        mask[i] = np.clip(0.5 - _sdf(label, u, v) * r, 0.0, 1.0)

    ramp = (grid / S - 0.5).astype(np.float32)
    background = (bg[:, :, None, None] + gradient[:, :, 0, None, None] * ramp[None, None, :, None]
                  + gradient[:, :, 1, None, None] * ramp[None, None, None, :])
    m = mask[:, None]
    images = background * (1 - m) + fg[:, :, None, None] * m
    images += noise * noise_sigma[:, None, None, None].astype(np.float32)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


def make_embedded(n_train: int = DEFAULT_TRAIN, n_test: int = DEFAULT_TEST, seed: int = 0):
    """Generate the embedded dataset as a :class:`~minires.data.Dataset` (in memory).

    Args:
        n_train, n_test: number of images (classes balanced within each split).
        seed: non-negative int; the same seed always gives the same images.
    """
    from minires.data.dataset import Dataset

    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    train_images, train_labels = render(np.random.default_rng([int(seed), 0]), int(n_train))
    test_images, test_labels = render(np.random.default_rng([int(seed), 1]), int(n_test))
    stats = ChannelStats(3)
    stats.update(train_images)
    mean, std = stats.mean_std()
    return Dataset(name="embedded", train_images=train_images, train_labels=train_labels,
                   test_images=test_images, test_labels=test_labels,
                   class_names=list(CLASS_NAMES), num_classes=len(CLASS_NAMES), mean=mean,
                   std=std, augment="crop_flip", image_size=IMAGE_SIZE)
