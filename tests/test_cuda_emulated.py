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
from minires.kernels.cuda import launch, loader

pytestmark = pytest.mark.skipif(not emu.compiler_available(),
                                reason="needs g++ (C++20) to emulate the CUDA kernels")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    sources = {name: loader.source(name) for name in loader.source_names()}
    return emu.EmulatedLibrary(sources, tmp_path_factory.mktemp("emulated_cuda"))


@pytest.fixture
def gpu(library, monkeypatch):
    """Route ``import cupy`` in the wrappers to the emulator; check guard zones afterwards."""
    allocator = emu.GuardedAllocator()
    monkeypatch.setitem(sys.modules, "cupy", emu.fake_cupy(library, allocator))
    loader.clear_caches()
    library.launches.clear()
    yield library
    loader.clear_caches()  # never leave an emulated module cached for real GPU tests
    allocator.check()


def same(a):
    """``dev`` and ``host`` for the emulator: arrays already live where the kernels run."""
    return a


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_im2col_and_col2im(gpu, geometry, dtype):
    checks.check_im2col_col2im(same, same, geometry, dtype)


def test_non_contiguous_input(gpu):
    checks.check_non_contiguous_input(same, same)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(gpu, dtype):
    checks.check_relu(same, same, dtype)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm(gpu, shape, training, relu, dtype):
    checks.check_batch_norm(same, same, shape, training, relu, dtype)


def test_batch_norm_without_running_statistics(gpu):
    checks.check_batch_norm_without_running_statistics(same, same)


def test_batch_norm_running_arrays_of_another_dtype(gpu):
    checks.check_batch_norm_running_arrays_of_another_dtype(same, same)


def test_batch_norm_errors(gpu):
    checks.check_batch_norm_errors(same, same)


@pytest.mark.parametrize("N,K", SOFTMAX_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(gpu, N, K, dtype):
    checks.check_softmax_cross_entropy(same, same, N, K, dtype)


def test_softmax_cross_entropy_bad_labels(gpu):
    checks.check_softmax_cross_entropy_bad_labels(same, same)


def test_softmax_cross_entropy_errors(gpu):
    checks.check_softmax_cross_entropy_errors(same, same)


@pytest.mark.parametrize("momentum,nesterov,weight_decay", SGD_SETTINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step(gpu, momentum, nesterov, weight_decay, dtype):
    checks.check_sgd_step(same, same, momentum, nesterov, weight_decay, dtype)


def test_sgd_first_step_sets_the_velocity_to_the_update(gpu):
    checks.check_sgd_first_step_sets_the_velocity_to_the_update(same, same)


def test_sgd_errors(gpu):
    checks.check_sgd_errors(same, same)


# -- what only the emulator can observe: launch shapes and stray writes ---------------------------

def test_grid_stride_loops_cover_everything_with_a_capped_grid(gpu, monkeypatch):
    monkeypatch.setattr(launch, "MAX_BLOCKS", 2)
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9))
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


def test_batch_norm_launches_one_block_per_channel(gpu):
    x = np.random.default_rng(0).standard_normal((8, 3, 10, 10))
    cuda.batch_norm_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), True)
    assert gpu.launches == [("bn_forward_train<double>", 3, launch.reduction_threads(800))]


def test_scalars_of_the_wrong_width_are_refused(gpu):
    """The emulator is stricter than CuPy: a Python float for a ``float`` parameter would be
    passed as a double and misread on a GPU."""
    x = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="lr must be passed as float32"):
        loader.kernel("sgd_update", np.float32)((1,), (32,), (
            x, x, x, np.int32(4), 0.1, np.float32(0), np.float32(0), np.int32(0)))


def test_kernels_that_synchronise_get_one_thread_per_cuda_thread(library):
    """Running a kernel with barriers or shuffles serially would be wrong: check the split."""
    assert library.cooperative == {f"{k}<{t}>" for k in ("bn_forward_train", "bn_backward",
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
            opt.zero_grad()
            loss = F.softmax_cross_entropy(model(Tensor(move(x))), move(y))
            loss.backward()
            opt.step()
            losses.append(float(loss.data))
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
