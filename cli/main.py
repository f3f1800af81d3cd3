"""The ``minires`` click group.

Each command lives in a module of its own concern and calls one library function; this module
only assembles them. Library errors (``MiniresError`` and ``ValueError``/``OSError`` raised with a
message) become ``Error: ...`` and exit status 1; usage errors exit 2 (click's convention).
"""
from __future__ import annotations

import click

from minires import __version__
from minires.cli import (data_commands, inspect_commands, model_commands, sweep_commands,
                         train_commands)

CONTEXT_SETTINGS = {"auto_envvar_prefix": "MINIRES", "show_default": True,
                    "help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="minires")
def cli():
    """minires: ResNets with shared convolution weights, on a from-scratch autograd engine."""


for module in (data_commands, model_commands, train_commands, inspect_commands, sweep_commands):
    for command in module.COMMANDS:
        cli.add_command(command)
