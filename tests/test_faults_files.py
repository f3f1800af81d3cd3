"""Faults in files, each reproduced with real files: inconsistent and damaged datasets, flipped
bits in checkpoints and datasets, a full disk while preparing or training, read-only folders,
malicious pickles, signals while preparing, the wrong kind of file or folder (see
docs/reliability.md)."""
import errno
import importlib.util
import os
import pickle
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fault_helpers import (TINY_RUN, assert_one_error_line, flip_bytes_in_dataset, leftovers,
                           minires_command, run_minires, snapshot)
from minires import atomicfile, checkpoint, diskspace
from minires.checkpoint import load_checkpoint, save_checkpoint
from minires.cli.main import cli
from minires.data import store_writer
from minires.models import create
from test_data_builders import cifar10_members, make_cifar10, write_tar_gz


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dataset):
    """A run of two epochs on the tiny dataset: config, metrics, last.h5 and best.h5."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(cli, ["train", *TINY_RUN, "--dataset", str(tiny_dataset),
                                      "--epochs", "2", "-o", str(run)])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- datasets that are wrong (issue item 9) -----------------------------------------------------

def _rewrite(path, key, data):
    with h5py.File(path, "a") as f:
        del f[key]
        f.create_dataset(key, data=data)


def _edit(path, change):
    with h5py.File(path, "a") as f:
        change(f)


def _small_train_images(path):
    _rewrite(path, "train/images", np.zeros((256, 3, 16, 16), np.uint8))


def _float_labels(path):
    _rewrite(path, "train/labels", np.linspace(0, 9, 256, dtype=np.float32))


def _no_training_images(path):
    _rewrite(path, "train/images", np.zeros((0, 3, 32, 32), np.uint8))
    _rewrite(path, "train/labels", np.zeros((0,), np.int64))


def _label_out_of_range(path):
    _edit(path, lambda f: f["test/labels"].__setitem__(0, 10))


def _float_images(path):
    _rewrite(path, "test/images", np.zeros((128, 3, 32, 32), np.float32))


def _nine_names(path):
    _rewrite(path, "label_names", np.array([f"c{i}" for i in range(9)],
                                           dtype=h5py.string_dtype()))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


BAD_DATASETS = {
    "train 16x16, test 32x32": (_small_train_images, "the images do not all have one size"),
    "float labels": (_float_labels, "/train/labels should be 256 integers"),
    "no mean attribute": (lambda p: _edit(p, lambda f: f.attrs.__delitem__("mean")),
                          "the mean attribute should be 3 finite numbers"),
    "mean of two channels": (
        lambda p: _edit(p, lambda f: f.attrs.__setitem__("mean", [0.5, 0.5])),
        "the mean attribute should be 3 finite numbers"),
    "a std of zero": (lambda p: _edit(p, lambda f: f.attrs.__setitem__("std", [0.2, 0, 0.2])),
                      "the std attribute should be 3 finite numbers"),
    "no training image": (_no_training_images, "has no train images"),
    "a label out of range": (_label_out_of_range, "/test/labels lie in 0..10, expected 0..9"),
    "float images": (_float_images, "/test/images should be uint8 (N, 3, S, S)"),
    "nine names for ten classes": (_nine_names, "names 9 classes but says num_classes=10"),
    "truncated": (_truncate, "is truncated"),
    "empty": (lambda p: p.write_bytes(b""), "is an empty file"),
    "not HDF5": (lambda p: p.write_text("images,labels\n"), "is not an HDF5 file"),
    "a folder": (lambda p: (p.unlink(), p.mkdir()), "is a folder"),
}


@pytest.mark.parametrize("case", BAD_DATASETS)
def test_a_bad_dataset_file_is_refused_alike_by_info_train_and_eval(case, tiny_dataset, trained,
                                                                    tmp_path):
    damage, message = BAD_DATASETS[case]
    path = tmp_path / "bad.h5"
    shutil.copy(tiny_dataset, path)
    damage(path)
    for args in (["info", path],
                 ["train", *TINY_RUN, "--dataset", path, "--epochs", 1, "-o", tmp_path / "run"],
                 ["eval", trained / "best.h5", "--dataset", path]):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert_one_error_line(result.output, str(path), message)
        assert "Training in" not in result.output
    assert not (tmp_path / "run").exists()  # checked before any run folder is created


def test_a_checkpoint_given_as_a_dataset_says_so(trained, tmp_path):
    for args in (["info", trained / "last.h5"],
                 ["train", *TINY_RUN, "--dataset", trained / "last.h5", "--epochs", 1, "-o",
                  tmp_path / "r"]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert_one_error_line(result.output, "is a minires checkpoint, not a dataset")
    assert not (tmp_path / "r").exists()


def test_a_dataset_given_as_a_checkpoint_says_so(tiny_dataset):
    result = invoke("eval", tiny_dataset)
    assert result.exit_code == 1
    assert_one_error_line(result.output, "is a prepared dataset, not a checkpoint")


@pytest.mark.parametrize("kind", ["run", "sweep", "plain"])
def test_a_folder_given_to_eval_says_which_file_to_give(trained, tmp_path, kind):
    folder = {"run": trained, "sweep": tmp_path, "plain": tmp_path / "plain"}[kind]
    if kind == "sweep":
        (tmp_path / "sweep.json").write_text("{}")
    folder.mkdir(exist_ok=True)
    result = invoke("eval", folder)
    assert result.exit_code == 2
    expected = {"run": f"give one of its checkpoints: {folder}/best.h5",
                "sweep": "is a sweep folder; give a checkpoint of one of its runs",
                "plain": "is a folder; expected a checkpoint file"}[kind]
    assert_one_error_line(result.output, expected)


# -- flipped bits (issue item 8) ----------------------------------------------------------------

def _largest_weight(path):
    with h5py.File(path, "r") as f:
        states = f["model/state"]
        return "model/state/" + max(states, key=lambda k: states[k].size)


def test_a_checkpoint_with_flipped_bits_is_refused_and_resume_overwrites_nothing(
        run_copy, tiny_dataset):
    last = run_copy / "last.h5"
    flip_bytes_in_dataset(last, _largest_weight(last), count=2048)
    before = snapshot(run_copy)
    result = invoke("eval", last, "--dataset", tiny_dataset)
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"{last} is corrupted", "checksum")
    resumed = invoke("train", "-o", run_copy, "--resume", "--epochs", "3")
    assert resumed.exit_code == 1
    assert_one_error_line(resumed.output, f"{last} is corrupted")
    assert snapshot(run_copy) == before  # best.h5 and the metrics are untouched, no lock left


def test_a_checkpoint_whose_epoch_or_metrics_changed_on_disk_is_refused(run_copy):
    last = run_copy / "last.h5"
    data = bytearray(last.read_bytes())
    at = data.find(b'"train_loss": ') + len(b'"train_loss": ')  # a digit in the metrics
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    last.write_bytes(bytes(data))
    result = invoke("eval", last)
    assert result.exit_code == 1
    assert_one_error_line(result.output, "epoch, configuration or metrics do not match their "
                                         "checksum")


def test_a_checkpoint_of_a_diverged_model_is_refused(tmp_path):
    model = create(depth=8, seed=0)
    state = model.state_dict()
    state["fc.weight"][0, 0] = np.nan
    model.load_state_dict(state)
    path = save_checkpoint(tmp_path / "nan.h5", model, epoch=1, config={},
                           model_spec={"depth": 8, "seed": 0})
    result = invoke("eval", path)
    assert result.exit_code == 1
    assert_one_error_line(result.output, "holds NaN or infinite values in fc.weight")


@pytest.fixture
def prepared(tmp_path):
    archive, _ = make_cifar10(tmp_path)
    result = invoke("prepare", "cifar10", "--from", archive, "--allow-checksum-mismatch",
                    "--data-dir", tmp_path / "data")
    assert result.exit_code == 0, result.output
    return tmp_path / "data" / "cifar10.h5"


@pytest.mark.parametrize("dataset", ["train/images", "test/images", "train/labels"])
def test_a_prepared_dataset_with_flipped_bits_is_refused(prepared, trained, tmp_path, dataset):
    assert "Fletcher-32 on images and labels" in invoke("info", prepared).output
    flip_bytes_in_dataset(prepared, dataset, count=64)
    commands = [["train", *TINY_RUN, "--dataset", prepared, "--epochs", 1, "-o", tmp_path / "run"],
                ["eval", trained / "best.h5", "--dataset", prepared]]
    if dataset.endswith("labels"):  # info reads (and so checks) labels, not images
        commands.append(["info", prepared])
    for args in commands:
        result = invoke(*args)
        assert result.exit_code == 1, result.output
        assert_one_error_line(result.output, f"{prepared} is corrupted: /{dataset} does not "
                                             f"match its checksum")
    assert not (tmp_path / "run").exists()


# -- prepare: folders, full disks, pickles, signals (issue items 1, 6 and also seen) ------------

def test_a_read_only_data_folder_is_refused_before_the_archive_is_read(tmpfs, tmp_path):
    read_only = tmpfs("1m", read_only=True)
    result = invoke("prepare", "cifar10", "--from", tmp_path / "not-even-there.tar.gz",
                    "--data-dir", read_only / "data")
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"read-only file system: {read_only}/data")


def test_a_data_folder_below_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    archive, _ = make_cifar10(tmp_path)
    result = invoke("prepare", "cifar10", "--from", archive, "--allow-checksum-mismatch",
                    "--data-dir", tmp_path / "file" / "data")
    assert result.exit_code == 1
    assert_one_error_line(result.output, "cannot create a folder under the file")


def test_a_full_disk_refuses_a_dataset_that_does_not_fit_and_keeps_the_old_one(
        tmpfs, tmp_path):
    disk = tmpfs("20m")
    small, _ = make_cifar10(tmp_path)
    first = invoke("prepare", "cifar10", "--from", small, "--allow-checksum-mismatch",
                   "--data-dir", disk)
    assert first.exit_code == 0, first.output
    before = snapshot(disk)
    (tmp_path / "big").mkdir()
    big, _ = make_cifar10(tmp_path / "big", per_batch=500, test=500)  # 9.2 MB of images
    result = invoke("prepare", "cifar10", "--from", big, "--allow-checksum-mismatch",
                    "--data-dir", disk)
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"no space left on device: writing {disk}/cifar10.h5 "
                                         f"needs about 10.4 MB and 16.8 MB to spare while writing",
                          "free some space")
    assert snapshot(disk) == before


FILL_THE_DISK_WHILE_WRITING = """
import collections, shutil, sys
# Another program fills the disk while the dataset is written: the free-space check passes.
shutil.disk_usage = lambda path: collections.namedtuple("U", "total used free")(1e12, 0, 1e12)
from minires.cli.main import cli
sys.exit(cli(sys.argv[1:], prog_name="minires"))
"""


def test_a_disk_that_fills_while_preparing_gives_one_line_and_no_crash(tmpfs, tmp_path):
    """HDF5 itself runs into the full disk: it used to crash the interpreter (exit 139)."""
    disk = tmpfs("20m")
    archive, _ = make_cifar10(tmp_path, per_batch=600, test=600)  # 11 MB + 16 MB reserve
    done = subprocess.run([sys.executable, "-c", FILL_THE_DISK_WHILE_WRITING, "prepare",
                           "cifar10", "--from", str(archive), "--allow-checksum-mismatch",
                           "--data-dir", str(disk), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert_one_error_line(done.stderr, f"no space left on device writing {disk}/cifar10.h5")
    assert os.listdir(disk) == [] and shutil.disk_usage(disk).used == 0


def test_a_full_disk_during_training_keeps_the_last_checkpoint(tmpfs, tiny_dataset):
    disk = tmpfs("1m")  # room for the first checkpoint, not for the next two
    result = invoke("train", *TINY_RUN, "--dataset", tiny_dataset, "--epochs", "3", "-o",
                    disk / "run")
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"no space left on device writing {disk}/run/",
                          f"continue with: minires train -o {disk}/run --resume")
    assert load_checkpoint(disk / "run" / "last.h5").epoch == 0
    assert leftovers(disk) == []


def test_a_full_disk_during_training_without_root(tmp_path, tiny_dataset, monkeypatch):
    """Where no tmpfs can be mounted: the disk fills half-way through writing best.h5."""
    real_write_bytes = checkpoint.write_bytes

    def write_onto_a_filling_disk(path, data):
        if not str(path).endswith("best.h5"):
            return real_write_bytes(path, data)
        with atomicfile.AtomicFile(path) as tmp, open(tmp, "wb") as f:
            f.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "write_bytes", write_onto_a_filling_disk)
    run = tmp_path / "run"
    result = invoke("train", *TINY_RUN, "--dataset", tiny_dataset, "--epochs", "2", "-o", run)
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"no space left on device writing {run}/best.h5",
                          f"continue with: minires train -o {run} --resume")
    assert load_checkpoint(run / "last.h5").epoch == 0 and not (run / "best.h5").exists()
    assert leftovers(run) == []


def test_a_disk_too_small_for_a_dataset_without_root(tmp_path, prepared, monkeypatch):
    """Where no tmpfs can be mounted: the file system reports 1 MB free."""
    before = snapshot(prepared.parent)
    monkeypatch.setattr(diskspace.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    (tmp_path / "again").mkdir()
    archive, _ = make_cifar10(tmp_path / "again", seed=3)
    result = invoke("prepare", "cifar10", "--from", archive, "--allow-checksum-mismatch",
                    "--data-dir", prepared.parent)
    assert result.exit_code == 1
    assert_one_error_line(result.output, "no space left on device: writing", "1.0 MB free")
    assert snapshot(prepared.parent) == before


def test_a_disk_too_full_for_the_first_checkpoint_leaves_no_folder(tmpfs, tiny_dataset):
    disk = tmpfs("300k")
    result = invoke("train", *TINY_RUN, "--dataset", tiny_dataset, "--epochs", "1", "-o",
                    disk / "run")
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"no space left on device writing {disk}/run/last.h5")
    assert os.listdir(disk) == []


def test_a_malicious_pickle_is_refused_naming_the_archive_and_member(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > evil.txt",))

    members, _ = cifar10_members()
    members["data_batch_2"] = pickle.dumps({"data": Evil()}, protocol=2)
    archive = write_tar_gz(tmp_path / "c.tar.gz", "cifar-10-batches-py", members)
    result = invoke("prepare", "cifar10", "--from", archive, "--allow-checksum-mismatch",
                    "--data-dir", tmp_path / "data")
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"refusing to unpickle {archive}:cifar-10-batches-py/"
                                         f"data_batch_2: it would call {os.system.__module__}"
                                         f".system")
    assert not (tmp_path / "evil.txt").exists() and not os.path.exists("evil.txt")
    assert not (tmp_path / "data" / "cifar10.h5").exists()


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_preparing_removes_the_partial_file(prepared, tmp_path, monkeypatch, request,
                                                           sig, status):
    """A real signal, sent to this process while the new file is being written."""
    # Python's own SIGINT handler, even when the tests run in a job that ignores SIGINT.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    before = snapshot(prepared.parent)
    real_append = store_writer.StoreWriter.append

    def append_then_signal(self, *args, **kwargs):
        real_append(self, *args, **kwargs)
        os.kill(os.getpid(), sig)

    monkeypatch.setattr(store_writer.StoreWriter, "append", append_then_signal)
    (tmp_path / "again").mkdir()
    archive, _ = make_cifar10(tmp_path / "again", seed=5)
    result = invoke("prepare", "cifar10", "--from", archive, "--allow-checksum-mismatch",
                    "--data-dir", prepared.parent)
    assert result.exit_code == status, result.output
    assert f"Interrupted by {signal.Signals(sig).name}" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(prepared.parent) == before  # the old file, and nothing else


# -- outputs that cannot be written, and readers that go away ------------------------------------

@pytest.mark.parametrize("command, output", [
    pytest.param("plot", "errors.png", marks=pytest.mark.skipif(
        importlib.util.find_spec("matplotlib") is None,
        reason="plot needs the optional matplotlib")),
    ("compare", "table.md"),
])
def test_outputs_into_a_read_only_folder_are_one_line(tmpfs, trained, command, output):
    read_only = tmpfs("1m", read_only=True)
    result = invoke(command, trained, "-o", read_only / output)
    assert result.exit_code == 1, result.output
    assert_one_error_line(result.output, "read-only file system")


def test_output_into_a_closed_pipe_ends_quietly(trained):
    process = subprocess.Popen(minires_command("compare", trained), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before anything is written (as `| head -0`)
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE
    assert stderr == ""


def test_info_of_an_unreadable_file_names_it(tiny_dataset, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "secret.h5"
    shutil.copy(tiny_dataset, path)
    path.chmod(0)
    result = run_minires("info", path)
    assert result.returncode == 1
    assert_one_error_line(result.stderr, f"permission denied: {path}")
