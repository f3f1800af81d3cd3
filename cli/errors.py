"""Turn library exceptions into click's ``Error: ...`` with exit status 1."""
from __future__ import annotations

import functools

import click

from minires.errors import MiniresError


def reports_errors(func):
    """Decorator for a command: expected failures print ``Error: <message>`` and exit 1."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (MiniresError, OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    return wrapper
