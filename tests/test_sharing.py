"""Weight sharing at the engine level: one weight used by two convolutions.

The shared weight must get exactly the sum of the gradients that two untied copies holding the
same values get. (Model-level sharing is tested with the models.)
"""
import numpy as np

import minires
import minires.functions as F


def _block(x, W1, W2, bn1, bn2):
    """conv-BN-ReLU-conv-BN, each BatchNorm with its own parameters and statistics."""
    h = F.relu(F.batch_norm(F.conv2d(x, W1, pad=1), *bn1, None, None, True))
    return F.batch_norm(F.conv2d(h, W2, pad=1), *bn2, None, None, True)


def test_shared_weight_gets_the_sum_of_untied_gradients():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 5))
    W = rng.standard_normal((3, 3, 3, 3))
    gy = rng.standard_normal((2, 3, 5, 5))
    bn1 = (minires.Parameter(rng.standard_normal(3) + 1), minires.Parameter(rng.standard_normal(3)))
    bn2 = (minires.Parameter(rng.standard_normal(3) + 1), minires.Parameter(rng.standard_normal(3)))

    shared = minires.Parameter(W.copy())
    _block(minires.Tensor(x), shared, shared, bn1, bn2).backward(gy)

    first, second = minires.Parameter(W.copy()), minires.Parameter(W.copy())
    _block(minires.Tensor(x), first, second, bn1, bn2).backward(gy)

    assert not np.allclose(first.grad, second.grad)  # the two uses really differ
    np.testing.assert_allclose(shared.grad, first.grad + second.grad, rtol=1e-12, atol=1e-12)


def test_float32_shared_gradient_matches_float64():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 6, 6))
    W = rng.standard_normal((4, 4, 3, 3)) * 0.2
    grads = {}
    for dtype in (np.float32, np.float64):
        Wp = minires.Parameter(W.astype(dtype))
        y = F.conv2d(F.relu(F.conv2d(minires.Tensor(x.astype(dtype)), Wp, pad=1)), Wp, pad=1)
        (y * y).sum().backward()
        assert Wp.grad.dtype == dtype
        grads[dtype] = Wp.grad
    np.testing.assert_allclose(grads[np.float32], grads[np.float64], rtol=1e-4, atol=1e-3)
