"""HDF5 checkpoints: shared weights stored once, sharing restored, bad files refused."""
import errno
import json

import h5py
import numpy as np
import pytest

from minires import models
from minires.autograd import Tensor, no_grad
from minires.checkpoint import (FORMAT, alias_groups, load_checkpoint, load_model, restore_model,
                                restore_optimizer, save_checkpoint)
from minires.errors import DataError
from minires.optim import SGD

SPEC = {"arch": "resnet", "depth": 8, "width": 1, "num_classes": 10, "share": "block",
        "shortcut": "A", "input_size": 32, "seed": 0}


def _trained_like(spec, seed=1):
    """A model whose weights and BatchNorm statistics differ from a fresh one's."""
    model = models.create(**spec)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape).astype(p.dtype)
    for _, buffer in model.named_buffers():
        buffer[...] = rng.uniform(0.5, 1.5, buffer.shape).astype(buffer.dtype)
    return model


def _optimizer_with_momentum(model):
    """An SGD whose momentum buffers are non-trivial (two steps on random gradients)."""
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(2)
    for _ in range(2):
        for p in model.parameters():
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        opt.step()
    return opt


def _save(path, model, optimizer=None, spec=SPEC, **kwargs):
    kwargs.setdefault("epoch", 3)
    return save_checkpoint(path, model, optimizer, config={"dataset": "embedded", "seed": 0},
                           model_spec=spec, **kwargs)


def _output(model, x):
    model.eval()
    with no_grad():
        return model(Tensor(x)).data


def test_shared_weight_is_stored_once_with_its_uses(tmp_path):
    model = _trained_like(SPEC)
    path = _save(tmp_path / "c.h5", model)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT
        state = f["model/state"]
        assert "stage1.0.conv1.weight" in state
        assert "stage1.0.conv2.weight" not in state  # the second use is not a second copy
        uses = json.loads(state["stage1.0.conv1.weight"].attrs["uses"])
        assert uses == ["stage1.0.conv1.weight", "stage1.0.conv2.weight"]
        stored = sum(state[k].size for k in state if not ("running" in k or "batches" in k))
    assert stored == model.num_parameters()
    checkpoint = load_checkpoint(path)
    assert checkpoint.aliases == alias_groups(model)
    # ResNet-8 has one block per stage; only stage 1's has two same-shaped convolutions.
    assert len(checkpoint.aliases) == 1


def test_round_trip_restores_values_and_sharing(tmp_path):
    model = _trained_like(SPEC)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = _output(model, x)
    path = _save(tmp_path / "c.h5", model, best_test_error=0.25, best_epoch=2,
                 metrics=[{"epoch": 1, "test_error": 0.3}])

    loaded, config = load_model(path)
    block = loaded.stage1[0]
    assert block.conv1.weight is block.conv2.weight
    np.testing.assert_array_equal(_output(loaded, x), expected)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert config["checkpoint_epoch"] == 3 and config["model_spec"] == SPEC
    checkpoint = load_checkpoint(path)
    assert (checkpoint.best_test_error, checkpoint.best_epoch) == (0.25, 2)
    assert checkpoint.metrics == [{"epoch": 1, "test_error": 0.3}]

    # Changing the one shared weight changes both convolutions: the two uses are one Parameter.
    block.conv1.weight.data[...] = 0
    assert not np.abs(block.conv2.weight.data).any()
    assert not np.array_equal(_output(loaded, x), expected)


def test_optimizer_momentum_round_trip(tmp_path):
    model = _trained_like(SPEC)
    opt = _optimizer_with_momentum(model)
    path = _save(tmp_path / "c.h5", model, opt)

    fresh = models.create(**SPEC)
    fresh_opt = SGD(fresh.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    checkpoint = load_checkpoint(path)
    restore_model(fresh, checkpoint)
    restore_optimizer(fresh_opt, checkpoint, "cpu")
    assert fresh_opt.lr == opt.lr
    # One more identical step keeps the two models identical only if the momentum was restored.
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in model.parameters()]
    for m, o in ((model, opt), (fresh, fresh_opt)):
        for p, g in zip(m.parameters(), grads):
            p.grad = g
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_unshared_checkpoint_does_not_load_into_shared_model(tmp_path):
    unshared = {**SPEC, "share": "none"}
    path = _save(tmp_path / "c.h5", _trained_like(unshared), spec=unshared)
    with pytest.raises(DataError, match="does not match the model's architecture"):
        restore_model(models.create(**SPEC), load_checkpoint(path))


def test_alias_map_mismatch_is_refused(tmp_path):
    path = _save(tmp_path / "c.h5", _trained_like(SPEC))
    with h5py.File(path, "r+") as f:
        del f["model/state/stage1.0.conv1.weight"].attrs["uses"]
    with pytest.raises(DataError, match="weight sharing"):
        load_model(path)


def test_deeper_model_mismatch_names_missing_keys(tmp_path):
    path = _save(tmp_path / "c.h5", _trained_like(SPEC))
    with pytest.raises(DataError, match="missing"):
        restore_model(models.create(**{**SPEC, "depth": 14}), load_checkpoint(path))


@pytest.mark.parametrize("content, message", [(b"", "is an empty file"),
                                              (b"not an hdf5 file at all" * 10,
                                               "not a readable HDF5")])
def test_not_hdf5_is_a_data_error(tmp_path, content, message):
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_is_a_data_error(tmp_path):
    path = _save(tmp_path / "c.h5", _trained_like(SPEC))
    data = (tmp_path / "c.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError):
        load_model(tmp_path / "cut.h5")
    assert load_model(path)[1]["checkpoint_epoch"] == 3  # the original still loads


def test_foreign_hdf5_and_missing_file(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="not a minires checkpoint"):
        load_checkpoint(tmp_path / "other.h5")
    with pytest.raises(DataError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.h5")


def test_newer_format_version_is_refused(tmp_path):
    path = _save(tmp_path / "c.h5", _trained_like(SPEC))
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(DataError, match="format version 99"):
        load_checkpoint(path)


def test_optimizer_state_is_stored_as_hdf5_groups_and_datasets(tmp_path):
    model = _trained_like(SPEC)
    opt = _optimizer_with_momentum(model)
    path = _save(tmp_path / "c.h5", model, opt)
    params = list(model.parameters())
    with h5py.File(path, "r") as f:
        group = f["optimizer"]
        assert group.attrs["momentum"] == 0.9 and not group.attrs["nesterov"]
        buffers = group["momentum_buffers"]
        assert isinstance(buffers, h5py.Group) and len(buffers) == len(params)
        for i, p in enumerate(params):
            assert buffers[str(i)].shape == p.shape and buffers[str(i)].fletcher32
            np.testing.assert_array_equal(buffers[str(i)][()], opt.momentum_buffers[i])


def test_flipped_bits_in_a_weight_are_detected(tmp_path):
    path = _save(tmp_path / "c.h5", _trained_like(SPEC))
    with h5py.File(path, "r") as f:
        chunk = f["model/state/stage1.0.conv1.weight"].id.get_chunk_info(0)
    data = bytearray(path_bytes := (tmp_path / "c.h5").read_bytes())
    for k in range(chunk.byte_offset + 100, chunk.byte_offset + 140):
        data[k] ^= 0xFF
    assert bytes(data) != path_bytes
    (tmp_path / "c.h5").write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt"):
        load_checkpoint(tmp_path / "c.h5")


def test_a_failing_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """HDF5 can fail while closing a file (a full disk shows up there); nothing is replaced."""
    path = _save(tmp_path / "last.h5", _trained_like(SPEC), epoch=1)
    before = (tmp_path / "last.h5").read_bytes()
    real_close = h5py.File.close

    def failing_close(self):
        real_close(self)
        raise RuntimeError("Can't decrement id ref count (file write failed)")

    monkeypatch.setattr(h5py.File, "close", failing_close)
    with pytest.raises(RuntimeError, match="file write failed"):
        _save(path, _trained_like(SPEC, seed=5), epoch=2)
    monkeypatch.undo()
    assert (tmp_path / "last.h5").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.h5"]
    assert load_checkpoint(path).epoch == 1


def test_a_full_disk_keeps_the_previous_checkpoint(small_disk):
    small = models.create(**{**SPEC, "depth": 8, "share": "block"})
    path = _save(small_disk / "last.h5", small, epoch=1)
    before = (small_disk / "last.h5").read_bytes()
    too_big = models.create(**{**SPEC, "depth": 20, "share": "none"})  # 2.2 MB with momentum
    with pytest.raises(OSError) as info:
        _save(path, too_big, _optimizer_with_momentum(too_big), epoch=2)
    assert info.value.errno == errno.ENOSPC
    assert (small_disk / "last.h5").read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["last.h5"]
