"""Faults around a training run, each reproduced for real: a diverging run, two runs into one
folder, a killed run's lock and temporaries, SIGTERM/SIGHUP/SIGINT, Ctrl-C at every phase, a
device that is not there, and the exit status of each (see docs/reliability.md)."""
import csv
import json
import signal
import subprocess
import time

import numpy as np
import pytest
from click.testing import CliRunner

import minires.train as mtrain
from fault_helpers import (TINY_RUN, assert_one_error_line, leftovers, minires_command,
                           run_minires, signals_as_from_a_terminal, snapshot)
from minires import models
from minires.backend import cuda_available
from minires.checkpoint import load_checkpoint
from minires.cli.main import cli
from minires.divergence import check_epoch
from minires.errors import TrainingError
from minires.run_config import TrainConfig
from minires.run_dir import RunDirectory

pytestmark = pytest.mark.usefixtures("embedded_generated_once")

# The setting: ResNet-8 on 256 embedded images, batches of 64.
EMBEDDED_RUN = ["--depth", "8", "--subset", "256", "--test-subset", "256", "-b", "64",
                "--device", "cpu", "--no-progress"]


def strict_json_rows(path):
    """Every line of a metrics.jsonl, parsed by a JSON reader that refuses NaN and Infinity."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- a diverging run (issue item 2) --------------------------------------------------------------

def test_a_run_that_diverges_at_a_milestone_stops_before_saving_it(tmp_path):
    """--gamma 1e7 multiplies the rate by 1e7 after epoch 1: epoch 2's training loss is huge,
    the BatchNorm statistics overflow and the test loss is NaN, with an 85% test error that
    used to count as the best."""
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", *EMBEDDED_RUN, "--epochs", "3", "--milestones",
                                      "1", "--gamma", "1e7", "-o", str(run)])
    assert result.exit_code == 1, result.output
    error = assert_one_error_line(result.output, "at epoch 2", "--gamma below 1",
                                  f"{run}/last.h5 holds epoch 1")
    assert "became" in error and "RuntimeWarning" not in result.output
    assert load_checkpoint(run / "last.h5").epoch == 1
    assert load_checkpoint(run / "best.h5").epoch == 1   # not the NaN model of epoch 2
    rows = strict_json_rows(run / "metrics.jsonl")
    assert [row["epoch"] for row in rows] == [1] and np.isfinite(rows[0]["test_loss"])
    assert [row["epoch"] for row in csv_rows(run / "metrics.csv")] == ["1"]
    assert leftovers(run) == []


def test_a_run_that_diverges_in_its_first_epoch_keeps_only_its_start(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", *EMBEDDED_RUN, "--epochs", "2", "--lr", "1e6",
                                      "-o", str(run)])
    assert result.exit_code == 1, result.output
    assert_one_error_line(result.output, "at epoch 1", "lower --lr (this one has 1e+06)",
                          "holds epoch 0")
    assert load_checkpoint(run / "last.h5").epoch == 0
    assert not (run / "best.h5").exists()
    assert strict_json_rows(run / "metrics.jsonl") == []
    assert leftovers(run) == []


def test_a_weight_that_became_infinite_stops_the_run_even_with_finite_losses():
    model = models.create(depth=8, seed=0)
    config = TrainConfig(lr=0.1)
    row = {"epoch": 4, "lr": 0.1, "train_loss": 2.0, "test_loss": 2.1}
    check_epoch(row, model, config)  # a healthy model passes
    state = model.state_dict()
    state["stage2.0.bn1.running_var"][0] = np.inf  # one overflowed statistic
    model.load_state_dict(state)
    with pytest.raises(TrainingError, match="stage2.0.bn1.running_var became NaN or infinite "
                                            "at epoch 4"):
        check_epoch(row, model, config)


# -- one owner per run folder (issue items 4 and 5) ----------------------------------------------

def test_two_runs_started_into_one_folder_at_once_leave_exactly_one_run(tmp_path, tiny_dataset):
    for attempt in range(3):
        run = tmp_path / f"run{attempt}"
        processes = [subprocess.Popen(
            minires_command("train", *TINY_RUN, "--dataset", tiny_dataset, "--epochs", "1",
                            "--seed", seed, "-o", run),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
        outputs = [p.communicate(timeout=300) for p in processes]
        codes = [p.returncode for p in processes]
        assert sorted(codes) == [0, 1], outputs
        winner = codes.index(0) + 1            # the seed of the run that owns the folder
        assert_one_error_line(outputs[codes.index(1)][1], str(run))
        assert ("is running in" in outputs[codes.index(1)][1]
                or "already holds a run" in outputs[codes.index(1)][1])
        config = json.loads((run / "config.json").read_text())
        assert config["seed"] == winner
        checkpoint = load_checkpoint(run / "last.h5")
        assert checkpoint.config["seed"] == winner
        assert checkpoint.metrics == strict_json_rows(run / "metrics.jsonl")
        assert leftovers(run) == []


def _start_and_wait_for_epoch(args, epoch=1):
    """Start `minires train ARGS`; return the process once it printed epoch ``epoch``."""
    process = subprocess.Popen(minires_command("train", *args), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=signals_as_from_a_terminal)
    for line in process.stdout:
        if line.startswith(f"epoch {epoch:>2}/") or line.startswith(f"epoch {epoch}/"):
            return process
    raise AssertionError(process.communicate())


def test_a_killed_run_leaves_a_stale_lock_and_temps_that_the_next_start_removes(
        tmp_path, tiny_dataset):
    run = tmp_path / "run"
    process = _start_and_wait_for_epoch([*TINY_RUN, "--dataset", tiny_dataset, "--epochs",
                                         "40", "-o", run])
    process.send_signal(signal.SIGKILL)  # nothing can be cleaned up
    process.communicate(timeout=60)
    lock = json.loads((run / "run.lock").read_text())
    assert lock["pid"] == process.pid
    # What a kill in the middle of saving leaves: a temporary named after the dead process.
    stray = run / f"last.h5.tmp-{process.pid}-0123abcd"
    stray.write_bytes(b"half a checkpoint")
    done_before = load_checkpoint(run / "last.h5").epoch
    assert done_before >= 1

    resumed = run_minires("train", "-o", run, "--resume", "--epochs", done_before + 1)
    assert resumed.returncode == 0, resumed.stderr
    assert (f"Note: removed the lock of an earlier run (pid {process.pid}) that is no longer "
            f"running") in resumed.stderr
    assert leftovers(run) == []
    assert load_checkpoint(run / "last.h5").epoch == done_before + 1


def test_a_live_run_lock_refuses_the_folder_and_changes_nothing(tmp_path, tiny_dataset):
    run = tmp_path / "run"
    first = CliRunner().invoke(cli, ["train", *TINY_RUN, "--dataset", str(tiny_dataset),
                                     "--epochs", "1", "-o", str(run)])
    assert first.exit_code == 0, first.output
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = RunDirectory(run).lock
        (run / "run.lock").write_text(json.dumps({"host": None, "pid": holder.pid}))
        before = snapshot(run)
        result = CliRunner().invoke(cli, ["train", "-o", str(run), "--resume", "--epochs", "2"])
        assert result.exit_code == 1
        assert_one_error_line(result.output, f"another minires run (pid {holder.pid}) is "
                                             f"running in {run}")
        assert snapshot(run) == before
        assert lock.holder().pid == holder.pid
    finally:
        holder.kill()
        holder.wait()


# -- stop signals (issue item 7) ------------------------------------------------------------------

@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                         (signal.SIGINT, 130)])
def test_a_stop_signal_saves_the_last_epoch_and_says_how_to_resume(
        tmp_path, tiny_dataset, sig, status):
    run = tmp_path / "run"
    process = _start_and_wait_for_epoch([*TINY_RUN, "--dataset", tiny_dataset, "--epochs",
                                         "40", "-o", run])
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    name = signal.Signals(sig).name
    assert f"Interrupted by {name}" in stderr and f"minires train -o {run} --resume" in stderr
    assert "Traceback" not in stderr
    done = load_checkpoint(run / "last.h5").epoch
    assert done >= 1 and [row["epoch"] for row in strict_json_rows(run / "metrics.jsonl")] == \
        list(range(1, done + 1))
    assert leftovers(run) == []
    if sig == signal.SIGTERM:  # and the hint works
        resumed = run_minires("train", "-o", run, "--resume", "--epochs", done + 1)
        assert resumed.returncode == 0, resumed.stderr
        assert load_checkpoint(run / "last.h5").epoch == done + 1


def test_nohup_keeps_training_through_a_hangup(tmp_path, tiny_dataset):
    """A signal ignored when minires starts (nohup ignores SIGHUP) stays ignored."""
    run = tmp_path / "run"
    process = subprocess.Popen(["nohup", *minires_command(
        "train", *TINY_RUN, "--dataset", tiny_dataset, "--epochs", "2", "-o", run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert load_checkpoint(run / "last.h5").epoch == 2


# -- Ctrl-C at every phase -------------------------------------------------------------------------

def _interrupt(monkeypatch, target, name, when):
    """Make ``target.name`` raise KeyboardInterrupt on its calls numbered in ``when``."""
    real = getattr(target, name)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) in when:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, interrupted)


@pytest.mark.parametrize("target, name, when, where, epochs_saved", [
    (mtrain, "load_dataset", {1}, None, None),                # before the run has a folder
    (mtrain, "save_checkpoint", {1}, None, None),             # the very first checkpoint
    (RunDirectory, "write_config", {1}, "before epoch 1 started.", 0),
    (mtrain, "train_step", {3}, "at epoch 1, batch 3.", 0),
    (mtrain, "evaluate", {1}, "at epoch 1, while evaluating.", 0),
    (mtrain, "save_checkpoint", {2}, "at epoch 1, while saving its checkpoints.", 0),  # best
    (mtrain, "save_checkpoint", {3}, "at epoch 1, while saving its checkpoints.", 0),  # last
    (RunDirectory, "write_metrics", {2}, "at epoch 1, while saving its checkpoints.", 1),
    # A second Ctrl-C while the first one's metrics are written: the files stay whole.
    (RunDirectory, "write_metrics", {2, 3}, "while stopping.", 1),
])
def test_ctrl_c_in_every_phase_keeps_a_consistent_run(tmp_path, tiny_dataset, monkeypatch,
                                                      target, name, when, where, epochs_saved):
    run = tmp_path / "run"
    _interrupt(monkeypatch, target, name, when)
    result = CliRunner().invoke(cli, ["train", *TINY_RUN, "--dataset", str(tiny_dataset),
                                      "--epochs", "2", "-o", str(run)])
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and not result.output.count("Error")
    if where is None:
        assert "Interrupted by SIGINT (Ctrl-C); no file was changed." in result.stderr
        assert not run.exists()
        return
    assert f"Interrupted by SIGINT (Ctrl-C) {where}" in result.stderr
    assert f"minires train -o {run} --resume" in result.stderr
    checkpoint = load_checkpoint(run / "last.h5")
    assert checkpoint.epoch == epochs_saved and len(checkpoint.metrics) == epochs_saved
    rows = strict_json_rows(run / "metrics.jsonl")  # valid, and behind only after two Ctrl-C
    assert rows == checkpoint.metrics[:len(rows)] and (len(rows) == epochs_saved or
                                                       len(when) == 2)
    assert leftovers(run) == []
    monkeypatch.undo()
    resumed = CliRunner().invoke(cli, ["train", "-o", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert [row["epoch"] for row in strict_json_rows(run / "metrics.jsonl")] == [1, 2]


# -- what a new user types -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["train", "--dataset", "cifar11"],
                                  ["eval", "last.h5", "--dataset", "cifar11"]])
def test_an_unknown_dataset_name_is_a_usage_error(tmp_path, args):
    result = CliRunner().invoke(cli, args + (["-o", str(tmp_path / "r")] if args[0] == "train"
                                             else []))
    assert result.exit_code == 2, result.output
    assert_one_error_line(result.output, "Invalid value for '--dataset'", "'cifar11'",
                          "cifar10")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(cuda_available(), reason="needs a machine without a usable GPU")
@pytest.mark.parametrize("args", [["train", *TINY_RUN[:-3], "--device", "cuda"],
                                  ["gradcheck", "--device", "cuda"]])
def test_cuda_without_a_gpu_is_one_line(tmp_path, args):
    result = CliRunner().invoke(cli, args + (["-o", str(tmp_path / "r")] if args[0] == "train"
                                             else []))
    assert result.exit_code == 1, result.output
    assert_one_error_line(result.output, "the CUDA device needs CuPy and a usable NVIDIA GPU")
    assert result.output.count("\n") == 1 and not (tmp_path / "r").exists()


@pytest.mark.skipif(cuda_available(), reason="needs a machine without a usable GPU")
def test_eval_on_cuda_without_a_gpu_is_one_line(tmp_path, tiny_dataset):
    run = tmp_path / "run"
    CliRunner().invoke(cli, ["train", *TINY_RUN, "--dataset", str(tiny_dataset), "--epochs",
                             "1", "-o", str(run)])
    result = CliRunner().invoke(cli, ["eval", str(run / "best.h5"), "--device", "cuda"])
    assert result.exit_code == 1
    assert_one_error_line(result.output, "CUDA")


def test_resuming_keeps_the_start_time_even_without_config_json(tmp_path, tiny_dataset):
    run = tmp_path / "run"
    first = CliRunner().invoke(cli, ["train", *TINY_RUN, "--dataset", str(tiny_dataset),
                                     "--epochs", "1", "-o", str(run)])
    assert first.exit_code == 0, first.output
    started = json.loads((run / "config.json").read_text())["started"]
    (run / "config.json").write_text("{ damaged")
    resumed = CliRunner().invoke(cli, ["train", "-o", str(run), "--resume", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "config.json").read_text())["started"] == started


def test_a_read_only_run_folder_fails_before_the_dataset_is_loaded(tmpfs, monkeypatch):
    read_only = tmpfs("1m", read_only=True)
    loads = []
    monkeypatch.setattr(mtrain, "load_dataset", lambda *a, **k: loads.append(1))
    result = CliRunner().invoke(cli, ["train", *TINY_RUN, "-o", str(read_only / "run")])
    assert result.exit_code == 1
    assert_one_error_line(result.output, f"read-only file system: {read_only}/run",
                          "writable file system")
    assert loads == [] and "Training in" not in result.output
