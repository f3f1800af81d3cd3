"""Temporary files beside their destination: ``NAME.tmp-<pid>`` / ``NAME.part-<pid>``.

A run killed outright (SIGKILL, power loss) cannot remove its temporary file; the next run
removes those whose process is gone, so a failed run leaves nothing behind for long.
"""
from __future__ import annotations

import os
from pathlib import Path


def temp_path(dest: Path, tag: str) -> Path:
    """``dest`` with ``.{tag}-<pid>`` appended, in the same folder (so a rename is atomic)."""
    return dest.with_name(f"{dest.name}.{tag}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # exists but belongs to someone else
        return True
    return True


def remove_stale(dest: Path, tag: str) -> list:
    """Delete ``dest.{tag}-<pid>`` files left by processes that no longer exist."""
    removed = []
    if not dest.parent.is_dir():
        return removed
    for p in dest.parent.glob(f"{dest.name}.{tag}-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
