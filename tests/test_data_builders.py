"""Tiny archives in the exact official formats, built in tmp_path by the data tests.

- CIFAR-10 / CIFAR-100: Python 2 pickles (``str`` keys and raw array buffers as Python 2
  strings, arrays rebuilt through ``numpy.core.multiarray._reconstruct``, as NumPy under
  Python 2 wrote them), packed into a real ``.tar.gz`` with ``tarfile``.
- Downsampled ImageNet: ``np.savez`` batches and the older pickled batches, in folders or zips.

Imported by the other ``test_data_*`` modules; its own tests check the builders themselves.
"""
from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


class Py2Str:
    """Bytes that pickle as a Python 2 ``str`` (SHORT_BINSTRING / BINSTRING opcodes)."""

    def __init__(self, value):
        self.raw = value.encode("latin1") if isinstance(value, str) else bytes(value)


class _Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2str(self, obj):
        n = len(obj.raw)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj.raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj.raw)
        self.memoize(obj)

    def _save_array(self, arr):
        # _reconstruct(ndarray, (0,), 'b') then BUILD with (version, shape, dtype, fortran,
        # raw bytes): the opcodes NumPy emitted under Python 2.
        self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
        self.write(pickle.GLOBAL + b"numpy\nndarray\n")
        self.save((0,))
        self.save(Py2Str("b"))
        self.write(pickle.TUPLE3 + pickle.REDUCE)
        self.save((1, arr.shape, arr.dtype, False, Py2Str(np.ascontiguousarray(arr).tobytes())))
        self.write(pickle.BUILD)

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, np.dtype):
            # dtype(Py2 str 'u1', 0, 1) with state (3, '|', ...), as under Python 2.
            self.write(pickle.GLOBAL + b"numpy\ndtype\n")
            self.save((Py2Str(obj.str[1:]), 0, 1))
            self.write(pickle.REDUCE)
            self.save((3, Py2Str(obj.str[0]), None, None, None, -1, -1, 0))
            self.write(pickle.BUILD)
            return
        super().save(obj, save_persistent_id)

    dispatch[Py2Str] = _save_py2str
    dispatch[np.ndarray] = _save_array


def py2_pickle(obj) -> bytes:
    """Pickle ``obj`` (protocol 2) the way Python 2 did; wrap strings in :class:`Py2Str`."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def random_images(rng, n, size=32):
    """(n, 3*size*size) uint8 rows of R, G, B planes."""
    return rng.integers(0, 256, (n, 3 * size * size), dtype=np.uint8)


def cifar10_members(per_batch=20, test=30, seed=0):
    """{member name: pickle bytes} and the expected arrays of a tiny CIFAR-10."""
    rng = np.random.default_rng(seed)
    members, train_x, train_y = {}, [], []
    for b in range(1, 6):
        x = random_images(rng, per_batch)
        y = rng.integers(0, 10, per_batch)
        train_x.append(x)
        train_y.append(y)
        members[f"data_batch_{b}"] = py2_pickle({
            Py2Str("batch_label"): Py2Str(f"training batch {b} of 5"),
            Py2Str("labels"): [int(v) for v in y], Py2Str("data"): x,
            Py2Str("filenames"): [Py2Str(f"img_{b}_{i}.png") for i in range(per_batch)]})
    test_x = random_images(rng, test)
    test_y = rng.integers(0, 10, test)
    members["test_batch"] = py2_pickle({
        Py2Str("batch_label"): Py2Str("testing batch 1 of 1"),
        Py2Str("labels"): [int(v) for v in test_y], Py2Str("data"): test_x,
        Py2Str("filenames"): [Py2Str(f"test_{i}.png") for i in range(test)]})
    members["batches.meta"] = py2_pickle({
        Py2Str("num_cases_per_batch"): per_batch,
        Py2Str("label_names"): [Py2Str(n) for n in CIFAR10_NAMES], Py2Str("num_vis"): 3072})
    expected = {"train_images": np.concatenate(train_x).reshape(-1, 3, 32, 32),
                "train_labels": np.concatenate(train_y),
                "test_images": test_x.reshape(-1, 3, 32, 32), "test_labels": test_y,
                "label_names": CIFAR10_NAMES}
    return members, expected


def cifar100_members(train=40, test=20, seed=1):
    rng = np.random.default_rng(seed)
    members, expected = {}, {}
    for split, n in (("train", train), ("test", test)):
        x = random_images(rng, n)
        fine = rng.integers(0, 100, n)
        coarse = fine // 5
        members[split] = py2_pickle({
            Py2Str("filenames"): [Py2Str(f"{split}_{i}.png") for i in range(n)],
            Py2Str("batch_label"): Py2Str(f"{split}ing batch 1 of 1"),
            Py2Str("fine_labels"): [int(v) for v in fine],
            Py2Str("coarse_labels"): [int(v) for v in coarse], Py2Str("data"): x})
        expected[f"{split}_images"] = x.reshape(-1, 3, 32, 32)
        expected[f"{split}_labels"] = fine
        expected[f"{split}_coarse"] = coarse
    fine_names = [f"fine_{i}" for i in range(100)]
    coarse_names = [f"coarse_{i}" for i in range(20)]
    members["meta"] = py2_pickle({
        Py2Str("fine_label_names"): [Py2Str(n) for n in fine_names],
        Py2Str("coarse_label_names"): [Py2Str(n) for n in coarse_names]})
    expected["label_names"] = fine_names
    expected["coarse_label_names"] = coarse_names
    return members, expected


def write_tar_gz(path: Path, folder: str, members: dict) -> Path:
    """A real gzip-compressed tar with ``folder/name`` members, like the official archives."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            info.mtime = 1262304000
            tar.addfile(info, io.BytesIO(payload))
    return path


def write_folder(path: Path, members: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, payload in members.items():
        (path / name).write_bytes(payload)
    return path


def make_cifar10(tmp_path: Path, **kwargs):
    """Write ``cifar-10-python.tar.gz`` in tmp_path; return (path, expected arrays)."""
    members, expected = cifar10_members(**kwargs)
    path = write_tar_gz(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    return path, expected


def make_cifar100(tmp_path: Path, **kwargs):
    members, expected = cifar100_members(**kwargs)
    path = write_tar_gz(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", members)
    return path, expected


def imagenet_batches(size=8, per_batch=6, val=7, seed=2):
    """{key: (data (n, 3*S*S) uint8, labels 1..1000)}: train_data_batch_1..10 and val_data."""
    rng = np.random.default_rng(seed)
    batches = {}
    for b in range(1, 11):
        batches[f"train_data_batch_{b}"] = (random_images(rng, per_batch, size),
                                            rng.integers(1, 1001, per_batch))
    batches["val_data"] = (random_images(rng, val, size), rng.integers(1, 1001, val))
    return batches


def imagenet_npz_bytes(data, labels, train=True) -> bytes:
    buf = io.BytesIO()
    arrays = {"data": data, "labels": [int(v) for v in labels]}
    if train:
        arrays["mean"] = data.mean(axis=0)
    np.savez(buf, **arrays)
    return buf.getvalue()


def imagenet_pickle_bytes(data, labels, train=True) -> bytes:
    """The older format: a Python pickle (protocol 2) of the same dict."""
    batch = {"data": data, "labels": [int(v) for v in labels]}
    if train:
        batch["mean"] = data.mean(axis=0)
    return pickle.dumps(batch, protocol=2)


def write_imagenet(root: Path, size=8, kind="npz", layout="folder", seed=2):
    """Write a tiny downsampled ImageNet; return (list of --from paths, batches dict).

    kind: "npz" (``name.npz``) or "pickle" (``name``, no extension).
    layout: "folder" (two folders, as the unzipped downloads), "zip" (train and val zips),
    "zip64" (train split across part1/part2 zips, as the 64x64 download).
    """
    batches = imagenet_batches(size=size, seed=seed)
    encode = imagenet_npz_bytes if kind == "npz" else imagenet_pickle_bytes
    suffix = ".npz" if kind == "npz" else ""
    tag = f"Imagenet{size}_{{}}_{kind}" if kind == "npz" else f"Imagenet{size}_{{}}"
    files = {}
    for key, (data, labels) in batches.items():
        split = "val" if key == "val_data" else "train"
        files.setdefault(split, {})[f"{key}{suffix}"] = encode(data, labels, split == "train")
    root.mkdir(parents=True, exist_ok=True)
    if layout == "folder":
        paths = []
        for split, members in files.items():
            paths.append(write_folder(root / tag.format(split), members))
        return [root], batches
    groups = {"train": files["train"], "val": files["val"]}
    if layout == "zip64":
        names = sorted(files["train"], key=lambda n: int(n.split("_")[-1].split(".")[0]))
        groups = {"train_part1": {n: files["train"][n] for n in names[:5]},
                  "train_part2": {n: files["train"][n] for n in names[5:]},
                  "val": files["val"]}
    paths = []
    for group, members in groups.items():
        zpath = root / f"{tag.format(group)}.zip"
        with zipfile.ZipFile(zpath, "w") as zf:
            for name, payload in members.items():
                zf.writestr(f"{tag.format(group.split('_')[0])}/{name}", payload)
        paths.append(zpath)
    return paths, batches


def expected_imagenet(batches):
    train = [batches[f"train_data_batch_{b}"] for b in range(1, 11)]
    S = round((train[0][0].shape[1] / 3) ** 0.5)
    return {"train_images": np.concatenate([d for d, _ in train]).reshape(-1, 3, S, S),
            "train_labels": np.concatenate([labels for _, labels in train]) - 1,
            "test_images": batches["val_data"][0].reshape(-1, 3, S, S),
            "test_labels": batches["val_data"][1] - 1}


# --- tests of the builders themselves -------------------------------------------------------

def test_py2_pickle_uses_python2_str_opcodes():
    payload = py2_pickle({Py2Str("labels"): [1, 2], Py2Str("data"): np.zeros((2, 3), np.uint8)})
    assert payload.startswith(b"\x80\x02")
    assert pickle.SHORT_BINSTRING + b"\x06labels" in payload   # a Python 2 str key
    assert b"numpy.core.multiarray\n_reconstruct" in payload
    # Loaded as the official batches are: bytes keys with encoding="bytes" ...
    loaded = pickle.loads(payload, encoding="bytes")
    assert set(loaded) == {b"labels", b"data"}
    assert loaded[b"data"].dtype == np.uint8 and loaded[b"data"].shape == (2, 3)
    # ... and str keys with encoding="latin1".
    assert set(pickle.loads(payload, encoding="latin1")) == {"labels", "data"}


def test_tiny_cifar10_archive_layout(tmp_path):
    path, expected = make_cifar10(tmp_path)
    with tarfile.open(path) as tar:
        names = sorted(tar.getnames())
    assert names == sorted([f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
                           + ["cifar-10-batches-py/test_batch",
                              "cifar-10-batches-py/batches.meta"])
    assert expected["train_images"].shape == (100, 3, 32, 32)
