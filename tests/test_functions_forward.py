"""Forward values of every function against plain NumPy references."""
import numpy as np
import pytest

import minires
import minires.functions as F
from reference import batch_norm_train, conv2d_loops, max_pool_loops, softmax_cross_entropy

rng = np.random.default_rng(0)


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", [
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1),
    ((2, 3, 8, 8), (4, 3, 3, 3), 2, 1),
    ((2, 3, 7, 9), (5, 3, 3, 3), 1, 0),    # non-square input
    ((2, 3, 7, 9), (5, 3, 3, 3), 2, 0),
    ((1, 2, 6, 5), (3, 2, 2, 3), 1, 1),    # non-square kernel
    ((2, 4, 6, 6), (8, 4, 1, 1), 2, 0),    # 1x1 projection, stride 2
    ((2, 4, 6, 6), (8, 4, 1, 1), 1, 0),
    ((1, 2, 9, 7), (3, 2, 3, 3), (2, 1), (1, 0)),  # per-axis stride and padding
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_matches_loops(x_shape, w_shape, stride, pad, dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    W = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    y = F.conv2d(minires.Tensor(x), minires.Tensor(W), minires.Tensor(b), stride=stride, pad=pad)
    expected = conv2d_loops(x, W, b, pair(stride), pair(pad))
    assert y.dtype == dtype
    # float32: 3x3 stride-1 convolutions run as Winograd F(4x4, 3x3), whose error is bounded
    # relative to the largest output (tests/test_winograd.py), not per element.
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y.data, expected, rtol=0, atol=tol * np.abs(expected).max())


def test_conv2d_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        F.conv2d(minires.Tensor(np.zeros((1, 3, 4, 4))), minires.Tensor(np.zeros((2, 4, 3, 3))))


@pytest.mark.parametrize("shape", [(8, 3, 4, 5), (16, 4)])
def test_batch_norm_training_forward_and_running_statistics(shape):
    x = rng.standard_normal(shape) * 3 + 1
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    running_mean, running_var = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    old_mean, old_var = running_mean.copy(), running_var.copy()
    y = F.batch_norm(minires.Tensor(x), minires.Tensor(gamma), minires.Tensor(beta),
                     running_mean, running_var, training=True, momentum=0.1)
    np.testing.assert_allclose(y.data, batch_norm_train(x, gamma, beta), rtol=1e-10, atol=1e-12)
    axes = (0,) + tuple(range(2, x.ndim))
    count = x.size // C
    batch_mean = x.mean(axis=axes)
    unbiased_var = x.var(axis=axes) * count / (count - 1)
    np.testing.assert_allclose(running_mean, 0.9 * old_mean + 0.1 * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(running_var, 0.9 * old_var + 0.1 * unbiased_var, rtol=1e-12)


def test_batch_norm_eval_uses_running_statistics_and_updates_nothing():
    x = rng.standard_normal((4, 3, 2, 2))
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    mean0, var0 = mean.copy(), var.copy()
    y = F.batch_norm(minires.Tensor(x), minires.Tensor(gamma), minires.Tensor(beta), mean, var,
                     training=False, eps=1e-5)
    shape = (1, 3, 1, 1)
    expected = ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5)
                * gamma.reshape(shape) + beta.reshape(shape))
    np.testing.assert_allclose(y.data, expected, rtol=1e-12)
    np.testing.assert_array_equal(mean, mean0)
    np.testing.assert_array_equal(var, var0)


def test_batch_norm_running_statistics_follow_the_update_rule_over_steps():
    running_mean, running_var = np.zeros(2), np.ones(2)
    expected_mean, expected_var = np.zeros(2), np.ones(2)
    for step in range(5):
        x = rng.standard_normal((10, 2, 3, 3)) * (step + 1) + step
        F.batch_norm(minires.Tensor(x), minires.Tensor(np.ones(2)), minires.Tensor(np.zeros(2)),
                     running_mean, running_var, training=True, momentum=0.1)
        expected_mean = 0.9 * expected_mean + 0.1 * x.mean(axis=(0, 2, 3))
        expected_var = 0.9 * expected_var + 0.1 * x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(running_var, expected_var, rtol=1e-12)


def test_linear_relu_and_pools():
    x = rng.standard_normal((4, 5))
    W, b = rng.standard_normal((3, 5)), rng.standard_normal(3)
    np.testing.assert_allclose(F.linear(minires.Tensor(x), minires.Tensor(W),
                                        minires.Tensor(b)).data, x @ W.T + b, rtol=1e-12)
    np.testing.assert_array_equal(F.relu(minires.Tensor(x)).data, np.maximum(x, 0))
    img = rng.standard_normal((2, 3, 6, 8))
    np.testing.assert_allclose(F.global_avg_pool2d(minires.Tensor(img)).data,
                               img.mean(axis=(2, 3)), rtol=1e-12)
    np.testing.assert_array_equal(F.max_pool2d(minires.Tensor(img), 2, 2).data,
                                  max_pool_loops(img, 2, 2))
    np.testing.assert_array_equal(F.max_pool2d(minires.Tensor(img), 3, 2).data,
                                  max_pool_loops(img, 3, 2))


def test_softmax_cross_entropy_matches_reference_and_is_stable():
    logits = rng.standard_normal((6, 4)) * 5
    labels = rng.integers(0, 4, 6)
    loss = F.softmax_cross_entropy(minires.Tensor(logits), labels)
    assert np.isclose(loss.item(), softmax_cross_entropy(logits, labels), rtol=1e-12)
    huge = F.softmax_cross_entropy(minires.Tensor(np.array([[1000.0, 0.0]])), np.array([1]))
    assert np.isclose(huge.item(), 1000.0)
    with pytest.raises(ValueError, match="labels"):
        F.softmax_cross_entropy(minires.Tensor(logits), np.full(6, 4))


def test_pad_and_option_a_shortcut_shape():
    x = rng.standard_normal((2, 16, 8, 8))
    shortcut = F.pad(minires.Tensor(x)[:, :, ::2, ::2], ((0, 0), (8, 8), (0, 0), (0, 0)))
    assert shortcut.shape == (2, 32, 4, 4)
    np.testing.assert_array_equal(shortcut.data[:, 8:24], x[:, :, ::2, ::2])
    assert not shortcut.data[:, :8].any() and not shortcut.data[:, 24:].any()


def test_tensor_arithmetic_with_scalars_keeps_dtype():
    x = minires.Tensor(np.ones(3, dtype=np.float32))
    for y in (x + 1, 1 - x, x * 2.5, 2 / (x + 1), -x, x ** 2):
        assert y.dtype == np.float32
    np.testing.assert_allclose((2 / (x + 1)).data, 1.0)
    m = minires.Tensor(rng.standard_normal((3, 4)))
    n = rng.standard_normal((4, 2))
    np.testing.assert_allclose((m @ n).data, m.data @ n)
    np.testing.assert_allclose((m.T).data, m.data.T)
    assert m.mean().item() == pytest.approx(m.data.mean())
