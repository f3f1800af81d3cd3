"""The host side of the CUDA path, on the CPU: launch shapes, the loader's sources, scalar types,
and the NumPy references (tests/cuda_reference.py) against the library's CPU code, so that a
kernel that matches its reference also matches CPU training."""
import ctypes
import re
import subprocess
import sys

import numpy as np
import pytest

import cuda_reference as ref
import minires.functions as F
from cuda_emulator import kernel_signatures
from minires.autograd import Tensor
from minires.backend import cuda_available
from minires.kernels.cuda import launch, loader

# -- launch shapes -------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 255, 256, 257, 10_000, 10**9])
def test_elementwise_launch_covers_or_caps(n):
    (grid,), (block,) = launch.elementwise_launch(n)
    assert block == launch.THREADS
    assert 1 <= grid <= launch.MAX_BLOCKS
    # Every element gets its own thread unless the grid is capped (then the kernels loop).
    assert grid * block >= n or grid == launch.MAX_BLOCKS
    assert (grid - 1) * block < n  # no block that would have nothing to do


def test_elementwise_launch_respects_a_smaller_cap():
    assert launch.elementwise_launch(10_000, threads=64, max_blocks=3) == ((3,), (64,))
    assert launch.elementwise_launch(0) == ((1,), (launch.THREADS,))


@pytest.mark.parametrize("count", [1, 31, 32, 256, 257, 4096, 8192, 8193, 131_072, 10**7])
def test_reduction_threads_is_a_warp_multiple_power_of_two(count):
    threads = launch.reduction_threads(count)
    assert 32 <= threads <= 1024
    assert threads & (threads - 1) == 0  # block_sum needs whole warps; powers of two are
    assert threads * 8 >= count or threads == 1024
    assert threads == 32 or (threads // 2) * 8 < count  # the smallest such block


@pytest.mark.parametrize("C,count", [(16, 128 * 1024), (64, 128 * 64), (3, 800), (640, 64 * 64),
                                     (1, 10**7)])
def test_per_channel_launch_spreads_channels_over_blocks(C, count):
    (grid,), (block,), B = launch.per_channel_launch(C, count)
    assert grid == C * B and B == launch.channel_blocks(C, count)
    assert B == 1 or count // B >= launch.THREADS * launch.MIN_VALUES_PER_THREAD
    assert grid <= max(C, launch.CHANNEL_REDUCTION_BLOCKS + C)  # about the target, no more
    assert 32 <= block <= launch.THREADS and block & (block - 1) == 0


def test_resnet_batch_norms_keep_many_blocks_busy():
    """ResNet-20 at batch 128: every BatchNorm gets hundreds of blocks, not one per channel."""
    for C, S in ((16, 32 * 32), (32, 16 * 16), (64, 8 * 8)):
        (grid,), _, _ = launch.per_channel_launch(C, 128 * S)
        assert grid >= 512, (C, S, grid)


def test_planes_launch():
    assert launch.planes_launch(128 * 16, 1024) == ((2048,), (256,))
    assert launch.planes_launch(128 * 64, 64) == ((8192,), (64,))
    assert launch.planes_launch(10**6, 9) == ((launch.MAX_BLOCKS,), (32,))


def test_rows_launch():
    (grid,), (block,) = launch.rows_launch(130)
    assert block == 32 * launch.WARPS_PER_BLOCK and grid * launch.WARPS_PER_BLOCK >= 130
    assert (grid - 1) * launch.WARPS_PER_BLOCK < 130


def test_scalars_match_the_kernel_type():
    assert type(launch.scalar(0.1, np.float32)) is np.float32
    assert type(launch.scalar(0.1, np.float64)) is np.float64
    assert loader.kernel_name("im2col", np.float32) == "im2col<float>"
    assert loader.kernel_name("sgd_update", "float64") == "sgd_update<double>"
    with pytest.raises(TypeError, match="float32 or float64"):
        loader.kernel_name("im2col", np.float16)


def test_check_int32_leaves_room_for_the_last_grid_stride():
    assert launch.check_int32(launch.INDEX_LIMIT) == launch.INDEX_LIMIT
    assert launch.INDEX_LIMIT + launch.MAX_BLOCKS * 1024 <= 2**31 - 1
    with pytest.raises(ValueError, match="32-bit"):
        launch.check_int32(launch.INDEX_LIMIT + 1, "col")
    assert launch.check_int32(128 * 64 * 9 * 32 * 32) > 0  # a ResNet im2col at batch 128


def test_unknown_kernel_is_named_in_the_error():
    with pytest.raises(KeyError, match="no CUDA kernel named 'conv3d'"):
        loader.source_of("conv3d")


# -- sources -------------------------------------------------------------------------------------

def test_sources_are_self_contained_and_define_the_registered_templates():
    for name in loader.source_names():
        text = loader.source(name)
        assert not re.search(r"^\s*#include", text, re.MULTILINE), \
            f"{name}: an include was left for NVRTC to resolve"
        assert not re.search(r'extern\s+"C"', text), f"{name}: kernels are templates now"
        signatures = kernel_signatures(text)
        assert set(signatures) == set(loader.name_expressions(name))
        for kernel in loader.KERNELS[name]:
            f32, f64 = signatures[f"{kernel}<float>"], signatures[f"{kernel}<double>"]
            # Same parameters; only float becomes double.
            assert [(t.replace("float", "double"), p) for t, p in f32] == f64
            assert any(t == "float*" for t, _ in f32), f"{kernel} does not use T"


def test_importing_the_loader_needs_no_cupy():
    code = ("import sys; import minires.kernels.cuda as c; c.loader.source_names(); "
            "c.launch.elementwise_launch(10); assert 'cupy' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr


# -- references against the library's CPU code ---------------------------------------------------

def _bn_library(x, gamma, beta, rm, rv, training, gy, relu):
    xt, gt, bt = (Tensor(a, requires_grad=True) for a in (x, gamma, beta))
    y = F.batch_norm(xt, gt, bt, rm, rv, training)
    if relu:
        y = F.relu(y)
    y.backward(gy)
    return y.data, xt.grad, gt.grad, bt.grad


@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (7, 4)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_reference_batch_norm_equals_the_library(shape, training, relu):
    rng = np.random.default_rng(2)
    C = shape[1]
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = rng.standard_normal(C), rng.random(C) + 0.5
    gy = rng.standard_normal(shape)
    rm_lib, rv_lib = rm.copy(), rv.copy()
    y_lib, gx_lib, gg_lib, gb_lib = _bn_library(x, gamma, beta, rm_lib, rv_lib, training, gy, relu)

    y, saved = ref.batch_norm_forward(x, gamma, beta, rm, rv, training, relu=relu)
    gx, gg, gb = ref.batch_norm_backward(gy, saved)
    for got, want in [(y, y_lib), (rm, rm_lib), (rv, rv_lib), (gx, gx_lib), (gg, gg_lib),
                      (gb, gb_lib)]:
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if training:
        assert not np.allclose(rm, rng.standard_normal(C))  # sanity: stats did move
    assert ref.batch_norm_backward(gy, saved, need_gx=False)[0] is None


def test_reference_softmax_cross_entropy_equals_the_library():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((9, 7)) * 4
    labels = rng.integers(0, 7, 9)
    t = Tensor(logits, requires_grad=True)
    loss = F.softmax_cross_entropy(t, labels)
    gy = np.float64(rng.standard_normal())
    loss.backward(np.asarray(gy))
    ref_loss, log_z = ref.softmax_cross_entropy_forward(logits, labels)
    np.testing.assert_allclose(ref_loss, loss.data, rtol=1e-12)
    np.testing.assert_allclose(ref.softmax_cross_entropy_backward(gy, logits, labels, log_z),
                               t.grad, rtol=1e-10, atol=1e-14)


def test_reference_softmax_cross_entropy_flags_bad_labels_with_nan():
    logits = np.zeros((3, 4), np.float32)
    loss, _ = ref.softmax_cross_entropy_forward(logits, np.array([0, 4, 1]))
    assert np.isnan(loss)


def test_reference_relu():
    x = np.array([-1.0, 0.0, 2.0, np.nan])
    y = ref.relu_forward(x)
    np.testing.assert_array_equal(y, [0.0, 0.0, 2.0, np.nan])
    np.testing.assert_array_equal(ref.relu_backward(np.array([5.0, 6.0, 7.0, 8.0]), y),
                                  [0.0, 0.0, 7.0, 0.0])


@pytest.mark.parametrize("momentum,nesterov,weight_decay", [
    (0.0, False, 0.0), (0.0, False, 5e-4), (0.9, False, 1e-4), (0.9, True, 1e-4)])
def test_reference_sgd_equals_torch(momentum, nesterov, weight_decay):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(3)]
    p, velocity = p0.copy(), np.zeros_like(p0)
    tp = torch.tensor(p0, requires_grad=True)
    opt = torch.optim.SGD([tp], lr=0.1, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay)
    for g in grads:
        ref.sgd_step([p], [g], [velocity], 0.1, momentum, [weight_decay], nesterov)
        tp.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert not np.allclose(p, p0)


# -- the GPU benchmark's host side ---------------------------------------------------------------

def _benchmark_module():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train_step.py"
    spec = importlib.util.spec_from_file_location("gpu_train_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("share", ["none", "block"])
def test_benchmark_torch_resnet_is_the_minires_resnet(share):
    """Same parameter count (so the same sharing) and the same output shape."""
    torch = pytest.importorskip("torch")
    from minires import models
    bench = _benchmark_module()
    model = bench.torch_resnet(torch, 20, share)
    count = sum(p.numel() for p in model.parameters())
    assert count == models.create(depth=20, share=share).num_parameters()
    assert count == {"none": 269_722, "block": 170_650}[share]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, bench.NUM_CLASSES)


def test_benchmark_report_and_no_gpu_exit(capsys, tmp_path):
    bench = _benchmark_module()
    row = dict(depth=20, share="block", parameters=170_650, images_per_s=1000.0,
               ms_per_step=128.0, ms_min=120.0, ms_max=130.0, peak_mib=512.0, final_loss=2.3)
    report = {"device": {"name": "Test GPU"}, "date": "2026-01-01", "batch_size": 128,
              "warmup": 5, "steps": 30, "rounds": 5, "versions": {"cupy": "x"},
              "results": [dict(row, variant="minires graph", images_per_s=6000.0),
                          dict(row, variant="pytorch eager", images_per_s=4000.0,
                               peak_mib=1024.0)],
              "projection": {"block": dict(epoch_s=3.0, train_batch_ms=6.0, eval_s=0.5,
                                           recipe_min=8.2)}}
    text = bench.markdown(report)
    assert "| ResNet-20 | block | minires graph | 170,650 | 6000 | 128.00 (120.00-130.00) |" \
        in text
    assert "minires graph: 1.50x PyTorch eager's throughput, 0.50x its peak memory" in text
    assert "| block | 3.00 | 6.00 | 0.50 | 8.2 |" in text
    if cuda_available():
        pytest.skip("a GPU is present: the no-GPU exit cannot be observed")
    assert bench.main(["--depths", "20", "--out-dir", str(tmp_path / "out")]) == 2
    assert "no usable NVIDIA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_benchmark_dry_run_checks_arguments_and_models(capsys):
    bench = _benchmark_module()
    assert bench.main(["--dry-run", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "ResNet-20 share=block: 170,650 parameters" in out and "ResNet-56" not in out
    with pytest.raises(SystemExit) as exc:
        bench.main(["--dry-run", "--depths", "21"])
    assert exc.value.code == 2


def test_benchmark_gpu_busy_time_is_the_union_of_kernel_intervals():
    bench = _benchmark_module()
    events = [("a", 0.0, 10.0), ("b", 5.0, 12.0), ("c", 20.0, 21.0), ("d", 20.5, 20.7)]
    assert bench._busy_us(events) == 13.0


# -- compile options and kernel arguments --------------------------------------------------------

def test_only_the_sgd_source_is_compiled_without_fused_multiply_adds():
    assert loader.compile_options("sgd.cu") == loader.COMPILE_OPTIONS + ("--fmad=false",)
    assert loader.compile_options("im2col.cu") == loader.COMPILE_OPTIONS


def _ptx(name, own_options):
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - no CuPy or no NVRTC library: skip
        pytest.skip(f"NVRTC is not available through CuPy ({type(exc).__name__})")
    # As CuPy compiles a RawModule: our options, -arch, then its own -ftz=true.
    options = list(own_options) + [
        "-arch=compute_90", "--device-as-default-execution-space", "-ftz=true"]
    program = nvrtc.createProgram(loader.source(name), name, (), ())
    try:
        for expression in loader.name_expressions(name):
            nvrtc.addNameExpression(program, expression)
        nvrtc.compileProgram(program, options)
        ptx = nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


def test_the_sgd_update_has_no_fused_multiply_add():
    """With --fmad=false NVRTC keeps each product and sum separately rounded (mul.rn, add.rn),
    as NumPy computes them; without it, the same source contracts into fma instructions."""
    ptx = _ptx("sgd.cu", loader.compile_options("sgd.cu"))
    assert "fma." not in ptx
    assert re.search(r"mul\.rn(\.ftz)?\.f32", ptx) and re.search(r"mul\.rn\.f64", ptx)
    assert "fma.rn" in _ptx("sgd.cu", loader.COMPILE_OPTIONS)


def test_sgd_tensor_list_fits_the_classic_kernel_argument_limit():
    from minires.kernels.cuda import sgd
    for dtype in (np.float32, np.float64):
        layout = sgd.tensor_list_dtype(dtype)
        # the struct, two pointers' worth of other arguments: within 4 KB on every GPU
        assert layout.itemsize + 8 + 8 * 2 + 4 * 2 <= 4096
        assert layout.fields["start"][1] % 4 == 0 and layout.alignment == 8
    src = loader.source("sgd.cu")
    assert f"#define MINIRES_SGD_MAX_TENSORS {sgd.MAX_TENSORS}" in src


# -- the cuBLAS binding (ctypes), against a recording stand-in for libcublas ----------------------

class _Prototyped:
    """A library function that insists on a declared prototype and records its calls."""

    def __init__(self, name, calls):
        self.name, self.calls, self.argtypes, self.restype = name, calls, None, None

    def __call__(self, *args):
        assert self.argtypes is not None and self.restype is not None, \
            f"{self.name} called without a prototype (ctypes would pass ints as 32-bit)"
        assert len(args) == len(self.argtypes), f"{self.name}: {len(args)} arguments"
        for value, kind in zip(args, self.argtypes):
            if kind is ctypes.c_int:
                assert isinstance(value, int) and -2**31 <= value < 2**31, (self.name, value)
        if self.name == "cublasCreate_v2":
            args[0]._obj.value = 0x7F00_0000_1000  # the handle
        self.calls.append((self.name, args))
        return 0


class _FakeCublasLibrary:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        function = _Prototyped(name, self.calls)
        setattr(self, name, function)
        return function


def test_cublas_binding_declares_every_prototype_and_picks_the_gemm(monkeypatch):
    import types

    from minires.kernels.cuda import blas
    stream = types.SimpleNamespace(ptr=0x7F12_3456_7800)  # a 64-bit address
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        get_current_stream=lambda: stream))
    monkeypatch.setattr(blas, "cupy", lambda: fake_cupy)
    lib = _FakeCublasLibrary()
    cublas = blas.Cublas(lib)
    assert [name for name, _ in lib.calls] == ["cublasCreate_v2", "cublasSetMathMode",
                                               "cublasSetPointerMode_v2"]
    assert lib.calls[1][1][1] == blas.DEFAULT_MATH  # no TF32

    def array(dtype):
        return types.SimpleNamespace(dtype=np.dtype(dtype),
                                     data=types.SimpleNamespace(ptr=0x7F00_0000_2000))

    A, B, C = array(np.float32), array(np.float32), array(np.float32)
    cublas.gemm_strided_batched(1, 0, 3, 4, 5, 1.0, A, 5, 0, B, 5, 20, 0.0, C, 3, 12, 1)
    cublas.gemm_strided_batched(1, 0, 3, 4, 5, 1.0, A, 5, 0, B, 5, 20, 1.0, C, 3, 12, 7)
    D = array(np.float64)
    cublas.gemm_strided_batched(0, 0, 3, 4, 5, 1.0, D, 3, 0, D, 5, 20, 0.0, D, 3, 12, 2)
    names = [name for name, _ in lib.calls[3:]]
    assert names == ["cublasSetStream_v2", "cublasSgemm_v2", "cublasSgemmStridedBatched",
                     "cublasDgemmStridedBatched"]  # the stream is bound once
    assert lib.cublasSetStream_v2.argtypes[1] is ctypes.c_void_p
    assert lib.calls[3][1][1] == stream.ptr
    batched = lib.calls[5][1]
    assert batched[1:6] == (1, 0, 3, 4, 5) and batched[-1] == 7
    assert ctypes.cast(batched[13], ctypes.POINTER(ctypes.c_float)).contents.value == 1.0
