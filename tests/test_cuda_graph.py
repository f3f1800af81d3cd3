"""The training step as one CUDA graph (``minires.cuda_graph``), without a GPU: the CUDA kernels
run on the CPU emulator, and a fake capture (tests/graph_emulator.py) raises on everything a
capturing stream forbids and checks that each replay launches what was captured.

tests/test_cuda_training.py compares real graph replays with eager steps on a GPU.
"""
import sys

import numpy as np
import pytest

import cuda_emulator as emu
import graph_emulator
import test_cuda_emulated
import minires.backend
import minires.cuda_graph
from minires import optim
from minires.data.store_writer import StoreWriter
from minires.errors import ConfigError
from minires.train import TrainConfig, train, train_step

pytestmark = pytest.mark.skipif(not emu.compiler_available(),
                                reason="needs g++ (C++20) to emulate the CUDA kernels")


# The emulator's compiled kernels and its GPU (kernels, cuBLAS), defined in test_cuda_emulated.py
library, gpu = test_cuda_emulated.library, test_cuda_emulated.gpu


@pytest.fixture
def graphs(gpu, monkeypatch):
    """The emulator as minires' GPU (kernels, cuBLAS, streams), with fake graph capture; yields
    the list of graphs captured."""
    fake = sys.modules["cupy"]  # the emulated CuPy the gpu fixture installed
    graph_emulator.install(fake)
    monkeypatch.setattr(minires.backend, "_cupy_or_none", lambda: fake)
    captured = []
    monkeypatch.setattr(minires.cuda_graph, "capture", graph_emulator.fake_capture(gpu, captured))
    monkeypatch.setattr(minires.cuda_graph, "WARMUP_STEPS", 1)
    yield captured
    emu.EmulatedDeviceArray.capturing = False


def _tiny_store(path, n_train=12, n_test=8, size=8):
    """A prepared dataset of random 8x8 images: small enough for the emulator."""
    rng = np.random.default_rng(0)
    with StoreWriter(path, "tiny", size, 10) as writer:
        for split, n in (("train", n_train), ("test", n_test)):
            writer.append(split, rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
                          rng.integers(0, 10, n))
        writer.write_names("label_names", [f"class{i}" for i in range(10)])
        writer.set_attrs(default_augment="crop_flip")
    return path


def _config(tmp_path, data, name, **overrides):
    settings = dict(dataset=str(data), depth=8, share="block", epochs=2, batch_size=8,
                    warmup_epochs=1.0, lr=0.05, seed=3, device="cuda",
                    run_dir=str(tmp_path / name))
    settings.update(overrides)
    return TrainConfig(**settings)


class CountingGraphedStep(minires.cuda_graph.GraphedTrainStep):
    """Records, per call, whether the batch went through the graph, and the host reads."""

    calls = []

    def __call__(self, model, optimizer, x, y):
        before = emu.EmulatedDeviceArray.host_reads
        result = super().__call__(model, optimizer, x, y)
        CountingGraphedStep.calls.append((x.shape[0], emu.EmulatedDeviceArray.host_reads
                                          - before))
        return result


def test_graphed_training_equals_eager_training(graphs, tmp_path, monkeypatch):
    """Two epochs of a shared ResNet-8, 12 images in batches of 8 (the last one of 4), the
    learning rate changing every step (warm-up): the graphed run's metrics, weights and
    BatchNorm statistics are the eager run's, the full batches were replayed, the partial ones
    ran eagerly, and no call of the graphed step read a device value."""
    data = _tiny_store(tmp_path / "tiny.h5")
    monkeypatch.setattr(minires.train, "GraphedTrainStep", CountingGraphedStep)
    CountingGraphedStep.calls = []
    eager = train(_config(tmp_path, data, "eager"))
    graphed = train(_config(tmp_path, data, "graphed", cuda_graph=True))
    assert graphed.config.cuda_graph and not eager.config.cuda_graph
    for e, g in zip(eager.metrics, graphed.metrics):
        for key in ("train_loss", "train_error", "test_loss", "test_error", "lr"):
            assert g[key] == e[key], key
    assert eager.metrics[0]["train_loss"] != eager.metrics[1]["train_loss"]
    eager_state, graphed_state = eager.model.state_dict(), graphed.model.state_dict()
    for key in eager_state:
        np.testing.assert_array_equal(np.asarray(graphed_state[key]),
                                      np.asarray(eager_state[key]), err_msg=key)
    (graph,) = graphs
    assert graph.replays == 2  # one full batch per epoch
    assert [size for size, _ in CountingGraphedStep.calls] == [8, 4] * 2
    assert all(reads == 0 for _, reads in CountingGraphedStep.calls)


def _model_and_batch(seed=0):
    """A small network (one convolution, one BatchNorm, a linear layer: few emulated launches),
    its SGD and a batch, on the emulated device."""
    from minires import nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3, pad=1, rng=np.random.default_rng(seed),
                                    dtype=np.float64), nn.BatchNorm2d(4, dtype=np.float64),
                          nn.ReLU(), nn.GlobalAvgPool2d(),
                          nn.Linear(4, 10, rng=np.random.default_rng(seed), dtype=np.float64))
    model.to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return model, opt, *_batch(np.random.default_rng(seed))


def _batch(rng):
    return (emu.to_emulated_device(rng.standard_normal((4, 3, 6, 6))),
            emu.to_emulated_device(rng.integers(0, 10, 4)))


def test_a_step_that_reads_the_device_cannot_be_captured(graphs):
    def step_that_reads_its_loss(model, optimizer, x, y):
        loss, mistakes = train_step(model, optimizer, x, y)
        if float(loss) > 100:  # a host read: the GPU would have to finish the step first
            raise RuntimeError("diverged")
        return loss, mistakes

    model, opt, x, y = _model_and_batch()
    with pytest.raises(emu.CaptureError, match="float"):
        minires.cuda_graph.GraphedTrainStep(step_that_reads_its_loss)(model, opt, x, y)


def test_cupy_matmul_cannot_be_captured(graphs):
    """Why matrix products go through minires' own cuBLAS handle: the plain ``@`` of two device
    arrays (cupy.matmul) is refused while capturing."""
    def step_with_cupy_matmul(model, optimizer, x, y):
        loss, mistakes = train_step(model, optimizer, x, y)
        model[4].weight.data @ model[4].weight.data.T
        return loss, mistakes

    model, opt, x, y = _model_and_batch()
    with pytest.raises(emu.CaptureError, match="cupy.matmul"):
        minires.cuda_graph.GraphedTrainStep(step_with_cupy_matmul)(model, opt, x, y)


def test_a_learning_rate_frozen_into_the_graph_is_caught(graphs, monkeypatch):
    """Passing the rate as a kernel argument would replay the captured value forever: with
    the device-memory rate switched off, the first replay launches SGD differently."""
    monkeypatch.setattr(minires.cuda_graph.GraphedTrainStep, "_run_step", lambda self: self.step(
        self.model, self.optimizer, self.static_x, self.static_y))
    model, opt, x, y = _model_and_batch()
    step = minires.cuda_graph.GraphedTrainStep(train_step)
    step(model, opt, x, y)
    opt.lr = 0.05
    with pytest.raises(AssertionError, match="other kernels or arguments"):
        step(model, opt, x, y)


def test_dropout_is_refused(graphs):
    from minires.nn import Dropout, Sequential
    model, opt, x, y = _model_and_batch()
    model = Sequential(model, Dropout(0.3))
    with pytest.raises(ValueError, match="dropout"):
        minires.cuda_graph.GraphedTrainStep(train_step)(model, opt, x, y)


def test_cuda_graph_needs_the_gpu():
    with pytest.raises(ConfigError, match="cuda_graph needs the GPU"):
        TrainConfig(device="cpu", cuda_graph=True).validate()
    if not minires.backend.cuda_available():
        with pytest.raises(ConfigError, match="cuda_graph needs the GPU"):
            TrainConfig(device="auto", cuda_graph=True).resolved(image_size=32)


def test_cli_refuses_cuda_graph_on_the_cpu(tmp_path):
    from click.testing import CliRunner

    from minires.cli.main import cli
    result = CliRunner().invoke(cli, ["train", "--device", "cpu", "--cuda-graph", "--run-dir",
                                      str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2
    assert "cuda_graph needs the GPU" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_replays_follow_the_batches_and_return_copies(graphs):
    """Each call's batch reaches the graph (the loss changes with it), and what a call returns
    survives the next replay, which rewrites the graph's own outputs."""
    model, opt, x, y = _model_and_batch()
    step = minires.cuda_graph.GraphedTrainStep(train_step)
    rng = np.random.default_rng(9)
    first, _ = step(model, opt, x, y)
    value = np.asarray(first).copy()
    second, _ = step(model, opt, *_batch(rng))
    third, _ = step(model, opt, *_batch(rng))
    np.testing.assert_array_equal(np.asarray(first), value)
    assert len({float(first), float(second), float(third)}) == 3
    assert graphs[0].replays == 3


def test_the_benchmarks_minires_paths_run(graphs, monkeypatch):
    """benchmarks/gpu_train_step.py's minires side on the emulator (tiny sizes): the eager and
    graphed runs, interleaved timing, the launch-point count, peak memory and the recipe
    projection with the real loader and evaluation."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train_step.py"
    spec = importlib.util.spec_from_file_location("gpu_train_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "IMAGE_SIZE", 8)
    monkeypatch.setattr(bench, "RECIPE", dict(epochs=164, train_images=40, test_images=8,
                                              batch=8))
    cp = sys.modules["cupy"]
    runs = {v: bench.make_run(v, cp, None, 8, "block", 4) for v in bench.VARIANTS[:2]}
    times = bench.interleaved(runs, warmup=0, steps=1, rounds=2)
    assert {v: len(t) for v, t in times.items()} == {v: 2 for v in bench.VARIANTS[:2]}
    assert runs["minires graph"].train_step.graph is not None
    counts, undo = bench._count_launch_points()
    runs["minires eager"].step()
    undo()
    # ResNet-8: 7 convolutions -> 7 forward GEMMs and 7 + 6 backward ones (no gx for conv1),
    # plus 3 for the linear layer; the SGD update is one launch.
    assert counts["cuBLAS GEMM"] == 7 + 13 + 3 and counts["sgd_update"] == 1
    assert counts["im2col"] == 14 and counts["bn_partial_sums"] == 7
    assert bench.peak_memory("minires eager", cp, None, 8, "block", 4, 0) == 0.0  # fake pools
    projection = bench.project_recipe(cp, ["none", "block"], 1, depth=8, image_size=8)
    assert set(projection) == {"none", "block", "none + block"}
    assert all(p["recipe_min"] > 0 for p in projection.values())
