"""The HDF5 store: layout, atomic replacement, damaged files, download path."""
from __future__ import annotations

import errno
import hashlib
import os
import warnings

import h5py
import numpy as np
import pytest

from minires.data import (ChecksumWarning, catalog, describe_store, load_dataset, prepare,
                          store_info)
from minires.data.download import download
from minires.errors import ChecksumError, DataError
from test_data_builders import cifar10_members, make_cifar10, write_tar_gz


def prepare_allowed(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        return prepare(*args, allow_checksum_mismatch=True, **kwargs)


@pytest.fixture
def good_file(tmp_path):
    archive, expected = make_cifar10(tmp_path)
    out = prepare_allowed("cifar10", archive, data_dir=tmp_path / "data")
    return out, expected


def test_layout(good_file):
    path, _ = good_file
    with h5py.File(path, "r") as f:
        assert set(f) == {"train", "test", "label_names"}
        assert f["train/images"].shape == (100, 3, 32, 32)
        assert f["train/labels"].dtype == np.int64
        assert f["label_names"].dtype.kind == "O"       # variable-length strings
        for key in ("format_version", "dataset", "source_md5", "checksum_verified", "mean",
                    "std", "image_size", "num_classes"):
            assert key in f.attrs
        assert f.attrs["mean"].shape == (3,) and f.attrs["mean"].dtype == np.float32


def test_info_summary(good_file):
    path, _ = good_file
    text = describe_store(path)
    assert "cifar10" in text and "(100, 3, 32, 32)" in text and "airplane" in text
    assert "NOT verified" in text and "c58f30108f718f92721af3b95e74349a" in text
    info = store_info(path)
    assert info["splits"]["test"]["images"][0] == (30, 3, 32, 32)


def snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("damage", ["checksum", "truncated", "pickle", "missing"])
def test_failed_run_leaves_good_file_untouched(good_file, tmp_path, damage):
    path, _ = good_file
    before = snapshot(path.parent)
    members, _ = cifar10_members(seed=5)
    archive = write_tar_gz(tmp_path / "other.tar.gz", "cifar-10-batches-py", members)
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:3000])
    elif damage == "pickle":
        members["test_batch"] = members["test_batch"][:100]
        archive = write_tar_gz(tmp_path / "other.tar.gz", "cifar-10-batches-py", members)
    elif damage == "missing":
        archive = tmp_path / "absent.tar.gz"
    with pytest.raises(DataError):
        if damage == "checksum":
            prepare("cifar10", archive, data_dir=path.parent)
        else:
            prepare_allowed("cifar10", archive, data_dir=path.parent)
    assert snapshot(path.parent) == before          # byte-identical, and no temp files


def test_failure_while_writing_removes_temp_file(good_file, tmp_path, monkeypatch):
    path, _ = good_file
    before = snapshot(path.parent)
    from minires.data import store_writer

    def explode(self, *args, **kwargs):
        raise KeyboardInterrupt   # even an interrupt must not leave a partial file

    monkeypatch.setattr(store_writer.StoreWriter, "write_names", explode)
    (tmp_path / "again").mkdir()
    archive, _ = make_cifar10(tmp_path / "again")
    with pytest.raises(KeyboardInterrupt):
        prepare_allowed("cifar10", archive, data_dir=path.parent)
    assert snapshot(path.parent) == before


def test_successful_rerun_replaces_file(good_file, tmp_path):
    path, _ = good_file
    members, expected = cifar10_members(seed=9)
    archive = write_tar_gz(tmp_path / "new.tar.gz", "cifar-10-batches-py", members)
    prepare_allowed("cifar10", archive, data_dir=path.parent)
    np.testing.assert_array_equal(load_dataset(path).train_images, expected["train_images"])


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_hdf5(good_file, tmp_path, keep):
    path, _ = good_file
    cut = tmp_path / "cut.h5"
    payload = path.read_bytes()
    cut.write_bytes(payload[:int(len(payload) * keep)])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(cut)
    with pytest.raises(DataError, match="truncated"):
        describe_store(cut)


def test_not_hdf5_and_foreign_hdf5(tmp_path):
    bogus = tmp_path / "x.h5"
    bogus.write_bytes(b"hello")
    with pytest.raises(DataError, match="not an HDF5 file"):
        load_dataset(bogus)
    foreign = tmp_path / "y.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(DataError, match="not a minires dataset"):
        load_dataset(foreign)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "absent.h5")


def test_download_via_file_url(tmp_path, monkeypatch):
    archive, expected = make_cifar10(tmp_path)
    spec = catalog.CIFAR["cifar10"]
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(catalog.CIFAR, "cifar10", catalog.CifarSpec(
        **{**spec.__dict__, "url": archive.as_uri(), "md5": digest}))
    calls = []
    data_dir = tmp_path / "data"
    out = prepare("cifar10", data_dir=data_dir, progress=lambda *a: calls.append(a))
    assert (data_dir / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert any(label.startswith("download") and done == total for label, done, total in calls)
    np.testing.assert_array_equal(load_dataset(out).test_images, expected["test_images"])
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz",
                                                          "cifar10.h5"]


def test_bad_download_is_not_kept(tmp_path, monkeypatch):
    archive, _ = make_cifar10(tmp_path)
    spec = catalog.CIFAR["cifar10"]
    monkeypatch.setitem(catalog.CIFAR, "cifar10", catalog.CifarSpec(
        **{**spec.__dict__, "url": archive.as_uri()}))
    with pytest.raises(ChecksumError, match="it was not kept"):
        prepare("cifar10", data_dir=tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_download_errors(tmp_path):
    with pytest.raises(DataError, match="could not download .*--from"):
        download((tmp_path / "absent.tar.gz").as_uri(), tmp_path / "d" / "x.tar.gz")

    class Short:
        headers = {"Content-Length": "100"}

        def __init__(self):
            self.chunks = [b"x" * 40]

        def read(self, n):
            return self.chunks.pop() if self.chunks else b""

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    with pytest.raises(DataError, match="ended early: got 40 of 100 bytes"):
        download("https://example.invalid/x", tmp_path / "d" / "x.tar.gz",
                 opener=lambda url, timeout: Short())
    assert list((tmp_path / "d").iterdir()) == []


def test_stale_temp_file_of_a_killed_run_is_removed(good_file):
    path, _ = good_file
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = path.with_name(f"{path.name}.tmp-{dead.stdout.strip()}")
    stale.write_bytes(b"partial")
    archive, _ = make_cifar10(path.parent.parent)
    prepare_allowed("cifar10", archive, data_dir=path.parent)
    assert not stale.exists()


def test_error_from_closing_the_hdf5_file_removes_temp_file(good_file, tmp_path, monkeypatch):
    """On a full disk HDF5 reports the failure when it flushes the file on close."""
    path, _ = good_file
    before = snapshot(path.parent)
    real_close = h5py.File.close

    def failing_close(self):
        real_close(self)
        raise RuntimeError("Can't decrement id ref count (file write failed: errno = 28)")

    monkeypatch.setattr(h5py.File, "close", failing_close)
    (tmp_path / "again").mkdir()
    archive, _ = make_cifar10(tmp_path / "again")
    with pytest.raises(OSError) as info:  # said as a full disk, naming the file
        prepare_allowed("cifar10", archive, data_dir=path.parent)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert snapshot(path.parent) == before


def test_full_disk_while_appending_removes_temp_file(good_file, tmp_path, monkeypatch):
    path, _ = good_file
    before = snapshot(path.parent)
    from minires.data import store_writer

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_writer.StoreWriter, "append", full)
    (tmp_path / "again").mkdir()
    archive, _ = make_cifar10(tmp_path / "again")
    with pytest.raises(OSError) as info:
        prepare_allowed("cifar10", archive, data_dir=path.parent)
    assert info.value.errno == errno.ENOSPC
    assert snapshot(path.parent) == before
