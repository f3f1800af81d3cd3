"""Helpers of the fault tests: run the real command line, and look at what it left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import h5py
import numpy as np

# A run that trains in about a second an epoch: ResNet-8 on 256 images, batches of 64.
TINY_RUN = ["--depth", "8", "--subset", "256", "--test-subset", "128", "-b", "64", "--lr",
            "0.05", "--device", "cpu", "--no-progress"]


def minires_command(*args) -> list:
    """The command line of a real `minires` process (the module, so no script is needed)."""
    return [sys.executable, "-m", "minires", *map(str, args)]


def signals_as_from_a_terminal() -> None:
    """``preexec_fn`` of a child that must see SIGINT and SIGHUP: a child inherits ignored
    signals, and tests started under ``nohup`` or as a background job ignore them (minires
    rightly keeps an ignored signal ignored)."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def run_minires(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(minires_command(*args), capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def error_lines(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith("Error:")]


def assert_one_error_line(text: str, *fragments) -> str:
    """The output holds exactly one ``Error: ...`` line, no traceback, and each fragment."""
    errors = error_lines(text)
    assert len(errors) == 1, text
    assert "Traceback" not in text and "Segmentation" not in text, text
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def leftovers(folder) -> list:
    """Temporary files, reserves and locks anywhere under ``folder``."""
    names = []
    for _, _, files in os.walk(folder):
        names += [name for name in files if ".tmp-" in name or name.endswith(".lock")
                  or ".stale-" in name]
    return sorted(names)


def snapshot(folder) -> dict:
    """{relative path: bytes} of every file under ``folder``."""
    result = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, folder)] = f.read()
    return result


def flip_bytes_in_dataset(path, name, count=2048):
    """Flip one bit in each of the first ``count`` bytes of dataset ``name``'s first chunk, in
    place: the damage a failing disk or a bad copy does. (Not whole bytes inverted: Fletcher-32
    cannot tell a 16-bit word 0x0000 from 0xFFFF, its one blind spot.)"""
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(0)
    count = min(count, info.size)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset)
        data = np.frombuffer(f.read(count), dtype=np.uint8)
        f.seek(info.byte_offset)
        f.write((data ^ 0x10).tobytes())
