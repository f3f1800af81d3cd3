"""One progress renderer for every command: click progress bars on stderr.

The library reports progress as ``(label, done, total)`` (``minires prepare``) or as one
:class:`~minires.train.BatchProgress` per batch (``minires train``); :class:`ProgressBars` draws
one click progress bar per label. click draws a bar only when stderr is a terminal; elsewhere it
writes each label once.
"""
from __future__ import annotations

import sys

import click


class ProgressBars:
    """``bars(label, done, total)`` advances the bar of ``label``, starting a new bar (and
    finishing the previous one) when the label changes; :meth:`close` finishes the last."""

    def __init__(self):
        self.label = None
        self.bar = None
        self.done = 0

    def __call__(self, label: str, done: int, total: int | None) -> None:
        if label != self.label:
            self.close()
            self.label, self.done = label, 0
            self.bar = click.progressbar(length=total, label=label, file=sys.stderr,
                                         show_pos=total is not None and total < 10_000,
                                         bar_template="%(label)s [%(bar)s] %(info)s")
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
            self.label = None


def progress_option(command):
    """The ``--progress/--no-progress`` option (default: whether stderr is a terminal)."""
    return click.option("--progress/--no-progress", default=None,
                        help="Progress bars on stderr  [default: when stderr is a terminal]"
                        )(command)


def progress_bars(progress: bool | None) -> ProgressBars | None:
    """The renderer a command uses: None when ``progress`` is off (None: stderr is a terminal)."""
    if progress is None:
        progress = sys.stderr.isatty()
    return ProgressBars() if progress else None
