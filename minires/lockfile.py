"""One owner at a time for a folder: a lock file holding the owner's host, pid and start time.

``minires train`` holds ``run.lock`` in its run folder from the moment it claims the folder
until it returns; ``minires sweep`` holds ``sweep.lock`` in its sweep folder.

Taking the lock creates the file exclusively (``O_CREAT | O_EXCL``): of two processes trying at
the same moment, exactly one succeeds. The other reads who holds it:

- a live process on this host: the folder is in use, :class:`~minires.errors.LockedError`;
- a process that no longer exists (killed with SIGKILL, a power cut): the lock is stale. It is
  removed, the claim is retried, and :meth:`LockFile.acquire` returns a note saying so;
- a process on another host (a shared file system): it cannot be checked from here, so the
  lock is never taken over; the message says which file to delete if that run is gone.

Removing a stale lock is safe when several processes find it at once: each renames the lock to
a name of its own and removes it only if the renamed file is still the stale one (same inode,
same content). A rename moves one file once, so the others get "no such file" and retry; one
that moved a fresh lock by mistake puts it back.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass, field

from minires.atomicfile import raise_named, write_text
from minires.errors import LockedError
from minires.processes import process_alive, process_start_time

# A lock file is written right after its exclusive creation: a claim that finds it empty waits
# this long for the content, and one still unreadable after WRITE_GRACE_SECONDS was left by a
# process killed in between.
WRITE_WAIT_SECONDS = 2.0
WRITE_GRACE_SECONDS = 10.0
MAX_TRIES = 5


class StaleLockWarning(UserWarning):
    """The lock of a process that no longer runs was removed (the message says whose)."""


@dataclass
class Holder:
    """What a lock file says about its owner; ``data`` is the whole JSON object (None when the
    file could not be parsed)."""

    text: str
    inode: int
    age: float                      # seconds since the file was last written
    data: dict | None = field(default=None)

    @property
    def pid(self):
        return (self.data or {}).get("pid")

    @property
    def host(self):
        return (self.data or {}).get("host")

    def on_this_host(self) -> bool:
        return self.host in (None, socket.gethostname())

    def stale(self) -> bool:
        """True when the owner is certainly gone (see the module's docstring)."""
        if self.data is None:
            return self.age > WRITE_GRACE_SECONDS
        return self.on_this_host() and not process_alive(self.pid, self.data.get("start_time"))


class LockFile:
    """The lock file ``path`` of a folder, owned by a minires ``owner`` (``run``, ``sweep``).

    Use :meth:`acquire` and :meth:`release`, or the object as a context manager (it acquires
    on entry). ``acquire`` and :meth:`update` store extra JSON data beside the owner's identity.
    """

    def __init__(self, path, owner: str):
        self.path = os.fspath(path)
        self.folder = os.path.dirname(self.path) or "."
        self.owner = owner
        self.token = secrets.token_hex(8)
        self.data = {}
        self.held = False

    def acquire(self, data: dict | None = None) -> str | None:
        """Take the lock; return a note when a stale lock was removed first (else None).

        Raises:
            LockedError: a live process holds it, or its owner cannot be checked.
        """
        self.data = dict(data or {})
        notes = []
        tries = 0
        being_written_until = time.monotonic() + WRITE_WAIT_SECONDS
        while tries < MAX_TRIES:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is not None and holder.data is None and not holder.stale() and \
                        time.monotonic() < being_written_until:
                    time.sleep(0.01)  # created this instant: its owner is writing it
                    continue
                tries += 1
                if holder is None:
                    continue  # released in the meantime
                if not holder.stale():
                    raise LockedError(self._in_use(holder)) from None
                if self._remove_stale(holder):
                    notes.append(self._stale_note(holder))
                continue
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(self._text())
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                raise_named(exc, self.path)
            self.held = True
            return "; ".join(notes) or None
        raise LockedError(f"other processes are claiming {self.folder} at this moment; try again")

    def update(self, data: dict) -> None:
        """Replace the extra data stored in the held lock (atomically)."""
        self.data = dict(data)
        write_text(self.path, self._text())

    def release(self) -> None:
        """Remove the lock file if this object holds it (and it is still ours)."""
        if not self.held:
            return
        self.held = False
        holder = self.holder()
        if holder is not None and (holder.data or {}).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def holder(self) -> Holder | None:
        """The current lock file's owner, or None when there is no lock file."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                stat = os.fstat(f.fileno())
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return Holder(text, stat.st_ino, time.time() - stat.st_mtime,
                      data if isinstance(data, dict) else None)

    def _text(self) -> str:
        identity = {"host": socket.gethostname(), "pid": os.getpid(),
                    "start_time": process_start_time(os.getpid()), "token": self.token,
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return json.dumps({**identity, **self.data}) + "\n"

    def _remove_stale(self, holder: Holder) -> bool:
        """Remove the lock file if it still is ``holder``'s; True when this call removed it."""
        aside = f"{self.path}.stale-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # another process removed it first
        try:
            with open(aside, encoding="utf-8", errors="replace") as f:
                same = os.fstat(f.fileno()).st_ino == holder.inode and f.read() == holder.text
            if not same:  # a fresh lock taken between our reading and our rename: give it back
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
            return same
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)

    def _in_use(self, holder: Holder) -> str:
        if holder.data is None:
            return (f"another process is claiming {self.folder} right now ({self.path} is being "
                    f"written); try again")
        if not holder.on_this_host():
            return (f"{self.folder} is in use by a minires {self.owner} on host {holder.host} "
                    f"(pid {holder.pid}); if it no longer runs, delete {self.path}")
        return (f"another minires {self.owner} (pid {holder.pid}) is running in {self.folder}; "
                f"wait for it to end, or choose another folder")

    def _stale_note(self, holder: Holder) -> str:
        if holder.data is None:
            return f"removed an unreadable lock file {self.path} left by a killed process"
        return (f"removed the lock of an earlier {self.owner} (pid {holder.pid}) that is no "
                f"longer running")

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
