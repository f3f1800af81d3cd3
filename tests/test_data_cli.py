"""``minires prepare`` and ``minires info`` as a user runs them."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from minires.cli.main import cli
from test_data_builders import make_cifar10, write_imagenet


@pytest.fixture
def runner():
    try:
        return CliRunner(mix_stderr=False)          # click < 8.2
    except TypeError:
        return CliRunner()                          # click >= 8.2 keeps stderr apart


def test_prepare_and_info(runner, tmp_path):
    archive, _ = make_cifar10(tmp_path)
    data_dir = tmp_path / "data"
    result = runner.invoke(cli, ["prepare", "cifar10", "--from", str(archive), "--data-dir",
                                 str(data_dir), "--allow-checksum-mismatch"])
    assert result.exit_code == 0, result.output
    assert "Warning: checksum mismatch" in result.stderr
    assert hashlib.md5(archive.read_bytes()).hexdigest() in result.stderr
    assert str(data_dir / "cifar10.h5") in result.stdout
    result = runner.invoke(cli, ["info", str(data_dir / "cifar10.h5")])
    assert result.exit_code == 0, result.output
    for text in ("cifar10", "train", "(100, 3, 32, 32)", "test", "(30, 3, 32, 32)",
                 "airplane", "md5", "NOT verified"):
        assert text in result.stdout


def test_data_dir_from_environment(runner, tmp_path):
    archive, _ = make_cifar10(tmp_path)
    result = runner.invoke(cli, ["prepare", "cifar10", "--from", str(archive),
                                 "--allow-checksum-mismatch", "--no-progress"],
                           env={"MINIRES_DATA": str(tmp_path / "env")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env" / "cifar10.h5").exists()


def test_checksum_mismatch_is_an_error(runner, tmp_path):
    archive, _ = make_cifar10(tmp_path)
    result = runner.invoke(cli, ["prepare", "cifar10", "--from", str(archive), "--data-dir",
                                 str(tmp_path / "data")])
    assert result.exit_code == 1
    assert "Error: checksum mismatch" in result.stderr
    assert "c58f30108f718f92721af3b95e74349a" in result.stderr
    assert hashlib.md5(archive.read_bytes()).hexdigest() in result.stderr
    assert not (tmp_path / "data" / "cifar10.h5").exists()


def test_unknown_dataset_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(cli, ["prepare", "cifar11", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "cifar10" in result.stderr and "imagenet64" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["prepare", "cifar10", "--from", "{tmp}/missing.tar.gz"], "does not exist"),
    (["prepare", "imagenet32"], "never downloaded"),
    (["prepare", "imagenet32", "--from", "{tmp}"], "missing train_data_batch_1"),
    (["info", "{tmp}/missing.h5"], "does not exist"),
    (["info", "{tmp}/truncated.h5"], "truncated"),
    (["prepare", "cifar10", "--from", "{tmp}/a", "--from", "{tmp}/b"], "takes one --from"),
])
def test_bad_input_gives_error_and_exit_1(runner, tmp_path, args, message):
    (tmp_path / "truncated.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    args = [a.format(tmp=tmp_path) for a in args]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert "Traceback" not in result.output


def test_imagenet_with_several_from(runner, tmp_path, monkeypatch):
    from minires.data import catalog

    monkeypatch.setitem(catalog.IMAGENET_SIZES, "imagenet64", 8)
    sources, _ = write_imagenet(tmp_path / "in", layout="zip64")
    args = ["prepare", "imagenet64", "--data-dir", str(tmp_path / "d")]
    for s in sources:
        args += ["--from", str(s)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["info", str(tmp_path / "d" / "imagenet64.h5")])
    assert "sha256" in result.stdout and "official val split" in result.stdout


def test_console_entry_point_in_a_subprocess(tmp_path):
    archive, _ = make_cifar10(tmp_path)
    env = dict(os.environ, MINIRES_DATA=str(tmp_path / "data"))
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-c", "from minires.cli.main import cli; cli()", *args],
        capture_output=True, text=True, env=env, timeout=120)
    bad = run("prepare", "cifar10", "--from", str(archive))
    assert bad.returncode == 1 and bad.stderr.startswith("Error: checksum mismatch")
    good = run("prepare", "cifar10", "--from", str(archive), "--allow-checksum-mismatch")
    assert good.returncode == 0, good.stderr
    assert good.stderr.startswith("Warning: checksum mismatch")   # no progress bar: not a tty
    assert (tmp_path / "data" / "cifar10.h5").exists()
