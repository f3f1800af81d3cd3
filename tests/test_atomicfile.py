"""The one atomic-file helper: a failure on any path keeps the old file and leaves no temp."""
import errno
import os
import subprocess
import sys

import pytest

from minires import atomicfile
from minires.atomicfile import AtomicFile, remove_stale_temps, write_bytes, write_text


def _dead_pid():
    """The id of a process that has just exited."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert _names(tmp_path) == ["config.json"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "full")])
def test_failure_while_writing_keeps_the_old_file(tmp_path, failure):
    target = tmp_path / "last.h5"
    target.write_text("old")
    with pytest.raises(type(failure)):
        with AtomicFile(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise failure
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["last.h5"]  # no temporary left


def test_a_full_disk_reported_by_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    """Network and some local file systems report ENOSPC only when the data is flushed."""
    target = tmp_path / "last.h5"
    target.write_bytes(b"good")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomicfile.os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_bytes(target, b"new content")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"good"
    assert _names(tmp_path) == ["last.h5"]


def test_temps_of_dead_processes_are_removed_by_the_next_writer(tmp_path):
    target = tmp_path / "last.h5"
    dead = tmp_path / f"last.h5.tmp-{_dead_pid()}-0123abcd"
    older = tmp_path / f"last.h5.tmp-{_dead_pid()}"  # the form without a random part
    alive = tmp_path / f"last.h5.tmp-{os.getppid()}-0123abcd"  # a running process's
    other = tmp_path / f"best.h5.tmp-{_dead_pid()}-0123abcd"  # another destination's
    for path in (dead, older, alive, other):
        path.write_bytes(b"partial")
    write_bytes(target, b"x")
    assert _names(tmp_path) == sorted(["last.h5", alive.name, other.name])
    assert remove_stale_temps(tmp_path / "best.h5") == [other]


def test_a_real_full_disk_keeps_the_old_file(small_disk):
    target = small_disk / "last.h5"
    write_bytes(target, b"good" * 1000)
    with pytest.raises(OSError) as info:
        write_bytes(target, b"x" * (2 << 20))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"good" * 1000
    assert _names(small_disk) == ["last.h5"]
