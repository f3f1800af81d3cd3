"""Fixtures shared by several test files."""
import os
import shutil
import subprocess

import pytest

import minires.data

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
def small_disk(tmp_path):
    """A 1 MB tmpfs: a real full disk (needs the right to mount; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)
