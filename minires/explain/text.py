"""Small helpers that lay out the lesson's numbers as text (the library never prints)."""
from __future__ import annotations

import textwrap

import numpy as np


def pick_entries(shape: tuple, count: int) -> list:
    """``count`` flat indices spread evenly over an array of ``shape`` (first and last
    included), so that a few entries stand for the whole weight."""
    size = int(np.prod(shape))
    count = max(1, min(int(count), size))
    return [int(k) for k in np.unique(np.linspace(0, size - 1, count).round().astype(int))]


def index_label(flat: int, shape: tuple) -> str:
    """``[o,c,i,j]``: the multi-index of flat index ``flat``."""
    return "[" + ",".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]"


def table(header: list, rows: list, width: int = 12, first_width: int | None = None) -> list:
    """Right-aligned columns: ``rows`` of ``[label, value, value, ...]``; floats get 6 decimals
    and strings (numbers already formatted) stay as they are."""
    first = first_width or max([len(str(header[0]))] + [len(str(r[0])) for r in rows])

    def cell(value):
        return f"{value:{width}.6f}" if isinstance(value, (float, np.floating)) \
            else f"{str(value):>{width}}"

    lines = [f"{header[0]:>{first}}  " + "  ".join(f"{h:>{width}}" for h in header[1:])]
    for row in rows:
        lines.append(f"{str(row[0]):>{first}}  " + "  ".join(cell(v) for v in row[1:]))
    return lines


def values(array, entries: list, width: int = 10) -> str:
    """The chosen flat ``entries`` of ``array``, side by side."""
    flat = np.asarray(array).reshape(-1)
    return "  ".join(f"{flat[k]:{width}.6f}" for k in entries)


def wrapped(text: str, indent: str = "", width: int = 96) -> list:
    """``text`` broken into lines of at most ``width`` characters, each starting with
    ``indent``."""
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False)


def heading(title: str) -> list:
    """A title and its underline, after a blank line."""
    return ["", title, "-" * len(title)]
