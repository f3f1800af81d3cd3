"""The training commands through click (and one real subprocess of the console script)."""
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

import minires.data
import minires.functions as F
import minires.gradcheck
from minires.autograd import Function
from minires.gradcheck import GradcheckCase
from minires.backend import DEVICES
from minires.cli.main import cli
from minires.models import SHARE_MODES
from minires.optim import SCHEDULES
from minires.run_config import TrainConfig
from minires.run_dir import METRIC_COLUMNS

pytestmark = pytest.mark.usefixtures("embedded_generated_once")


TINY = ["--depth", "8", "--subset", "64", "--test-subset", "32", "-b", "32", "--lr", "0.05",
        "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, embedded_generated_once):
    """One tiny training run through the CLI, shared by the tests that read its output."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(cli, ["train", *TINY, "--epochs", "2", "--shared",
                                      "-o", str(run_dir)])
    return run_dir, result


def test_train_writes_the_run_directory(run):
    run_dir, result = run
    assert result.exit_code == 0, result.output
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "last.h5", "best.h5"):
        assert (run_dir / name).is_file(), name
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == METRIC_COLUMNS
        assert [int(row["epoch"]) for row in reader] == [1, 2]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["share"] == "block" and config["depth"] == 8 and config["subset"] == 64
    # One summary line per epoch on stdout, with the test error as printed percent.
    lines = [line for line in result.output.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line, row in zip(lines, rows):
        assert f"err {100 * row['test_error']:5.2f}%" in line and "img/s" in line
    assert "Best test error" in result.output


def test_eval_reports_the_checkpoint_test_error(run):
    run_dir, _ = run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result = CliRunner().invoke(cli, ["eval", str(run_dir / "last.h5"), "--device", "cpu",
                                      "--test-subset", "32"])
    assert result.exit_code == 0, result.output
    assert "resnet8 share=block after 2 epoch(s)" in result.output
    assert "embedded test split (32 images, cpu)" in result.output
    # The same 32 test images as the run's last epoch: the same error, to the printed digit.
    assert f"test error {100 * rows[-1]['test_error']:.2f}%" in result.output


def test_resume_continues_the_run(run, tmp_path):
    run_dir, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    result = CliRunner().invoke(cli, ["train", "-o", str(copy), "--resume", "--epochs", "3",
                                      "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Resuming" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("epoch")]
    assert len(lines) == 1 and lines[0].startswith("epoch 3/3")
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    # Settings that define the run cannot change on resume.
    result = CliRunner().invoke(cli, ["train", "-o", str(copy), "--resume", "--depth", "14",
                                      "--no-progress"])
    assert result.exit_code == 1 and "Error: cannot resume" in result.output


def test_keyboard_interrupt_exits_130_with_a_resume_hint(tmp_path, monkeypatch):
    import minires.train as mtrain
    real_train = mtrain.train

    def interrupted(config, on_batch=None, **callbacks):
        def stop(progress):
            raise KeyboardInterrupt
        return real_train(config, on_batch=stop, **callbacks)

    monkeypatch.setattr(mtrain, "train", interrupted)
    result = CliRunner().invoke(cli, ["train", *TINY, "--epochs", "1", "-o",
                                      str(tmp_path / "run")])
    assert result.exit_code == 130
    assert "Interrupted by SIGINT (Ctrl-C) at epoch 1, batch 1." in result.output
    assert "--resume" in result.output
    assert (tmp_path / "run" / "last.h5").is_file()


def _console_command():
    script = shutil.which("minires")
    return [script] if script else [sys.executable, "-c",
                                    "from minires.cli.main import cli; cli()"]


def _run_with_terminal_stderr(command, timeout=300):
    """Run ``command`` with stderr on a pseudo-terminal (as in an interactive shell) and stdout
    on a pipe; return ``(returncode, stdout, stderr)``."""
    pty = pytest.importorskip("pty", reason="needs a POSIX pseudo-terminal")
    controller, terminal = pty.openpty()
    chunks = []

    def drain():  # read while the command runs, so that a full terminal buffer cannot block it
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # the terminal side was closed: the command has ended
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=terminal, text=True,
                              timeout=timeout)
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    return done.returncode, done.stdout, b"".join(chunks).decode(errors="replace")


def test_progress_bar_goes_to_stderr_and_milestones_imply_multistep(tmp_path):
    args = [a for a in TINY if a != "--no-progress"]
    code, stdout, stderr = _run_with_terminal_stderr(
        [*_console_command(), "train", *args, "--epochs", "2", "--milestones", "1",
         "-o", str(tmp_path / "run")])
    assert code == 0, stdout + stderr
    assert "epoch 2/2 [" in stderr and "] 2/2" in stderr
    assert "[" not in stdout.replace("[default", "")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["schedule"] == "multistep" and config["milestones"] == [1]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [row["lr"] for row in rows] == pytest.approx([0.05, 0.005])


@pytest.mark.parametrize("args", [
    ["train", "--arch", "vgg"],
    ["train", "--shared", "--share", "stage"],
    ["train", "--resume"],
    ["train", "--epochs", "0"],
    ["train", "--milestones", "10,5"],
    ["eval"],
    ["plot"],
])
def test_usage_errors_exit_2(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output


def test_missing_checkpoint_is_an_error_exit_1(tmp_path):
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "nope.h5")])
    assert result.exit_code == 1
    assert "Error: no checkpoint file" in result.output


def test_environment_variables_set_options(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--no-progress", "-o", str(tmp_path / "r")],
                                env={"MINIRES_TRAIN_ARCH": "vgg"})
    assert result.exit_code == 2 and "vgg" in result.output


def test_plot_writes_a_png(run, tmp_path):
    pytest.importorskip("matplotlib", reason="plot needs the optional matplotlib")
    run_dir, _ = run
    out = tmp_path / "curves.png"
    result = CliRunner().invoke(cli, ["plot", str(run_dir), str(run_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(cli, ["plot", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 1 and "is neither a run folder" in result.output


class _WrongDouble(Function):
    """y = 2x with a backward that returns 3 gy: a gradient check must catch it."""

    def forward(self, x):
        return 2 * x

    def backward(self, gy):
        return 3 * gy


def _cases(xp, wrong=False):
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((3, 4)))
    cases = [GradcheckCase("relu", F.relu, [x + xp.sign(x) * 0.1])]
    if wrong:
        cases.append(GradcheckCase("wrong double", lambda t: _WrongDouble()(t), [x]))
    return cases


def test_plot_without_matplotlib_says_what_to_install(run, tmp_path, monkeypatch):
    run_dir, _ = run
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import` raise ImportError
    result = CliRunner().invoke(cli, ["plot", str(run_dir), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "Error: plotting needs matplotlib" in result.output and "minires[plot]" in result.output


@pytest.mark.parametrize("wrong", [False, True])
def test_gradcheck_command_table_and_exit_status(monkeypatch, wrong):
    monkeypatch.setattr(minires.gradcheck, "standard_cases", lambda xp: _cases(xp, wrong))
    result = CliRunner().invoke(cli, ["gradcheck", "--device", "cpu"])
    rows = {line.split("  ")[0].strip(): line for line in result.output.splitlines()}
    assert rows["relu"].endswith("yes")
    if wrong:
        assert result.exit_code == 1 and rows["wrong double"].endswith("NO")
        assert "Error: 1 of 2 gradient checks failed: wrong double" in result.output
    else:
        assert result.exit_code == 0 and "all 1 gradient checks passed" in result.output


def test_console_script_runs_in_a_subprocess(run):
    run_dir, _ = run
    command = _console_command()
    # The test subset comes from the environment (MINIRES_<COMMAND>_<OPTION>).
    done = subprocess.run([*command, "eval", str(run_dir / "best.h5"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MINIRES_EVAL_TEST_SUBSET": "16"})
    assert done.returncode == 0, done.stderr
    assert "(16 images, cpu)" in done.stdout and "test error" in done.stdout


def test_plot_labels_tell_apart_runs_that_differ_only_by_seed():
    from minires.plot import run_labels

    shared = {"arch": "resnet", "depth": 20, "share": "block"}
    runs = [("runs/a", {**shared, "seed": 0}), ("runs/b", {**shared, "seed": 1}),
            ("runs/c", {**shared, "seed": 1}), ("runs/d", {**shared, "share": "none"})]
    assert run_labels(runs) == ["resnet20 shared (block), seed 0",
                                "resnet20 shared (block), seed 1, b",
                                "resnet20 shared (block), seed 1, c",
                                "resnet20 unshared"]


@pytest.mark.parametrize("option", ["--momentum", "--weight-decay", "--gamma", "--lr",
                                    "--warmup-epochs"])
def test_nan_option_values_are_usage_errors(tmp_path, option):
    result = CliRunner().invoke(cli, ["train", *TINY, option, "nan", "-o",
                                      str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    setting = option[2:].replace("-", "_")
    assert len(errors) == 1 and errors[0].endswith("got nan")
    assert errors[0].startswith(f"Error: Invalid value for '{option}': {setting} must be a "
                                f"finite number")
    assert "Traceback" not in result.output and "Training in" not in result.output
    assert not (tmp_path / "run").exists()


def test_train_options_come_from_the_run_configuration():
    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for f in dataclasses.fields(TrainConfig):
        if f.metadata["option"]:
            assert "--" + f.name.replace("_", "-") in text, f.name
            assert f.metadata["help"].split()[0] in text, f.name
    for default in ("128; x>=1", "0.1; x>0", "0.9; 0<=x<1", "0.0001; x>=0"):
        assert f"[default: {default}]" in text
    assert "[default: (20 for resnet; 20/28/36 for wrn on 16/32/64-pixel images); x>=1]" in text
    for choices in (SHARE_MODES, SCHEDULES, DEVICES):
        assert "|".join(choices) in text
    assert "--eval-batch-size" not in text  # a setting the command line leaves to its default
