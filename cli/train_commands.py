"""Training commands: ``minires train``, ``eval``, ``summary``, ``gradcheck``, ``explain``,
``plot``."""

COMMANDS = []
