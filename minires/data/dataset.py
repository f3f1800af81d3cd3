"""The in-memory :class:`Dataset` and :func:`load_dataset`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minires.data.catalog import (DATASET_CHOICES, DATASETS, DEFAULT_AUGMENT, EMBEDDED,
                                  names_a_dataset, prepared_path, resolve_data_dir)
from minires.errors import DataError


@dataclass
class Dataset:
    """A dataset held in memory as uint8 images.

    Attributes:
        name: ``cifar10``, ..., or ``embedded``.
        train_images, test_images: (N, 3, H, W) uint8, C-contiguous.
        train_labels, test_labels: (N,) int64 in ``0..num_classes-1``.
        class_names: list of ``num_classes`` str.
        mean, std: (3,) float32 per-channel statistics of the training images on the **0..1
            scale** (pixel / 255); the loader normalises as ``(pixel / 255 - mean) / std``.
        augment: default augmentation policy, ``"crop_flip"`` (CIFAR, embedded) or ``"flip"``
            (downsampled ImageNet).
        image_size: H (= W).
        source: where it came from (the HDF5 path, or ``"generated"``).
    """
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    augment: str | None
    image_size: int
    source: str = "generated"
    attrs: dict = field(default_factory=dict, repr=False)

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.train_labels)}, "
                f"test={len(self.test_labels)}, classes={self.num_classes}, "
                f"image_size={self.image_size})")

    def subset(self, n: int | None) -> Dataset:
        """The same dataset keeping only the first ``n`` training images (all when None)."""
        if n is None:
            return self
        n = _check_subset(n)
        return Dataset(self.name, self.train_images[:n], self.train_labels[:n], self.test_images,
                       self.test_labels, self.class_names, self.num_classes, self.mean, self.std,
                       self.augment, self.image_size, self.source, self.attrs)


def _check_subset(n):
    if int(n) < 1:
        raise ValueError(f"subset must be a positive number of images, got {n}")
    return int(n)


def load_dataset(name, data_dir=None, subset: int | None = None, seed: int = 0) -> Dataset:
    """Load a dataset into memory.

    Args:
        name: ``"embedded"`` (generated, deterministic from ``seed``), one of
            :data:`~minires.data.DATASETS` (read from ``DATA_DIR/NAME.h5``, written by
            ``minires prepare``), or a path to a prepared ``.h5`` file.
        data_dir: folder of prepared files; None: ``$MINIRES_DATA`` or ``~/.cache/minires``.
        subset: keep the first ``subset`` training images (all when None or larger).
        seed: only for ``"embedded"``.
    Raises:
        DataError: unknown name, dataset not prepared, or unreadable file.
    """
    from minires.data.store import read_store

    if subset is not None:
        subset = _check_subset(subset)
    name_str = str(name)
    if name_str == EMBEDDED:
        from minires.data.embedded import make_embedded

        return make_embedded(seed=seed).subset(subset)
    if name_str in DATASETS:
        path = prepared_path(name_str, data_dir)
        if not path.exists():
            hint = "--from ARCHIVE" if name_str.startswith("imagenet") else \
                "(downloads the archive) or `--from ARCHIVE`"
            raise DataError(f"{name_str} is not prepared: {path} does not exist; run `minires "
                            f"prepare {name_str}` {hint} first (data directory "
                            f"{resolve_data_dir(data_dir)})")
    else:
        path = Path(name_str).expanduser()
        if not names_a_dataset(name_str):
            raise DataError(f"unknown dataset {name_str!r}; expected {DATASET_CHOICES}")
    content = read_store(path, subset=subset)
    dataset = content["dataset"]
    augment = content["attrs"].get("default_augment", DEFAULT_AUGMENT.get(dataset, "flip"))
    return Dataset(name=dataset, train_images=np.ascontiguousarray(content["train_images"]),
                   train_labels=content["train_labels"],
                   test_images=np.ascontiguousarray(content["test_images"]),
                   test_labels=content["test_labels"], class_names=content["label_names"],
                   num_classes=content["num_classes"], mean=content["mean"], std=content["std"],
                   augment=augment, image_size=content["image_size"], source=str(path),
                   attrs=content["attrs"])
