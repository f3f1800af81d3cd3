"""The backend: the array-module layer works without CuPy and refuses 'cuda' clearly when
unusable, and both kernel sides implement one interface, picked in one place."""
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minires
import minires.functions
from minires import backend
from minires.kernels import cpu, cuda, interface


def test_numpy_is_the_default():
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.get_array_module(minires.Tensor(np.ones(2))) is np
    assert minires.Tensor([1.0, 2.0]).device == "cpu"


def test_device_names_are_validated():
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        backend.resolve_device("gpu")
    assert backend.resolve_device("cpu") == "cpu"


@pytest.mark.skipif(backend.cuda_available(), reason="a GPU is present")
def test_without_a_gpu_auto_is_cpu_and_cuda_is_a_clear_error():
    assert backend.resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="CuPy and a usable NVIDIA GPU"):
        backend.resolve_device("cuda")


def test_to_device_cpu_round_trip():
    a = np.arange(3.0)
    np.testing.assert_array_equal(backend.to_device(a, "cpu"), a)
    np.testing.assert_array_equal(backend.to_numpy(a), a)


# -- one backend interface ----------------------------------------------------------------------

def _family_modules(side):
    return {family: importlib.import_module(f"minires.kernels.{side}.{family}")
            for family in interface.FAMILIES}


def test_both_sides_export_the_same_functions_with_the_same_signatures():
    cpu_families, cuda_families = _family_modules("cpu"), _family_modules("cuda")
    for family, names in interface.FAMILIES.items():
        assert cpu_families[family].__all__ == list(names), family
        assert cuda_families[family].__all__ == list(names), family
        for name in names:
            on_cpu = getattr(cpu_families[family], name)
            on_gpu = getattr(cuda_families[family], name)
            assert inspect.signature(on_cpu) == inspect.signature(on_gpu), name
            # ...and each side's package re-exports them.
            assert getattr(cpu, name) is on_cpu and getattr(cuda, name) is on_gpu
    everything = {n for names in interface.FAMILIES.values() for n in names} | {"xp", "device"}
    assert set(cpu.__all__) == set(cuda.__all__) == everything


def test_the_interface_and_both_sides_import_without_cupy():
    code = ("import sys, importlib; from minires.kernels import interface\n"
            "for side in ('cpu', 'cuda'):\n"
            "    for family in interface.FAMILIES:\n"
            "        importlib.import_module(f'minires.kernels.{side}.{family}')\n"
            "import minires.backend, minires.kernels.cuda.loader, minires.kernels.cuda.launch\n"
            "assert 'cupy' not in sys.modules, 'cupy was imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_kernels_for_picks_the_side_of_the_arrays():
    device_array = type("ndarray", (), {"__module__": "cupy._core.core"})()
    assert backend.kernels_for(np.ones(2)) is cpu and cpu.xp is np and cpu.device == "cpu"
    assert backend.kernels_for(np.ones(2), device_array) is cuda and cuda.device == "cuda"
    assert backend.kernels_for(minires.Tensor(np.ones(2))) is cpu
    assert backend.kernels_for_module(np) is cpu
    assert backend.device_of(device_array) == "cuda" and backend.device_of(np.ones(1)) == "cpu"


def test_functions_never_ask_for_the_device():
    """minires.functions is the maths plus calls into the kernels its Function was given."""
    device_tests = re.compile(r"is_cuda_array|xp is np|xp is not np|__name__ ==|_on_gpu|"
                              r"get_array_module|^(from|import) minires\.kernels\.(cpu|cuda)")
    root = Path(minires.functions.__file__).parent
    for path in sorted(root.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not device_tests.search(line), f"{path.name}:{number}: {line.strip()}"


def test_one_conv_output_size_for_the_library():
    assert interface.conv_output_size(32, 3, 2, 1) == 16
    assert interface.conv_output_size(5, 2, 2, 0) == 2
