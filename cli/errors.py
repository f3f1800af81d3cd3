"""Turn library exceptions into click's ``Error: ...``: exit 2 for a bad setting, 1 otherwise."""
from __future__ import annotations

import functools

import click

from minires.errors import ConfigError, MiniresError


def option_name(setting: str) -> str:
    """The command-line option of a setting: ``weight_decay`` -> ``--weight-decay``."""
    return "--" + setting.replace("_", "-")


def reports_errors(func):
    """Decorator for a command: expected failures print ``Error: <message>`` and exit 1; a
    setting out of range is a usage error (exit 2) naming its option."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            if exc.name is None:
                raise click.UsageError(str(exc)) from exc
            raise click.BadParameter(str(exc), param_hint=f"'{option_name(exc.name)}'") from exc
        except (MiniresError, OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    return wrapper
