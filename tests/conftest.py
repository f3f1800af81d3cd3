"""Fixtures shared by several test files."""
import os
import shutil
import subprocess

import sys

import pytest

import cuda_emulator as emu
import minires.data
from minires.kernels.cuda import loader

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


# -- the CUDA kernels on the CPU emulator (tests/cuda_emulator.py) --------------------------------

@pytest.fixture(scope="session")
def library(tmp_path_factory):
    """Every CUDA source compiled for the CPU once per test session (g++, about 10 s)."""
    sources = {name: loader.source(name) for name in loader.source_names()}
    return emu.EmulatedLibrary(sources, tmp_path_factory.mktemp("emulated_cuda"))


@pytest.fixture
def gpu(library, monkeypatch):
    """Route ``import cupy`` in the wrappers to the emulator; check guard zones afterwards."""
    allocator = emu.GuardedAllocator()
    monkeypatch.setitem(sys.modules, "cupy", emu.fake_cupy(library, allocator))
    loader.clear_caches()
    library.launches.clear()
    yield library
    loader.clear_caches()  # never leave an emulated module cached for real GPU tests
    allocator.check()


@pytest.fixture
def device(gpu, monkeypatch):
    """The fake ``cupy`` also becomes minires' CUDA array module: ``Module.to("cuda")``,
    ``xp.asarray`` etc. then make :class:`cuda_emulator.EmulatedDeviceArray` s, which take the
    CUDA branches of minires.functions and minires.optim; their kernels run on the emulator."""
    import minires.backend
    monkeypatch.setattr(minires.backend, "_cupy_or_none", lambda: sys.modules["cupy"])
    return gpu
