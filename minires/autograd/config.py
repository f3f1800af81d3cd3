"""Global switches of the autograd engine: gradient recording and debug checks."""
from __future__ import annotations

import contextlib


class _Config:
    enable_grad = True
    debug = False


config = _Config()


@contextlib.contextmanager
def _setting(name: str, value: bool):
    old = getattr(config, name)
    setattr(config, name, value)
    try:
        yield
    finally:
        setattr(config, name, old)


def no_grad():
    """Context manager: operations inside record no graph (evaluation, optimizer steps)."""
    return _setting("enable_grad", False)


def enable_grad():
    """Context manager: record the graph again inside a ``no_grad`` block."""
    return _setting("enable_grad", True)


def debug_mode(enabled: bool = True):
    """Context manager: check every op's outputs and gradients for shape, dtype and NaN/Inf.

    A failing check raises ``FloatingPointError`` or ``ValueError`` naming the op, so the first
    op that produced a bad value is found, not the loss that shows it many ops later.
    """
    return _setting("debug", enabled)


def set_debug(enabled: bool) -> None:
    """Turn debug checks on or off for the rest of the process."""
    config.debug = bool(enabled)
