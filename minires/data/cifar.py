"""Reading the official CIFAR-10 / CIFAR-100 python archives (``.tar.gz`` or extracted folder).

Archive layout (https://www.cs.toronto.edu/~kriz/cifar.html):

- CIFAR-10: ``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``; each batch
  a pickled dict with ``data`` (10000, 3072) uint8 rows of R, G and B planes of a 32x32 image and
  ``labels`` 0..9; ``batches.meta`` has ``label_names``.
- CIFAR-100: ``cifar-100-python/train``, ``test``, ``meta``; batches have ``fine_labels`` 0..99
  and ``coarse_labels`` 0..19; ``meta`` has ``fine_label_names`` and ``coarse_label_names``.

The batches are Python 2 pickles with ``str`` keys (see :mod:`minires.data.pickles`).
"""
from __future__ import annotations

import gzip
import posixpath
import tarfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minires.data.catalog import CifarSpec
from minires.data.checksums import bytes_digest, file_digest
from minires.data.pickles import as_str_list, describe_magic, load_batch_pickle
from minires.errors import ChecksumError, DataError

IMAGE_SIZE = 32
ROW = 3 * IMAGE_SIZE * IMAGE_SIZE
CIFAR100_COARSE_CLASSES = 20


class ChecksumWarning(UserWarning):
    """An archive's checksum differs from the official one and the user allowed it."""


@dataclass
class CifarContent:
    """Everything read from one CIFAR source, checked and converted.

    ``splits[split]`` maps ``images`` to (N, 3, 32, 32) uint8 and ``labels`` to (N,) int64
    (CIFAR-100 also ``coarse_labels``); ``names`` maps ``label_names`` (and for CIFAR-100
    ``coarse_label_names``) to lists of str. ``checksum`` describes the source's md5 check.
    """
    splits: dict
    names: dict
    checksum: dict = field(default_factory=dict)
    source: str = ""


def read_cifar(spec: CifarSpec, path, allow_checksum_mismatch: bool = False, progress=None
               ) -> CifarContent:
    """Read, verify and convert a CIFAR archive or extracted folder.

    Args:
        spec: the dataset's :class:`~minires.data.catalog.CifarSpec`.
        path: the ``.tar.gz`` archive, the extracted ``cifar-*-py*`` folder or its parent.
        allow_checksum_mismatch: on a wrong md5, warn (:class:`ChecksumWarning`) instead of
            raising :class:`~minires.errors.ChecksumError`.
        progress: optional ``progress(label, done, total)``.
    Raises:
        DataError: missing, unreadable or malformed input; ChecksumError: md5 mismatch.
    """
    path = Path(path).expanduser()
    expected = f"the {spec.title} archive {spec.archive} or its extracted folder {spec.folder}/"
    if not path.exists():
        raise DataError(f"{path} does not exist; expected {expected}")
    if path.is_dir():
        members, checksum = _read_folder(spec, path, expected, allow_checksum_mismatch)
        folder = path / spec.folder if (path / spec.folder).is_dir() else path
        prefix = f"{folder}/"
    else:
        members, checksum = _read_archive(spec, path, expected, allow_checksum_mismatch,
                                          progress)
        prefix = f"{path}:{spec.folder}/"  # archive:member, as for ImageNet zips
    content = _convert(spec, members, prefix)
    content.checksum = checksum
    content.source = path.name
    return content


def _wanted(spec: CifarSpec):
    return (*spec.train, *spec.test, spec.meta)


def _mismatch(spec, message, allow):
    """Raise or warn about md5 sums that differ from the official ones; ``message`` names the
    file(s) with their actual and expected sums."""
    if allow:
        warnings.warn(ChecksumWarning(f"checksum mismatch: {message}; proceeding because "
                                      "the mismatch was allowed"), stacklevel=3)
        return
    raise ChecksumError(f"checksum mismatch: {message}. The file may be truncated, corrupt or "
                        f"not the official {spec.title} release; download it again, or pass "
                        "--allow-checksum-mismatch to use it anyway")


def _read_archive(spec, path, expected, allow, progress):
    head = _head(path)
    if not (head.startswith(b"\x1f\x8b") or tarfile.is_tarfile(path)):
        raise DataError(f"{path} is {describe_magic(head)}, expected {expected} "
                        "(a gzip-compressed tar file)")
    actual = file_digest(path, "md5", progress, f"md5 {path.name}")
    size = path.stat().st_size
    verified = actual == spec.md5
    if not verified:
        _mismatch(spec, f"{path} ({size:,} bytes) has md5 {actual}, expected {spec.md5} (the "
                        f"official {spec.archive}, {spec.size:,} bytes)", allow)
    try:
        members = _read_tar_members(path, spec, progress)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path} is a truncated or corrupt archive ({exc}); expected {expected}"
                        ) from exc
    wanted = _wanted(spec)
    missing = [m for m in wanted if m not in members]
    if missing:
        raise DataError(f"{path} lacks {', '.join(f'{spec.folder}/{m}' for m in missing)}; "
                        f"expected {expected}")
    checksum = {"source_md5": actual, "expected_md5": spec.md5, "checksum_verified": verified}
    return members, checksum


def _read_tar_members(path, spec, progress) -> dict:
    """{member base name: bytes} of the wanted members; reads the gzip stream to its end so
    that its CRC and length trailer are checked (tarfile alone stops at the tar end marker and
    takes a damaged header for the end of the archive)."""
    wanted = _wanted(spec)
    members = {}
    with open(path, "rb") as raw:
        gz = _head(path, 2) == b"\x1f\x8b"
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        with tarfile.open(fileobj=stream, mode="r:" if gz else "r:*") as tar:
            for info in tar:
                parts = posixpath.normpath(info.name).split("/")
                if info.isfile() and len(parts) >= 2 and parts[-2] == spec.folder \
                        and parts[-1] in wanted:
                    members[parts[-1]] = tar.extractfile(info).read()
                    if progress is not None:
                        progress(f"read {path.name}", len(members), len(wanted))
        if gz:
            while stream.read(1 << 20):
                pass
    return members


def _head(path, n=8):
    with open(path, "rb") as f:
        return f.read(n)


def _read_folder(spec, path, expected, allow):
    folder = path / spec.folder if (path / spec.folder).is_dir() else path
    missing = [m for m in _wanted(spec) if not (folder / m).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}; expected {expected}")
    members = {m: (folder / m).read_bytes() for m in _wanted(spec)}
    # An extracted folder has no archive checksum: check each member against the official
    # md5 of that member instead, and record them in md5sum format.
    sums = {m: bytes_digest(payload, "md5") for m, payload in members.items()}
    bad = [m for m in sums if sums[m] != spec.member_md5[m]]
    if bad:
        _mismatch(spec, "; ".join(f"{folder / m} has md5 {sums[m]}, expected "
                                  f"{spec.member_md5[m]}" for m in bad), allow)
    listing = "".join(f"{sums[m]}  {spec.folder}/{m}\n" for m in _wanted(spec))
    checksum = {"source_md5": listing, "expected_md5": "".join(
        f"{spec.member_md5[m]}  {spec.folder}/{m}\n" for m in _wanted(spec)),
        "checksum_verified": not bad}
    return members, checksum


def _labels(batch, key, n, num_classes, what):
    if key not in batch:
        raise DataError(f"{what} has no {key!r} entry (keys: {', '.join(map(str, batch))})")
    try:
        labels = np.asarray(batch[key])
    except Exception as exc:  # ragged or odd content
        raise DataError(f"{what}: {key!r} is not a list of integers") from exc
    if labels.ndim != 1 or labels.shape[0] != n or labels.dtype.kind not in "iu":
        raise DataError(f"{what}: {key!r} should be {n} integers, found {labels.dtype} of "
                        f"shape {labels.shape}")
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{what}: {key!r} should lie in 0..{num_classes - 1}, found "
                        f"{labels.min()}..{labels.max()}")
    return labels


def _images(batch, what):
    data = batch.get("data")
    if not isinstance(data, np.ndarray):
        raise DataError(f"{what} has no 'data' array (keys: {', '.join(map(str, batch))})")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        raise DataError(f"{what}: 'data' should be uint8 of shape (N, {ROW}) (3x32x32 images), "
                        f"found {data.dtype} of shape {data.shape}")
    # Rows hold the R, G and B planes one after the other, so this reshape is NCHW.
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)


def _convert(spec: CifarSpec, members: dict, prefix: str) -> CifarContent:
    """Check and convert the members; ``prefix + member`` names one in messages."""
    splits = {}
    for split, names in (("train", spec.train), ("test", spec.test)):
        parts = {"images": [], "labels": [], "coarse_labels": []}
        for member in names:
            what = prefix + member
            batch = load_batch_pickle(members[member], what)
            images = _images(batch, what)
            parts["images"].append(images)
            parts["labels"].append(_labels(batch, spec.label_key, len(images),
                                           spec.num_classes, what))
            if spec.name == "cifar100":
                parts["coarse_labels"].append(_labels(batch, "coarse_labels", len(images),
                                                      CIFAR100_COARSE_CLASSES, what))
        splits[split] = {k: np.concatenate(v) for k, v in parts.items() if v}
    what = prefix + spec.meta
    meta = load_batch_pickle(members[spec.meta], what)
    names = {"label_names": _names(meta, spec.names_key, spec.num_classes, what)}
    if spec.name == "cifar100":
        names["coarse_label_names"] = _names(meta, "coarse_label_names",
                                             CIFAR100_COARSE_CLASSES, what)
    return CifarContent(splits=splits, names=names)


def _names(meta, key, count, what):
    if key not in meta:
        raise DataError(f"{what} has no {key!r} entry (keys: {', '.join(map(str, meta))})")
    names = as_str_list(meta[key], f"{what}: {key!r}")
    if len(names) != count:
        raise DataError(f"{what}: {key!r} should list {count} names, found {len(names)}")
    return names
