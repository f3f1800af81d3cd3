"""Downsampled ImageNet: npz and pickled batches, folders and zips, labels, wnids, bad input.

The tiny archives use 8x8 images under the imagenet16/32/64 names by patching the size table,
so that every layout is exercised in well under a second.
"""
from __future__ import annotations

import hashlib
import shutil
import zipfile

import h5py
import numpy as np
import pytest

from minires.data import catalog, load_dataset, prepare
from minires.errors import DataError
from test_data_builders import (expected_imagenet, imagenet_npz_bytes, imagenet_pickle_bytes,
                                write_imagenet)


@pytest.fixture(autouse=True)
def tiny_imagenet_sizes(monkeypatch):
    monkeypatch.setitem(catalog.IMAGENET_SIZES, "imagenet32", 8)
    monkeypatch.setitem(catalog.IMAGENET_SIZES, "imagenet64", 8)


def check_file(path, expected):
    with h5py.File(path, "r") as f:
        for split in ("train", "test"):
            np.testing.assert_array_equal(f[f"{split}/images"][()], expected[f"{split}_images"])
            np.testing.assert_array_equal(f[f"{split}/labels"][()], expected[f"{split}_labels"])
        assert f.attrs["num_classes"] == 1000 and f.attrs["test_split"] == "val"
        assert f.attrs["checksum_algorithm"] == "sha256"
        return dict(f.attrs), list(f["label_names"].asstr()[()])


@pytest.mark.parametrize("kind", ["npz", "pickle"])
@pytest.mark.parametrize("layout", ["folder", "zip"])
def test_round_trip(tmp_path, kind, layout):
    sources, batches = write_imagenet(tmp_path / "in", kind=kind, layout=layout)
    out = prepare("imagenet32", sources, data_dir=tmp_path / "data")
    attrs, names = check_file(out, expected_imagenet(batches))
    assert names[0] == "1" and names[-1] == "1000"
    assert attrs["image_size"] == 8
    if layout == "zip":   # one sha256sum line per input zip
        for zpath in sources:
            digest = hashlib.sha256(zpath.read_bytes()).hexdigest()
            assert f"{digest}  {zpath.name}" in attrs["source_sha256"]
    data = load_dataset(out)
    assert data.augment == "flip" and data.num_classes == 1000
    assert data.train_labels.min() >= 0 and data.train_labels.max() <= 999


def test_64x64_train_split_across_two_zips(tmp_path):
    sources, batches = write_imagenet(tmp_path / "in", layout="zip64")
    assert len(sources) == 3
    out = prepare("imagenet64", sources, data_dir=tmp_path)
    check_file(out, expected_imagenet(batches))
    # A folder holding the three zips works as well.
    out = prepare("imagenet64", tmp_path / "in", data_dir=tmp_path / "again")
    check_file(out, expected_imagenet(batches))


def test_labels_are_shifted_to_zero_based(tmp_path):
    sources, batches = write_imagenet(tmp_path / "in")
    out = prepare("imagenet32", sources, data_dir=tmp_path)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["test/labels"][()], batches["val_data"][1] - 1)


def test_wnids_in_devkit_order(tmp_path):
    sources, _ = write_imagenet(tmp_path / "in")
    rows = [f"n{i:08d} {i + 1} class_{i + 1}" for i in range(1000)]
    mapping = tmp_path / "map_clsloc.txt"
    mapping.write_text("\n".join(reversed(rows)) + "\n")     # order comes from the numbers
    out = prepare("imagenet32", sources, data_dir=tmp_path, wnids=mapping)
    with h5py.File(out, "r") as f:
        assert f["wnids"].asstr()[0] == "n00000000" and f["wnids"].asstr()[999] == "n00000999"
        assert f["label_names"].asstr()[5] == "class_6"
    plain = tmp_path / "wnids.txt"
    plain.write_text("\n".join(f"n{i:08d}" for i in range(1000)))
    out = prepare("imagenet32", sources, data_dir=tmp_path, wnids=plain)
    with h5py.File(out, "r") as f:
        assert f["label_names"].asstr()[3] == "n00000003"


@pytest.mark.parametrize("text, message", [
    ("n00000001\n", "lists 1 classes, expected 1000"),
    ("\n".join(["cat"] * 1000), "'cat' is not a wnid"),
    ("\n".join(["n00000001"] * 1000), "more than once"),
])
def test_bad_wnids(tmp_path, text, message):
    sources, _ = write_imagenet(tmp_path / "in")
    bad = tmp_path / "w.txt"
    bad.write_text(text)
    with pytest.raises(DataError, match=message):
        prepare("imagenet32", sources, data_dir=tmp_path, wnids=bad)


def test_never_downloaded(tmp_path):
    with pytest.raises(DataError, match="never downloaded.*--from"):
        prepare("imagenet32", data_dir=tmp_path)


def test_missing_batches_are_named(tmp_path):
    sources, _ = write_imagenet(tmp_path / "in")
    (tmp_path / "in" / "Imagenet8_train_npz" / "train_data_batch_7.npz").unlink()
    shutil.rmtree(tmp_path / "in" / "Imagenet8_val_npz")
    with pytest.raises(DataError, match="missing train_data_batch_7, val_data"):
        prepare("imagenet32", sources, data_dir=tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist; expected a folder or .zip"):
        prepare("imagenet32", [tmp_path / "Imagenet32_train_npz.zip"], data_dir=tmp_path)


def test_wrong_resolution_is_explained(tmp_path):
    sources, _ = write_imagenet(tmp_path / "in", size=4)
    with pytest.raises(DataError, match=r"\(N, 192\) for 8x8.*look like 4x4 images"):
        prepare("imagenet32", sources, data_dir=tmp_path)


def test_label_out_of_range(tmp_path):
    sources, batches = write_imagenet(tmp_path / "in")
    data, labels = batches["train_data_batch_2"]
    labels = labels.copy()
    labels[0] = 0                                   # 0-based labels are not the official ones
    (tmp_path / "in" / "Imagenet8_train_npz" / "train_data_batch_2.npz").write_bytes(
        imagenet_npz_bytes(data, labels))
    with pytest.raises(DataError, match=r"should be 1..1000 .* found 0\.\."):
        prepare("imagenet32", sources, data_dir=tmp_path)


def test_truncated_zip(tmp_path):
    sources, _ = write_imagenet(tmp_path / "in", layout="zip")
    payload = sources[0].read_bytes()
    sources[0].write_bytes(payload[:len(payload) // 2])
    with pytest.raises(DataError, match="not a readable zip archive"):
        prepare("imagenet32", sources, data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_truncated_npz_and_pickle(tmp_path):
    for kind, name in (("npz", "train_data_batch_3.npz"), ("pickle", "train_data_batch_3")):
        root = tmp_path / kind
        sources, _ = write_imagenet(root, kind=kind)
        folder = next(root.glob("*train*"))
        payload = (folder / name).read_bytes()
        (folder / name).write_bytes(payload[:len(payload) // 2])
        with pytest.raises(DataError, match=f"{name} is a truncated or corrupt"):
            prepare("imagenet32", sources, data_dir=tmp_path / "data")
    assert not list((tmp_path / "data").glob("*")) if (tmp_path / "data").exists() else True


def test_formats_told_apart_by_content_not_name(tmp_path):
    # An npz saved without extension and a pickle named .npz are both read by their magic.
    sources, batches = write_imagenet(tmp_path / "in")
    folder = tmp_path / "in" / "Imagenet8_train_npz"
    data, labels = batches["train_data_batch_1"]
    (folder / "train_data_batch_1.npz").write_bytes(imagenet_pickle_bytes(data, labels))
    out = prepare("imagenet32", sources, data_dir=tmp_path)
    check_file(out, expected_imagenet(batches))


def test_neither_npz_nor_pickle(tmp_path):
    sources, _ = write_imagenet(tmp_path / "in")
    (tmp_path / "in" / "Imagenet8_val_npz" / "val_data.npz").write_bytes(b"GIF89a....")
    with pytest.raises(DataError, match=r"val_data.npz is an unknown format.*expected an npz "
                                        r"\(zip.*or a pickled batch"):
        prepare("imagenet32", sources, data_dir=tmp_path)


def test_cifar_archive_given_for_imagenet(tmp_path):
    from test_data_builders import make_cifar10

    archive, _ = make_cifar10(tmp_path)
    with pytest.raises(DataError, match="a gzip file.*not a downsampled-ImageNet input"):
        prepare("imagenet32", [archive], data_dir=tmp_path)


def test_duplicate_batches(tmp_path):
    sources, _ = write_imagenet(tmp_path / "in", layout="zip")
    with zipfile.ZipFile(sources[1], "a") as zf:   # the val zip also gets a train batch
        zf.writestr("x/train_data_batch_1.npz", b"PK\x03\x04")
    with pytest.raises(DataError, match="train_data_batch_1 found twice"):
        prepare("imagenet32", sources, data_dir=tmp_path)
