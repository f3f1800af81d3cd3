"""The readable convolution agrees with the fast kernels, in value and in gradient."""
import numpy as np
import pytest

import minires.functions as F
from minires.autograd import Tensor
from minires.gradcheck import assert_gradcheck
from minires.kernels import cpu

# (x shape, W shape, stride, pad, bias): odd and even sizes, non-square kernels and strides,
# 1x1 kernels, padding larger than needed and kernels as large as the padded input.
CASES = [
    ((2, 3, 5, 6), (4, 3, 3, 3), 1, 1, False),
    ((2, 3, 7, 6), (4, 3, 3, 3), 2, 1, True),
    ((1, 2, 5, 6), (3, 2, 2, 3), 1, 0, False),
    ((3, 3, 5, 4), (2, 3, 1, 1), 2, 0, True),
    ((2, 2, 6, 7), (3, 2, 3, 2), (2, 1), (1, 0), False),
    ((2, 1, 4, 4), (2, 1, 3, 3), 3, 2, True),
    ((1, 2, 3, 3), (2, 2, 5, 5), 1, 1, False),
]


def _direct(x, W, b, stride, pad):
    """The definition, one output element at a time (independent of both implementations)."""
    (SH, SW), (PH, PW) = [(s, s) if isinstance(s, int) else s for s in (stride, pad)]
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    xpad = np.zeros((N, C, H + 2 * PH, Wd + 2 * PW))
    xpad[:, :, PH:PH + H, PW:PW + Wd] = x
    OH, OW = (H + 2 * PH - KH) // SH + 1, (Wd + 2 * PW - KW) // SW + 1
    y = np.zeros((N, OC, OH, OW))
    for n in range(N):
        for oc in range(OC):
            for oh in range(OH):
                for ow in range(OW):
                    patch = xpad[n, :, oh * SH:oh * SH + KH, ow * SW:ow * SW + KW]
                    y[n, oc, oh, ow] = (patch * W[oc]).sum() + (b[oc] if b is not None else 0)
    return y


def _run(conv, x, W, b, stride, pad, gy):
    """Value and gradients (x, W, b) of ``conv``, backpropagating ``gy``."""
    tensors = [Tensor(a.copy(), requires_grad=True) for a in (x, W) + ((b,) if b is not None
                                                                       else ())]
    y = conv(*tensors[:2], tensors[2] if b is not None else None, stride=stride, pad=pad)
    y.backward(gy)
    return y.data, [t.grad for t in tensors]


@pytest.mark.parametrize("x_shape, W_shape, stride, pad, bias", CASES)
def test_reference_and_kernel_agree_in_value_and_gradient(x_shape, W_shape, stride, pad, bias):
    rng = np.random.default_rng(sum(x_shape) + sum(W_shape))
    x, W = rng.standard_normal(x_shape), rng.standard_normal(W_shape)
    b = rng.standard_normal(W_shape[0]) if bias else None
    gy = rng.standard_normal(F.conv2d(x, W, stride=stride, pad=pad).shape)  # random, float64
    y_fast, grads_fast = _run(F.conv2d, x, W, b, stride, pad, gy)
    y_ref, grads_ref = _run(F.conv2d_reference, x, W, b, stride, pad, gy)
    assert y_ref.dtype == np.float64 and y_ref.shape == y_fast.shape
    np.testing.assert_allclose(y_ref, y_fast, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_ref, _direct(x, W, b, stride, pad), rtol=1e-12, atol=1e-12)
    for name, g_ref, g_fast in zip(("gx", "gW", "gb"), grads_ref, grads_fast):
        assert g_ref.shape == g_fast.shape, name
        np.testing.assert_allclose(g_ref, g_fast, rtol=1e-11, atol=1e-11, err_msg=name)


def test_reference_gradient_matches_central_differences():
    rng = np.random.default_rng(5)
    assert_gradcheck(lambda x, W, b: F.conv2d_reference(x, W, b, stride=(2, 1), pad=1),
                     [rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 2)),
                      rng.standard_normal(3)])


def test_columns_are_the_kernels_patches():
    """im2col_reference holds the same patches as the CPU kernel's im2col, one per column."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 5))
    cols = F.im2col_reference(x, (3, 2), stride=(2, 1), padding=1).data
    patches = cpu.im2col(x, 3, 2, 2, 1, 1, 1)                   # (N, C, KH, KW, OH, OW)
    N, C, KH, KW, OH, OW = patches.shape
    assert cols.shape == (C * KH * KW, N * OH * OW)
    expected = patches.transpose(1, 2, 3, 0, 4, 5).reshape(C * KH * KW, N * OH * OW)
    np.testing.assert_array_equal(cols, expected)


def test_a_hand_computed_convolution():
    # x = [[1, 2], [3, 4]], W = [[1, 0], [0, -1]] with padding 1: each output pixel is
    # (the pixel up-left of it) - (the pixel at it), with zeros outside.
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    W = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    expected = [[-1, -2, 0], [-3, -3, 2], [0, 3, 4]]
    np.testing.assert_array_equal(F.conv2d_reference(x, W, pad=1).data[0, 0], expected)


def test_a_kernel_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        F.conv2d_reference(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        F.conv2d_reference(np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 3, 3)))
