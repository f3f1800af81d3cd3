"""On a GPU: every CUDA kernel against its NumPy reference, and every differentiable function's
gradient check in float64 (``minires.gradcheck.standard_cases(cupy)``).

Skipped without CuPy and a usable NVIDIA GPU. The kernel checks are the same functions
(tests/cuda_kernel_checks.py) that tests/test_cuda_emulated.py runs on the CPU emulator; the
tests below them need real hardware (1024-thread reductions at ResNet sizes, determinism).
"""
import numpy as np
import pytest

import cuda_kernel_checks as checks
import cuda_reference as ref
import minires
import minires.functions as F
from cuda_kernel_checks import BN_SHAPES, DTYPES, GEOMETRIES, SGD_SETTINGS, SOFTMAX_SHAPES
from minires.autograd import Tensor
from minires.gradcheck import gradcheck, standard_cases
from minires.kernels import cuda

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not minires.backend.cuda_available(),
                                 reason="needs CuPy and an NVIDIA GPU")]

CASE_NAMES = [case.name for case in standard_cases(np)]


@pytest.fixture(scope="module")
def cp():
    import cupy
    return cupy


@pytest.fixture
def dev(cp):
    return cp.asarray


@pytest.fixture
def host(cp):
    return cp.asnumpy


# -- every kernel against its reference (the emulator runs the same checks) ----------------------

@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_and_col2im(dev, host, geometry, dtype):
    checks.check_im2col_col2im(dev, host, geometry, dtype)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d(dev, host, geometry, dtype):
    checks.check_conv2d(dev, host, geometry, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul(dev, host, dtype):
    checks.check_matmul(dev, host, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_relu(dev, host, dtype):
    checks.check_add_relu(dev, host, dtype)


@pytest.mark.parametrize("lr_on_device", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_is_numpy_bit_for_bit(dev, host, dtype, lr_on_device):
    """NVRTC with --fmad=false rounds each product and sum as NumPy does (the data has no
    float32 subnormals, which CuPy's -ftz=true would flush)."""
    checks.check_sgd_is_numpy_bit_for_bit(dev, host, dtype, lr_on_device)


def test_sgd_over_many_parameters(dev, host):
    checks.check_sgd_over_many_parameters(dev, host)


def test_batch_norm_with_a_large_mean(dev, host):
    checks.check_batch_norm_with_a_large_mean(dev, host)


def test_non_contiguous_input(dev, host):
    checks.check_non_contiguous_input(dev, host)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(dev, host, dtype):
    checks.check_relu(dev, host, dtype)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm(dev, host, shape, training, relu, dtype):
    checks.check_batch_norm(dev, host, shape, training, relu, dtype)


def test_batch_norm_without_running_statistics(dev, host):
    checks.check_batch_norm_without_running_statistics(dev, host)


def test_batch_norm_running_arrays_of_another_dtype(dev, host):
    checks.check_batch_norm_running_arrays_of_another_dtype(dev, host)


def test_batch_norm_errors(dev, host):
    checks.check_batch_norm_errors(dev, host)


@pytest.mark.parametrize("N,K", SOFTMAX_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(dev, host, N, K, dtype):
    checks.check_softmax_cross_entropy(dev, host, N, K, dtype)


def test_softmax_cross_entropy_bad_labels(dev, host):
    checks.check_softmax_cross_entropy_bad_labels(dev, host)


def test_softmax_cross_entropy_errors(dev, host):
    checks.check_softmax_cross_entropy_errors(dev, host)


def test_softmax_cross_entropy_with_logits_of_100_to_1000(dev, host):
    checks.check_softmax_cross_entropy_large_logits(dev, host)


def test_softmax_cross_entropy_mean_is_deterministic(dev, host):
    checks.check_softmax_cross_entropy_mean_is_deterministic(dev, host)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_masks_are_the_cpus_bit_for_bit(dev, host, p, dtype):
    checks.check_dropout(dev, host, p, dtype)


def test_dropout_calls_draw_new_masks(dev, host):
    checks.check_dropout_calls_draw_new_masks(dev, host)


@pytest.mark.parametrize("momentum,nesterov,weight_decay", SGD_SETTINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step(dev, host, momentum, nesterov, weight_decay, dtype):
    checks.check_sgd_step(dev, host, momentum, nesterov, weight_decay, dtype)


def test_sgd_first_step_sets_the_velocity_to_the_update(dev, host):
    checks.check_sgd_first_step_sets_the_velocity_to_the_update(dev, host)


def test_sgd_errors(dev, host):
    checks.check_sgd_errors(dev, host)


# -- what needs real hardware ---------------------------------------------------------------------

def test_batch_norm_at_resnet_size(dev, host):
    """Full 1024-thread reductions over 128*32*32 values per channel, float32 in, double sums."""
    r = np.random.default_rng(3)
    x = (r.standard_normal((128, 16, 32, 32)) * 4 + 10).astype(np.float32)
    gamma, beta = r.standard_normal(16).astype(np.float32), r.standard_normal(16).astype(np.float32)
    rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)
    rm_dev, rv_dev = dev(rm), dev(rv)
    y, saved = cuda.batch_norm_forward(dev(x), dev(gamma), dev(beta), rm_dev, rv_dev, True,
                                       relu=True)
    y_ref, saved_ref = ref.batch_norm_forward(x, gamma, beta, rm, rv, True, relu=True)
    np.testing.assert_allclose(host(y), y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(host(rv_dev), rv, rtol=1e-6)
    gy = r.standard_normal(x.shape).astype(np.float32)
    for got, want in zip(cuda.batch_norm_backward(dev(gy), saved),
                         ref.batch_norm_backward(gy, saved_ref)):
        np.testing.assert_allclose(host(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_softmax_cross_entropy_with_a_thousand_classes(dev, host):
    r = np.random.default_rng(4)
    logits = (r.standard_normal((128, 1000)) * 10).astype(np.float32)
    labels = r.integers(0, 1000, 128)
    loss, _ = cuda.softmax_cross_entropy_forward(dev(logits), dev(labels))
    loss_ref, _ = ref.softmax_cross_entropy_forward(logits, labels)
    np.testing.assert_allclose(host(loss), loss_ref, rtol=1e-5)


def test_col2im_and_reductions_are_deterministic(cp, dev):
    """Gather col2im and fixed-order block sums: two runs agree to the last bit."""
    r = np.random.default_rng(5)
    col = dev(r.standard_normal((64, 16, 3, 3, 32, 32)).astype(np.float32))
    assert bool((cuda.col2im(col, 32, 32, 1, 1, 1, 1) == cuda.col2im(col, 32, 32, 1, 1, 1, 1))
                .all())
    x = dev(r.standard_normal((64, 16, 32, 32)).astype(np.float32))
    g, b = dev(np.ones(16, np.float32)), dev(np.zeros(16, np.float32))
    (y1, s1), (y2, s2) = (cuda.batch_norm_forward(x, g, b, None, None, True) for _ in range(2))
    assert bool((y1 == y2).all()) and bool((s1.inv_std == s2.inv_std).all())
    gy = dev(r.standard_normal((64, 16, 32, 32)).astype(np.float32))
    first, second = cuda.batch_norm_backward(gy, s1), cuda.batch_norm_backward(gy, s1)
    assert all(bool((a == b).all()) for a, b in zip(first, second))


def test_conv2d_on_the_gpu_matches_the_cpu(cp):
    r = np.random.default_rng(6)
    x = r.standard_normal((16, 16, 32, 32)).astype(np.float32)
    W = (r.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32)
    gy = r.standard_normal((16, 32, 16, 16)).astype(np.float32)
    results = []
    for to in (np.asarray, cp.asarray):
        xt, Wt = Tensor(to(x), requires_grad=True), Tensor(to(W), requires_grad=True)
        y = F.conv2d(xt, Wt, stride=2, pad=1)
        y.backward(to(gy))
        results.append([cp.asnumpy(a) for a in (y.data, xt.grad, Wt.grad)])
    for cpu, gpu in zip(*results):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-4 * np.abs(cpu).max())


# -- every function's gradient check, in float64, on the GPU -------------------------------------

@pytest.fixture(scope="module")
def gpu_cases(cp):
    return {case.name: case for case in standard_cases(cp)}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_gradient_check_on_the_gpu(gpu_cases, cp, name):
    case = gpu_cases[name]
    assert all(type(a).__module__.startswith("cupy") for a in case.inputs)
    result = gradcheck(case.f, case.inputs, rtol=1e-5, atol=1e-7)
    assert result.ok, (name, result.max_abs_error, result.max_rel_error)
    for analytic in result.analytic:
        assert type(analytic).__module__.startswith("cupy"), "a gradient left the GPU"
        assert float(abs(analytic).max()) > 0  # a zero gradient would pass vacuously


@pytest.mark.parametrize("name", CASE_NAMES)
def test_function_on_the_gpu_equals_the_cpu(gpu_cases, cp, name):
    """Forward values and analytic gradients of each case: GPU path == CPU path (float64)."""
    cpu_case = {c.name: c for c in standard_cases(np)}[name]
    gpu_case = gpu_cases[name]
    outputs = []
    for case, xp in ((cpu_case, np), (gpu_case, cp)):
        tensors = [Tensor(xp.array(a, dtype=xp.float64), requires_grad=True)
                   for a in case.inputs]
        y = case.f(*tensors)
        gy = xp.asarray(np.random.default_rng(0).standard_normal(y.shape))
        y.backward(gy)
        outputs.append([cp.asnumpy(y.data)] + [cp.asnumpy(t.grad) for t in tensors])
    for cpu, gpu in zip(*outputs):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_relu_on_the_gpu_equals_the_cpu(cp, training):
    """F.batch_norm_relu (not in the standard cases): GPU == CPU, and its gradient check."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 3, 2))
    gamma, beta = rng.standard_normal(3) + 1, rng.standard_normal(3)
    stats = rng.standard_normal(3) * 0.1, rng.uniform(0.5, 2, 3)
    gy = rng.standard_normal(x.shape)
    results = []
    for xp in (np, cp):
        running = [xp.array(s) for s in stats]
        tensors = [Tensor(xp.asarray(a), requires_grad=True) for a in (x, gamma, beta)]
        y = F.batch_norm_relu(*tensors, *running, training)
        y.backward(xp.asarray(gy))
        results.append([cp.asnumpy(a) for a in [y.data, *running] + [t.grad for t in tensors]])
    for c, g in zip(*results):
        np.testing.assert_allclose(g, c, rtol=1e-10, atol=1e-12)
    eval_stats = [cp.asarray(s) for s in stats]
    result = gradcheck(lambda x, g, b: F.batch_norm_relu(x, g, b, *(
        [None, None] if training else eval_stats), training),
        [cp.asarray(a) for a in (x, gamma, beta)])
    assert result.ok, (result.max_abs_error, result.max_rel_error)
