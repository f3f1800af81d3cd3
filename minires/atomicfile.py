"""Files replaced atomically: written under a temporary name beside the destination, then renamed.

Every file minires writes (checkpoints, run files, prepared datasets, downloads) goes through
:class:`AtomicFile`::

    with AtomicFile(path) as tmp:      # tmp: a fresh name in path's folder
        write(tmp)                     # open, write and close it here
    # now path holds the new content, or, if the block raised, path is untouched and tmp is gone

Leaving the block normally flushes the temporary file to disk (``fsync``) and renames it over
``path`` with ``os.replace``: a reader sees the old file or the new one, never a mixture, even
after a power cut. Leaving it by any exception (``OSError`` from a full disk, an error raised
while closing an HDF5 file, ``KeyboardInterrupt``) removes the temporary file and re-raises.

The temporary name ``<name>.tmp-<pid>-<random>`` carries the writer's process id: a process
killed outright (SIGKILL, power loss) cannot clean up, so the next writer of the same
destination removes the temporaries whose process no longer exists.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
from pathlib import Path
from typing import NoReturn

from minires.processes import process_alive

TEMP_TAG = "tmp"


class AtomicFile:
    """A temporary file beside ``path`` that replaces ``path`` only once it is complete.

    Use it as a context manager (it yields the temporary path), or call :meth:`start`, then
    :meth:`commit` or :meth:`discard` yourself when the writing spans several calls (as
    ``minires.data.store_writer.StoreWriter`` does).
    The destination's folder must exist.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.tmp = self.path.with_name(
            f"{self.path.name}.{TEMP_TAG}-{os.getpid()}-{secrets.token_hex(4)}")

    def __enter__(self) -> Path:
        return self.start()

    def start(self) -> Path:
        """Remove the temporaries that dead processes left for this destination; return the
        temporary path to write."""
        remove_stale_temps(self.path)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
            return False
        self.discard()
        raise_named(exc, self.path)

    def commit(self) -> None:
        """Flush the temporary file to disk and rename it over the destination."""
        try:
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())  # the data is on disk before the name points at it
            os.replace(self.tmp, self.path)
        except BaseException as exc:
            self.discard()
            raise_named(exc, self.path)
        _fsync_folder(self.path.parent)

    def discard(self) -> None:
        """Remove the temporary file (if it was created); the destination is untouched."""
        self.tmp.unlink(missing_ok=True)


def raise_named(exc: BaseException, path) -> NoReturn:
    """Raise ``exc``; a failed write that names no file (a full disk gives ``write`` and
    ``fsync`` an OSError without one; HDF5 says ``errno = 28`` in the text of an OSError or
    RuntimeError) as an OSError of the same errno naming ``path`` instead:
    ``No space left on device writing <path>``."""
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if isinstance(exc, (OSError, RuntimeError)) and "errno = 28" in str(exc):
        code = errno.ENOSPC
    if code is None or (isinstance(exc, OSError) and exc.filename is not None):
        raise exc
    raise OSError(code, f"{os.strerror(code)} writing", os.fspath(path)) from exc


def write_bytes(path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with AtomicFile(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8, line endings as given) atomically."""
    write_bytes(path, text.encode("utf-8"))


def check_writable_folder(folder) -> None:
    """Raise OSError naming ``folder`` when no file can be created in it (or, when it does not
    exist yet, in the nearest folder above it that does, where it would be created).

    Checked by creating an unnamed temporary file: a read-only file system, a missing
    permission or a path through a file all show, as they would when writing.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot create a folder under the file "
                                                f"{existing}", os.fspath(folder))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fspath(folder)) from None


def remove_stale_temps(path) -> list:
    """Delete the temporaries of ``path`` left by processes that no longer exist.

    Returns the removed paths. A temporary of a live process (this one included) is kept.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for temp in path.parent.glob(f"{path.name}.{TEMP_TAG}-*"):
        pid = temp.name[len(path.name) + len(TEMP_TAG) + 2:].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable. Best effort: some file systems and platforms cannot
    # open or fsync a folder, and the new file is already complete under its name.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
