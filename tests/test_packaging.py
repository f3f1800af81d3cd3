"""Installed layout: kernels/ and cli/ live under minires, and CuPy is never required."""
import subprocess
import sys

CHECK = """
import importlib.util, sys
import minires, minires.kernels, minires.cli.main
assert 'cupy' not in sys.modules, 'importing minires imported cupy'
assert importlib.util.find_spec('kernels') is None, 'a top-level kernels package is installed'
assert importlib.util.find_spec('cli') is None, 'a top-level cli package is installed'
assert importlib.util.find_spec('minires.kernels.cuda.reference') is None, 'test oracles shipped'
print(minires.kernels.__name__, minires.cli.main.__name__)
"""


def test_import_layout_from_a_neutral_directory(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["minires.kernels", "minires.cli.main"]
