"""The prepared-dataset HDF5 file: its layout, the one check of a file, reading, a summary.

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

Images and labels carry HDF5's Fletcher-32 checksum (files prepared by minires 0.1 do not):
a flipped bit is detected when the data is read. Files are written by
:class:`minires.data.store_writer.StoreWriter`.

:func:`check_store` is the one validation of a file, used by ``minires info`` (through
:func:`store_info`), ``train`` and ``eval`` (through :func:`read_store`) before anything is
created: every way a file can be wrong ends in a :class:`~minires.errors.DataError` that names
the file and what was expected.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from minires.errors import DataError

FORMAT_VERSION = 1
SPLITS = ("train", "test")
CHECKPOINT_FORMAT = "minires-checkpoint"  # the format attribute of a checkpoint file
EXPECTED = "an HDF5 file written by `minires prepare`"
# What h5py says when a chunk's Fletcher-32 checksum does not match its data.
CHECKSUM_FAILURE = "filter returned failure"


def _open(path) -> h5py.File:
    """Open a prepared file for reading, turning HDF5's errors into DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; expected {EXPECTED}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected {EXPECTED}")
    if not os.access(path, os.R_OK):
        raise PermissionError(13, "Permission denied", str(path))
    if path.stat().st_size == 0:
        raise DataError(f"{path} is an empty file; expected {EXPECTED} (prepare it again)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            why = "is truncated (an interrupted copy or write?)"
        elif "signature" in text:
            why = "is not an HDF5 file"
        else:
            why = f"cannot be read as HDF5 ({' '.join(text.split())})"
        raise DataError(f"{path} {why}; expected a complete HDF5 file written by "
                        "`minires prepare` (run it again to rebuild the file)") from exc


def _read(dataset, path, selection=()):
    """``dataset[selection]``; a checksum that does not match, or any other failure of HDF5,
    becomes a DataError naming the file and the dataset."""
    try:
        return dataset[selection]
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        raise _damaged(path, dataset.name, exc) from exc


def _damaged(path, name, exc) -> DataError:
    text = " ".join(str(exc).split())
    if CHECKSUM_FAILURE in text:
        return DataError(f"{path} is corrupted: {name} does not match its checksum (bits "
                         f"changed on the disk or in a copy); prepare the dataset again")
    return DataError(f"{path} is damaged: reading {name} failed ({text}); prepare the dataset "
                     f"again")


@dataclass
class StoreSummary:
    """What :func:`check_store` found: the image side ``S``, the classes, the number of images
    per split, each split's labels ((N,) int64, read while checking), and whether images and
    labels carry checksums."""

    image_size: int
    num_classes: int
    counts: dict
    labels: dict
    label_names: list
    checksummed: bool


def check_store(f: h5py.File, path) -> StoreSummary:
    """Check an open prepared file completely; raise DataError naming the first problem.

    Checked: that it is a minires dataset of this format version (and not a checkpoint); both
    splits with ``uint8 (N, 3, S, S)`` images (the same square size ``S`` in both, equal to the
    ``image_size`` attribute) and ``(N,)`` integer labels in ``0..num_classes-1``, with at
    least one image each; ``num_classes`` label names; the ``mean`` and ``std`` attributes,
    three finite numbers each (std positive); CIFAR-100's coarse labels. Images are not read
    (their checksums are verified when :func:`read_store` reads them).
    """
    try:
        return _check_store(f, path)
    except DataError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise _damaged(path, "its layout", exc) from exc


def _check_store(f, path) -> StoreSummary:
    if f.attrs.get("format") == CHECKPOINT_FORMAT:
        raise DataError(f"{path} is a minires checkpoint, not a dataset; give a dataset (embedded, "
                        f"a prepared name such as cifar10, or a file written by `minires "
                        f"prepare`), and evaluate checkpoints with `minires eval`")
    version = f.attrs.get("format_version")
    if version is None:
        raise DataError(f"{path} is an HDF5 file but not a minires dataset (no format_version "
                        f"attribute); expected {EXPECTED}")
    if int(version) != FORMAT_VERSION:
        raise DataError(f"{path} has format version {int(version)}, this minires reads version "
                        f"{FORMAT_VERSION}; prepare the dataset again")
    needed = [f"{s}/{k}" for s in SPLITS for k in ("images", "labels")] + ["label_names"]
    missing = [k for k in needed if not isinstance(f.get(k), h5py.Dataset)]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it is incomplete or damaged "
                        "(prepare the dataset again)")
    sizes, counts = {}, {}
    for split in SPLITS:
        images, labels = f[split]["images"], f[split]["labels"]
        shape = images.shape
        if images.dtype != np.uint8 or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
            raise DataError(f"{path}: /{split}/images should be uint8 (N, 3, S, S) square RGB "
                            f"images, found {images.dtype} {shape}")
        if labels.dtype.kind not in "iu" or labels.shape != (shape[0],):
            raise DataError(f"{path}: /{split}/labels should be {shape[0]} integers (one per "
                            f"image), found {labels.dtype} {labels.shape}")
        if shape[0] == 0:
            raise DataError(f"{path} has no {split} images; expected at least one (prepare "
                            f"the dataset again)")
        sizes[split], counts[split] = shape[2], shape[0]
    size = sizes["train"]
    stated = f.attrs.get("image_size", size)
    if sizes["test"] != size or int(stated) != size:
        raise DataError(f"{path}: the images do not all have one size: train {size}x{size}, "
                        f"test {sizes['test']}x{sizes['test']}, image_size attribute {stated}")
    names = _names(f["label_names"], path)
    num_classes = int(f.attrs.get("num_classes", len(names)))
    if num_classes < 1 or len(names) != num_classes:
        raise DataError(f"{path} names {len(names)} classes but says num_classes="
                        f"{num_classes}")
    for key in ("mean", "std"):
        value = f.attrs.get(key)
        array = np.asarray(value, dtype=np.float64) if value is not None else None
        if array is None or array.shape != (3,) or not np.isfinite(array).all() or \
                (key == "std" and (array <= 0).any()):
            raise DataError(f"{path}: the {key} attribute should be 3 finite numbers (one per "
                            f"channel{', positive' if key == 'std' else ''}), found {value!r}; "
                            f"prepare the dataset again")
    labels = {split: _checked_labels(f[split]["labels"], num_classes, path) for split in SPLITS}
    if "coarse_labels" in f["train"]:
        coarse = len(f["coarse_label_names"]) if "coarse_label_names" in f else None
        for split in SPLITS:
            if "coarse_labels" in f[split]:
                _checked_labels(f[split]["coarse_labels"], coarse, path, counts[split])
    checksummed = all(f[s][k].fletcher32 for s in SPLITS for k in ("images", "labels"))
    return StoreSummary(size, num_classes, counts, labels, names, checksummed)


def _names(dataset, path) -> list:
    """A dataset of strings as a list of str."""
    try:
        return [str(name) for name in dataset.asstr()[()].tolist()]
    except (OSError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise _damaged(path, dataset.name, exc) from exc


def _checked_labels(dataset, num_classes, path, count=None) -> np.ndarray:
    labels = _read(dataset, path)
    if labels.dtype.kind not in "iu" or (count is not None and labels.shape != (count,)):
        raise DataError(f"{path}: {dataset.name} should be {count} integers, found "
                        f"{labels.dtype} {labels.shape}")
    if num_classes is not None and len(labels) and \
            (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: {dataset.name} lie in {labels.min()}..{labels.max()}, "
                        f"expected 0..{num_classes - 1}")
    return labels.astype(np.int64)


def read_store(path, subset: int | None = None) -> dict:
    """Check (:func:`check_store`) and load a prepared file into memory.

    Args:
        path: the ``.h5`` file.
        subset: keep only the first ``subset`` training images (all when None or larger).
    Returns:
        dict with ``dataset``, ``train_images``/``test_images`` (N, 3, S, S) uint8,
        ``train_labels``/``test_labels`` (N,) int64, ``label_names`` list[str], ``mean``/``std``
        (3,) float32 on the 0..1 scale, ``image_size``, ``num_classes``, ``attrs`` (all
        root attributes).
    Raises:
        DataError: missing, empty, truncated, foreign, inconsistent or corrupted file.
    """
    with _open(path) as f:
        summary = check_store(f, path)
        stop = summary.counts["train"] if subset is None else \
            min(int(subset), summary.counts["train"])
        out = {"train_images": _read(f["train/images"], path, slice(0, stop)),
               "train_labels": summary.labels["train"][:stop],
               "test_images": _read(f["test/images"], path),
               "test_labels": summary.labels["test"],
               "label_names": summary.label_names,
               "attrs": {k: _plain(v) for k, v in f.attrs.items()}}
    attrs = out["attrs"]
    out["dataset"] = str(attrs.get("dataset", Path(path).stem))
    out["num_classes"] = summary.num_classes
    out["image_size"] = summary.image_size
    out["mean"] = np.asarray(attrs["mean"], np.float32)
    out["std"] = np.asarray(attrs["std"], np.float32)
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
    dtype name, ...}}), ``label_names``, ``checksummed`` and, where stored,
    ``coarse_label_names`` and ``wnids``. The file is checked first (:func:`check_store`).
    """
    with _open(path) as f:
        summary = check_store(f, path)
        splits = {}
        for split in SPLITS:
            group = f[split]
            splits[split] = {key: (tuple(group[key].shape), str(group[key].dtype))
                             for key in group}
        info = {"path": str(path), "attrs": {k: _plain(v) for k, v in f.attrs.items()},
                "splits": splits, "label_names": summary.label_names,
                "checksummed": summary.checksummed}
        for key in ("coarse_label_names", "wnids"):
            if key in f:
                info[key] = _names(f[key], path)
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
    lines.append("checksums     Fletcher-32 on images and labels, verified on reading" if
                 info["checksummed"] else "checksums     none (prepared by an older minires: "
                 "prepare it again to detect damaged data)")
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
