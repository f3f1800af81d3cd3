"""File checksums (md5 for the CIFAR archives, sha256 for everything else)."""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_digest(path, algorithm: str = "md5", progress=None, label: str | None = None) -> str:
    """Hex digest of the file at ``path``.

    ``progress``: optional ``progress(label, done_bytes, total_bytes)`` called while reading.
    """
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.new(algorithm)
    done = 0
    label = label or f"{algorithm} {path.name}"
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK * 8):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(label, done, total)
    return digest.hexdigest()


def bytes_digest(payload: bytes, algorithm: str = "md5") -> str:
    return hashlib.new(algorithm, payload).hexdigest()
