"""CIFAR-10/100: round trips through tiny official-format archives, checksums, bad input."""
from __future__ import annotations

import hashlib
import io
import pickle
import warnings

import h5py
import numpy as np
import pytest

from minires.data import ChecksumWarning, catalog, load_dataset, prepare
from minires.errors import ChecksumError, DataError
from test_data_builders import (Py2Str, cifar10_members, make_cifar10, make_cifar100,
                                py2_pickle, write_folder, write_tar_gz)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def prepare_allowed(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        return prepare(*args, allow_checksum_mismatch=True, **kwargs)


def assert_matches(path, expected):
    with h5py.File(path, "r") as f:
        for split in ("train", "test"):
            images = f[f"{split}/images"]
            assert images.dtype == np.uint8
            assert images.chunks[1:] == images.shape[1:]
            assert images.chunks[0] == min(len(expected[f"{split}_labels"]), 1024)
            np.testing.assert_array_equal(images[()], expected[f"{split}_images"])
            np.testing.assert_array_equal(f[f"{split}/labels"][()], expected[f"{split}_labels"])
        assert list(f["label_names"].asstr()[()]) == expected["label_names"]


def test_cifar10_round_trip_from_tar_gz(tmp_path):
    archive, expected = make_cifar10(tmp_path)
    with pytest.warns(ChecksumWarning, match="08a5|md5"):
        out = prepare("cifar10", archive, data_dir=tmp_path / "data",
                      allow_checksum_mismatch=True)
    assert out == tmp_path / "data" / "cifar10.h5"
    assert_matches(out, expected)
    with h5py.File(out, "r") as f:
        a = dict(f.attrs)
        assert a["format_version"] == 1 and a["dataset"] == "cifar10"
        assert a["source_md5"] == md5(archive)                 # the actual sum is recorded
        assert a["expected_md5"] == "c58f30108f718f92721af3b95e74349a"
        assert not a["checksum_verified"]
        assert a["image_size"] == 32 and a["num_classes"] == 10
        pixels = expected["train_images"] / 255.0
        np.testing.assert_allclose(a["mean"], pixels.mean(axis=(0, 2, 3)), rtol=1e-5)
        np.testing.assert_allclose(a["std"], pixels.std(axis=(0, 2, 3)), rtol=1e-5)
    assert not list((tmp_path / "data").glob("*.tmp-*"))


def test_cifar10_from_extracted_folder_and_its_parent(tmp_path):
    members, expected = cifar10_members()
    folder = write_folder(tmp_path / "x" / "cifar-10-batches-py", members)
    for source in (folder, folder.parent):
        out = prepare_allowed("cifar10", source, data_dir=tmp_path / "data")
        assert_matches(out, expected)
    with h5py.File(out, "r") as f:
        listing = f.attrs["source_md5"]            # md5sum format, one line per member
    assert f"{hashlib.md5(members['data_batch_1']).hexdigest()}  cifar-10-batches-py/" \
           "data_batch_1" in listing


def test_cifar10_verified_when_md5_matches(tmp_path, monkeypatch):
    archive, _ = make_cifar10(tmp_path)
    spec = catalog.CIFAR["cifar10"]
    monkeypatch.setitem(catalog.CIFAR, "cifar10",
                        catalog.CifarSpec(**{**spec.__dict__, "md5": md5(archive)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # no checksum warning on this path
        out = prepare("cifar10", archive, data_dir=tmp_path)
    with h5py.File(out, "r") as f:
        assert f.attrs["checksum_verified"]
        assert f.attrs["source_md5"] == md5(archive)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    archive, expected = make_cifar100(tmp_path)
    out = prepare_allowed("cifar100", archive, data_dir=tmp_path)
    assert_matches(out, expected)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["train/coarse_labels"][()], expected["train_coarse"])
        np.testing.assert_array_equal(f["test/coarse_labels"][()], expected["test_coarse"])
        assert list(f["coarse_label_names"].asstr()[()]) == expected["coarse_label_names"]
        assert f.attrs["num_classes"] == 100
    data = load_dataset("cifar100", data_dir=tmp_path)
    assert data.num_classes == 100 and data.augment == "crop_flip"
    assert data.class_names == expected["label_names"]


def test_load_dataset_by_name_path_and_subset(tmp_path):
    archive, expected = make_cifar10(tmp_path)
    out = prepare_allowed("cifar10", archive, data_dir=tmp_path)
    by_name = load_dataset("cifar10", data_dir=tmp_path)
    by_path = load_dataset(str(out))
    for d in (by_name, by_path):
        assert d.name == "cifar10" and d.num_classes == 10 and d.image_size == 32
        assert d.train_labels.dtype == np.int64 and d.train_images.flags.c_contiguous
        np.testing.assert_array_equal(d.train_images, expected["train_images"])
        assert d.mean.dtype == np.float32 and d.mean.shape == (3,)
    small = load_dataset("cifar10", data_dir=tmp_path, subset=7)
    np.testing.assert_array_equal(small.train_images, expected["train_images"][:7])
    assert len(small.test_labels) == len(expected["test_labels"])


def test_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIRES_DATA", str(tmp_path / "env"))
    from minires.data import default_data_dir

    assert default_data_dir() == tmp_path / "env"
    archive, _ = make_cifar10(tmp_path)
    assert prepare_allowed("cifar10", archive) == tmp_path / "env" / "cifar10.h5"
    monkeypatch.delenv("MINIRES_DATA")
    assert str(default_data_dir()).endswith(".cache/minires")


# --- bad input ------------------------------------------------------------------------------

def test_checksum_mismatch_names_both_sums_and_writes_nothing(tmp_path):
    archive, _ = make_cifar10(tmp_path)
    with pytest.raises(ChecksumError) as info:
        prepare("cifar10", archive, data_dir=tmp_path / "data")
    message = str(info.value)
    assert md5(archive) in message and "c58f30108f718f92721af3b95e74349a" in message
    assert "--allow-checksum-mismatch" in message
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_missing_source(tmp_path):
    with pytest.raises(DataError, match="does not exist.*cifar-10-python.tar.gz"):
        prepare("cifar10", tmp_path / "nope.tar.gz", data_dir=tmp_path)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar11'.*cifar10"):
        prepare("cifar11", data_dir=tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("mnist", data_dir=tmp_path)


def test_not_prepared_yet(tmp_path):
    with pytest.raises(DataError, match="not prepared.*minires prepare cifar10"):
        load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_archive(tmp_path, cut):
    archive, _ = make_cifar10(tmp_path)
    payload = archive.read_bytes()
    archive.write_bytes(payload[:int(len(payload) * cut)])
    with pytest.raises(DataError, match="truncated or corrupt"):
        prepare_allowed("cifar10", archive, data_dir=tmp_path / "data")
    assert not list((tmp_path / "data").glob("*")) if (tmp_path / "data").exists() else True


def test_corrupt_archive(tmp_path):
    archive, _ = make_cifar10(tmp_path)
    payload = bytearray(archive.read_bytes())
    payload[200:400] = bytes(200)            # damage the compressed stream
    archive.write_bytes(bytes(payload))
    with pytest.raises(DataError, match="truncated or corrupt"):
        prepare_allowed("cifar10", archive, data_dir=tmp_path)


def test_not_an_archive(tmp_path):
    bogus = tmp_path / "cifar-10-python.tar.gz"
    bogus.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match="expected the CIFAR-10 archive"):
        prepare_allowed("cifar10", bogus, data_dir=tmp_path)


def test_npz_where_a_pickle_is_expected(tmp_path):
    members, _ = cifar10_members()
    buf = io.BytesIO()
    np.savez(buf, data=np.zeros((20, 3072), np.uint8), labels=np.zeros(20, np.int64))
    members["data_batch_3"] = buf.getvalue()
    archive = write_tar_gz(tmp_path / "c.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(DataError, match="data_batch_3 is a zip file.*expected a pickled batch"):
        prepare_allowed("cifar10", archive, data_dir=tmp_path)


def test_pickle_that_is_not_a_dict(tmp_path):
    members, _ = cifar10_members()
    members["test_batch"] = pickle.dumps([1, 2, 3], protocol=2)
    archive = write_tar_gz(tmp_path / "c.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(DataError, match="test_batch holds a pickled list, expected a dict"):
        prepare_allowed("cifar10", archive, data_dir=tmp_path)


def test_pickle_that_calls_a_function_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned > evil.txt",))

    members, _ = cifar10_members()
    members["data_batch_1"] = pickle.dumps({"data": Evil()}, protocol=2)
    archive = write_tar_gz(tmp_path / "c.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(DataError, match="refusing to unpickle"):
        prepare_allowed("cifar10", archive, data_dir=tmp_path)
    assert not (tmp_path / "evil.txt").exists()


def test_missing_member(tmp_path):
    members, _ = cifar10_members()
    del members["data_batch_4"]
    archive = write_tar_gz(tmp_path / "c.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_4"):
        prepare_allowed("cifar10", archive, data_dir=tmp_path)


def test_cifar100_archive_given_for_cifar10(tmp_path):
    archive, _ = make_cifar100(tmp_path)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_1"):
        prepare_allowed("cifar10", archive, data_dir=tmp_path)


@pytest.mark.parametrize("batch, message", [
    ({Py2Str("data"): np.zeros((4, 100), np.uint8), Py2Str("labels"): [0] * 4},
     r"'data' should be uint8 of shape \(N, 3072\)"),
    ({Py2Str("data"): np.zeros((4, 3072), np.uint8), Py2Str("labels"): [0, 1, 2, 10]},
     r"'labels' should lie in 0..9, found 0..10"),
    ({Py2Str("data"): np.zeros((4, 3072), np.uint8), Py2Str("labels"): [0, 1]},
     r"'labels' should be 4 integers"),
    ({Py2Str("labels"): [0]}, r"no 'data' array"),
])
def test_malformed_batches(tmp_path, batch, message):
    members, _ = cifar10_members()
    members["data_batch_2"] = py2_pickle(batch)
    archive = write_tar_gz(tmp_path / "c.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(DataError, match=message):
        prepare_allowed("cifar10", archive, data_dir=tmp_path)


def test_truncated_pickle_in_folder(tmp_path):
    members, _ = cifar10_members()
    members["data_batch_5"] = members["data_batch_5"][:500]
    folder = write_folder(tmp_path / "cifar-10-batches-py", members)
    with pytest.raises(DataError, match="data_batch_5 is a truncated or corrupt pickle"):
        prepare_allowed("cifar10", folder, data_dir=tmp_path)


def test_folder_checksum_mismatch_names_both_sums(tmp_path):
    members, _ = cifar10_members()
    folder = write_folder(tmp_path / "cifar-10-batches-py", members)
    with pytest.raises(ChecksumError) as info:
        prepare("cifar10", folder, data_dir=tmp_path)
    assert hashlib.md5(members["data_batch_1"]).hexdigest() in str(info.value)
    assert "c99cafc152244af753f735de768cd75f" in str(info.value)


def test_gzip_member_names_with_dot_prefix(tmp_path):
    # Archives re-packed by users often name members ./cifar-10-batches-py/...
    members, expected = cifar10_members()
    archive = write_tar_gz(tmp_path / "c.tar.gz", "./cifar-10-batches-py", members)
    assert_matches(prepare_allowed("cifar10", archive, data_dir=tmp_path), expected)
