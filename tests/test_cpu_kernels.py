"""The CPU convolution, im2col, BatchNorm and ReLU kernels against plain NumPy references.

The references below are written the obvious way (np.pad + a loop over kernel taps, mean/var
over axes), independent of the kernels' chunked, channels-last implementation.
"""
import numpy as np
import pytest

import cuda_reference as ref
import minires.functions as F
from cuda_kernel_checks import GEOMETRIES
from minires.autograd import Tensor
from minires.gradcheck import assert_gradcheck
from minires.kernels.cpu import activation, conv, conv_im2col, parallel
from minires.kernels.cpu import batchnorm as bn

# (N, C, H, W, OC, KH, KW, SH, SW, PH, PW)
CONV_GEOMETRIES = [
    (3, 2, 7, 5, 4, 3, 3, 1, 1, 1, 1),   # stride 1, pad 1, non-square input
    (3, 2, 7, 5, 4, 3, 3, 2, 2, 1, 1),   # stride 2, odd sizes
    (2, 3, 6, 9, 5, 1, 1, 1, 1, 0, 0),   # 1x1
    (2, 3, 6, 9, 5, 1, 1, 2, 2, 0, 0),   # 1x1 stride 2 (the option-B shortcut)
    (2, 3, 8, 7, 4, 3, 2, 1, 1, 0, 0),   # non-square kernel, pad 0
    (2, 3, 8, 7, 4, 3, 2, 2, 1, 1, 0),   # different strides and pads per axis
    (5, 4, 9, 9, 8, 3, 3, 2, 2, 1, 1),   # more images than one chunk (see chunked tests)
    (2, 3, 5, 5, 2, 5, 3, 1, 1, 2, 1),   # 5x3 kernel
]


def conv_reference(x, W, SH, SW, PH, PW):
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    OH, OW = (H + 2 * PH - KH) // SH + 1, (Wd + 2 * PW - KW) // SW + 1
    y = np.zeros((N, OC, OH, OW))
    for kh in range(KH):
        for kw in range(KW):
            patch = xp[:, :, kh:kh + SH * OH:SH, kw:kw + SW * OW:SW]
            y += np.einsum("nchw,oc->nohw", patch, W[:, :, kh, kw])
    return y


def conv_grads_reference(x, W, gy, SH, SW, PH, PW):
    """gx and gW by the adjoint of the reference's loop (scatter of every tap)."""
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    _, _, OH, OW = gy.shape
    xp = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    gxp = np.zeros_like(xp, dtype=np.float64)
    gW = np.zeros(W.shape)
    for kh in range(KH):
        for kw in range(KW):
            sl = (slice(None), slice(None), slice(kh, kh + SH * OH, SH),
                  slice(kw, kw + SW * OW, SW))
            gW[:, :, kh, kw] = np.einsum("nohw,nchw->oc", gy, xp[sl])
            gxp[sl] += np.einsum("nohw,oc->nchw", gy, W[:, :, kh, kw])
    return gxp[:, :, PH:PH + H, PW:PW + Wd], gW


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = parallel.num_threads()
    parallel.set_num_threads(request.param)
    yield request.param
    parallel.set_num_threads(before)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_forward_and_backward_match_reference(geometry, dtype, threads):
    N, C, H, Wd, OC, KH, KW, SH, SW, PH, PW = geometry
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, Wd)).astype(dtype)
    W = rng.standard_normal((OC, C, KH, KW)).astype(dtype)
    y, saved = conv.conv2d_forward(x, W, SH, SW, PH, PW)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, conv_reference(x, W, SH, SW, PH, PW), **tolerance(dtype))
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gW = conv.conv2d_backward(gy, W, saved, SH, SW, PH, PW)
    gx_ref, gW_ref = conv_grads_reference(x, W, gy, SH, SW, PH, PW)
    assert gx.dtype == dtype and gW.dtype == dtype
    np.testing.assert_allclose(gx, gx_ref, **tolerance(dtype))
    np.testing.assert_allclose(gW, gW_ref, **tolerance(dtype))


@pytest.mark.parametrize("geometry", [CONV_GEOMETRIES[1], CONV_GEOMETRIES[6]])
def test_conv_chunking_does_not_change_results(geometry, monkeypatch):
    # One image per chunk versus the whole batch in one chunk: same sums, same order per image.
    N, C, H, Wd, OC, KH, KW, SH, SW, PH, PW = geometry
    rng = np.random.default_rng(1)
    x, W = rng.standard_normal((N, C, H, Wd)), rng.standard_normal((OC, C, KH, KW))
    gy = rng.standard_normal(conv.conv2d_forward(x, W, SH, SW, PH, PW)[0].shape)
    results = []
    for chunk_bytes in (1, 1 << 30):
        monkeypatch.setattr(conv_im2col, "CHUNK_BYTES", chunk_bytes)
        y, saved = conv.conv2d_forward(x, W, SH, SW, PH, PW)
        results.append((y, *conv.conv2d_backward(gy, W, saved, SH, SW, PH, PW)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv_backward_computes_only_what_is_asked():
    rng = np.random.default_rng(2)
    x, W = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    gy = rng.standard_normal((2, 4, 6, 6))
    _, saved = conv.conv2d_forward(x, W, 1, 1, 1, 1, need_gW=False)
    assert saved.for_gW is None  # nothing kept for a weight gradient nobody will ask for
    gx, gW = conv.conv2d_backward(gy, W, saved, 1, 1, 1, 1, need_gx=True, need_gW=False)
    assert gW is None and gx.shape == x.shape
    _, saved = conv.conv2d_forward(x, W, 1, 1, 1, 1)
    gx, gW = conv.conv2d_backward(gy, W, saved, 1, 1, 1, 1, need_gx=False, need_gW=True)
    assert gx is None and gW.shape == W.shape


def test_conv2d_function_keeps_no_input_when_no_weight_gradient():
    # The CPU path saves x only for gW; a frozen weight must not keep the activation alive.
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 3, 5, 5)), requires_grad=True)
    W = Tensor(rng.standard_normal((4, 3, 3, 3)))
    y = F.conv2d(x, W, pad=1)
    assert y.creator.saved.for_gW is None
    y.backward(rng.standard_normal(y.shape))
    assert x.grad.shape == x.shape and W.grad is None


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_and_col2im_equal_the_references(geometry, dtype):
    """The same patches, and for col2im the same summation order per pixel as the reference
    (and the CUDA kernel): equal to the last bit."""
    N, C, H, W, KH, KW, SH, SW, PH, PW = geometry
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    col = conv.im2col(x, KH, KW, SH, SW, PH, PW)
    np.testing.assert_array_equal(col, ref.im2col(x, KH, KW, SH, SW, PH, PW))
    gcol = rng.standard_normal(col.shape).astype(dtype)
    np.testing.assert_array_equal(conv.col2im(gcol, H, W, SH, SW, PH, PW),
                                  ref.col2im(gcol, H, W, SH, SW, PH, PW))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(geometry):
    # <im2col(x), c> == <x, col2im(c)> for all x, c: the defining property of the backward.
    N, C, H, W, KH, KW, SH, SW, PH, PW = geometry
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W))
    col = conv.im2col(x, KH, KW, SH, SW, PH, PW)
    c = rng.standard_normal(col.shape)
    lhs = (col * c).sum()
    rhs = (x * conv.col2im(c, H, W, SH, SW, PH, PW)).sum()
    assert lhs == pytest.approx(rhs, rel=1e-12)


def batch_norm_reference(x, gamma, beta, mean=None, var=None, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if mean is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(
        shape) + beta.reshape(shape)


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (7, 5), (3, 4, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_forward_matches_reference(shape, dtype, relu, threads):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    C = shape[1]
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    y, _ = bn.batch_norm_forward(x, gamma, beta, rm, rv, True, 0.1, 1e-5, relu)
    ref = batch_norm_reference(x.astype(np.float64), gamma, beta)
    if relu:
        ref = np.maximum(ref, 0)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref, **tolerance(dtype))
    axes = (0,) + tuple(range(2, x.ndim))
    count = x.size // C
    np.testing.assert_allclose(rm, 0.1 * x.astype(np.float64).mean(axis=axes), **tolerance(dtype))
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.astype(np.float64).var(axis=axes) * count
                               / (count - 1), **tolerance(dtype))
    # eval mode normalises with the running statistics and leaves them alone
    before = rm.copy(), rv.copy()
    y_eval, _ = bn.batch_norm_forward(x, gamma, beta, rm, rv, False, 0.1, 1e-5, relu)
    ref = batch_norm_reference(x.astype(np.float64), gamma, beta, before[0], before[1])
    np.testing.assert_allclose(y_eval, np.maximum(ref, 0) if relu else ref, **tolerance(dtype))
    np.testing.assert_array_equal(rm, before[0])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_gradients(training, relu):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 3, 2)) + 0.3
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    f = F.batch_norm_relu if relu else F.batch_norm
    stats = (None, None) if training else (mean, var)
    assert_gradcheck(lambda x, g, b: f(x, g, b, *stats, training), [x, gamma, beta])


def test_batch_norm_relu_equals_relu_of_batch_norm():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    g, b = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    grads = []
    for fused in (True, False):
        xs, gs, bs = (Tensor(a.copy(), requires_grad=True) for a in (x, g, b))
        rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
        y = (F.batch_norm_relu(xs, gs, bs, rm, rv, True) if fused
             else F.relu(F.batch_norm(xs, gs, bs, rm, rv, True)))
        y.backward(gy)
        grads.append((y.data, xs.grad, gs.grad, bs.grad, rm, rv))
    for a, c in zip(*grads):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)


def test_relu_kernels_match_numpy(threads):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 70_000)).astype(np.float32)  # enough to be split
    gy = rng.standard_normal(x.shape).astype(np.float32)
    y = activation.relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(activation.relu_backward(gy, y), np.where(x > 0, gy, 0))


def test_relu_and_fused_batch_norm_relu_let_nan_through():
    # A diverging run must show NaN in its loss, not have it silently clipped to 0 by ReLU.
    x = np.array([[-1.0, np.nan, 2.0]], dtype=np.float32)
    y = activation.relu_forward(x)
    assert np.isnan(y[0, 1]) and y[0, 0] == 0
    x4 = np.full((2, 1, 1, 1), np.nan, dtype=np.float32)
    y, _ = bn.batch_norm_forward(x4, np.ones(1, np.float32), np.zeros(1, np.float32), None,
                                 None, True, 0.1, 1e-5, relu=True)
    assert np.isnan(y).all()


def test_split_covers_the_range_in_order():
    assert parallel.split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert parallel.split(2, 8) == [(0, 1), (1, 2)]
    parts = parallel.run_split(lambda a, b: list(range(a, b)), 7)
    assert sum(parts, []) == list(range(7))  # slices in order, whatever the thread count


def test_set_num_threads_rejects_nonpositive():
    with pytest.raises(ValueError, match="positive"):
        parallel.set_num_threads(0)


def test_run_split_gives_blas_one_thread_and_then_its_threads_back():
    """threadpoolctl limits BLAS inside the worker split only."""
    before = parallel.blas_threads()
    if before is None:
        pytest.skip("no BLAS that threadpoolctl can control")
    seen = parallel.run_split(lambda a, b: parallel.blas_threads(), 4)
    assert set(seen) == {1}
    assert parallel.blas_threads() == before
