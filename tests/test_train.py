"""The training loop: files written, exact resume, Ctrl-C, NaN detection, learning."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import minires.functions as F
from minires import models, optim
from minires.autograd import Tensor, no_grad
from minires.checkpoint import load_checkpoint
from minires.errors import ConfigError, DataError, TrainingError
from minires.run_config import TrainConfig, merge_resume_config
from minires.run_dir import METRIC_COLUMNS
from minires.train import train, train_step

pytestmark = pytest.mark.usefixtures("embedded_generated_once")


def tiny(run_dir, **overrides):
    """ResNet-8 on 96 training and 48 test images, 3 batches an epoch: a second or two."""
    values = dict(dataset="embedded", depth=8, subset=96, test_subset=48, batch_size=32,
                  epochs=2, lr=0.05, device="cpu", run_dir=str(run_dir))
    values.update(overrides)
    return TrainConfig(**values)


LOSS_AND_ERROR = ("train_loss", "train_error", "test_loss", "test_error")


def _losses(rows):
    return [[row[k] for k in ("epoch", "lr") + LOSS_AND_ERROR] for row in rows]


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, embedded_generated_once):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    return run_dir, train(tiny(run_dir))


def test_run_directory_files(uninterrupted):
    run_dir, result = uninterrupted
    assert not result.interrupted and result.epochs_done == 2
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.h5", "config.json", "last.h5", "metrics.csv", "metrics.jsonl"]
    rows = _read_jsonl(run_dir / "metrics.jsonl")
    assert [list(row) for row in rows] == [list(METRIC_COLUMNS)] * 2
    assert [row["epoch"] for row in rows] == [1, 2]
    with open(run_dir / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(r["test_error"]) for r in table] == [row["test_error"] for row in rows]
    for row in rows:
        assert 0 <= row["train_error"] <= 1 and 0 <= row["test_error"] <= 1
        assert row["seconds"] > 0 and row["images_per_s"] > 0
        # 48 test images: the error is a whole number of mistakes.
        assert (row["test_error"] * 48) == pytest.approx(round(row["test_error"] * 48))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["depth"] == 8 and config["width"] == 1 and config["shortcut"] == "A"
    assert config["device"] == "cpu" and config["num_train"] == 96 and config["num_test"] == 48
    assert set(config["versions"]) >= {"minires", "numpy", "numba", "h5py", "click"}
    assert config["python"].count(".") == 2
    assert config["cpu_conv"] in ("auto", "im2col", "winograd2", "winograd4")
    assert config["blas"] and {"version", "architecture"} <= set(config["blas"][0])
    last = load_checkpoint(run_dir / "last.h5")
    best = load_checkpoint(run_dir / "best.h5")
    assert last.epoch == 2 and last.metrics == rows
    best_epoch = min(rows, key=lambda r: r["test_error"])["epoch"]
    assert best.epoch == best_epoch == result.best_epoch
    assert result.best_test_error == min(r["test_error"] for r in rows)


def test_interrupt_then_resume_equals_uninterrupted_run(tmp_path, uninterrupted):
    expected_dir, expected = uninterrupted

    def stop_in_epoch_2(progress):
        if progress.epoch == 2 and progress.batch == 2:
            raise KeyboardInterrupt

    first = train(tiny(tmp_path), on_batch=stop_in_epoch_2)
    assert first.interrupted and first.interrupted_at == (2, 2) and first.epochs_done == 1
    checkpoint = load_checkpoint(tmp_path / "last.h5")
    assert checkpoint.epoch == 1  # the partial epoch 2 is not saved
    assert len(_read_jsonl(tmp_path / "metrics.jsonl")) == 1

    seen = []
    resumed = train(tiny(tmp_path, resume=True), on_epoch=seen.append)
    assert [row["epoch"] for row in seen] == [2]  # only the missing epoch ran
    assert resumed.epochs_done == 2 and not resumed.interrupted
    got = _read_jsonl(tmp_path / "metrics.jsonl")
    # Bit-for-bit the same numbers as the run that was never interrupted.
    assert _losses(got) == _losses(_read_jsonl(expected_dir / "metrics.jsonl"))
    a = load_checkpoint(tmp_path / "last.h5")
    b = load_checkpoint(expected_dir / "last.h5")
    for key in b.state:
        np.testing.assert_array_equal(a.state[key], b.state[key], err_msg=key)


def test_interrupt_in_the_first_epoch_leaves_a_resumable_checkpoint(tmp_path):
    def stop(progress):
        raise KeyboardInterrupt

    result = train(tiny(tmp_path, epochs=1), on_batch=stop)
    assert result.interrupted and result.epochs_done == 0 and result.best_checkpoint is None
    assert load_checkpoint(tmp_path / "last.h5").epoch == 0
    assert not (tmp_path / "best.h5").exists()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on the way to NaN is the point
def test_nan_loss_raises_training_error_naming_epoch_and_batch(tmp_path):
    with pytest.raises(TrainingError, match=r"epoch 1, batch \d+ of 3"):
        train(tiny(tmp_path, lr=1e12, momentum=0.0, epochs=1, schedule="constant"))
    checkpoint = load_checkpoint(tmp_path / "last.h5")
    assert checkpoint.epoch == 0  # nothing diverged was saved


def test_existing_run_is_not_overwritten_and_resume_checks_settings(tmp_path, uninterrupted):
    run_dir, _ = uninterrupted
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(run_dir))
    with pytest.raises(ValueError, match="lr=0.2"):
        train(tiny(run_dir, lr=0.2, resume=True))
    with pytest.raises(DataError, match="empty does not exist"):
        train(tiny(tmp_path / "empty", resume=True))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no last.h5"):
        train(tiny(tmp_path / "empty", resume=True))
    assert list((tmp_path / "empty").iterdir()) == []  # its lock is gone with it


def test_resume_fills_unset_fields_from_the_run():
    saved = tiny("x", epochs=5).resolved(image_size=32).to_dict()
    given = TrainConfig(dataset=None, depth=None, batch_size=None, lr=None, momentum=None,
                        weight_decay=None, nesterov=None, schedule=None, gamma=None,
                        warmup_epochs=None, seed=None, no_decay_bn=None, share=None,
                        arch=None, run_dir="x", epochs=7, resume=True)
    merged = merge_resume_config(saved, given)
    assert (merged.depth, merged.lr, merged.subset, merged.epochs) == (8, 0.05, 96, 7)


def test_bad_settings_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="share must be one of"):
        train(tiny(tmp_path, share="all"))
    with pytest.raises(ValueError, match="batch_size"):
        train(tiny(tmp_path, batch_size=0))
    assert not (tmp_path / "last.h5").exists()


@pytest.mark.slow
def test_training_on_the_embedded_set_learns(tmp_path):
    """ResNet-8, 4,000 images, 5 epochs (about 25 s on 2 cores): the loss falls and the test
    error ends far below chance (90%). Measured with seeds 0, 1, 2: final test errors 49.0%,
    42.8%, 55.6%; final train losses 1.39, 1.36, 1.55 from 2.35."""
    config = tiny(tmp_path, subset=4000, test_subset=500, epochs=5, batch_size=32, lr=0.03,
                  schedule="multistep", milestones=[4], seed=0)
    rows = train(config).metrics
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.3
    assert rows[-1]["train_loss"] < 2.0  # chance level is ln(10) = 2.30
    assert rows[-1]["test_error"] < 0.78
    assert rows[-1]["lr"] == pytest.approx(0.003)  # the milestone at epoch 4 applied


def test_train_step_starts_from_zero_gradients_and_does_not_read_the_device():
    """With lr 0 the weights stay put, so a second step on the same batch must see exactly the
    gradients of the first: train_step clears them instead of adding to them."""
    model = models.create(depth=8, seed=0)
    optimizer = optim.SGD(model.parameters(), lr=0.0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    loss, mistakes = train_step(model, optimizer, x, y)
    first = [p.grad.copy() for p in model.parameters()]
    again, _ = train_step(model, optimizer, x, y)
    for g, p in zip(first, model.parameters()):
        np.testing.assert_array_equal(p.grad, g)
    # 0-d arrays, not Python numbers: reading them is left to the caller (a GPU sync).
    assert isinstance(loss, np.ndarray) and loss.shape == () and mistakes.shape == ()
    assert loss == again
    with no_grad():  # the same batch through the unchanged model: the same loss and mistakes
        logits = model(Tensor(x)).data
    assert loss == F.softmax_cross_entropy(Tensor(logits), y).data
    assert mistakes == (logits.argmax(axis=1) != y).sum()


@pytest.mark.parametrize("setting", ["momentum", "weight_decay", "gamma", "lr", "warmup_epochs"])
def test_nan_settings_are_refused_before_anything_is_written(tmp_path, setting):
    with pytest.raises(ConfigError, match=f"{setting} must be a finite number") as info:
        train(tiny(tmp_path / "run", **{setting: float("nan")}))
    assert info.value.name == setting
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("present", ["config.json", "best.h5", "metrics.jsonl"])
def test_any_run_file_means_the_folder_holds_a_run(tmp_path, present):
    (tmp_path / present).write_text("from an earlier run")
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [present]
    assert (tmp_path / present).read_text() == "from an earlier run"


def test_on_start_names_the_resolved_run_and_resume_removes_stale_temps(tmp_path):
    started = []
    train(tiny(tmp_path, epochs=1), on_start=started.append)
    assert [(c.depth, c.device, c.run_dir) for c in started] == [(8, "cpu", str(tmp_path))]
    config_before = json.loads((tmp_path / "config.json").read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"last.h5.tmp-{dead}-0123abcd"  # left by a writer killed mid-save
    stale.write_bytes(b"partial")
    resumed = []
    train(tiny(tmp_path, epochs=2, resume=True), on_start=resumed.append)
    assert resumed[0].resume and not stale.exists()
    config_after = json.loads((tmp_path / "config.json").read_text())
    assert config_after["started"] == config_before["started"]
    assert config_after["epochs"] == 2
