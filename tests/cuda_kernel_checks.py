"""Checks of every CUDA kernel wrapper against its NumPy reference, shared by two test files.

Each ``check_*`` builds NumPy inputs, runs ``minires.kernels.cuda`` on copies moved with
``dev`` (NumPy -> device), brings results back with ``host`` (device -> NumPy) and compares
them with ``cuda_reference``. tests/test_cuda_emulated.py runs them on the CPU emulator
(``dev``/``host`` the identity); tests/test_cuda_kernels.py runs the very same checks on a GPU
(``cupy.asarray``/``cupy.asnumpy``).
"""
import numpy as np
import pytest

import cuda_reference as ref
from minires.kernels import cpu, cuda

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
DTYPES = [np.float32, np.float64]

GEOMETRIES = [  # (N, C, H, W, KH, KW, SH, SW, PH, PW)
    (2, 3, 5, 6, 3, 3, 1, 1, 1, 1),
    (2, 3, 7, 6, 3, 3, 2, 2, 1, 1),
    (1, 2, 5, 7, 2, 3, 1, 2, 0, 1),
    (2, 4, 6, 6, 1, 1, 2, 2, 0, 0),
    (1, 2, 4, 4, 3, 3, 1, 1, 2, 2),  # padding wider than half the kernel
]
BN_SHAPES = [(8, 3, 10, 10), (5, 4, 3, 3), (3, 2, 1, 1), (70, 5)]
SOFTMAX_SHAPES = [(1, 3), (13, 10), (9, 100), (4, 33)]
SGD_SETTINGS = [(0.0, False, 0.0), (0.0, False, 5e-4), (0.9, False, 1e-4), (0.9, True, 5e-4)]
#: The backend functions one training step of a ResNet calls.
STEP_KERNELS = ("conv2d_forward", "conv2d_backward", "batch_norm_forward", "batch_norm_backward",
                "add_relu_forward", "relu_backward", "matmul", "softmax_cross_entropy_forward",
                "softmax_cross_entropy_backward", "sgd_step")


def count_calls(monkeypatch, module, names) -> dict:
    """Replace ``module.<name>`` for each of ``names`` by a wrapper that counts its calls into
    the returned dict (name -> calls)."""
    calls = {}

    def counting(name, original):
        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)
        return counted

    for name in names:
        monkeypatch.setattr(module, name, counting(name, getattr(module, name)))
    return calls


def rng():
    return np.random.default_rng(7)


def check_im2col_col2im(dev, host, geometry, dtype):
    """Both are exact: im2col copies, col2im adds in the reference's order."""
    N, C, H, W, KH, KW, SH, SW, PH, PW = geometry
    x = rng().standard_normal((N, C, H, W)).astype(dtype)
    col = host(cuda.im2col(dev(x), KH, KW, SH, SW, PH, PW))
    np.testing.assert_array_equal(col, ref.im2col(x, KH, KW, SH, SW, PH, PW))
    gcol = rng().standard_normal(col.shape).astype(dtype)
    x_back = host(cuda.col2im(dev(gcol), H, W, SH, SW, PH, PW))
    assert x_back.shape == (N, C, H, W) and x_back.dtype == dtype
    np.testing.assert_array_equal(x_back, ref.col2im(gcol, H, W, SH, SW, PH, PW))


def check_non_contiguous_input(dev, host):
    x = rng().standard_normal((3, 2, 5, 5))
    got = host(cuda.im2col(dev(x).transpose(1, 0, 2, 3), 3, 3, 1, 1, 1, 1))
    want = ref.im2col(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), 3, 3, 1, 1, 1, 1)
    np.testing.assert_array_equal(got, want)


def check_relu(dev, host, dtype):
    x = rng().standard_normal((4, 3, 5, 5)).astype(dtype)
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    y = cuda.relu_forward(dev(x))
    np.testing.assert_array_equal(host(y), ref.relu_forward(x))
    gy = rng().standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(host(cuda.relu_backward(dev(gy), y)),
                                  ref.relu_backward(gy, ref.relu_forward(x)))


def check_batch_norm(dev, host, shape, training, relu, dtype):
    r = rng()
    C = shape[1]
    x = (r.standard_normal(shape) * 2 + 3).astype(dtype)
    gamma, beta = r.standard_normal(C).astype(dtype), r.standard_normal(C).astype(dtype)
    rm, rv = r.standard_normal(C).astype(dtype), (r.random(C) + 0.5).astype(dtype)
    rm_dev, rv_dev = dev(rm.copy()), dev(rv.copy())
    y, saved = cuda.batch_norm_forward(dev(x), dev(gamma), dev(beta), rm_dev, rv_dev, training,
                                       0.1, 1e-5, relu)
    y_ref, saved_ref = ref.batch_norm_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5, relu)
    tol = TOL[dtype]
    np.testing.assert_allclose(host(y), y_ref, **tol)
    np.testing.assert_allclose(host(saved.mean), saved_ref.mean, **tol)
    np.testing.assert_allclose(host(saved.inv_std), saved_ref.inv_std, **tol)
    np.testing.assert_allclose(host(rm_dev), rm, **tol)  # updated in place (or not, in eval)
    np.testing.assert_allclose(host(rv_dev), rv, **tol)

    gy = r.standard_normal(shape).astype(dtype)
    got = cuda.batch_norm_backward(dev(gy), saved)
    want = ref.batch_norm_backward(gy, saved_ref)
    for name, g, w in zip(("gx", "ggamma", "gbeta"), got, want):
        g = host(g)
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g, w, err_msg=name, rtol=tol["rtol"] * 10,
                                   atol=tol["atol"] * 10 * float(np.abs(w).max()))
    gx_none, ggamma, gbeta = cuda.batch_norm_backward(dev(gy), saved, need_gx=False)
    assert gx_none is None
    np.testing.assert_array_equal(host(ggamma), host(got[1]))
    np.testing.assert_array_equal(host(gbeta), host(got[2]))


def check_batch_norm_without_running_statistics(dev, host):
    x = rng().standard_normal((6, 2, 3, 3))
    y, _ = cuda.batch_norm_forward(dev(x), dev(np.ones(2)), dev(np.zeros(2)), None, None, True)
    y_ref, _ = ref.batch_norm_forward(x, np.ones(2), np.zeros(2), None, None, True)
    np.testing.assert_allclose(host(y), y_ref, rtol=1e-12, atol=1e-13)


def check_batch_norm_running_arrays_of_another_dtype(dev, host):
    """float32 running statistics of a float64 input are still updated in place."""
    x = rng().standard_normal((6, 2, 3, 3)) + 5
    rm, rv = dev(np.zeros(2, np.float32)), dev(np.ones(2, np.float32))
    cuda.batch_norm_forward(dev(x), dev(np.ones(2)), dev(np.zeros(2)), rm, rv, True)
    rm_ref, rv_ref = np.zeros(2), np.ones(2)
    ref.batch_norm_forward(x, np.ones(2), np.zeros(2), rm_ref, rv_ref, True)
    assert rm.dtype == np.float32
    np.testing.assert_allclose(host(rm), rm_ref, rtol=1e-6)
    np.testing.assert_allclose(host(rv), rv_ref, rtol=1e-6)


def check_batch_norm_errors(dev, host):
    with pytest.raises(ValueError, match="running_mean and running_var"):
        cuda.batch_norm_forward(dev(np.ones((2, 2))), dev(np.ones(2)), dev(np.zeros(2)), None,
                                None, False)
    with pytest.raises(TypeError, match="gamma must be float64"):
        cuda.batch_norm_forward(dev(np.ones((2, 2))), dev(np.ones(2, np.float32)),
                                dev(np.zeros(2)), None, None, True)


def check_softmax_cross_entropy(dev, host, N, K, dtype):
    r = rng()
    logits = (r.standard_normal((N, K)) * 5).astype(dtype)
    labels = r.integers(0, K, N)
    loss, log_z = cuda.softmax_cross_entropy_forward(dev(logits), dev(labels))
    loss_ref, log_z_ref = ref.softmax_cross_entropy_forward(logits, labels)
    tol = TOL[dtype]
    loss, log_z = host(loss), host(log_z)
    assert loss.shape == () and loss.dtype == dtype
    np.testing.assert_allclose(loss, loss_ref, **tol)
    assert log_z.dtype == np.float64  # computed and kept in double, whatever the logits' dtype
    np.testing.assert_allclose(log_z, log_z_ref, rtol=1e-13)
    gy = np.asarray(r.standard_normal(), dtype=dtype)
    gx = cuda.softmax_cross_entropy_backward(dev(gy), dev(logits), dev(labels), dev(log_z))
    np.testing.assert_allclose(host(gx),
                               ref.softmax_cross_entropy_backward(gy, logits, labels, log_z_ref),
                               rtol=tol["rtol"] * 10, atol=tol["atol"])


def large_logits(N=64, K=10, seed=11):
    """float32 logits of 100 to 1000 whose rows are not one-hot after the softmax (each row
    spread by a few units around its own offset), and labels."""
    r = np.random.default_rng(seed)
    logits = (r.uniform(100, 1000, (N, 1)) + 3 * r.standard_normal((N, K))).astype(np.float32)
    return logits, r.integers(0, K, N)


def relative_gradient_error(gx, logits, labels, log_z_for_backward=None):
    """Largest elementwise relative error of a float32 gradient against the float64 one of the
    same logits (gy = 1); elements below float's smallest normal (flushed to zero on a GPU)
    count as exact."""
    want = ref.softmax_cross_entropy_backward(1.0, logits.astype(np.float64), labels,
                                              ref.softmax_cross_entropy_forward(
                                                  logits.astype(np.float64), labels)[1])
    err = np.abs(gx.astype(np.float64) - want)
    return float(np.max(np.where(np.abs(want) < 2e-38, 0.0, err / np.abs(want))))


def check_softmax_cross_entropy_large_logits(dev, host):
    """Logits of 100-1000 in float32: the gradient is float64's rounded once (relative error
    at most a float32 rounding, 2^-24, plus a little for exp), and so is the loss."""
    logits, labels = large_logits()
    loss, log_z = cuda.softmax_cross_entropy_forward(dev(logits), dev(labels))
    gx = host(cuda.softmax_cross_entropy_backward(dev(np.float32(1)), dev(logits), dev(labels),
                                                  log_z))
    assert relative_gradient_error(gx, logits, labels) < 1.2e-7
    loss_ref, _ = ref.softmax_cross_entropy_forward(logits.astype(np.float64), labels)
    np.testing.assert_allclose(host(loss), loss_ref, rtol=1.2e-7)


def check_softmax_cross_entropy_mean_is_deterministic(dev, host):
    """The mean is summed in one block in a fixed order: the same bits on every call."""
    r = rng()
    logits = dev((r.standard_normal((300, 7)) * 30).astype(np.float32))
    labels = dev(r.integers(0, 7, 300))
    first = host(cuda.softmax_cross_entropy_forward(logits, labels)[0])
    for _ in range(2):
        assert host(cuda.softmax_cross_entropy_forward(logits, labels)[0]).tobytes() == \
            first.tobytes()


def check_softmax_cross_entropy_bad_labels(dev, host):
    logits = rng().standard_normal((4, 5))
    labels = np.array([0, 5, 2, -1])
    loss, log_z = cuda.softmax_cross_entropy_forward(dev(logits), dev(labels))
    assert np.isnan(host(loss))
    gx = host(cuda.softmax_cross_entropy_backward(1.0, dev(logits), dev(labels), log_z))
    assert np.isnan(gx[[1, 3]]).all() and np.isfinite(gx[[0, 2]]).all()


def check_softmax_cross_entropy_errors(dev, host):
    with pytest.raises(ValueError, match=r"labels must be shaped \(3,\)"):
        cuda.softmax_cross_entropy_forward(dev(np.zeros((3, 4))), dev(np.zeros(2, np.int64)))
    with pytest.raises(ValueError, match="labels must be integers"):
        cuda.softmax_cross_entropy_forward(dev(np.zeros((3, 4))), dev(np.zeros(3)))


DROPOUT_KEY = 0x5EED_0F_D1CE_2019  # any 63-bit layer key


def check_dropout(dev, host, p, dtype):
    """The device's mask is the CPU kernel's and the reference's, bit for bit, forward and
    backward; the state advances by one call on the device, and the saved stream names the
    call that was applied."""
    r = rng()
    x = r.standard_normal((3, 5, 17, 9)).astype(dtype)  # 2295 elements: nine 256-thread blocks
    gy = r.standard_normal(x.shape).astype(dtype)
    state, cpu_state, ref_state = (np.array([DROPOUT_KEY, 41], np.int64) for _ in range(3))
    state = dev(state)
    y, saved = cuda.dropout_forward(dev(x), p, state)
    y_cpu, saved_cpu = cpu.dropout_forward(x, p, cpu_state)
    y_ref, saved_ref = ref.dropout_forward(x, p, ref_state)
    y = host(y)
    assert y.dtype == dtype and y.shape == x.shape
    assert y.tobytes() == y_cpu.tobytes() == y_ref.tobytes()
    assert 0 < np.count_nonzero(y) < y.size
    np.testing.assert_array_equal(host(state), [DROPOUT_KEY, 42])
    np.testing.assert_array_equal(host(saved.stream), [DROPOUT_KEY, 41])
    gx = host(cuda.dropout_backward(dev(gy), saved))
    assert gx.tobytes() == cpu.dropout_backward(gy, saved_cpu).tobytes() == \
        ref.dropout_backward(gy, saved_ref).tobytes()
    np.testing.assert_array_equal(gx == 0, y == 0)  # the same mask both ways


def check_dropout_calls_draw_new_masks(dev, host):
    """Three calls on one state: three different masks, each the CPU's for that call."""
    x = np.ones(4096, np.float32)
    state = dev(np.array([DROPOUT_KEY, 0], np.int64))
    cpu_state = np.array([DROPOUT_KEY, 0], np.int64)
    masks = []
    for _ in range(3):
        y = host(cuda.dropout_forward(dev(x), 0.5, state)[0])
        assert y.tobytes() == cpu.dropout_forward(x, 0.5, cpu_state)[0].tobytes()
        masks.append(y != 0)
    assert not (masks[0] == masks[1]).all() and not (masks[1] == masks[2]).all()
    np.testing.assert_array_equal(host(state), [DROPOUT_KEY, 3])


def check_sgd_step(dev, host, momentum, nesterov, weight_decay, dtype):
    """Three steps over two parameters, one of them exempt from weight decay."""
    r = rng()
    shapes = [(3, 7, 5), (4,)]
    p_ref = [r.standard_normal(s).astype(dtype) for s in shapes]
    v_ref = [np.zeros_like(p) for p in p_ref]
    p = [dev(a.copy()) for a in p_ref]
    v = [dev(np.zeros_like(a)) for a in p_ref] if momentum else None
    decays = [weight_decay, 0.0]
    for _ in range(3):
        g = [r.standard_normal(s).astype(dtype) for s in shapes]
        cuda.sgd_step(p, [dev(a) for a in g], v, 0.05, momentum, decays, nesterov)
        ref.sgd_step(p_ref, g, v_ref, 0.05, momentum, decays, nesterov)
    for i in range(2):
        np.testing.assert_allclose(host(p[i]), p_ref[i], **TOL[dtype])
        if momentum:
            np.testing.assert_allclose(host(v[i]), v_ref[i], **TOL[dtype])


def check_sgd_first_step_sets_the_velocity_to_the_update(dev, host):
    """A zero velocity before the first step gives PyTorch's first step (buffer = update)."""
    p, g, v = dev(np.ones(5)), dev(np.full(5, 2.0)), dev(np.zeros(5))
    cuda.sgd_step([p], [g], [v], 0.1, 0.9, [0.5], False)
    np.testing.assert_allclose(host(v), 2.0 + 0.5)
    np.testing.assert_allclose(host(p), 1 - 0.1 * 2.5)


def check_sgd_errors(dev, host):
    p = dev(np.ones((4, 4)))
    with pytest.raises(ValueError, match="velocity"):
        cuda.sgd_step([p], [dev(np.ones((4, 4)))], [None], 0.1, 0.9, [0.0], False)
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda.sgd_step([p.T], [dev(np.ones((4, 4)))], None, 0.1, 0.0, [0.0], False)
    with pytest.raises(TypeError, match="grad must be float64"):
        cuda.sgd_step([p], [dev(np.ones((4, 4), np.float32))], None, 0.1, 0.0, [0.0], False)


def check_conv2d(dev, host, geometry, dtype, OC=5):
    """Forward, both gradients and adding the weight gradient into an existing buffer, against
    the float64 reference, through the GEMM-layout patches and cuBLAS."""
    N, C, H, W, KH, KW, SH, SW, PH, PW = geometry
    r = rng()
    x = r.standard_normal((N, C, H, W)).astype(dtype)
    Wt = r.standard_normal((OC, C, KH, KW)).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    y, saved = cuda.conv2d_forward(dev(x), dev(Wt), SH, SW, PH, PW)
    np.testing.assert_allclose(host(y), ref.conv2d_forward(x, Wt, SH, SW, PH, PW), **tol)
    assert host(y).dtype == dtype and y.flags.c_contiguous
    gy = r.standard_normal(y.shape).astype(dtype)
    gx_ref, gW_ref = ref.conv2d_backward(gy, x, Wt, SH, SW, PH, PW)
    gx, gW = cuda.conv2d_backward(dev(gy), dev(Wt), saved, SH, SW, PH, PW)
    np.testing.assert_allclose(host(gx), gx_ref, err_msg="gx", **tol)
    np.testing.assert_allclose(host(gW), gW_ref, err_msg="gW", **tol)
    earlier = r.standard_normal(Wt.shape).astype(dtype)
    into = dev(earlier.copy())
    none, added = cuda.conv2d_backward(dev(gy), dev(Wt), saved, SH, SW, PH, PW, need_gx=False,
                                       gW_into=into)
    assert none is None and added is into, "the weight gradient was not added in place"
    np.testing.assert_allclose(host(added), earlier + gW_ref, **tol)
    _, frozen = cuda.conv2d_forward(dev(x), dev(Wt), SH, SW, PH, PW, need_gW=False)
    gx_only, no_gW = cuda.conv2d_backward(dev(gy), dev(Wt), frozen, SH, SW, PH, PW,
                                          need_gW=False)
    assert no_gW is None and frozen.for_gW is None
    np.testing.assert_allclose(host(gx_only), gx_ref, **tol)


def check_matmul(dev, host, dtype):
    """Plain and transposed operands (read in place), a strided one (copied), an empty inner
    dimension, and the errors."""
    r = rng()
    a, b = r.standard_normal((5, 7)).astype(dtype), r.standard_normal((7, 3)).astype(dtype)
    tol = TOL[dtype]
    for left, right in ((a, b), (a, b.T.copy().T), (a.T.copy().T, b), (a.T.copy().T, b.T.copy().T)):
        got = host(cuda.matmul(dev(left), dev(right)))
        np.testing.assert_allclose(got, a @ b, **tol)
        assert got.dtype == dtype and got.shape == (5, 3)
    got = host(cuda.matmul(dev(a)[:, ::2], dev(b)[::2]))
    np.testing.assert_allclose(got, a[:, ::2] @ b[::2], **tol)
    np.testing.assert_array_equal(host(cuda.matmul(dev(np.ones((2, 0), dtype)),
                                                   dev(np.ones((0, 4), dtype)))),
                                  np.zeros((2, 4)))
    with pytest.raises(ValueError, match="matmul expects"):
        cuda.matmul(dev(a), dev(a))
    with pytest.raises(TypeError, match="float32 or two float64"):
        cuda.matmul(dev(a), dev(b.astype(np.float16)))


def check_add_relu(dev, host, dtype):
    r = rng()
    a, b = (r.standard_normal((4, 3, 5, 5)).astype(dtype) for _ in range(2))
    a[0, 0, 0, :2] = [np.nan, -np.inf]
    np.testing.assert_array_equal(host(cuda.add_relu_forward(dev(a), dev(b))),
                                  ref.relu_forward(a + b))
    with pytest.raises(ValueError, match="one shape and dtype"):
        cuda.add_relu_forward(dev(a), dev(b[:, :2]))


def check_sgd_is_numpy_bit_for_bit(dev, host, dtype, lr_on_device):
    """Five steps over parameters of several shapes, Nesterov momentum and weight decay for some:
    the same bits as the NumPy reference (each product and sum rounded on its own)."""
    r = rng()
    shapes = [(16, 3, 3, 3), (16,), (7, 5), (1,), (64, 64, 3, 3)]
    p_ref = [r.standard_normal(s).astype(dtype) for s in shapes]
    v_ref = [np.zeros_like(p) for p in p_ref]
    p, v = [dev(a.copy()) for a in p_ref], [dev(np.zeros_like(a)) for a in p_ref]
    decays = [5e-4, 0.0, 5e-4, 0.0, 1e-4]
    for step, lr in enumerate((0.1, 0.1, 0.05, 0.3, 0.01)):
        g = [r.standard_normal(s).astype(dtype) for s in shapes]
        rate = dev(np.array([lr], dtype)) if lr_on_device else lr
        cuda.sgd_step(p, [dev(a) for a in g], v, rate, 0.9, decays, step % 2 == 0)
        ref.sgd_step(p_ref, g, v_ref, lr, 0.9, decays, step % 2 == 0)
    for i in range(len(shapes)):
        np.testing.assert_array_equal(host(p[i]), p_ref[i], err_msg=f"param {i}")
        np.testing.assert_array_equal(host(v[i]), v_ref[i], err_msg=f"velocity {i}")


def check_sgd_over_many_parameters(dev, host):
    """More parameters than one launch carries, and two dtypes: every one is updated."""
    from minires.kernels.cuda.sgd import MAX_TENSORS
    r = rng()
    dtypes = [np.float32] * (MAX_TENSORS + 7) + [np.float64] * 3
    p_ref = [r.standard_normal(1 + i % 5).astype(d) for i, d in enumerate(dtypes)]
    g = [r.standard_normal(a.shape).astype(a.dtype) for a in p_ref]
    p = [dev(a.copy()) for a in p_ref]
    cuda.sgd_step(p, [dev(a) for a in g], None, 0.5, 0.0, [0.0] * len(p), False)
    ref.sgd_step(p_ref, g, None, 0.5, 0.0, [0.0] * len(p), False)
    for got, want in zip(p, p_ref):
        np.testing.assert_array_equal(host(got), want)


def check_batch_norm_with_a_large_mean(dev, host):
    """A mean 10^5 times the spread: the shifted sums keep the variance to double precision."""
    x = 1000.0 + 0.01 * rng().standard_normal((16, 3, 6, 6))
    y, saved = cuda.batch_norm_forward(dev(x), dev(np.ones(3)), dev(np.zeros(3)), None, None,
                                       True)
    y_ref, saved_ref = ref.batch_norm_forward(x, np.ones(3), np.zeros(3), None, None, True)
    np.testing.assert_allclose(host(saved.inv_std), saved_ref.inv_std, rtol=1e-9)
    np.testing.assert_allclose(host(y), y_ref, rtol=1e-8, atol=1e-8)
