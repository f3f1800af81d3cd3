"""On a GPU: training steps of a shared ResNet track the CPU run with the same seed, every op of a
step goes through the CUDA kernels, and ``train(device="cuda")`` runs end to end.

Skipped without CuPy and a usable NVIDIA GPU.
"""
import numpy as np
import pytest

import minires
import minires.functions as F
from cuda_kernel_checks import STEP_KERNELS, count_calls
from minires import models, optim
from minires.autograd import Tensor
from minires.cuda_graph import GraphedTrainStep
from minires.kernels import cuda
from minires.train import train_step

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not minires.backend.cuda_available(),
                                 reason="needs CuPy and an NVIDIA GPU")]


@pytest.fixture(scope="module")
def cp():
    import cupy
    return cupy


def _run_steps(model, xp, images, labels, steps, batch):
    """SGD steps (momentum, Nesterov, weight decay) on fixed batches; the losses as floats."""
    _, no_decay = optim.split_decay(model)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4,
                    nesterov=True, no_decay=no_decay)
    losses = []
    for step in range(steps):
        sl = slice(step * batch, (step + 1) * batch)
        loss, _ = train_step(model, opt, xp.asarray(images[sl]), xp.asarray(labels[sl]))
        losses.append(float(loss))
    return losses


def _state(model, cp):
    return {k: cp.asnumpy(v) for k, v in model.state_dict().items()}  # arrays, copied


@pytest.mark.parametrize("dtype,depth,size,rtol", [
    (np.float64, 8, 16, 1e-9),   # float64: the two devices agree to rounding
    (np.float32, 20, 32, 2e-3),  # float32 ResNet-20: rounding differences stay small
])
def test_training_steps_track_the_cpu(cp, dtype, depth, size, rtol):
    rng = np.random.default_rng(0)
    batch, steps = 16, 3
    images = rng.standard_normal((batch * steps, 3, size, size)).astype(dtype)
    labels = rng.integers(0, 10, batch * steps)
    cpu_model = models.create(depth=depth, share="block", seed=1, dtype=dtype)
    gpu_model = models.create(depth=depth, share="block", seed=1, dtype=dtype).to("cuda")
    assert gpu_model.conv1.weight.device == "cuda"
    cpu_losses = _run_steps(cpu_model, np, images, labels, steps, batch)
    gpu_losses = _run_steps(gpu_model, cp, images, labels, steps, batch)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=rtol)
    assert cpu_losses[0] != cpu_losses[-1]  # the steps did change the model
    cpu_state, gpu_state = _state(cpu_model, cp), _state(gpu_model, cp)
    assert cpu_state.keys() == gpu_state.keys()
    for key in cpu_state:  # weights, BatchNorm parameters and running statistics
        scale = max(float(np.abs(cpu_state[key]).max()), 1e-3)
        np.testing.assert_allclose(gpu_state[key], cpu_state[key], rtol=rtol * 10,
                                   atol=rtol * 10 * scale, err_msg=key)


def test_every_op_of_a_step_runs_through_the_cuda_kernels(cp, monkeypatch):
    """Count the kernel wrappers a training step calls, and check no array left the GPU."""
    calls = count_calls(monkeypatch, cuda, STEP_KERNELS)
    model = models.create(depth=8, share="block", seed=0).to("cuda")
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    y = cp.asarray(rng.integers(0, 10, 8))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss = F.softmax_cross_entropy(model(Tensor(x)), y)
    loss.backward()
    opt.step()
    assert set(calls) == set(STEP_KERNELS), f"not called: {set(STEP_KERNELS) - set(calls)}"
    # ResNet-8: 7 convolutions, 7 BatchNorms; one SGD call for all the parameters.
    assert calls["conv2d_forward"] == 7 and calls["batch_norm_forward"] == 7
    assert calls["sgd_step"] == 1
    for p in model.parameters():
        assert type(p.data).__module__.startswith("cupy")
        assert type(p.grad).__module__.startswith("cupy")


def test_loader_on_the_gpu_yields_the_cpu_batches(cp):
    """Device-resident uint8 images, augmented on the GPU, equal the CPU loader's batches."""
    from minires.data.loader import Loader
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 10, 50)
    kwargs = dict(batch_size=16, shuffle=True, augment="crop_flip", mean=[0.5, 0.4, 0.3],
                  std=[0.2, 0.25, 0.3], seed=3)
    cpu = Loader(images, labels, **kwargs)
    gpu = Loader(cp.asarray(images), cp.asarray(labels), xp=cp, **kwargs)
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert type(xg).__module__.startswith("cupy")
        np.testing.assert_allclose(cp.asnumpy(xg), xc, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(cp.asnumpy(yg), yc)


def test_train_on_cuda_end_to_end(tmp_path):
    from minires.train import TrainConfig, train
    common = dict(depth=8, share="block", epochs=1, subset=256, batch_size=64, seed=0)
    gpu = train(TrainConfig(device="cuda", run_dir=str(tmp_path / "gpu"), **common))
    cpu = train(TrainConfig(device="cpu", run_dir=str(tmp_path / "cpu"), **common))
    assert gpu.config.device == "cuda" and gpu.epochs_done == 1
    g, c = gpu.metrics[0], cpu.metrics[0]
    assert np.isfinite(g["train_loss"]) and np.isfinite(g["test_loss"])
    # Four float32 steps on each device: the losses agree closely, not bit for bit.
    np.testing.assert_allclose(g["train_loss"], c["train_loss"], rtol=1e-2)
    np.testing.assert_allclose(g["test_loss"], c["test_loss"], rtol=1e-2)


def _graph_and_eager_losses(cp, dtype, depth, steps=5):
    """Losses of ``steps`` SGD steps from the same seed, eager and replayed from a CUDA graph,
    each step with its own batch and learning rate; and the final parameters."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((steps, 32, 3, 32, 32)).astype(dtype)
    labels = rng.integers(0, 10, (steps, 32))
    runs = []
    for graphed in (False, True):
        model = models.create(depth=depth, share="block", seed=1, dtype=dtype).to("cuda")
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                        nesterov=True)
        step = GraphedTrainStep(train_step) if graphed else train_step
        losses = []
        for i in range(steps):
            opt.lr = 0.1 / (1 + i)
            loss, _ = step(model, opt, cp.asarray(images[i]), cp.asarray(labels[i]))
            losses.append(float(loss))
        runs.append((losses, _state(model, cp), step))
    return runs


@pytest.mark.parametrize("dtype,depth,rtol", [(np.float32, 20, 1e-5), (np.float64, 8, 1e-12)])
def test_cuda_graph_replays_give_the_eager_losses(cp, dtype, depth, rtol):
    """The same kernels with the same arguments: the replays' losses and final weights are the
    eager steps' (equal up to cuBLAS choosing another algorithm inside the capture)."""
    (eager, eager_state, _), (graphed, graphed_state, step) = _graph_and_eager_losses(
        cp, dtype, depth)
    assert step.graph is not None
    np.testing.assert_allclose(graphed, eager, rtol=rtol)
    assert len(set(eager)) == len(eager)
    for key in eager_state:
        scale = max(float(np.abs(eager_state[key]).max()), 1e-3)
        np.testing.assert_allclose(graphed_state[key], eager_state[key], rtol=rtol * 10,
                                   atol=rtol * 10 * scale, err_msg=key)


def test_train_with_cuda_graph_end_to_end(tmp_path):
    from minires.train import TrainConfig, train
    common = dict(depth=8, share="block", epochs=1, subset=200, batch_size=64, seed=0,
                  device="cuda", warmup_epochs=0.5)
    graphed = train(TrainConfig(cuda_graph=True, run_dir=str(tmp_path / "graph"), **common))
    eager = train(TrainConfig(run_dir=str(tmp_path / "eager"), **common))
    g, e = graphed.metrics[0], eager.metrics[0]
    np.testing.assert_allclose(g["train_loss"], e["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(g["test_loss"], e["test_loss"], rtol=1e-5)
