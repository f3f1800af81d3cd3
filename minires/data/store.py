"""The prepared-dataset HDF5 file: atomic writing, checked reading, and a summary.

Layout (format version 1; see docs/data.md):

    /train/images        uint8 (N, 3, S, S), chunked along samples
    /train/labels        int64 (N,)
    /test/images         uint8 (M, 3, S, S)  (downsampled ImageNet: the official val split)
    /test/labels         int64 (M,)
    /label_names         variable-length UTF-8 strings (num_classes,)
    optional: /{split}/coarse_labels and /coarse_label_names (CIFAR-100), /wnids (ImageNet)
    root attributes: format_version, dataset, image_size, num_classes, mean, std (float32 (3,),
        0..1 scale, training split), source, checksum_algorithm, source_md5 or source_sha256,
        expected_md5 (CIFAR), checksum_verified, test_split, created_by

Files are written through :class:`minires.atomicfile.AtomicFile` (a temporary name in the same
folder, renamed over ``NAME.h5`` only once complete), so an existing good file survives any
failure.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from minires import __version__
from minires.atomicfile import AtomicFile
from minires.data.stats import ChannelStats
from minires.errors import DataError

FORMAT_VERSION = 1
SPLITS = ("train", "test")
CHUNK_BYTES = 4 << 20


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
    ``path`` untouched.
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

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.file = h5py.File(self.target.start(), "w")
        except BaseException:
            self.target.discard()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._finish()
            self.file.close()
        except BaseException:
            self.target.discard()
            if exc_type is None:
                raise
            return False  # the block's own exception is the one to report
        if exc_type is None:
            self.target.commit()
        else:
            self.target.discard()
        return False

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
        for key, array in arrays.items():
            if len(array) != len(images):
                raise DataError(f"internal: {split}/{key} has {len(array)} rows for "
                                f"{len(images)} images")
            if key not in group:
                chunks = None
                if key == "images":
                    rows = chunk_rows(images[0].nbytes if len(images) else 3 * S * S,
                                      self.expected_counts.get(split))
                    chunks = (rows, 3, S, S)
                group.create_dataset(key, shape=(0, *array.shape[1:]), dtype=array.dtype,
                                     maxshape=(None, *array.shape[1:]), chunks=chunks)
            ds = group[key]
            n = ds.shape[0]
            ds.resize(n + len(array), axis=0)
            ds[n:] = array
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


def _open(path) -> h5py.File:
    """Open a prepared file for reading, turning HDF5's errors into DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; expected an HDF5 file written by "
                        "`minires prepare`")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected an HDF5 file written by `minires prepare`")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            why = "is truncated (an interrupted copy or write?)"
        elif "signature" in text:
            why = "is not an HDF5 file"
        else:
            why = f"cannot be read as HDF5 ({text})"
        raise DataError(f"{path} {why}; expected a complete HDF5 file written by "
                        "`minires prepare` (run it again to rebuild the file)") from exc


def _check_layout(f: h5py.File, path):
    version = f.attrs.get("format_version")
    if version is None:
        raise DataError(f"{path} is an HDF5 file but not a minires dataset (no format_version "
                        "attribute); expected a file written by `minires prepare`")
    if int(version) != FORMAT_VERSION:
        raise DataError(f"{path} has format version {int(version)}, this minires reads version "
                        f"{FORMAT_VERSION}; prepare the dataset again")
    needed = [f"{s}/{k}" for s in SPLITS for k in ("images", "labels")] + ["label_names"]
    missing = [k for k in needed if k not in f]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it is incomplete or damaged "
                        "(prepare the dataset again)")
    for split in SPLITS:
        images, labels = f[split]["images"], f[split]["labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3 or \
                labels.shape != (images.shape[0],):
            raise DataError(f"{path}: /{split} should hold uint8 (N, 3, S, S) images and (N,) "
                            f"labels, found {images.dtype} {images.shape} and {labels.shape}")


def read_store(path, subset: int | None = None) -> dict:
    """Load a prepared file into memory.

    Args:
        path: the ``.h5`` file.
        subset: keep only the first ``subset`` training images (all when None or larger).
    Returns:
        dict with ``dataset``, ``train_images``/``test_images`` (N, 3, S, S) uint8,
        ``train_labels``/``test_labels`` (N,) int64, ``label_names`` list[str], ``mean``/``std``
        (3,) float32 on the 0..1 scale, ``image_size``, ``num_classes``, ``attrs`` (all
        root attributes).
    Raises:
        DataError: missing, truncated, foreign or inconsistent file.
    """
    with _open(path) as f:
        _check_layout(f, path)
        try:
            n_train = f["train/images"].shape[0]
            stop = n_train if subset is None else min(int(subset), n_train)
            out = {
                "train_images": f["train/images"][:stop],
                "train_labels": f["train/labels"][:stop].astype(np.int64),
                "test_images": f["test/images"][()],
                "test_labels": f["test/labels"][()].astype(np.int64),
                "label_names": [str(s) for s in f["label_names"].asstr()[()]],
                "attrs": {k: _plain(v) for k, v in f.attrs.items()},
            }
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path} is damaged: reading it failed ({exc}); prepare the dataset "
                            "again") from exc
    attrs = out["attrs"]
    out["dataset"] = str(attrs.get("dataset", Path(path).stem))
    out["num_classes"] = int(attrs.get("num_classes", len(out["label_names"])))
    out["image_size"] = int(out["train_images"].shape[-1])
    out["mean"] = np.asarray(attrs["mean"], np.float32)
    out["std"] = np.asarray(attrs["std"], np.float32)
    for split in SPLITS:
        labels = out[f"{split}_labels"]
        if len(labels) and (labels.min() < 0 or labels.max() >= out["num_classes"]):
            raise DataError(f"{path}: {split} labels lie in {labels.min()}..{labels.max()}, "
                            f"expected 0..{out['num_classes'] - 1}")
    return out


def _plain(value):
    """HDF5 attribute value as a plain Python/NumPy value (bytes decoded)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def store_info(path) -> dict:
    """Summary of a prepared file without loading the images.

    Returns dict with ``path``, ``attrs``, ``splits`` ({split: {"images": shape, "labels":
    dtype name, ...}}), ``label_names`` and, where stored, ``coarse_label_names``.
    """
    with _open(path) as f:
        _check_layout(f, path)
        splits = {}
        for split in SPLITS:
            group = f[split]
            splits[split] = {key: (tuple(group[key].shape), str(group[key].dtype))
                             for key in group}
        info = {"path": str(path), "attrs": {k: _plain(v) for k, v in f.attrs.items()},
                "splits": splits,
                "label_names": [str(s) for s in f["label_names"].asstr()[()]]}
        for key in ("coarse_label_names", "wnids"):
            if key in f:
                info[key] = [str(s) for s in f[key].asstr()[()]]
    return info


def describe_store(path) -> str:
    """A human-readable, multi-line summary of a prepared file (for ``minires info``)."""
    info = store_info(path)
    a = info["attrs"]
    S = a.get("image_size", "?")
    names = info["label_names"]
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    lines = [f"file          {info['path']}",
             f"dataset       {a.get('dataset')} (format version {a.get('format_version')}, "
             f"{a.get('created_by', 'unknown writer')})",
             f"images        {S}x{S} RGB, uint8 NCHW"]
    for split, arrays in info["splits"].items():
        shape, _ = arrays["images"]
        origin = f" (official {a['test_split']} split)" if split == "test" and \
            a.get("test_split", "test") != "test" else ""
        extra = ", ".join(f"{k} {dt}" for k, (_, dt) in arrays.items() if k != "images")
        lines.append(f"{split:<13} {shape[0]:,} images {shape}; {extra}{origin}")
    lines.append(f"classes       {a.get('num_classes', len(names))}: {shown}")
    if "coarse_label_names" in info:
        lines.append(f"coarse        {len(info['coarse_label_names'])} superclasses")
    if "wnids" in info:
        lines.append(f"wnids         {len(info['wnids'])} ({info['wnids'][0]}, ...)")
    fmt = " ".join(f"{v:.4f}" for v in np.asarray(a.get("mean", [])).ravel())
    lines.append(f"mean (0..1)   {fmt}")
    fmt = " ".join(f"{v:.4f}" for v in np.asarray(a.get("std", [])).ravel())
    lines.append(f"std  (0..1)   {fmt}")
    lines.append(f"source        {a.get('source', 'unknown')}")
    algorithm = a.get("checksum_algorithm", "md5")
    digest = str(a.get(f"source_{algorithm}", "not recorded")).strip().splitlines()
    lines.append(f"{algorithm + ' ':<14}{digest[0] if digest else ''}")
    lines.extend(f"{'':14}{d}" for d in digest[1:])
    if "expected_md5" in a:
        verified = a.get("checksum_verified")
        expected = str(a["expected_md5"]).strip().splitlines()
        state = "verified: matches the official md5" if verified else \
            "NOT verified: differs from the official md5 (mismatch was allowed)"
        lines.append(f"checksum      {state}")
        if not verified:
            lines.append(f"expected      {expected[0]}")
            lines.extend(f"{'':14}{e}" for e in expected[1:])
    elif algorithm == "sha256":
        lines.append("checksum      recorded only (no official checksums are published)")
    return "\n".join(lines)
