"""The array-module layer works without CuPy and refuses 'cuda' clearly when unusable."""
import numpy as np
import pytest

import minires
from minires import backend


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
