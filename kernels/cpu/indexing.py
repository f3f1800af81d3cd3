"""Scatter-add for the backward pass of indexing with integer or boolean arrays."""
from __future__ import annotations

import numpy as np

__all__ = ["scatter_add"]


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` in place, where an element selected twice gets both values
    (a plain ``+=`` through a fancy index would keep only one of them)."""
    np.add.at(target, index, values)
