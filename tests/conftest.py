"""Fixtures shared by several test files."""
import os
import shutil
import subprocess

import numpy as np
import pytest

import minires.data
from minires.data.store_writer import StoreWriter

_EMBEDDED = {}
_load_dataset = minires.data.load_dataset


def _cached_load_dataset(name, data_dir=None, subset=None, seed=0):
    if name != "embedded":
        return _load_dataset(name, data_dir=data_dir, subset=subset, seed=seed)
    if seed not in _EMBEDDED:
        _EMBEDDED[seed] = _load_dataset(name, seed=seed)
    return _EMBEDDED[seed].subset(subset)


@pytest.fixture(scope="module")
def embedded_generated_once():
    """Generating the embedded dataset takes seconds: within a test module that asks for this,
    ``minires.data.load_dataset`` generates it once per seed and hands out subsets."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(minires.data, "load_dataset", _cached_load_dataset)
        yield


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size, read_only=False)``: mount a real file system of ``size`` (``"1m"``,
    ``"1600k"``) in tmp_path and return its folder; unmounted after the test. A small one is a
    real full disk, a read-only one a real read-only folder. Needs the right to mount (root);
    the test is skipped otherwise."""
    mounted = []

    def mount(size, read_only=False):
        if shutil.which("mount") is None or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def small_disk(tmpfs):
    """A 1 MB tmpfs: a real full disk (needs the right to mount; skipped otherwise)."""
    return tmpfs("1m")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A prepared dataset file written by the real StoreWriter: 256 training and 128 test
    32x32 images with random pixels and labels (10 classes). It loads in milliseconds, so the
    tests that start `minires train` processes spend their time training, not generating the
    embedded set."""
    path = tmp_path_factory.mktemp("tiny-data") / "tiny.h5"
    rng = np.random.default_rng(0)
    with StoreWriter(path, "tiny", 32, 10, {"train": 256, "test": 128}) as writer:
        for split, n in (("train", 256), ("test", 128)):
            writer.append(split, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                          rng.integers(0, 10, n))
        writer.write_names("label_names", [f"class{i}" for i in range(10)])
    return path
