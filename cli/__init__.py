"""The ``minires`` command line (installed as ``minires.cli``)."""
