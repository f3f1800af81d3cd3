"""Writing a prepared-dataset HDF5 file (layout: :mod:`minires.data.store`) safely.

- Atomic: the file is written under a temporary name beside ``NAME.h5`` and renamed over it
  only once complete (:class:`minires.atomicfile.AtomicFile`), so an existing good file survives
  any failure, and no temporary is left on any path (Ctrl-C, SIGTERM, a full disk, an error
  raised by HDF5 while closing).
- Checksummed: every image and label dataset carries HDF5's Fletcher-32 filter, so flipped bits
  are detected when the file is read.
- Never into the last bytes of a disk (:mod:`minires.diskspace`): the space is checked before
  writing and a reserve is held while writing, because HDF5 crashes the interpreter when it has
  to close a file on a full disk.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from minires import __version__
from minires.atomicfile import AtomicFile, raise_named
from minires.data.stats import ChannelStats
from minires.data.store import FORMAT_VERSION, SPLITS
from minires.diskspace import RESERVE_BYTES, SpaceReserve, check_free_space
from minires.errors import DataError

CHUNK_BYTES = 4 << 20
# Per image beyond its pixels: an int64 label (and one coarse label), HDF5's chunk overhead.
BYTES_PER_IMAGE_EXTRA = 32
METADATA_BYTES = 1 << 20


def chunk_rows(image_bytes: int, expected: int | None = None) -> int:
    """Images per chunk: at most 1024 and about 4 MiB, never more than ``expected``."""
    rows = max(1, min(1024, CHUNK_BYTES // image_bytes))
    if rows < 1024:
        rows = 1 << (rows.bit_length() - 1)   # a power of two, for tidy chunk boundaries
    return max(1, min(rows, expected)) if expected else rows


class StoreWriter:
    """Write a prepared dataset to ``path`` atomically; use as a context manager.

    Leaving the ``with`` block normally finishes the file (mean/std from the training images,
    attributes) and renames it into place; an exception (in the block, or from HDF5 while
    finishing or closing the file) removes the temporary file and leaves whatever was at
    ``path`` untouched. A full disk raises ``OSError(ENOSPC)`` naming ``path``.

    ``expected_counts`` (images per split, when known) lets the free space be checked once
    before anything is written; otherwise each :meth:`append` checks for its own images.
    """

    def __init__(self, path, dataset: str, image_size: int, num_classes: int,
                 expected_counts: dict | None = None):
        self.path = Path(path)
        self.target = AtomicFile(self.path)
        self.dataset = dataset
        self.image_size = int(image_size)
        self.num_classes = int(num_classes)
        self.expected_counts = expected_counts or {}
        self.stats = ChannelStats(3)
        self.attrs = {}
        self.file = None
        self.datasets = {}  # (split, key) -> h5py.Dataset, kept open until the file closes
        self.reserve = SpaceReserve(f"{self.target.tmp}-reserve", RESERVE_BYTES)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp = self.target.start()
            if self.expected_counts:
                image = 3 * self.image_size ** 2 + BYTES_PER_IMAGE_EXTRA
                check_free_space(self.path.parent, sum(self.expected_counts.values()) * image
                                 + METADATA_BYTES, self.path, spare=RESERVE_BYTES)
            self.reserve.hold()
            self.file = h5py.File(tmp, "w")
        except BaseException as exc:
            self.reserve.release()
            self.target.discard()
            raise_named(exc, self.path)
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._finish()
        except BaseException as failure:
            self._close_and_discard()
            raise_named(failure, self.path)
        if exc_type is not None:
            self._close_and_discard()
            raise_named(exc, self.path)
        self.reserve.release()  # the room HDF5 may need to flush and close
        try:
            self.file.close()
            self.datasets.clear()
        except BaseException as failure:
            self.target.discard()
            raise_named(failure, self.path)
        self.target.commit()
        return False

    def _close_and_discard(self):
        # The reserve goes first: after a failed write HDF5 must flush what it holds before it
        # can close, and a file it cannot close crashes the interpreter later.
        self.reserve.release()
        try:
            self.file.close()
        except Exception:
            pass  # the error being reported is the one that made us give up
        self.datasets.clear()
        self.target.discard()

    def append(self, split: str, images: np.ndarray, labels: np.ndarray, **extra):
        """Append (n, 3, S, S) uint8 ``images``, (n,) ``labels`` and (n,) extra label arrays
        (e.g. ``coarse_labels``) to ``split``."""
        S = self.image_size
        if images.dtype != np.uint8 or images.shape[1:] != (3, S, S):
            raise DataError(f"internal: expected uint8 (n, 3, {S}, {S}) images, got "
                            f"{images.dtype} {images.shape}")
        group = self.file.require_group(split)
        arrays = {"images": images, "labels": np.asarray(labels, np.int64)}
        arrays.update({k: np.asarray(v, np.int64) for k, v in extra.items()})
        if not self.expected_counts:  # no room checked up front: check for this batch
            check_free_space(self.path.parent, sum(a.nbytes for a in arrays.values())
                             + METADATA_BYTES, self.path)
        for key, array in arrays.items():
            if len(array) != len(images):
                raise DataError(f"internal: {split}/{key} has {len(array)} rows for "
                                f"{len(images)} images")
            if (split, key) not in self.datasets:
                chunks = None
                if key == "images":
                    rows = chunk_rows(images[0].nbytes if len(images) else 3 * S * S,
                                      self.expected_counts.get(split))
                    chunks = (rows, 3, S, S)
                self.datasets[split, key] = group.create_dataset(
                    key, shape=(0, *array.shape[1:]), dtype=array.dtype,
                    maxshape=(None, *array.shape[1:]), chunks=chunks, fletcher32=True)
            ds = self.datasets[split, key]
            n = ds.shape[0]
            ds.resize(n + len(array), axis=0)
            ds[n:] = array
        # HDF5 may keep chunks in memory and write them only when a dataset is closed, where a
        # failure (a full disk) is printed and then ignored: write them now, where it raises.
        self.file.flush()
        if split == "train":
            self.stats.update(images)

    def write_names(self, key: str, names):
        """Store a list of str as a variable-length UTF-8 string dataset ``/key``."""
        self.file.create_dataset(key, data=np.array(list(names), dtype=h5py.string_dtype()))

    def set_attrs(self, **attrs):
        self.attrs.update(attrs)

    def _finish(self):
        for split in SPLITS:
            if split not in self.file or self.file[split]["images"].shape[0] == 0:
                raise DataError(f"internal: no {split} images were written")
        if "label_names" not in self.file:
            raise DataError("internal: label names were not written")
        mean, std = self.stats.mean_std()
        attrs = {"format_version": FORMAT_VERSION, "dataset": self.dataset,
                 "image_size": self.image_size, "num_classes": self.num_classes,
                 "mean": mean, "std": std, "created_by": f"minires {__version__}"}
        attrs.update(self.attrs)
        for key, value in attrs.items():
            self.file.attrs[key] = value
        self.file.flush()

