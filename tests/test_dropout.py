"""Dropout on the CPU: the numba kernel against the hash's definition (Python ints), the keep
rate and scaling, independence between calls and layers, and the layer's state (reproducible
from the seed, saved with the model). The same masks on the GPU: test_cuda_emulated.py and
test_cuda_kernels.py."""
import numpy as np
import pytest

import cuda_reference as ref
import minires.functions as F
from minires import models, nn
from minires.autograd import Tensor, no_grad
from minires.checkpoint import load_checkpoint, restore_model, save_checkpoint
from minires.kernels import cpu
from minires.kernels.interface import dropout_threshold

KEY = 0x1234_5678_9ABC_DEF0


def keep_mask(p, key, call, n):
    """The CPU kernel's mask for call ``call`` of layer ``key`` (leaves no state changed)."""
    y, _ = cpu.dropout_forward(np.ones(n), p, np.array([key, call], np.int64))
    return y != 0


def test_cpu_masks_follow_the_definition_for_many_streams():
    """20 random (key, call) streams; about half of them start above 2^63, where a uint64
    handed back from numba must not be misread as an int64."""
    rng = np.random.default_rng(0)
    bases_above_2_63 = 0
    for key, call in zip(rng.integers(0, 2**63, 20), rng.integers(0, 10**6, 20)):
        bits = ref.dropout_bits(int(key), int(call), 700)
        np.testing.assert_array_equal(keep_mask(0.3, key, call, 700),
                                      bits >= dropout_threshold(0.3))
        bases_above_2_63 += ref._mix64(int(key) ^ ref._mix64(int(call))) >= 2**63
    assert 3 <= bases_above_2_63 <= 17


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keep_rate_and_scaling(p, dtype):
    n = 1_000_000
    x = np.random.default_rng(1).standard_normal(n).astype(dtype)
    state = np.array([KEY, 7], np.int64)
    y, saved = cpu.dropout_forward(x, p, state)
    kept = y != 0
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    assert y.dtype == dtype
    np.testing.assert_array_equal(y[kept], x[kept] * dtype(1 / (1 - p)))  # exactly x * scale
    assert state.tolist() == [KEY, 8] and saved.stream.tolist() == [KEY, 7]


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_masks_of_other_calls_and_other_layers_are_independent(p):
    """Two masks agree on a fraction p^2 + (1-p)^2 of the elements if independent."""
    n = 200_000
    first = keep_mask(p, KEY, 0, n)
    others = {"next call": keep_mask(p, KEY, 1, n), "call 1000": keep_mask(p, KEY, 1000, n),
              "other layer": keep_mask(p, KEY + 1, 0, n)}
    agree_if_independent = p * p + (1 - p) * (1 - p)
    sigma = np.sqrt(agree_if_independent * (1 - agree_if_independent) / n)
    for name, mask in others.items():
        assert abs((mask == first).mean() - agree_if_independent) < 5 * sigma, name
    # and within one mask, neighbours are not correlated either
    assert abs((first[1:] == first[:-1]).mean() - agree_if_independent) < 5 * sigma


def test_layer_masks_are_reproducible_from_the_seed_and_differ_per_layer_and_step():
    x = Tensor(np.ones((64, 32)))
    a1, b1 = (nn.Dropout(0.5, rng=r) for r in [np.random.default_rng(3)] * 2)
    a2 = nn.Dropout(0.5, rng=np.random.default_rng(3))
    assert a1.state[0] != b1.state[0]  # two layers from one generator: two keys
    steps = [a1(x).data for _ in range(3)]
    assert all(not np.array_equal(steps[i], steps[i + 1]) for i in range(2))
    assert not np.array_equal(steps[0], b1(x).data)
    for step in steps:  # a layer made from the same seed draws the same masks, step by step
        np.testing.assert_array_equal(a2(x).data, step)
    a2.state[1] = 1  # any step's mask again from (key, step)
    np.testing.assert_array_equal(a2(x).data, steps[1])
    a1.eval()
    assert a1(x) is x and a1.state[1] == 3  # eval mode draws nothing


def test_dropout_leaves_the_initial_weights_of_a_wide_resnet_unchanged():
    """The layers' keys come from child generators, so adding dropout shifts no weight."""
    plain = models.create(arch="wrn", depth=10, width=1, seed=4)
    dropped = models.create(arch="wrn", depth=10, width=1, seed=4, dropout=0.3)
    for (name, p), (_, q) in zip(plain.named_parameters(), dropped.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def test_functional_dropout_gradient_uses_the_forward_mask():
    state = np.array([KEY, 0], np.int64)
    x = Tensor(np.random.default_rng(2).standard_normal((5, 7)), requires_grad=True)
    y = F.dropout(x, 0.5, state)
    gy = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(gy)
    np.testing.assert_array_equal(x.grad, np.where(y.data != 0, gy * 2.0, 0.0))
    with pytest.raises(ValueError, match=r"int64 array \[key, calls\] of shape \(2,\)"):
        F.dropout(x, 0.5, np.zeros(2))


def test_checkpoint_keeps_the_dropout_state_so_a_resumed_model_draws_the_next_masks(tmp_path):
    spec = dict(arch="wrn", depth=10, width=1, num_classes=10, share="none", input_size=32,
                seed=0, dropout=0.3)
    model = models.create(**spec)
    x = Tensor(np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32))
    with no_grad():
        for _ in range(2):
            model(x)
        path = save_checkpoint(tmp_path / "last.h5", model, epoch=1, config={},
                               model_spec=spec)
        restored, fresh = models.create(**spec), models.create(**spec)
        restore_model(restored, load_checkpoint(path))
        assert restored.stage1[0].dropout.state.tolist() == model.stage1[0].dropout.state.tolist()
        assert model.stage1[0].dropout.state[1] == 2
        y, y_restored, y_fresh = model(x).data, restored(x).data, fresh(x).data
    np.testing.assert_array_equal(y_restored, y)
    assert not np.array_equal(y_fresh, y)  # step 0's masks, not step 2's
