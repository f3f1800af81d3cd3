"""Reading downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter 2017) from folders and zips.

Official files (https://image-net.org/download-images, after login): for S in 16, 32, 64,
``Imagenet{S}_train_npz.zip`` holding ``train_data_batch_1..10.npz`` (64x64: split across
``..._part1.zip`` and ``..._part2.zip``) and ``Imagenet{S}_val_npz.zip`` holding
``val_data.npz``. Each batch has ``data`` uint8 (N, 3*S*S) as R, G, B planes, ``labels``
1..1000 in the devkit's ``map_clsloc.txt`` order, and (train) ``mean``. Older zips hold the same
dicts as pickles (``train_data_batch_1``, ``val_data``, no extension); the two are told apart
by their first bytes, not by their names.
"""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minires.data.catalog import IMAGENET_CLASSES, IMAGENET_SIZES, IMAGENET_TRAIN_BATCHES
from minires.data.checksums import file_digest
from minires.data.pickles import PICKLE_MAGIC, ZIP_MAGIC, describe_magic, load_batch_pickle
from minires.errors import DataError

BATCH_NAME = re.compile(r"^(?:train_data_batch_(?P<n>\d+)|(?P<val>val_data))(?:\.npz)?$")
END_RECORD = b"PK\x05\x06"     # zip end-of-central-directory signature
END_RECORD_SIZE = 22
WNID = re.compile(r"^n\d{8}$")
EXPECTED_INPUT = ("a folder or .zip holding train_data_batch_1..10 and val_data (.npz files or "
                  "the older pickled batches), e.g. {zips}")


def _expected(size) -> str:
    S = size or 32
    zips = f"Imagenet{S}_train_npz.zip and Imagenet{S}_val_npz.zip" if S != 64 else \
        f"Imagenet{S}_train_part1_npz.zip, Imagenet{S}_train_part2_npz.zip and " \
        f"Imagenet{S}_val_npz.zip"
    return EXPECTED_INPUT.format(zips=zips)


@dataclass(frozen=True)
class BatchEntry:
    """One batch file found in the inputs: a loose file or a zip member."""
    key: str                # "train_3" or "val"
    where: str              # for messages: path, or "zip:member"
    path: Path              # the loose file or the zip that holds it
    member: str | None      # zip member name, or None for a loose file

    def read(self) -> bytes:
        try:
            if self.member is None:
                return self.path.read_bytes()
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(self.member)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise DataError(f"cannot read {self.where}: truncated or corrupt ({exc})") from exc


def _key(name: str):
    match = BATCH_NAME.match(Path(name).name)
    if not match:
        return None
    return "val" if match.group("val") else f"train_{int(match.group('n'))}"


def _zip_is_complete(zf: zipfile.ZipFile, tail: bytes) -> bool:
    """True when the zip's end record is the last thing in the file.

    zipfile looks for the end record anywhere in the last 64 KiB, so a truncated zip of npz
    files opens "successfully" on an inner npz's end record and lists that npz's members.
    """
    end = tail[-(END_RECORD_SIZE + len(zf.comment)):]
    return end.startswith(END_RECORD)


def _tail(path: Path, n: int = 1 << 16) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - n))
        return f.read()


def _zip_entries(path: Path, size=None) -> list:
    try:
        with zipfile.ZipFile(path) as zf:
            if not _zip_is_complete(zf, _tail(path)):
                raise zipfile.BadZipFile("its end record is missing")
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable zip archive (truncated or corrupt: {exc}); "
                        f"expected {_expected(size)}") from exc
    return [BatchEntry(k, f"{path}:{n}", path, n) for n in names if (k := _key(n))]


def find_batches(sources, size: int | None = None) -> tuple[dict, list]:
    """Locate the batch files in ``sources`` (folders, zips, batch files; any mix).

    ``size`` (the image side) only makes the error messages name the right files.
    Returns ``(entries, inputs)``: ``entries`` maps ``train_1..train_10`` and ``val`` to
    :class:`BatchEntry`; ``inputs`` lists the files read (for checksums), sorted.
    Raises DataError for missing paths, unusable files, duplicates and missing batches.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    sources = [Path(s).expanduser() for s in sources]
    if not sources:
        raise DataError("downsampled ImageNet is never downloaded (it needs a login at "
                        f"image-net.org); pass --from with {_expected(size)}")
    found = []
    for src in sources:
        if not src.exists():
            raise DataError(f"{src} does not exist; expected {_expected(size)}")
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.is_file())
            for p in files:
                if p.suffix.lower() == ".zip":
                    found.extend(_zip_entries(p, size))
                elif (k := _key(p.name)):
                    found.append(BatchEntry(k, str(p), p, None))
        elif src.suffix.lower() == ".zip":
            found.extend(_zip_entries(src, size))
        elif (k := _key(src.name)):
            found.append(BatchEntry(k, str(src), src, None))
        else:
            with open(src, "rb") as f:
                head = f.read(8)
            raise DataError(f"{src} ({describe_magic(head)}) is not a downsampled-ImageNet "
                            f"input; expected {_expected(size)}")
    entries = {}
    for e in found:
        if e.key in entries:
            raise DataError(f"{e.key.replace('train_', 'train_data_batch_')} found twice: "
                            f"{entries[e.key].where} and {e.where}; pass each batch once")
        entries[e.key] = e
    wanted = [f"train_{i}" for i in range(1, IMAGENET_TRAIN_BATCHES + 1)] + ["val"]
    missing = [k.replace("train_", "train_data_batch_").replace("val", "val_data")
               for k in wanted if k not in entries]
    extra = sorted(set(entries) - set(wanted))
    if missing:
        raise DataError(f"missing {', '.join(missing)} in {', '.join(map(str, sources))}; "
                        f"expected {_expected(size)}")
    if extra:
        raise DataError(f"unexpected batches {', '.join(extra)}: downsampled ImageNet has "
                        f"train_data_batch_1..{IMAGENET_TRAIN_BATCHES}")
    entries = {k: entries[k] for k in wanted}
    inputs = sorted({e.path for e in entries.values()})
    return entries, inputs


def read_batch(entry: BatchEntry, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch and return ``(images, labels)``: (N, 3, S, S) uint8 and (N,) int64 0..999.

    The format (npz or pickle) is told by the payload's first bytes.
    """
    payload = entry.read()
    if payload.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as zf:
                if not _zip_is_complete(zf, payload[-(1 << 16):]):
                    raise zipfile.BadZipFile("its end record is missing")
            with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
                batch = {k: npz[k] for k in npz.files if k in ("data", "labels")}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            raise DataError(f"{entry.where} is a truncated or corrupt npz ({exc})") from exc
    elif payload.startswith(PICKLE_MAGIC):
        batch = load_batch_pickle(payload, entry.where)
    else:
        raise DataError(f"{entry.where} is {describe_magic(payload[:8])}; expected an npz "
                        "(zip, starting with PK\\x03\\x04) or a pickled batch (starting with "
                        "\\x80\\x02)")
    return _check_batch(batch, size, entry.where)


def _check_batch(batch: dict, size: int, where: str):
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or "labels" not in batch:
        raise DataError(f"{where} should hold 'data' and 'labels' (found keys "
                        f"{', '.join(map(str, batch))})")
    row = 3 * size * size
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        hint = ""
        if data.ndim == 2 and data.shape[1] % 3 == 0:
            other = round((data.shape[1] // 3) ** 0.5)
            if 3 * other * other == data.shape[1] and other != size:
                hint = f": these look like {other}x{other} images (imagenet{other})"
        raise DataError(f"{where}: 'data' should be uint8 of shape (N, {row}) for {size}x{size} "
                        f"images, found {data.dtype} of shape {data.shape}{hint}")
    try:
        labels = np.asarray(batch["labels"]).reshape(-1)
    except Exception as exc:
        raise DataError(f"{where}: 'labels' is not a list of integers") from exc
    if labels.dtype.kind not in "iu" or labels.shape[0] != data.shape[0]:
        raise DataError(f"{where}: 'labels' should be {data.shape[0]} integers, found "
                        f"{labels.dtype} of shape {labels.shape}")
    if len(labels) and (labels.min() < 1 or labels.max() > IMAGENET_CLASSES):
        raise DataError(f"{where}: 'labels' should be 1..{IMAGENET_CLASSES} (the devkit's "
                        f"1-based class numbers), found {labels.min()}..{labels.max()}")
    # Rows are R, G, B planes, so this reshape is NCHW; labels become 0-based.
    return data.reshape(-1, 3, size, size), labels.astype(np.int64) - 1


def read_wnids(path) -> tuple[list, list]:
    """Read class ids in the devkit's order; return ``(wnids, names)`` of 1000 str each.

    Accepts the devkit's ``map_clsloc.txt`` (``n02119789 1 kit_fox``: ordered by the number) or
    a plain list with one wnid per line in label order (names are then the wnids).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path} does not exist; expected a wnids file (the devkit's "
                        "map_clsloc.txt, or one wnid such as n01440764 per line)")
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path} is not a text file of wnids ({exc})") from exc
    rows = [t for t in lines if t]
    if len(rows) != IMAGENET_CLASSES:
        raise DataError(f"{path} lists {len(rows)} classes, expected {IMAGENET_CLASSES} "
                        "(one wnid per line, or map_clsloc.txt)")
    bad = [t[0] for t in rows if not WNID.match(t[0])]
    if bad:
        raise DataError(f"{path}: {bad[0]!r} is not a wnid (expected n followed by 8 digits)")
    numbered = all(len(t) >= 2 and t[1].isdigit() for t in rows)
    if numbered:
        numbers = sorted(int(t[1]) for t in rows)
        if numbers != list(range(1, IMAGENET_CLASSES + 1)):
            raise DataError(f"{path}: the class numbers should be 1..{IMAGENET_CLASSES}, each "
                            "once (map_clsloc.txt format: wnid number name)")
        rows = sorted(rows, key=lambda t: int(t[1]))
    wnids = [t[0] for t in rows]
    if len(set(wnids)) != len(wnids):
        raise DataError(f"{path} lists some wnids more than once")
    names = [" ".join(t[2:]) if numbered and len(t) > 2 else t[0] for t in rows]
    return wnids, names


def input_checksums(inputs, progress=None) -> str:
    """sha256sum-format lines (``<hex>  <file name>``) for the input files."""
    return "".join(f"{file_digest(p, 'sha256', progress, f'sha256 {p.name}')}  {p.name}\n"
                   for p in inputs)


def image_size(name: str) -> int:
    return IMAGENET_SIZES[name]
