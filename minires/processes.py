"""Is a process still running? The check behind stale locks and stale temporary files.

A process id alone can mislead: once a process ends, the system may give its id to a new,
unrelated process. Where ``/proc`` exists (Linux), a process is therefore identified by its id
*and* its start time (field 22 of ``/proc/<pid>/stat``, in clock ticks since boot), and a
zombie (exited, not yet reaped by its parent) counts as gone. Elsewhere the id alone is used.
"""
from __future__ import annotations

import os


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot; None when it cannot be
    read (no such process, or no ``/proc``)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def process_alive(pid, start_time: int | None = None) -> bool:
    """True when process ``pid`` is running (this one included).

    Args:
        pid: a process id (anything else, such as None, is not alive).
        start_time: what :func:`process_start_time` said when the process was recorded; when
            given and readable now, a different value means the id was reused: not alive.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, but belongs to another user
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: trust the id
    if fields[0] == "Z":
        return False
    return start_time is None or int(fields[19]) == int(start_time)


def _stat_fields(pid: int):
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    fields = text.rsplit(")", 1)[-1].split()
    return fields if len(fields) > 19 else None
