"""Training-time augmentation: random crop with zero padding, horizontal flip, normalisation.

Policies (the ``augment`` argument of the loader):

- ``"crop_flip"``: pad 4 pixels of zeros on every side, cut a random window of the original size,
  flip left-right with probability 1/2 (He et al. 2016, for CIFAR; torchvision's
  ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``).
- ``"flip"``: flip left-right with probability 1/2 only (Chrabaszcz et al. 2017, for downsampled
  ImageNet).
- ``None``: no augmentation (evaluation); images are only normalised.

Every policy ends with per-channel normalisation to float32: ``(x / 255 - mean) / std`` with
``mean``/``std`` on the 0..1 scale.

Random parameters are drawn here with NumPy (:func:`draw_params`), then applied by
:func:`apply` on the device that holds the images: ``crop_flip_normalize`` of the backend (a
numba kernel on the CPU, CuPy array code on a GPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minires import backend

POLICIES = (None, "crop_flip", "flip")
DEFAULT_PAD = 4


def check_policy(augment):
    """Raise ValueError unless ``augment`` is one of :data:`POLICIES`."""
    if augment not in POLICIES:
        raise ValueError(f"augment must be one of None, 'crop_flip', 'flip'; got {augment!r}")
    return augment


@dataclass(frozen=True)
class AugmentParams:
    """Per-output-image augmentation parameters.

    ``dy``/``dx``: (B,) int64 crop origins in padded coordinates (``pad`` means "no shift");
    ``flip``: (B,) bool; ``pad``: padding on each side used by the crop.
    """
    dy: np.ndarray
    dx: np.ndarray
    flip: np.ndarray
    pad: int

    def __getitem__(self, sl):
        """Parameters for a slice of the images (one batch out of an epoch's draw)."""
        return AugmentParams(self.dy[sl], self.dx[sl], self.flip[sl], self.pad)

    def __len__(self):
        return len(self.flip)


def draw_params(rng: np.random.Generator, n: int, augment, pad: int = DEFAULT_PAD):
    """Draw crop offsets and flip flags for ``n`` images under policy ``augment``.

    Crop origins are uniform in ``0..2*pad`` (each of the (2 pad + 1)^2 windows equally likely,
    as torchvision's RandomCrop); flips are fair coins. Policies without a crop get origin
    ``pad`` (centre), policies without a flip get ``False``.
    """
    check_policy(augment)
    if augment == "crop_flip":
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        offsets = rng.integers(0, 2 * pad + 1, size=(2, n), dtype=np.int64)
        dy, dx = offsets[0], offsets[1]
    else:
        pad = 0
        dy = np.zeros(n, np.int64)
        dx = np.zeros(n, np.int64)
    if augment in ("crop_flip", "flip"):
        flip = rng.integers(0, 2, size=n, dtype=np.int8).astype(bool)
    else:
        flip = np.zeros(n, bool)
    return AugmentParams(dy, dx, flip, int(pad))


def identity_params(n: int):
    """Parameters that leave images unchanged (no crop shift, no flip)."""
    return AugmentParams(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool), 0)


def normalization_constants(mean, std):
    """Return float32 ``(scale, shift)`` of shape (C,) so that ``x * scale - shift`` equals
    ``(x / 255 - mean) / std`` for uint8 ``x``; ``mean``/``std`` are (C,) on the 0..1 scale."""
    mean = np.asarray(mean, np.float64).reshape(-1)
    std = np.asarray(std, np.float64).reshape(-1)
    if mean.shape != std.shape:
        raise ValueError(f"mean and std must have the same length, got {mean.size} and "
                         f"{std.size}")
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"std must be positive and finite, got {std.tolist()}")
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (mean / std).astype(np.float32)
    return scale, shift


def apply(images, index, params: AugmentParams, scale, shift, parallel: bool = True):
    """Gather ``images[index]`` and augment them on the device that holds ``images``.

    Args:
        images: (N, C, H, W) uint8, NumPy or CuPy.
        index: (B,) integer indices into ``images``.
        params: crop origins and flips for the B outputs.
        scale, shift: (C,) float32 from :func:`normalization_constants`.
        parallel: on the CPU, use numba's thread pool (``False``: one thread, for a background
            producer).
    Returns:
        (B, C, H, W) float32, C-contiguous, on the device of ``images``.
    """
    return backend.kernels_for(images).crop_flip_normalize(
        images, index, params.dy, params.dx, params.flip, params.pad, scale, shift, parallel)


def augment_batch(batch, params: AugmentParams, mean, std):
    """Augment and normalise a (B, C, H, W) uint8 batch on whatever device holds it.

    ``mean``/``std``: (C,) on the 0..1 scale. Returns (B, C, H, W) float32.
    """
    scale, shift = normalization_constants(mean, std)
    return apply(batch, np.arange(len(batch)), params, scale, shift)
