"""``prepare``: convert an official archive once into ``DATA_DIR/NAME.h5``.

Progress is reported through an optional callable ``progress(label, done, total)`` (``total``
may be None when unknown); the library never prints. A checksum mismatch that the caller
allowed is reported with ``warnings.warn(ChecksumWarning(...))``.
"""
from __future__ import annotations

from pathlib import Path

from minires.atomicfile import check_writable_folder
from minires.data import cifar, imagenet
from minires.data.catalog import (CIFAR, DEFAULT_AUGMENT, IMAGENET_CLASSES, IMAGENET_SIZES,
                                  check_name, prepared_path, resolve_data_dir)
from minires.data.checksums import file_digest
from minires.data.download import download
from minires.data.store_writer import StoreWriter
from minires.errors import ChecksumError, DataError


def prepare(name: str, source=None, data_dir=None, allow_checksum_mismatch: bool = False,
            wnids=None, progress=None) -> Path:
    """Convert dataset ``name`` into ``DATA_DIR/NAME.h5`` and return that path.

    Args:
        name: one of :data:`~minires.data.DATASETS`.
        source: CIFAR: the official ``.tar.gz`` or its extracted folder (None: use
            ``DATA_DIR/<archive>`` if present, else download it there). Downsampled ImageNet:
            a path or a list of paths (folders, zips, batch files); required.
        data_dir: where the HDF5 file (and a downloaded archive) goes; None: ``$MINIRES_DATA``
            or ``~/.cache/minires``.
        allow_checksum_mismatch: CIFAR only; use an archive whose md5 is not the official one
            (a :class:`~minires.data.ChecksumWarning` is issued and the actual md5 recorded).
        wnids: ImageNet only; a file with the class ids in the devkit order.
        progress: optional ``progress(label, done, total)``.
    Raises:
        DataError / ChecksumError with a message saying what was expected; OSError naming the
        file or folder that cannot be written (a read-only or full disk).
    """
    check_name(name)
    data_dir = resolve_data_dir(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} is a file; expected a folder")
    check_writable_folder(data_dir)  # before the archive is read and hashed, which takes a while
    if name in CIFAR:
        if wnids is not None:
            raise DataError("--wnids applies to downsampled ImageNet only")
        return _prepare_cifar(name, source, data_dir, allow_checksum_mismatch, progress)
    return _prepare_imagenet(name, source, data_dir, wnids, progress)


def _single(source, what):
    if isinstance(source, (list, tuple)):
        if len(source) > 1:
            raise DataError(f"{what} takes one --from (the archive or its extracted folder), "
                            f"got {len(source)}")
        return source[0] if source else None
    return source


def _prepare_cifar(name, source, data_dir, allow, progress) -> Path:
    spec = CIFAR[name]
    source = _single(source, spec.title)
    if source is None:
        source = data_dir / spec.archive
        if not source.exists():
            def check(tmp):
                actual = file_digest(tmp, "md5", progress, f"md5 {spec.archive}")
                if actual != spec.md5 and not allow:
                    raise ChecksumError(
                        f"checksum mismatch: the download from {spec.url} has md5 {actual}, "
                        f"expected {spec.md5}; it was not kept. Try again later, or pass "
                        "--allow-checksum-mismatch to use it anyway")

            download(spec.url, source, progress=progress, check=check)
    try:
        content = cifar.read_cifar(spec, source, allow, progress)
    except ChecksumError as exc:
        if Path(source) == data_dir / spec.archive:   # a copy downloaded by an earlier run
            raise ChecksumError(f"{exc}. To download it afresh, delete {source} and run "
                                "again") from exc
        raise
    out = prepared_path(name, data_dir)
    counts = {s: len(v["images"]) for s, v in content.splits.items()}
    with StoreWriter(out, name, cifar.IMAGE_SIZE, spec.num_classes, counts) as writer:
        for split, arrays in content.splits.items():
            extra = {k: v for k, v in arrays.items() if k not in ("images", "labels")}
            writer.append(split, arrays["images"], arrays["labels"], **extra)
        for key, names in content.names.items():
            writer.write_names(key, names)
        writer.set_attrs(source=content.source, checksum_algorithm="md5", test_split="test",
                         default_augment=DEFAULT_AUGMENT[name], **content.checksum)
    return out


def _prepare_imagenet(name, source, data_dir, wnids, progress) -> Path:
    size = IMAGENET_SIZES[name]
    entries, inputs = imagenet.find_batches([] if source is None else source, size)
    class_ids = imagenet.read_wnids(wnids) if wnids is not None else None
    checksums = imagenet.input_checksums(inputs, progress)
    out = prepared_path(name, data_dir)
    with StoreWriter(out, name, size, IMAGENET_CLASSES) as writer:
        for i, (key, entry) in enumerate(entries.items()):
            images, labels = imagenet.read_batch(entry, size)
            writer.append("test" if key == "val" else "train", images, labels)
            del images, labels   # one batch in memory at a time (64x64: 1.6 GB each)
            if progress is not None:
                progress(f"convert {name}", i + 1, len(entries))
        if class_ids is None:
            # Without the devkit's list the names are the original 1-based label numbers.
            writer.write_names("label_names", [str(i + 1) for i in range(IMAGENET_CLASSES)])
        else:
            writer.write_names("label_names", class_ids[1])
            writer.write_names("wnids", class_ids[0])
        writer.set_attrs(source=", ".join(p.name for p in inputs), checksum_algorithm="sha256",
                         source_sha256=checksums, checksum_verified=False, test_split="val",
                         default_augment=DEFAULT_AUGMENT[name])
    return out
