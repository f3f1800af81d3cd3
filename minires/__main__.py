"""``python -m minires ...``: the ``minires`` command, also where no console script is on PATH
(``minires sweep`` starts its runs this way, with the same Python)."""
from minires.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="minires")
