"""A shared weight's gradients in one buffer (``Function.grad_into``), the fused residual join
and the ``linalg.matmul`` family, on the CPU."""
import numpy as np
import pytest

import minires.autograd.engine as engine
import minires.functions as F
from minires.autograd import Parameter, Tensor
from minires.kernels import cpu


def _shared_conv(x, W):
    return F.conv2d(F.relu(F.conv2d(x, W, pad=1)), W, pad=1)


def test_the_second_use_adds_into_the_first_gradient(monkeypatch):
    """Within one pass the engine stores the weight's gradient once; the other convolution
    adds into that array (the sum is the two uses' gradients)."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 5, 5)))
    W = Parameter(rng.standard_normal((3, 3, 3, 3)) * 0.3)
    gy = rng.standard_normal((2, 3, 5, 5))
    stored = []
    original = engine.accumulate_leaf
    monkeypatch.setattr(engine, "accumulate_leaf",
                        lambda leaf, g, private: stored.append(g) or original(leaf, g, private))
    _shared_conv(x, W).backward(gy)
    assert len(stored) == 1 and W.grad is stored[0]
    # Each use's gradient separately, through two distinct Parameters with the same values:
    W1, W2 = Parameter(W.data.copy()), Parameter(W.data.copy())
    monkeypatch.setattr(engine, "accumulate_leaf", original)
    F.conv2d(F.relu(F.conv2d(x, W1, pad=1)), W2, pad=1).backward(gy)
    np.testing.assert_allclose(W.grad, W1.grad + W2.grad, rtol=1e-12)


def test_a_gradient_kept_from_an_earlier_pass_is_never_written():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 5, 5)))
    W = Parameter(rng.standard_normal((3, 3, 3, 3)) * 0.3)
    gy = rng.standard_normal((2, 3, 5, 5))
    _shared_conv(x, W).backward(gy)
    first = W.grad
    kept = first.copy()
    _shared_conv(x, W).backward(gy)  # accumulates into .grad across passes
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_allclose(W.grad, 2 * kept, rtol=1e-12)
    assert W.grad is not first


def test_the_offer_is_withdrawn_after_backward():
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((1, 2, 4, 4)))
    W = Parameter(rng.standard_normal((2, 2, 3, 3)))
    y = _shared_conv(x, W)
    y.backward(np.ones(y.shape))
    node = y.creator
    assert node.grad_into == ()  # no gradient array stays referenced by the graph


def test_add_relu_is_relu_of_the_sum_and_routes_one_gradient_to_both():
    rng = np.random.default_rng(3)
    a, b = (Tensor(rng.standard_normal((2, 3, 4, 4)), requires_grad=True) for _ in range(2))
    y = F.add_relu(a, b)
    np.testing.assert_array_equal(y.data, np.maximum(a.data + b.data, 0))
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    expected = np.where(a.data + b.data > 0, gy, 0)
    np.testing.assert_array_equal(a.grad, expected)
    np.testing.assert_array_equal(b.grad, expected)
    a.grad *= 0  # each leaf owns its gradient
    np.testing.assert_array_equal(b.grad, expected)
    with pytest.raises(ValueError, match="one shape and dtype"):
        F.add_relu(a, b[:, :2])


def test_cpu_linalg_matmul():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    np.testing.assert_array_equal(cpu.matmul(a, b.T), a @ b.T)
    with pytest.raises(ValueError, match="matmul expects"):
        cpu.matmul(a, b)


def test_cpu_conv_backward_adds_into_the_given_gradient():
    rng = np.random.default_rng(5)
    x, W = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    y, saved = cpu.conv2d_forward(x, W, 1, 1, 1, 1)
    gy = rng.standard_normal(y.shape)
    _, gW = cpu.conv2d_backward(gy, W, saved, 1, 1, 1, 1, need_gx=False)
    earlier = rng.standard_normal(W.shape)
    into = earlier.copy()
    _, added = cpu.conv2d_backward(gy, W, saved, 1, 1, 1, 1, need_gx=False, gW_into=into)
    assert added is into
    np.testing.assert_array_equal(added, earlier + gW)
