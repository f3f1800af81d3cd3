"""Dataset commands: ``minires prepare`` and ``minires info``."""

COMMANDS = []
