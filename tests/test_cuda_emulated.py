"""The CUDA kernels and their Python wrappers, run on the CPU by ``cuda_emulator``.

The real wrappers in ``minires.kernels.cuda`` run unchanged against a stand-in ``cupy`` whose
RawModule kernels are the ``.cu`` sources compiled with g++ under a thread-per-CUDA-thread shim.
This checks, without a GPU, the kernels' index arithmetic, reductions (barriers, shuffles, early
exits), launch shapes, argument order and scalar types against the NumPy references, with the
same checks (tests/cuda_kernel_checks.py) that tests/test_cuda_kernels.py runs on a real GPU. It
cannot see GPU-only effects (memory ordering, timing): only the GPU run can.
"""
import sys

import numpy as np
import pytest

import cuda_emulator as emu
import cuda_kernel_checks as checks
import cuda_reference as ref
import minires.functions as F
from cuda_kernel_checks import (BN_SHAPES, DTYPES, GEOMETRIES, SGD_SETTINGS, SOFTMAX_SHAPES,
                                STEP_KERNELS)
from minires import models, optim
from minires.autograd import Tensor
from minires.gradcheck import numerical_grad, standard_cases
from minires.kernels import cuda
from minires.kernels.cuda import blas, launch, loader
from minires.kernels.cuda import sgd as cuda_sgd
from minires.train import train_step

pytestmark = pytest.mark.skipif(not emu.compiler_available(),
                                reason="needs g++ (C++20) to emulate the CUDA kernels")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    sources = {name: loader.source(name) for name in loader.source_names()}
    return emu.EmulatedLibrary(sources, tmp_path_factory.getbasetemp() / "emulated_cuda")


@pytest.fixture
def gpu(library, monkeypatch):
    """Route ``import cupy`` in the wrappers to the emulator, and cuBLAS to its NumPy
    stand-in; check guard zones afterwards."""
    allocator = emu.GuardedAllocator()
    monkeypatch.setitem(sys.modules, "cupy", emu.fake_cupy(library, allocator))
    library.cublas = emu.EmulatedCublas()
    monkeypatch.setattr(blas, "library", lambda: library.cublas)
    loader.clear_caches()
    library.clear_launches()
    yield library
    loader.clear_caches()  # never leave an emulated module cached for real GPU tests
    allocator.check()


def dev(a):
    """NumPy -> "device": an :class:`cuda_emulator.EmulatedDeviceArray` copy."""
    return emu.to_emulated_device(a)


def host(a):
    """"device" -> NumPy."""
    return np.asarray(a)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_and_col2im(gpu, geometry, dtype):
    checks.check_im2col_col2im(dev, host, geometry, dtype)


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d(gpu, geometry, dtype):
    checks.check_conv2d(dev, host, geometry, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul(gpu, dtype):
    checks.check_matmul(dev, host, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_relu(gpu, dtype):
    checks.check_add_relu(dev, host, dtype)


@pytest.mark.parametrize("lr_on_device", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_is_numpy_bit_for_bit(gpu, dtype, lr_on_device):
    """The emulator compiles without contraction (-ffp-contract=off), as NVRTC with
    --fmad=false: the kernel's arithmetic is NumPy's, operation by operation."""
    checks.check_sgd_is_numpy_bit_for_bit(dev, host, dtype, lr_on_device)


def test_sgd_over_many_parameters(gpu):
    checks.check_sgd_over_many_parameters(dev, host)
    # 103 float32 parameters in two launches, 3 float64 ones in a third.
    assert sorted(name for name, _, _ in gpu.launches) == [
        "sgd_update<double>", "sgd_update<float>", "sgd_update<float>"]


def test_batch_norm_with_a_large_mean(gpu):
    checks.check_batch_norm_with_a_large_mean(dev, host)


def test_non_contiguous_input(gpu):
    checks.check_non_contiguous_input(dev, host)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(gpu, dtype):
    checks.check_relu(dev, host, dtype)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm(gpu, shape, training, relu, dtype):
    checks.check_batch_norm(dev, host, shape, training, relu, dtype)


def test_batch_norm_without_running_statistics(gpu):
    checks.check_batch_norm_without_running_statistics(dev, host)


def test_batch_norm_running_arrays_of_another_dtype(gpu):
    checks.check_batch_norm_running_arrays_of_another_dtype(dev, host)


def test_batch_norm_errors(gpu):
    checks.check_batch_norm_errors(dev, host)


@pytest.mark.parametrize("N,K", SOFTMAX_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(gpu, N, K, dtype):
    checks.check_softmax_cross_entropy(dev, host, N, K, dtype)


def test_softmax_cross_entropy_bad_labels(gpu):
    checks.check_softmax_cross_entropy_bad_labels(dev, host)


def test_softmax_cross_entropy_errors(gpu):
    checks.check_softmax_cross_entropy_errors(dev, host)


@pytest.mark.parametrize("momentum,nesterov,weight_decay", SGD_SETTINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step(gpu, momentum, nesterov, weight_decay, dtype):
    checks.check_sgd_step(dev, host, momentum, nesterov, weight_decay, dtype)


def test_sgd_first_step_sets_the_velocity_to_the_update(gpu):
    checks.check_sgd_first_step_sets_the_velocity_to_the_update(dev, host)


def test_sgd_errors(gpu):
    checks.check_sgd_errors(dev, host)


# -- what only the emulator can observe: launch shapes and stray writes ---------------------------

def test_grid_stride_loops_cover_everything_with_a_capped_grid(gpu, monkeypatch):
    monkeypatch.setattr(launch, "MAX_BLOCKS", 2)
    x = dev(np.random.default_rng(0).standard_normal((2, 3, 9, 9)))
    col = cuda.im2col(x, 3, 3, 1, 1, 1, 1)  # 4374 elements on 2 blocks of 256 threads
    np.testing.assert_array_equal(col, ref.im2col(x, 3, 3, 1, 1, 1, 1))
    np.testing.assert_array_equal(cuda.col2im(col, 9, 9, 1, 1, 1, 1),
                                  ref.col2im(col, 9, 9, 1, 1, 1, 1))
    np.testing.assert_array_equal(cuda.relu_forward(x), ref.relu_forward(x))
    p, p_ref = x.copy(), x.copy()
    cuda.sgd_step([p], [x], None, 0.5, 0.0, [0.0], False)
    ref.sgd_step([p_ref], [x], None, 0.5, 0.0, [0.0], False)
    np.testing.assert_array_equal(p, p_ref)
    assert {grid for _, grid, _ in gpu.launches} == {2}


def test_batch_norm_spreads_each_channel_over_several_blocks(gpu):
    """Two kernels each way, B blocks per channel; the result is the reference's."""
    x = dev(np.random.default_rng(0).standard_normal((64, 4, 16, 16)) + 3)
    B = launch.channel_blocks(4, 64 * 256)
    assert B == 16
    gamma, beta = dev(np.ones(4)), dev(np.zeros(4))
    y, saved = cuda.batch_norm_forward(x, gamma, beta, None, None, True)
    assert gpu.launches == [("bn_partial_sums<double>", 4 * B, 128),
                            ("bn_normalize<double>", 4 * B, 128)]
    y_ref, _ = ref.batch_norm_forward(host(x), np.ones(4), np.zeros(4), None, None, True)
    np.testing.assert_allclose(host(y), y_ref, rtol=1e-12, atol=1e-12)
    gpu.clear_launches()
    cuda.batch_norm_backward(dev(np.ones(x.shape)), saved)
    assert [name for name, _, _ in gpu.launches] == ["bn_backward_partial_sums<double>",
                                                     "bn_backward_apply<double>"]


def test_scalars_of_the_wrong_width_are_refused(gpu):
    """The emulator is stricter than CuPy: a Python float for a ``float`` parameter would be
    passed as a double and misread on a GPU."""
    x = np.zeros(4, np.float32)
    tensors = np.zeros(1, dtype=cuda_sgd.tensor_list_dtype(np.float32))
    with pytest.raises(TypeError, match="lr must be passed as float32"):
        loader.kernel("sgd_update", np.float32)((1,), (32,), (
            tensors, x, 0.1, np.float32(0), np.int32(0), np.int32(0)))
    with pytest.raises(TypeError, match="tensors must be a one-element structured NumPy array"):
        loader.kernel("sgd_update", np.float32)((1,), (32,), (
            np.zeros(1, dtype=cuda_sgd.tensor_list_dtype(np.float64)), x, np.float32(0.1),
            np.float32(0), np.int32(0), np.int32(0)))


def test_kernels_that_synchronise_get_one_thread_per_cuda_thread(library):
    """Running a kernel with barriers or shuffles serially would be wrong: check the split."""
    assert library.cooperative == {f"{k}<{t}>" for k in ("bn_partial_sums",
                                                          "bn_backward_partial_sums",
                                                          "softmax_ce_forward")
                                   for t in ("float", "double")}


def test_guard_zones_catch_a_stray_write(library):
    allocator = emu.GuardedAllocator()
    y = allocator.empty(3, np.float32)
    y.base[emu.GUARD + 3] = 1.0  # one past the end, as an off-by-one kernel would write
    with pytest.raises(AssertionError, match="outside its output array"):
        allocator.check()


# -- the library's CUDA branches (functions, optimizer), on the emulator --------------------------

@pytest.fixture
def device(gpu, monkeypatch):
    """The fake ``cupy`` also becomes minires' CUDA array module: ``Module.to("cuda")``,
    ``xp.asarray`` etc. then make :class:`cuda_emulator.EmulatedDeviceArray` s, which take the
    CUDA branches of minires.functions and minires.optim; their kernels run on the emulator."""
    import minires.backend
    monkeypatch.setattr(minires.backend, "_cupy_or_none", lambda: sys.modules["cupy"])
    return gpu


def _on_device(a):
    return type(a) is emu.EmulatedDeviceArray


CASE_NAMES = [case.name for case in standard_cases(np)]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_function_through_the_cuda_branches(device, name):
    """Each standard case, its inputs "on the GPU": the same forward values and gradients as
    on the CPU, and a gradient that passes the numerical check."""
    cases = [{c.name: c for c in standard_cases(xp)}[name] for xp in (np, sys.modules["cupy"])]
    gy_cpu = None
    results = []
    for case, move in zip(cases, (np.array, emu.to_emulated_device)):
        tensors = [Tensor(move(a), requires_grad=True) for a in case.inputs]
        y = case.f(*tensors)
        if gy_cpu is None:
            gy_cpu = np.random.default_rng(0).standard_normal(y.shape)
        y.backward(move(gy_cpu))
        results.append([y.data] + [t.grad for t in tensors])
    cpu, gpu = results
    assert all(_on_device(a) for a in gpu), "an output or gradient left the device"
    for c, g in zip(cpu, gpu):
        np.testing.assert_allclose(np.asarray(g), c, rtol=1e-10, atol=1e-12)
    inputs = [emu.to_emulated_device(a) for a in case.inputs]
    numerical = numerical_grad(case.f, inputs, emu.to_emulated_device(gy_cpu))
    for analytic, n in zip(gpu[1:], numerical):
        np.testing.assert_allclose(np.asarray(analytic), np.asarray(n), rtol=1e-5, atol=1e-7)


def test_the_cuda_kernels_carry_a_training_step(device, monkeypatch):
    """Two SGD steps of a shared ResNet-8 in float64: the CUDA branches (every one of them
    called) give the CPU's losses, weights and running statistics."""
    calls = checks.count_calls(monkeypatch, cuda, STEP_KERNELS)

    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 4, 3, 8, 8))
    labels = rng.integers(0, 10, (2, 4))
    runs = []
    for device_name in ("cpu", "cuda"):
        model = models.create(depth=8, share="block", seed=1, dtype=np.float64).to(device_name)
        _, no_decay = optim.split_decay(model)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4,
                        nesterov=True, no_decay=no_decay)
        move = emu.to_emulated_device if device_name == "cuda" else np.array
        losses = []
        for x, y in zip(images, labels):
            loss, _ = train_step(model, opt, move(x), move(y))
            losses.append(float(loss))
        runs.append((losses, model.state_dict(), model))
    (cpu_losses, cpu_state, _), (gpu_losses, gpu_state, gpu_model) = runs
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-10)
    assert cpu_losses[0] != cpu_losses[1]
    for key in cpu_state:
        np.testing.assert_allclose(np.asarray(gpu_state[key]), cpu_state[key], rtol=1e-9,
                                   atol=1e-12, err_msg=key)
    assert all(_on_device(p.data) for p in gpu_model.parameters())
    assert calls["conv2d_forward"] == 2 * 7 and calls["batch_norm_forward"] == 2 * 7
    assert calls["sgd_step"] == 2  # one call per step, for all the parameters
    assert calls.keys() == set(STEP_KERNELS)


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_relu_through_the_cuda_branch(device, monkeypatch, training):
    """F.batch_norm_relu on the device: one BatchNorm kernel with ReLU fused (no separate ReLU
    kernel), the CPU's values and gradients, and a gradient that passes the numerical check."""
    seen = []
    forward = cuda.batch_norm_forward
    monkeypatch.setattr(cuda, "batch_norm_forward",
                        lambda *a, **k: seen.append(k.get("relu")) or forward(*a, **k))
    monkeypatch.setattr(cuda, "relu_forward", None)  # must not be called
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 3, 2))
    gamma, beta = rng.standard_normal(3) + 1, rng.standard_normal(3)
    stats = rng.standard_normal(3) * 0.1, rng.uniform(0.5, 2, 3)
    gy = rng.standard_normal(x.shape)

    def f(stats_copy):
        return lambda x, g, b: F.batch_norm_relu(x, g, b, *stats_copy, training)

    results = []
    for move in (np.array, emu.to_emulated_device):
        running = [move(s) for s in stats]
        tensors = [Tensor(move(a), requires_grad=True) for a in (x, gamma, beta)]
        y = f(running)(*tensors)
        y.backward(move(gy))
        results.append([y.data, *running] + [t.grad for t in tensors])
    assert seen == [True]
    for c, g in zip(*results):
        np.testing.assert_allclose(np.asarray(g), c, rtol=1e-10, atol=1e-12)
    inputs = [emu.to_emulated_device(a) for a in (x, gamma, beta)]
    numerical = numerical_grad(f([None, None] if training else stats), inputs,
                               emu.to_emulated_device(gy))
    for analytic, n in zip(results[1][3:], numerical):
        np.testing.assert_allclose(np.asarray(analytic), np.asarray(n), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("share", ["none", "block"])
def test_launches_of_a_resnet20_training_step(device, share):
    """What one ResNet-20 step launches through minires' own launch points (the counts do not
    depend on the batch or image size, so a tiny batch stands for batch 128): per convolution
    an im2col and a GEMM forward; backward an im2col, a transpose, a GEMM for gW and (except the
    first convolution) a GEMM and a col2im for gx; two kernels each way per BatchNorm; one fused
    add+ReLU per block; ONE SGD launch. A shared weight costs nothing extra: its second
    gradient is added by the GEMM itself."""
    model = models.create(depth=20, share=share, seed=0, dtype=np.float32).to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = emu.to_emulated_device(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    y = emu.to_emulated_device(rng.integers(0, 10, 2))
    device.clear_launches()
    device.cublas.calls.clear()
    opt.zero_grad()
    F.softmax_cross_entropy(model(Tensor(x)), y).backward()
    opt.step()
    kernels = {}
    for name, _, _ in device.launches:
        kernels[name.split("<")[0]] = kernels.get(name.split("<")[0], 0) + 1
    assert kernels == {"im2col": 2 * 19, "channel_major": 19, "col2im": 18,
                       "bn_partial_sums": 19, "bn_normalize": 19,
                       "bn_backward_partial_sums": 19, "bn_backward_apply": 19,
                       "add_relu_forward": 9, "relu_backward": 9,
                       "softmax_ce_forward": 1, "softmax_ce_backward": 1, "sgd_update": 1}
    assert sum(kernels.values()) == 172
    # 19 forward, 19 gW and 18 gx convolution GEMMs; the linear layer's three.
    assert len(device.cublas.calls) == 19 + 19 + 18 + 3
    accumulated = [c for c in device.cublas.calls if c["beta"] == 1.0]
    assert len(accumulated) == (7 if share == "block" else 0)
