"""Run a planned sweep: ``minires train`` processes, up to ``jobs`` at once.

Each run is the real command line (``python -m minires train ...``) in a process of its own, so
a run that fails (a NaN, a full disk, a bad dataset) cannot stop the others, and what it prints
goes to ``train.log`` in its folder. The processes get their own process group: Ctrl-C in a
terminal reaches only the sweep, which passes exactly one SIGINT to each run; each then saves
its last completed epoch and exits, and starting the sweep again resumes them. A second Ctrl-C
while they save sends SIGTERM, a third SIGKILL.

The library never prints: ``on_event(kind, planned, outcome)`` reports ``skip``, ``start`` and
``finish`` (with an :class:`Outcome`).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from minires.errors import DataError
from minires.runs import read_run
from minires.sweep import command_line

# Exit statuses of ``minires train`` stopped by SIGINT, SIGTERM or SIGHUP (128 + the signal):
# it saved its last completed epoch first.
INTERRUPTED_EXITS = tuple(128 + s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))


@dataclass
class Outcome:
    """How a run ended: ``done``, ``failed`` or ``interrupted``.

    ``detail`` says why a run failed (for a non-zero exit: the last line of its log, usually
    ``Error: ...``) or what interrupted means; ``seconds`` is wall time including start-up;
    ``final_test_error`` is set for a run that is done.
    """

    name: str
    run_dir: str
    log_path: str
    status: str
    returncode: int
    seconds: float
    detail: str = ""
    final_test_error: float | None = None


@dataclass
class SweepResult:
    outcomes: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def run_plan(planned, common_args, jobs: int = 1, on_event=None, lock=None,
             poll_seconds: float = 0.2) -> SweepResult:
    """Train every planned run that is not complete, ``jobs`` at a time.

    While it runs (in the main thread), SIGINT, SIGTERM and SIGHUP stop the sweep: no new run
    starts, each run in progress gets one SIGINT, saves its last completed epoch and exits. A
    further signal more than a second later sends the runs SIGTERM, a third SIGKILL.

    Args:
        planned: :class:`minires.sweep.PlannedRun` list (from :func:`minires.sweep.plan`).
        common_args: ``minires train`` options shared by all runs.
        jobs: processes at once (>= 1).
        on_event: ``on_event(kind, planned_run, outcome_or_None)`` for reports.
        lock: a held :class:`minires.sweep.SweepLock`; each run's pid is recorded in it.
    Returns:
        a :class:`SweepResult`; ``interrupted`` is True when a signal stopped the sweep (once
        every run in progress has exited).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    report = on_event or (lambda kind, run, outcome: None)
    result = SweepResult()
    pending = []
    for run in planned:
        if run.action == "skip":
            result.skipped.append(run)
            report("skip", run, None)
        else:
            pending.append(run)
    pending.reverse()  # pop() from the end takes them in plan order
    active = {}        # Popen -> (planned run, start time)
    with _StopRequests() as stop:
        try:
            signalled = 0  # how many stop requests the runs have been told about
            while pending or active:
                if stop.requests() > signalled:
                    signalled = stop.requests()
                    result.interrupted = True
                    pending.clear()
                    _signal(active, ESCALATION[min(signalled, len(ESCALATION)) - 1])
                while pending and len(active) < jobs:
                    run = pending.pop()
                    report("start", run, None)
                    try:
                        process = _start(run, common_args)
                    except OSError as exc:  # no log or folder can be made: this run fails
                        outcome = Outcome(run.spec.name, run.run_dir, run.log_path, "failed",
                                          -1, 0.0, f"could not start: {exc}")
                        result.outcomes.append(outcome)
                        report("finish", run, outcome)
                        continue
                    active[process] = (run, time.monotonic())
                    if lock is not None:
                        lock.record(run.spec.name, process.pid)
                for process in [p for p in active if p.poll() is not None]:
                    run, started = active.pop(process)
                    outcome = _finish(run, process.returncode, time.monotonic() - started, lock,
                                      stopped=result.interrupted)
                    result.outcomes.append(outcome)
                    report("finish", run, outcome)
                if active:
                    time.sleep(poll_seconds)
        except BaseException:
            # A failure here (or a KeyboardInterrupt outside the main thread): the runs in
            # progress save and exit before the exception goes on.
            _signal(active, signal.SIGINT)
            for process in active:
                process.wait()
            raise
    return result


# Signals sent to the runs at the first, second and third stop request.
ESCALATION = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


class _StopRequests:
    """While installed, SIGINT, SIGTERM and SIGHUP only note when they came, so stopping the
    runs is never cut short by an exception. Signals less than :attr:`GRACE` seconds apart are
    one request: ``timeout`` and a terminal may deliver the same stop twice at once. A signal
    ignored when the sweep starts stays ignored, for the sweep and its runs (``nohup``)."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
    GRACE = 1.0

    def __init__(self):
        self.times = []
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame):
        self.times.append(time.monotonic())

    def requests(self) -> int:
        times = list(self.times)
        return (1 + sum(b - a > self.GRACE for a, b in zip(times, times[1:]))) if times else 0

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _signal(active: dict, sig) -> None:
    for process in active:
        if process.poll() is None:
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                pass


def _start(run, common_args) -> subprocess.Popen:
    os.makedirs(run.run_dir, exist_ok=True)
    args = run.train_args(common_args)
    with open(run.log_path, "ab") as log:
        header = (f"# minires sweep, {time.strftime('%Y-%m-%d %H:%M:%S')}, {run.action}: "
                  f"{command_line(args)}\n")
        log.write(header.encode())
        log.flush()
        # The child keeps its own copy of the log's file descriptor.
        process = subprocess.Popen(
            [sys.executable, "-m", "minires", "train", *args], stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, process_group=0,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return process


def _finish(run, returncode: int, seconds: float, lock, stopped: bool = False) -> Outcome:
    """The outcome of a run whose process exited; ``stopped``: the sweep was interrupted."""
    if lock is not None:
        lock.record(run.spec.name, None)
    outcome = Outcome(run.spec.name, run.run_dir, run.log_path, "failed", returncode, seconds)
    # Stopped by the sweep's SIGINT (or SIGTERM after a second Ctrl-C), or by a signal of its
    # own: last.h5 holds the last completed epoch, so starting the sweep again resumes the run.
    if returncode in INTERRUPTED_EXITS or (stopped and returncode < 0):
        outcome.status = "interrupted"
        outcome.detail = "last.h5 holds its last completed epoch; the sweep resumes it"
        return outcome
    if returncode != 0:
        outcome.detail = _last_line(run.log_path)
        return outcome
    try:
        finished = read_run(run.run_dir)
    except (DataError, OSError) as exc:
        outcome.detail = f"exited normally but its files cannot be read: {exc}"
        return outcome
    if not finished.complete:
        outcome.detail = f"exited normally but its metrics stop at {finished.progress()}"
        return outcome
    outcome.status = "done"
    outcome.final_test_error = finished.metrics[-1]["test_error"]
    return outcome


def _last_line(path) -> str:
    """The last non-empty line of a log (at most its last 4 kB are read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""
