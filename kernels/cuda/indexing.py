"""Scatter-add on the GPU, through ``cupyx.scatter_add``."""
from __future__ import annotations

__all__ = ["scatter_add"]


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` in place, where an element selected twice gets both values
    (a plain ``+=`` through a fancy index would keep only one of them)."""
    import cupyx  # part of CuPy, an optional dependency: imported when it first runs
    cupyx.scatter_add(target, index, values)
