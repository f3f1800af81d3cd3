"""Room on the disk for a large file: checked before writing, and a reserve held while writing.

HDF5 does not survive a full disk well: after a write fails, closing the file fails too, and the
half-closed file crashes the interpreter when it is collected (a segfault at exit, after several
tracebacks). So a prepared dataset is never written into the last bytes of a disk:

- :func:`check_free_space` compares what is about to be written (the whole file when the image
  counts are known, else each batch before it is appended) with the free space, so that a disk
  too small fails at once, before HDF5 writes into it;
- a :class:`SpaceReserve` of :data:`RESERVE_BYTES` is allocated (``posix_fallocate``: the
  blocks are really taken) before the file is opened and released before it is closed, so
  that HDF5 always has room to flush and close, even when another program filled the disk
  while the file was being written.

(Checkpoints need neither: they are built in memory and written with plain Python, whose
failures are clean; see :mod:`minires.checkpoint`.)
"""
from __future__ import annotations

import errno
import os
import shutil

# Room HDF5 needs to flush and close a file after a failed write: its metadata and the chunks
# in its cache (chunks are at most 4 MiB, minires.data.store_writer.CHUNK_BYTES). Measured on a
# full tmpfs: 4 MiB was enough to close cleanly, 1 MiB was not.
RESERVE_BYTES = 16 << 20


def check_free_space(folder, needed: int, what, spare: int = 0) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``what`` when ``folder``'s file system has less than
    ``needed + spare`` bytes free (for an unprivileged user); ``spare`` is room needed only
    while writing (the reserve)."""
    free = shutil.disk_usage(folder).free
    if free < needed + spare:
        extra = f" and {megabytes(spare)} to spare while writing" if spare else ""
        raise OSError(errno.ENOSPC, f"No space left on device: writing {what} needs about "
                                    f"{megabytes(needed)}{extra}, {folder} has "
                                    f"{megabytes(free)} free", os.fspath(what))


def megabytes(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


class SpaceReserve:
    """A file of ``size`` bytes at ``path`` that keeps that much room on the disk until
    :meth:`release`. Name it like a temporary file of the destination, so that the reserve of a
    killed process is removed with its other temporaries."""

    def __init__(self, path, size: int = RESERVE_BYTES):
        self.path = os.fspath(path)
        self.size = int(size)
        self.held = False

    def hold(self) -> None:
        """Allocate the reserve; ``OSError(ENOSPC)`` when the disk cannot hold it."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.held = True
        try:
            _allocate(fd, self.size)
        except BaseException:
            os.close(fd)
            self.release()
            raise
        os.close(fd)

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _allocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except AttributeError:
        pass  # no posix_fallocate (macOS)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    # Write the bytes instead; random ones, which a compressing file system cannot shrink.
    block = os.urandom(1 << 20)
    for start in range(0, size, len(block)):
        os.write(fd, block[:size - start])
    os.fsync(fd)
