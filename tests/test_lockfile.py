"""The lock file of run and sweep folders: one owner, stale locks taken over safely."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from minires.errors import LockedError
from minires.lockfile import LockFile
from minires.processes import process_alive, process_start_time


def _dead_pid():
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _write_lock(path, **fields):
    path.write_text(json.dumps({"host": socket.gethostname(), **fields}))


def test_one_owner_and_the_second_is_told_who(tmp_path):
    path = tmp_path / "run.lock"
    first, second = LockFile(path, "run"), LockFile(path, "run")
    assert first.acquire() is None
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["start_time"] == process_start_time(
        os.getpid())
    with pytest.raises(LockedError, match=f"another minires run \\(pid {os.getpid()}\\) is "
                                          f"running in {tmp_path}"):
        second.acquire()
    second.release()           # not its lock: nothing happens
    assert path.exists()
    first.release()
    assert not path.exists()
    assert second.acquire() is None  # free again
    second.release()


def test_the_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path):
    path = tmp_path / "run.lock"
    dead = _dead_pid()
    _write_lock(path, pid=dead)
    lock = LockFile(path, "run")
    assert lock.acquire() == f"removed the lock of an earlier run (pid {dead}) that is no " \
                             f"longer running"
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    """The recorded pid now belongs to another process (this one): its start time differs."""
    path = tmp_path / "run.lock"
    start = process_start_time(os.getppid())
    if start is None:
        pytest.skip("no /proc: process start times cannot be read")
    _write_lock(path, pid=os.getppid(), start_time=start + 1)
    assert not process_alive(os.getppid(), start + 1) and process_alive(os.getppid(), start)
    lock = LockFile(path, "run")
    assert "no longer running" in lock.acquire()
    lock.release()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    path = tmp_path / "run.lock"
    path.write_text(json.dumps({"host": "elsewhere", "pid": _dead_pid()}))
    with pytest.raises(LockedError, match=f"on host elsewhere .* if it no longer runs, delete "
                                          f"{path}"):
        LockFile(path, "run").acquire()
    assert json.loads(path.read_text())["host"] == "elsewhere"


def test_an_unreadable_lock_is_being_written_until_it_is_old(tmp_path, monkeypatch):
    import minires.lockfile as lockfile
    monkeypatch.setattr(lockfile, "WRITE_WAIT_SECONDS", 0.2)
    path = tmp_path / "run.lock"
    path.write_text("")  # created, not yet written (or its writer was killed in between)
    with pytest.raises(LockedError, match="is being written"):
        LockFile(path, "run").acquire()
    old = time.time() - 60
    os.utime(path, (old, old))
    lock = LockFile(path, "run")
    assert "unreadable lock file" in lock.acquire()
    lock.release()


def _claim(path, start, results):
    while time.time() < start:
        pass
    lock = LockFile(path, "run")
    try:
        lock.acquire()
    except LockedError:
        results.put("refused")
        return
    results.put("owner")
    time.sleep(1.0)  # hold it while the others try
    lock.release()


def test_many_processes_taking_over_one_stale_lock_leave_one_owner(tmp_path):
    path = tmp_path / "run.lock"
    _write_lock(path, pid=_dead_pid())
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.time() + 0.5
    workers = [context.Process(target=_claim, args=(path, start, results)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    outcomes = sorted(results.get(timeout=10) for _ in workers)
    assert outcomes == ["owner"] + ["refused"] * 7
    assert not path.exists() and [p.name for p in tmp_path.iterdir()] == []
