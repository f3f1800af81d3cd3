"""How a command ends when something goes wrong: one line on stderr and an exit status.

- A setting out of range (``ConfigError``) is a usage error: exit status 2, naming its option.
- An expected failure (``MiniresError``, ``OSError``, ``ValueError``; ``MemoryError``; a
  ``RuntimeError`` raised inside h5py, numba, CuPy or the device layer) prints
  ``Error: <one line>`` and exits 1. A full disk, a read-only folder or a missing permission
  is said in words, naming the file.
- Ctrl-C, SIGTERM and SIGHUP unwind the command as Ctrl-C does (a file being written is
  discarded, a training run saves its last completed epoch) and exit ``128 + signal``: 130,
  143, 129, as a shell reports a process ended by that signal. A signal that was ignored when
  the command started (``nohup`` ignores SIGHUP) stays ignored.
- Output piped into a command that stops reading (``| head``) ends the command quietly.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import threading
import warnings

import click

from minires.errors import ConfigError, Interrupted, MiniresError

# Signals that stop a command the way Ctrl-C does (SIGINT already raises KeyboardInterrupt).
STOP_SIGNALS = ("SIGTERM", "SIGHUP")
# Where a RuntimeError comes from an outside condition (a full disk seen by HDF5, a folder numba
# cannot write its cache to, no GPU), not from a mistake in minires.
DEPENDENCIES = ("h5py", "numba", "cupy", "cupy_backends", "cupyx", "minires.backend")
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space and run it again",
    errno.EDQUOT: "free some space within your quota and run it again",
    errno.EROFS: "choose a folder on a writable file system",
}


def option_name(setting: str) -> str:
    """The command-line option of a setting: ``weight_decay`` -> ``--weight-decay``."""
    return "--" + setting.replace("_", "-")


def stop_signal(interruption: BaseException) -> int:
    """The signal behind a KeyboardInterrupt: SIGINT, or an ``Interrupted``'s own."""
    return getattr(interruption, "signum", signal.SIGINT)


def signal_name(signum: int) -> str:
    name = signal.Signals(signum).name
    return f"{name} (Ctrl-C)" if signum == signal.SIGINT else name


def reports_errors(func):
    """Decorator for a command: runs it under :func:`stop_signals` and turns the failures
    listed in this module's docstring into one line and the right exit status."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with stop_signals():
                result = func(*args, **kwargs)
                sys.stdout.flush()  # a closed pipe shows here, not at exit
                return result
        except ConfigError as exc:
            if exc.name is None:
                raise click.UsageError(one_line(str(exc))) from exc
            raise click.BadParameter(one_line(str(exc)),
                                     param_hint=f"'{option_name(exc.name)}'") from exc
        except KeyboardInterrupt as exc:
            echo_quietly(f"Interrupted by {signal_name(stop_signal(exc))}; no file was changed.")
            raise click.exceptions.Exit(128 + stop_signal(exc)) from None
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(128 + signal.SIGPIPE) from None
        except (MiniresError, OSError, ValueError, MemoryError) as exc:
            raise click.ClickException(describe_error(exc)) from exc
        except RuntimeError as exc:
            if not raised_by_dependency(exc):
                raise  # a mistake in minires itself: its traceback is what a report needs
            raise click.ClickException(describe_error(exc)) from exc
    return wrapper


@contextlib.contextmanager
def stop_signals():
    """While the block runs, SIGTERM and SIGHUP raise :class:`~minires.errors.Interrupted`
    (a KeyboardInterrupt). Only in the main thread, where Python runs signal handlers."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def describe_error(exc: BaseException) -> str:
    """The one-line message of an expected failure."""
    if isinstance(exc, OSError) and not isinstance(exc, MiniresError):
        return describe_os_error(exc)
    if isinstance(exc, MemoryError):
        return one_line(f"out of memory ({exc or 'no details'}); try a smaller --batch-size, "
                        f"or a machine with more memory")
    text = one_line(str(exc)) or type(exc).__name__
    if "cannot cache function" in text:  # numba, when its cache folder is not writable
        text += "; set NUMBA_CACHE_DIR to a writable folder"
    return text


def describe_os_error(exc: OSError, hint: bool = True) -> str:
    """``no space left on device writing runs/a/last.h5; free some space...`` for an OSError
    that names its file (``hint``: with what to do); HDF5's long messages are folded into one
    line."""
    if exc.filename is None or not exc.strerror:
        text = one_line(str(exc))
    elif os.fspath(exc.filename) in exc.strerror:  # the message names the file already
        text = one_line(exc.strerror[:1].lower() + exc.strerror[1:])
    else:
        reason = exc.strerror[:1].lower() + exc.strerror[1:]
        names = [os.fspath(name) for name in (exc.filename, exc.filename2) if name is not None]
        joiner = " " if reason.endswith(("writing", "reading")) else ": "
        text = reason + joiner + " -> ".join(names)
    advice = OS_ERROR_HINTS.get(exc.errno) if hint else None
    return f"{text}; {advice}" if advice else text


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(str(text).split())


def raised_by_dependency(exc: BaseException) -> bool:
    """True when ``exc`` was raised inside one of :data:`DEPENDENCIES` (its class, or the
    innermost frame of its traceback, belongs to one)."""
    modules = [type(exc).__module__]
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        modules.append(tb.tb_frame.f_globals.get("__name__", ""))
    return any(module == dep or module.startswith(dep + ".")
               for module in modules for dep in DEPENDENCIES)


@contextlib.contextmanager
def notes_on_stderr():
    """While the block runs, the library's own warnings (UserWarning: a stale lock removed...)
    are printed as ``Note: ...`` on stderr, each as it is issued; others as Python prints them,
    except NumPy's overflow warnings: a run that overflows on its way to NaN is stopped and
    reported by the training loop, with what to change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(overflow|invalid value) encountered",
                                RuntimeWarning)
        show = warnings.showwarning

        def note(message, category, *rest, **kwargs):
            if issubclass(category, UserWarning):
                echo_quietly(f"Note: {message}")
            else:
                show(message, category, *rest, **kwargs)

        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = note
        yield


def echo_quietly(message: str) -> None:
    """Print ``message`` on stderr, unless stderr is gone (a terminal that hung up)."""
    with contextlib.suppress(OSError, ValueError):
        click.echo(message, err=True)


def _silence_stdout() -> None:
    # The reader of our output is gone: later writes (and Python's flush at exit) go nowhere.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
