"""The GPU script (benchmarks/run_gpu_checks.sh) and its helpers, tried without a GPU: argument
handling, the dry run through the real script, the preflight's and the cross-check's device code
on the CUDA emulator (PyTorch on the CPU standing in for PyTorch on the GPU), and the CIFAR-10
phase's data preparation from small archives in both accepted formats.
"""
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import types
from pathlib import Path

import numpy as np
import pytest

import cuda_emulator as emu
import test_cuda_emulated
from minires.kernels.cuda import loader
from test_data_builders import make_cifar10

# The emulator's fixtures, defined once in test_cuda_emulated.py
library, gpu, device = test_cuda_emulated.library, test_cuda_emulated.gpu, test_cuda_emulated.device

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run_gpu_checks.sh"
RESULT_FILES = {"gpu_checks.log", "environment.json", "gpu_tests.xml", "gpu_crosscheck.json",
                "gpu_train_step.json", "gpu_train_step.md", "gpu_profile.txt", "cifar_runs.json"}


def benchmark(name):
    """A script of benchmarks/ imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args, timeout=300):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


# -- arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    ([], "OUTDIR is missing"),
    (["--phases", "1,7", "OUT"], "--phases takes digits 0-5"),
    (["--budget", "10", "OUT"], "--budget takes seconds"),
    (["--fast", "OUT"], "unknown option --fast"),
    (["OUT", "OTHER"], "one OUTDIR only"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    done = run_script(*[str(tmp_path / a) if a in ("OUT", "OTHER") else a for a in args])
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(f"run_gpu_checks: {message}")
    assert not (tmp_path / "OUT").exists()


def test_a_non_empty_outdir_is_refused(tmp_path):
    (tmp_path / "old.json").write_text("{}")
    done = run_script(str(tmp_path))
    assert done.returncode == 2
    assert "must be absent or an empty folder" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]


def test_help_lists_the_phases():
    done = run_script("--help")
    assert done.returncode == 0
    for phase in range(6):
        assert f"\n  {phase}  " in done.stdout
    assert "#" not in done.stdout


# -- the dry run, end to end ------------------------------------------------------------------

@pytest.mark.slow
def test_dry_run_prepares_the_phases_without_a_gpu(tmp_path):
    """Phases 0, 1 and 5 of the real script on this machine (phases 2-4 need PyTorch, which
    CI does not install; their GPU-free parts are tested below and by hand, see docs/gpu.md):
    the checkout check, numba, the NVRTC compile test, the gpu tests collecting, no archive."""
    pytest.importorskip("cupy", reason="the dry run compiles every kernel with CuPy's NVRTC")
    out = tmp_path / "out"
    done = run_script("--dry-run", "--phases", "0,1,5", str(out))
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert lines[-1].startswith("run_gpu_checks: dry run passed (phases 0,1,5 prepared)")
    assert "preflight: minires 0.1.0 is this checkout" in done.stdout
    assert "== phase 1: prepared (" in done.stdout
    assert {p.name for p in out.iterdir()} <= RESULT_FILES
    environment = json.loads((out / "environment.json").read_text())
    assert environment["checkout"]["minires.kernels"] == str(ROOT / "kernels")
    assert environment["dry_run"] is True
    log = (out / "gpu_checks.log").read_text()
    assert lines[-1] in log and "passed" in log  # the log holds what the terminal showed


def test_preflight_without_a_gpu_stops_with_one_line(tmp_path, capsys):
    pytest.importorskip("cupy")
    from minires.backend import cuda_available
    if cuda_available():
        pytest.skip("a GPU is present")
    preflight = benchmark("gpu_preflight")
    assert preflight.main(["--root", str(ROOT), "--out", str(tmp_path / "e.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("preflight: CuPy sees no usable NVIDIA GPU")
    report = json.loads((tmp_path / "e.json").read_text())
    assert "device" not in report and report["versions"]["cupy"]


# -- the preflight's device half on the emulator ----------------------------------------------

@pytest.mark.skipif(not emu.compiler_available(), reason="needs g++ to emulate the kernels")
def test_preflight_tiny_step_runs_the_cuda_branches_and_agrees(device, monkeypatch):
    # cupyx.scatter_add (the indexing backward) on emulated arrays: NumPy's unbuffered add
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(scatter_add=np.add.at))
    preflight = benchmark("gpu_preflight")
    (cpu, cpu_batch), (gpu, gpu_batch) = (preflight.tiny_step(xp)
                                          for xp in (np, sys.modules["cupy"]))
    assert cpu.keys() == gpu.keys() and "stage1.0.dropout.state" in cpu
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], err_msg=key, **preflight.AGREE)
    np.testing.assert_allclose(gpu_batch, cpu_batch, **preflight.AGREE_FLOAT32)
    assert gpu_batch.dtype == np.float32 and gpu_batch.shape == (4, 3, 8, 8)
    launched = {loader.source_of(name.split("<")[0]) for name, _, _ in device.launches}
    assert launched == set(loader.KERNELS)  # a kernel of every CUDA source ran


# -- the cross-check's cases, on the emulator and PyTorch on the CPU ---------------------------

@pytest.fixture
def crosscheck(device, monkeypatch):
    module = benchmark("gpu_crosscheck")
    monkeypatch.setattr(module, "TORCH_DEVICE", "cpu")
    return module


def test_crosscheck_lists_every_convolution_of_both_networks():
    crosscheck = benchmark("gpu_crosscheck")
    shapes = crosscheck.conv_shapes()
    resnet = [s for s in shapes if s[0] == "ResNet-20"]
    wrn = [s for s in shapes if s[0] == "WRN-28-10"]
    assert len(resnet) == 6 and len(wrn) == 10
    assert ("WRN-28-10", 8, 640, 8, 8, 640, 3, 1, 1) in wrn
    assert ("WRN-28-10", 8, 320, 16, 16, 640, 1, 2, 0) in wrn  # the projection shortcut
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_crosscheck.py"),
                           "--list"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "28 cases x 2 dtypes" in done.stdout


@pytest.mark.skipif(not emu.compiler_available(), reason="needs g++ to emulate the kernels")
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crosscheck_cases_pass_against_pytorch_on_the_cpu(crosscheck, dtype):
    torch = pytest.importorskip("torch")
    cp = sys.modules["cupy"]
    name = np.dtype(dtype).name
    rng = np.random.default_rng(0)
    results = {
        "conv": crosscheck.run_conv(cp, torch, ("t", 2, 3, 7, 7, 4, 3, 2, 1), dtype, rng),
        "batchnorm": crosscheck.run_batchnorm(cp, torch, ("t", 4, 3, 5, 5), dtype, True, True,
                                              rng),
        "cross_entropy": crosscheck.run_cross_entropy(cp, torch, (16, 10), dtype, rng),
        "sgd": crosscheck.run_sgd(cp, torch, "block", dtype, rng, depth=8, batch=4, size=8),
    }
    for kind, errors in results.items():
        checks = crosscheck.judge(kind, name, errors)
        assert checks, kind
        for array, value, tolerance in checks:
            assert value <= tolerance, (kind, array, value, tolerance)
    sgd = results["sgd"]
    assert len(sgd["losses"]) == 5 and sgd["losses"][0] != sgd["losses"][-1]


@pytest.mark.skipif(not emu.compiler_available(), reason="needs g++ to emulate the kernels")
def test_crosscheck_writes_every_case_and_a_wrong_result_fails_alone(crosscheck, monkeypatch,
                                                                      tmp_path):
    pytest.importorskip("torch")
    small = [("conv", "a small conv", ("conv", ("t", 2, 3, 6, 6, 4, 3, 1, 1))),
             ("cross_entropy", "a small cross-entropy", ("cross_entropy", (8, 5)))]
    monkeypatch.setattr(crosscheck, "cases", lambda: small)
    out = tmp_path / "crosscheck.json"
    assert crosscheck.main(["--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["passed"], report["failed"]) == (4, 0)
    assert report["tolerance"] == crosscheck.TOLERANCE
    monkeypatch.setattr(crosscheck, "run_conv", lambda *args: {"y": 1.0, "gx": 0.0, "gW": 0.0})
    assert crosscheck.main(["--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert [r["ok"] for r in report["results"]] == [False, False, True, True]


def test_crosscheck_judge_flags_an_error_above_its_tolerance():
    crosscheck = benchmark("gpu_crosscheck")
    checks = crosscheck.judge("conv", "float64", {"y": 3e-10, "gx": 1e-12, "gW": 2e-11})
    assert [(a, e <= t) for a, e, t in checks] == [("y", False), ("gx", True), ("gW", True)]
    checks = crosscheck.judge("sgd", "float32", {"loss": 1e-4, "state": 0.5, "losses": [1.0]})
    assert [(a, e <= t) for a, e, t in checks] == [("loss", True), ("state", False)]


# -- the CIFAR-10 phase's preparation ----------------------------------------------------------

def test_cifar_phase_without_an_archive_is_skipped(tmp_path):
    cifar = benchmark("gpu_cifar_run")
    code = cifar.main(["--data", str(tmp_path), "--work", str(tmp_path / "w"),
                       "--out", str(tmp_path / "o.json"), "--dry-run"])
    assert code == cifar.NO_ARCHIVE and not (tmp_path / "o.json").exists()


def test_cifar_phase_prepares_the_official_archive(tmp_path):
    cifar = benchmark("gpu_cifar_run")
    data = tmp_path / "data"
    data.mkdir()
    make_cifar10(data)
    code = cifar.main(["--data", str(data), "--work", str(tmp_path / "w"),
                       "--out", str(tmp_path / "o.json"), "--dry-run"])
    assert code == 0
    from minires.data import load_dataset
    dataset = load_dataset(str(tmp_path / "w" / "cifar10.h5"))
    assert len(dataset.train_labels) == 100


def test_cifar_phase_decodes_a_jpeg_tree_into_the_official_layout(tmp_path):
    """A tiny tar.xz of 32x32 JPEGs (two per class and split, the red level telling the class)
    becomes a prepared dataset whose labels follow the class folders, the pixels decoded."""
    Image = pytest.importorskip("PIL.Image", reason="decoding JPEGs needs Pillow")
    cifar = benchmark("gpu_cifar_run")
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / cifar.JPEG, "w:xz") as tar:
        for split in ("train", "test"):
            for label, name in enumerate(cifar.CLASSES):
                for i in range(2):
                    pixels = np.zeros((32, 32, 3), np.uint8)
                    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 25 * label, 120 * i, 60
                    buffer = io.BytesIO()
                    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
                    member = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                    member.size = len(buffer.getvalue())
                    tar.addfile(member, io.BytesIO(buffer.getvalue()))
    code = cifar.main(["--data", str(data), "--work", str(tmp_path / "w"),
                       "--out", str(tmp_path / "o.json"), "--dry-run"])
    assert code == 0
    from minires.data import load_dataset
    dataset = load_dataset(str(tmp_path / "w" / "cifar10.h5"))
    for images, labels in ((dataset.train_images, dataset.train_labels),
                           (dataset.test_images, dataset.test_labels)):
        assert images.shape == (20, 3, 32, 32)
        assert sorted(labels.tolist()) == sorted(list(range(10)) * 2)
        red = np.rint(images[:, 0].mean(axis=(1, 2)) / 25).astype(int)
        np.testing.assert_array_equal(red, labels)
        assert np.abs(images[:, 2].astype(int) - 60).max() <= 3  # decoded, not made up


@pytest.mark.slow
def test_cifar_phase_trains_both_networks_at_once_and_stops_them_in_time(tmp_path,
                                                                          monkeypatch):
    """On the CPU (``--device cpu``), on a tiny archive: one epoch each, then a run with far
    more epochs than its seconds allow, stopped by SIGTERM after the first epochs."""
    cifar = benchmark("gpu_cifar_run")
    data = tmp_path / "data"
    data.mkdir()
    make_cifar10(data, per_batch=8, test=8)
    out = tmp_path / "runs.json"
    args = ["--data", str(data), "--work", str(tmp_path / "w"), "--out", str(out),
            "--device", "cpu"]
    assert cifar.main(args + ["--epochs", "1", "--seconds", "300"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [r["share"] for r in runs] == ["none", "block"]
    for run in runs:
        assert run["exit_code"] == 0 and run["epochs_done"] == 1
        assert not run["stopped_at_time_limit"]
        assert {"train_loss", "test_error"} <= run["metrics"][0].keys()
    monkeypatch.setattr(cifar, "STOP_GRACE", 5)
    monkeypatch.setattr(cifar, "MIN_TRAINING", 5)
    start = time.monotonic()
    cifar.main(args[:3] + [str(tmp_path / "w2")] + args[4:] + ["--epochs", "10000",
                                                               "--seconds", "40"])
    assert time.monotonic() - start < 40 + 10  # the grace above, and a little
    runs = json.loads(out.read_text())["runs"]
    for run in runs:
        assert run["stopped_at_time_limit"] and run["exit_code"] != 0
