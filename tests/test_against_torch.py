"""Values and gradients against PyTorch in float64 (optional: skipped without torch)."""
import numpy as np
import pytest

import minires
import minires.functions as F

torch = pytest.importorskip("torch", reason="PyTorch is an optional reference, not a dependency")
tF = torch.nn.functional

rng = np.random.default_rng(0)


def _compare(minires_fn, torch_fn, arrays, rtol=1e-8):
    """Run both on the same float64 inputs with one random upstream gradient."""
    ours = [minires.Tensor(a.copy(), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, ty = minires_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=rtol, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    ty.backward(torch.tensor(gy))
    for mine, ref in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad, ref.grad.numpy(), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 1), (1, 0), (2, 0)])
def test_conv2d(stride, pad):
    _compare(lambda x, W, b: F.conv2d(x, W, b, stride=stride, pad=pad),
             lambda x, W, b: tF.conv2d(x, W, b, stride=stride, padding=pad),
             [rng.standard_normal((3, 4, 9, 7)), rng.standard_normal((5, 4, 3, 3)),
              rng.standard_normal(5)])


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(training):
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    ours_stats = (mean.copy(), var.copy())
    torch_stats = (torch.tensor(mean), torch.tensor(var))
    _compare(lambda x, g, b: F.batch_norm(x, g, b, *ours_stats, training),
             lambda x, g, b: tF.batch_norm(x, *torch_stats, g, b, training=training),
             [rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(4), rng.standard_normal(4)])
    np.testing.assert_allclose(ours_stats[0], torch_stats[0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours_stats[1], torch_stats[1].numpy(), rtol=1e-12)


def test_linear_relu_pool_loss():
    _compare(F.linear, tF.linear, [rng.standard_normal((4, 6)), rng.standard_normal((3, 6)),
                                   rng.standard_normal(3)])
    _compare(F.relu, torch.relu, [rng.standard_normal((4, 6))])
    _compare(F.global_avg_pool2d, lambda x: x.mean(dim=(2, 3)), [rng.standard_normal((2, 3, 4, 5))])
    labels = rng.integers(0, 5, 6)
    _compare(lambda z: F.softmax_cross_entropy(z, labels),
             lambda z: tF.cross_entropy(z, torch.tensor(labels)), [rng.standard_normal((6, 5))])


def test_shared_weight_block():
    def ours(x, W, g1, b1, g2, b2):
        h = F.relu(F.batch_norm(F.conv2d(x, W, pad=1), g1, b1, None, None, True))
        return F.batch_norm(F.conv2d(h, W, pad=1), g2, b2, None, None, True)

    def theirs(x, W, g1, b1, g2, b2):
        h = torch.relu(tF.batch_norm(tF.conv2d(x, W, padding=1), None, None, g1, b1, True))
        return tF.batch_norm(tF.conv2d(h, W, padding=1), None, None, g2, b2, True)

    C = 3
    _compare(ours, theirs, [rng.standard_normal((2, C, 5, 5)), rng.standard_normal((C, C, 3, 3)),
                            rng.standard_normal(C), rng.standard_normal(C),
                            rng.standard_normal(C), rng.standard_normal(C)])


@pytest.mark.parametrize("share", ["none", "block"])
def test_resnet_training_steps_track_pytorch(share):
    """Whole ResNet-8, same weights and batches, SGD with momentum and weight decay: losses and
    weights stay equal step after step (the shared weight gets both uses' gradients, once)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from torch_resnet import torch_resnet

    from minires import models, optim

    model = models.resnet(depth=8, share=share, seed=0, dtype=np.float64)
    net = torch_resnet(torch, 8, share).double()
    state = {name.replace(".gamma", ".weight").replace(".beta", ".bias"):
             torch.from_numpy(np.array(getattr(value, "data", value)))
             for name, value in [*model.named_parameters(), *model.named_buffers()]}
    net.load_state_dict(state, strict=False)  # a shared conv2.weight is conv1's in both
    opt = optim.SGD(list(model.parameters()), lr=0.1, momentum=0.9, weight_decay=1e-4)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(3):
        x, y = rng.standard_normal((8, 3, 32, 32)), rng.integers(0, 10, 8)
        opt.zero_grad()
        loss = F.softmax_cross_entropy(model(minires.Tensor(x)), y)
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = tF.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-10)
    block = model.stage1[0]
    assert (block.conv1.weight is block.conv2.weight) == (share == "block")
    np.testing.assert_allclose(block.conv1.weight.data,
                               net.stage1[0].conv1.weight.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
