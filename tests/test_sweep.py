"""``minires sweep`` on tiny real runs: grid and names, dry-run, resume and skip, failures, Ctrl-C.

Runs are real ``minires train`` processes (ResNet-8 on the embedded dataset, 64 training and 32
test images, one or two epochs: a couple of seconds each).
"""
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from fault_helpers import signals_as_from_a_terminal

from minires.cli.main import cli
from minires.sweep import Grid, default_grid, expand

TINY = ["--subset", "64", "--test-subset", "32", "-b", "32", "--lr", "0.05", "--schedule",
        "constant", "--device", "cpu", "--no-progress"]
GRID = ["--depth", "8", "--share", "none,block", "--seeds", "1"]
NONE0, BLOCK0 = "embedded-resnet8-none-seed0", "embedded-resnet8-block-seed0"


def rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def error_lines(output):
    return [line for line in output.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, embedded_generated_once):
    """A sweep of two runs with --jobs 2: one new, one interrupted after 1 of 2 epochs (made
    beforehand by `minires train --epochs 1` into the folder the sweep gives that run)."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "s"
    early = CliRunner().invoke(cli, ["train", "--depth", "8", "--share", "block", "--seed", "0",
                                     *TINY, "--epochs", "1", "-o", str(sweep_dir / BLOCK0)])
    assert early.exit_code == 0, early.output
    early_rows = rows(sweep_dir / BLOCK0)
    result = CliRunner().invoke(cli, ["sweep", *GRID, "-o", str(sweep_dir), "-j", "2", *TINY,
                                      "--epochs", "2"])
    return sweep_dir, result, early_rows


def test_grid_expansion_and_run_names():
    grid = default_grid("resnet", depths=(20, 56), shares=("none", "block"), seeds=(0, 1))
    names = [spec.name for spec in expand(grid, "/data/my set.h5")]
    # Seed varies slowest, so a sweep stopped half-way holds complete pairs.
    assert names == ["my_set-resnet20-none-seed0", "my_set-resnet20-block-seed0",
                     "my_set-resnet56-none-seed0", "my_set-resnet56-block-seed0",
                     "my_set-resnet20-none-seed1", "my_set-resnet20-block-seed1",
                     "my_set-resnet56-none-seed1", "my_set-resnet56-block-seed1"]
    wide = expand(default_grid("wrn", depths=(16,), widths=(4, 8), shares=("block",),
                               seeds=(3,)), "cifar100")
    assert [s.name for s in wide] == ["cifar100-wrn16-4-block-seed3",
                                      "cifar100-wrn16-8-block-seed3"]
    assert wide[1].grid_args() == ["--depth", "16", "--width", "8", "--share", "block",
                                   "--seed", "3"]
    assert [s.depth for s in expand(default_grid("resnet"), "cifar10")] == [20, 20, 20, 20, 20, 20]
    with pytest.raises(ValueError, match="6n"):
        expand(Grid("resnet", (21,), (None,), ("none",), (0,)), "cifar10")
    with pytest.raises(ValueError, match="more than once"):
        expand(Grid("resnet", (20,), (None,), ("none",), (1, 1)), "cifar10")
    with pytest.raises(ValueError, match="needs its depths"):
        default_grid("wrn")
    with pytest.raises(ValueError, match="width"):
        expand(Grid("resnet", (20,), (4,), ("none",), (0,)), "cifar10")


def test_dry_run_prints_one_train_command_per_run_and_writes_nothing(tmp_path):
    sweep_dir = tmp_path / "dry"
    result = CliRunner().invoke(cli, ["sweep", "--depth", "8,14", "--share", "none,block",
                                      "--seeds", "0,3", "-o", str(sweep_dir), "--dry-run",
                                      "--epochs", "5", "--lr", "0.05"])
    assert result.exit_code == 0, result.output
    assert not sweep_dir.exists()
    lines = result.output.splitlines()
    assert len(lines) == 8
    train = cli.commands["train"]
    seen = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["minires", "train"]
        params = train.make_context("train", argv[2:]).params  # a valid train command line
        assert params["epochs"] == 5 and params["lr"] == 0.05 and not params["resume"]
        name = f"embedded-resnet{params['depth']}-{params['share']}-seed{params['seed']}"
        assert params["run_dir"] == str(sweep_dir / name)
        seen.append((params["seed"], params["depth"], params["share"]))
    assert seen == [(seed, depth, share) for seed in (0, 3) for depth in (8, 14)
                    for share in ("none", "block")]
    # A number of seeds counts from 0; "5," is the seed 5 alone.
    for seeds, expected in (("3", ["0", "1", "2"]), ("5,", ["5"])):
        result = CliRunner().invoke(cli, ["sweep", "--depth", "8", "--share", "none",
                                          "--seeds", seeds, "-o", str(sweep_dir), "--dry-run"])
        assert result.exit_code == 0, result.output
        assert [line.split("--seed ")[1].split()[0] for line in result.output.splitlines()] \
            == expected


def test_sweep_starts_new_runs_and_resumes_interrupted_ones(swept):
    sweep_dir, result, early_rows = swept
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    start = next(i for i, line in enumerate(out) if NONE0 in line and "start, log" in line)
    resume = next(i for i, line in enumerate(out)
                  if BLOCK0 in line and "resume from epoch 1 of 2" in line)
    first_done = next(i for i, line in enumerate(out) if "done in" in line)
    assert max(start, resume) < first_done  # --jobs 2: both ran at once
    assert "2 runs: 2 trained, 0 already complete, 0 failed" in result.output
    for name in (NONE0, BLOCK0):
        assert [row["epoch"] for row in rows(sweep_dir / name)] == [1, 2]
        assert (sweep_dir / name / "last.h5").is_file()
    # Resumed, not restarted: the first epoch is the one trained before the sweep.
    assert rows(sweep_dir / BLOCK0)[0] == early_rows[0]
    log = (sweep_dir / BLOCK0 / "train.log").read_text()
    assert "resume: minires train --depth 8 --share block --seed 0" in log
    assert "Resuming in" in log and "--resume" in log
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    assert manifest["runs"] == [NONE0, BLOCK0]
    assert manifest["grid"] == {"arch": "resnet", "depths": [8], "widths": [None],
                                "shares": ["none", "block"], "seeds": [0]}
    assert manifest["train_options"]["epochs"] == 2 and manifest["train_options"]["lr"] == 0.05
    assert not (sweep_dir / "sweep.lock").exists()
    compared = CliRunner().invoke(cli, ["compare", str(sweep_dir)])
    assert compared.exit_code == 0, compared.output
    assert "| resnet8 | block | embedded | constant | 2 |" in compared.output


def test_started_again_the_sweep_skips_complete_runs(swept):
    sweep_dir, result, _ = swept
    assert result.exit_code == 0, result.output
    files = [sweep_dir / name / f for name in (NONE0, BLOCK0)
             for f in ("metrics.jsonl", "last.h5", "train.log")]
    before = [f.stat().st_mtime_ns for f in files]
    # --prefetch and the device do not define a run: they may differ the second time.
    again = CliRunner().invoke(cli, ["sweep", *GRID, "-o", str(sweep_dir), *TINY,
                                     "--epochs", "2", "--prefetch"])
    assert again.exit_code == 0, again.output
    assert again.output.count("complete (epoch 2 of 2), skipped") == 2
    assert "0 trained, 2 already complete" in again.output
    assert [f.stat().st_mtime_ns for f in files] == before
    dry = CliRunner().invoke(cli, ["sweep", *GRID, "-o", str(sweep_dir), *TINY, "--epochs", "2",
                                   "--dry-run"])
    assert dry.exit_code == 0 and "minires train" not in dry.output


def test_a_different_grid_or_option_in_the_same_folder_is_refused(swept):
    sweep_dir, _, _ = swept
    manifest = (sweep_dir / "sweep.json").read_bytes()
    for change, message in (({"--seeds": "2"}, "seeds 0,1 (the sweep has 0)"),
                            ({"--epochs": "3"}, "epochs 3 (the sweep has 2)")):
        args = ["sweep", *GRID, "-o", str(sweep_dir), *TINY, "--epochs", "2"]
        for option, value in change.items():
            args[args.index(option) + 1] = value
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1
        assert error_lines(result.output) == [
            (f"Error: {sweep_dir} holds another sweep: {message}. Use another folder (compare "
             f"and plot accept several)")]
    assert (sweep_dir / "sweep.json").read_bytes() == manifest


@pytest.mark.parametrize("args, expected", [
    (["--epoch", "2"], "No such option '--epoch'"),
    (["--lr", "-1"], "Invalid value for '--lr'"),
    (["--seed", "1"], "--seed is set by the sweep for each run: use --seeds"),
    (["--run-dir", "x"], "--run-dir is set by the sweep"),
    (["--shared"], "--shared is set by the sweep for each run: use --share block"),
    (["--resume"], "--resume is set by the sweep"),
])
def test_a_bad_option_for_train_fails_at_once_in_one_line(tmp_path, args, expected):
    sweep_dir = tmp_path / "bad"
    result = CliRunner().invoke(cli, ["sweep", *GRID, "-o", str(sweep_dir), *args])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert expected in result.output
    assert not sweep_dir.exists()


def test_bad_grid_values_and_missing_datasets_fail_before_any_run(tmp_path):
    sweep_dir = tmp_path / "bad"
    for args, code, expected in (
            (["--depth", "9"], 2, "depth = 6n + 2"),
            (["--depth", "8", "--width", "4"], 2, "a ResNet has no width factor"),
            (["--share", "none,shared"], 2, "none, block, stage"),
            (["--depth", "8", "--dataset", "cifar10", "--data-dir", str(tmp_path)], 1,
             "cifar10 is not prepared"),
            (["--depth", "8", "--dataset", str(tmp_path / "missing.h5")], 1, "missing.h5")):
        result = CliRunner().invoke(cli, ["sweep", "-o", str(sweep_dir), *args])
        assert result.exit_code == code, result.output
        assert len(error_lines(result.output)) == 1 and expected in result.output
        assert "Traceback" not in result.output
    env = CliRunner().invoke(cli, ["sweep", *GRID, "-o", str(sweep_dir)],
                             env={"MINIRES_TRAIN_RESUME": "1"})
    assert env.exit_code == 2 and "--resume (set in the environment)" in env.output
    assert not sweep_dir.exists()


def test_a_failed_run_does_not_stop_the_others(tmp_path):
    sweep_dir = tmp_path / "fail"
    broken = sweep_dir / BLOCK0
    broken.mkdir(parents=True)
    (broken / "last.h5").write_bytes(b"not an HDF5 file")  # a run to resume that cannot be read
    result = CliRunner().invoke(cli, ["sweep", *GRID, "-o", str(sweep_dir), *TINY,
                                      "--epochs", "1"])
    assert result.exit_code == 1, result.output
    assert [row["epoch"] for row in rows(sweep_dir / NONE0)] == [1]
    log = broken / "train.log"
    assert f"{BLOCK0}  FAILED (exit 1): Error: " in result.output
    assert error_lines(result.output) == [
        f"Error: 1 of 2 runs failed: {BLOCK0} (exit 1, log {log})"]
    assert "Error:" in log.read_text() and "Traceback" not in log.read_text()
    compared = CliRunner().invoke(cli, ["compare", str(sweep_dir)])
    assert compared.exit_code == 0, compared.output
    assert f"`{broken}` (no config.json)" in compared.output


def test_a_live_lock_refuses_and_a_stale_one_is_replaced(swept, tmp_path):
    sweep_dir = tmp_path / "copy"
    shutil.copytree(swept[0], sweep_dir)
    lock = sweep_dir / "sweep.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; print(1, flush=True); "
                               "time.sleep(60)", "minires"], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"1\n"  # it runs
    try:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                    "runs": {}}))
        result = CliRunner().invoke(cli, ["sweep", *GRID, "-o", str(sweep_dir), *TINY,
                                          "--epochs", "2"])
        assert result.exit_code == 1, result.output
        assert error_lines(result.output) == [
            f"Error: another minires sweep (pid {holder.pid}) is running in {sweep_dir}; wait "
            f"for it to end, or choose another folder"]
    finally:
        holder.kill()
        holder.wait()
    # The same pid, now dead: the lock is stale.
    result = CliRunner().invoke(cli, ["sweep", *GRID, "-o", str(sweep_dir), *TINY,
                                      "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert f"removed the lock of an earlier sweep (pid {holder.pid})" in result.output
    assert not lock.exists()


def test_nohup_keeps_the_sweep_and_its_runs_going_through_a_hangup(tmp_path):
    sweep_dir = tmp_path / "nohup"
    process = subprocess.Popen(["nohup", sys.executable, "-m", "minires", "sweep", *GRID, "-o",
                                str(sweep_dir), *TINY, "--epochs", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (sweep_dir / NONE0 / "config.json").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)  # to the sweep, then to the run in its own group
    for run in sweep_dir.iterdir():
        if (run / "run.lock").is_file():
            os.kill(json.loads((run / "run.lock").read_text())["pid"], signal.SIGHUP)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stdout + stderr
    assert [row["epoch"] for row in rows(sweep_dir / NONE0)] == [1, 2]
    assert [row["epoch"] for row in rows(sweep_dir / BLOCK0)] == [1, 2]


def test_ctrl_c_lets_runs_save_and_the_sweep_resumes_them(tmp_path):
    sweep_dir = tmp_path / "int"
    # Long enough (minutes) that a run can only end by the signal, even on a loaded machine.
    epochs = 2000
    args = ["sweep", *GRID, "-o", str(sweep_dir), *TINY, "--epochs", str(epochs)]
    process = subprocess.Popen([sys.executable, "-m", "minires", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=signals_as_from_a_terminal)
    metrics = sweep_dir / NONE0 / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    # Only to the sweep (its runs are in their own process group), and twice at once as
    # `timeout` does (to the process and to its group): one stop, each run gets one SIGINT.
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert f"{NONE0}   interrupted: last.h5 holds its last completed epoch" in stdout
    assert "the same command resumes them" in stderr
    done = [row["epoch"] for row in rows(sweep_dir / NONE0)]
    assert 1 <= len(done) < epochs and done == list(range(1, len(done) + 1))
    log = (sweep_dir / NONE0 / "train.log").read_text()
    assert "Interrupted by SIGINT (Ctrl-C) at epoch" in log
    assert (sweep_dir / NONE0 / "last.h5").is_file()
    assert not (sweep_dir / BLOCK0).exists() and not (sweep_dir / "sweep.lock").exists()
    leftovers = [name for _, _, files in os.walk(sweep_dir) for name in files
                 if name.endswith(".tmp")]
    assert leftovers == []
    dry = CliRunner().invoke(cli, args + ["--dry-run"])
    commands = dry.output.splitlines()
    assert len(commands) == 2
    assert commands[0].endswith("--resume") and NONE0 in commands[0]
    assert not commands[1].endswith("--resume") and BLOCK0 in commands[1]
