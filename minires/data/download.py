"""Downloading an official archive: stream to a temporary file, check it, then rename.

Only the CIFAR archives are ever downloaded (downsampled ImageNet needs a login). Nothing is
left under the final name unless the whole file arrived and passed ``check``.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from minires.atomicfile import AtomicFile
from minires.errors import DataError

CHUNK = 1 << 20


def download(url: str, dest, progress=None, check=None, opener=None, timeout: float = 60.0
             ) -> Path:
    """Fetch ``url`` into ``dest`` atomically and return ``dest``.

    Args:
        url: an ``https://`` (or, in tests, ``file://``) address.
        dest: final path; its folder is created if needed.
        progress: optional ``progress(label, done_bytes, total_bytes_or_None)``.
        check: optional ``check(tmp_path)`` run on the complete download before the rename;
            whatever it raises aborts the download (the temporary file is removed).
        opener: replaces ``urllib.request.urlopen`` (same call signature), for tests.
    Raises:
        DataError: the address cannot be reached or the transfer ends early.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or urllib.request.urlopen
    label = f"download {dest.name}"
    # On any failure (Ctrl-C included) the temporary file is removed and dest is untouched.
    with AtomicFile(dest) as tmp:
        try:
            response = opener(url, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(f"could not download {url} ({reason}); download it on a machine "
                            f"with network access and pass it with --from") from exc
        with response, open(tmp, "wb") as f:
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length and length.isdigit() else None
            done = 0
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, urllib.error.URLError) as exc:
                    raise DataError(f"download of {url} failed after {done} bytes: {exc}"
                                    ) from exc
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(label, done, total)
        if total is not None and done != total:
            raise DataError(f"download of {url} ended early: got {done} of {total} bytes")
        if check is not None:
            check(tmp)
    return dest
