"""How the command line reports failures: one line in words, the right exit status, and a
traceback only for a mistake in minires itself."""
import errno

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import minires.train as mtrain
from fault_helpers import assert_one_error_line
from minires.cli.errors import describe_error, describe_os_error, raised_by_dependency
from minires.cli.main import cli


@pytest.mark.parametrize("error, expected", [
    (OSError(errno.ENOSPC, "No space left on device writing", "runs/a/last.h5"),
     "no space left on device writing runs/a/last.h5; free some space and run it again"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"),
     "read-only file system: /mnt/ro/run; choose a folder on a writable file system"),
    (PermissionError(errno.EACCES, "Permission denied", "data/cifar10.h5"),
     "permission denied: data/cifar10.h5"),
    (OSError(errno.ENOSPC, "Can't synchronously write data (file write failed: time = Sun\n, "
                           "errno = 28, error message = 'No space left on device')"),
     "[Errno 28] Can't synchronously write data (file write failed: time = Sun , errno = 28, "
     "error message = 'No space left on device'); free some space and run it again"),
])
def test_os_errors_are_said_in_words_on_one_line(error, expected):
    assert describe_os_error(error) == expected


def _h5py_runtime_error(tmp_path):
    """A real RuntimeError raised inside h5py: an attribute written to a closed file."""
    f = h5py.File(tmp_path / "closed.h5", "w")
    dataset = f.create_dataset("x", data=np.zeros(3))
    f.close()
    try:
        dataset.attrs["a"] = 1
    except RuntimeError as exc:
        return exc
    pytest.fail("h5py accepted an attribute on a closed file")


def test_runtime_errors_of_dependencies_are_one_line_and_our_own_keep_their_traceback(
        tmp_path, monkeypatch, tiny_dataset):
    from_h5py = _h5py_runtime_error(tmp_path)
    assert raised_by_dependency(from_h5py) and not raised_by_dependency(RuntimeError("ours"))

    def fail_in_h5py(*args, **kwargs):
        raise from_h5py

    args = ["train", "--dataset", str(tiny_dataset), "--depth", "8", "-o", str(tmp_path / "r")]
    monkeypatch.setattr(mtrain, "load_dataset", fail_in_h5py)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert_one_error_line(result.output, "Can't synchronously")

    def fail_in_minires(*args, **kwargs):
        raise RuntimeError("a mistake in minires")

    monkeypatch.setattr(mtrain, "load_dataset", fail_in_minires)
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, RuntimeError)  # not hidden: it is a bug to report


def test_running_out_of_memory_is_one_line(tmp_path, monkeypatch, tiny_dataset):
    def allocate_too_much(*args, **kwargs):
        return np.empty(1 << 60, dtype=np.uint8)  # a real MemoryError from NumPy

    monkeypatch.setattr(mtrain, "load_dataset", allocate_too_much)
    result = CliRunner().invoke(cli, ["train", "--dataset", str(tiny_dataset), "--depth", "8",
                                      "-o", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert_one_error_line(result.output, "out of memory (Unable to allocate",
                          "try a smaller --batch-size")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option", ["--run-dir", "--data-dir", "--dataset"])
def test_an_empty_path_is_a_usage_error(tmp_path, option):
    result = CliRunner().invoke(cli, ["train", option, ""] +
                                ([] if option == "--run-dir" else ["-o", str(tmp_path / "r")]))
    assert result.exit_code == 2
    assert_one_error_line(result.output, f"Invalid value for '{option}'", "got ''")


def test_an_invalid_resnet_depth_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--depth", "7", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert_one_error_line(result.output, "Invalid value for '--depth'", "6n + 2")


def test_numba_without_a_writable_cache_folder_says_what_to_set():
    error = RuntimeError("cannot cache function 'conv2d_forward': no locator available for "
                         "file '/usr/lib/python3/site-packages/minires/kernels/cpu/conv.py'")
    assert describe_error(error).endswith("; set NUMBA_CACHE_DIR to a writable folder")


def test_a_run_folder_name_too_long_for_the_file_system_is_one_line(tmp_path, tiny_dataset):
    run = tmp_path / ("x" * 300)
    result = CliRunner().invoke(cli, ["train", "--dataset", str(tiny_dataset), "--depth", "8",
                                      "--epochs", "1", "-o", str(run)])
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"file name too long: {run}")


def test_a_sweep_over_an_unknown_dataset_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--depth", "8", "--seeds", "1", "-o",
                                      str(tmp_path / "s"), "--dataset", "cifar11"])
    assert result.exit_code == 2
    assert_one_error_line(result.output, "Invalid value for '--dataset'", "'cifar11'")
    assert not (tmp_path / "s").exists()
