"""The transformed weight of the CPU's Winograd convolutions as a node of the graph: made once per
forward pass for a shared Parameter, both uses' gradients added in the transformed domain, the
exact sum in ``W.grad``; and the rules that keep a reused ``U`` correct (optimizer steps,
checkpoint loads, no_grad, train/eval) without keeping anything alive."""
import gc
import weakref

import numpy as np
import pytest

import minires.functions as F
from minires import Parameter, Tensor, no_grad
from minires.functions import weight_transform
from minires.functions.weight_transform import TransformWeight
from minires.gradcheck import assert_gradcheck
from minires.kernels.cpu import conv
from minires.models import resnet
from minires.optim import SGD
from minires.train import train_step

WINOGRAD = ("winograd2", "winograd4")


@pytest.fixture
def algorithm(monkeypatch):
    """``algorithm(name)``: force the CPU convolution algorithm for the rest of the test."""
    return lambda name: monkeypatch.setenv(conv.ENV_VARIABLE, name)


@pytest.fixture
def transforms(monkeypatch):
    """The list of ``TransformWeight`` nodes run from now on."""
    made = []
    original = TransformWeight.forward

    def forward(self, W):
        made.append(self)
        return original(self, W)
    monkeypatch.setattr(TransformWeight, "forward", forward)
    return made


def rel_error(a, ref):
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def shared_block(x, W1, W2, bn1, bn2):
    """conv-BN-ReLU-conv-BN, each BatchNorm with its own parameters (tests/test_sharing.py)."""
    h = F.relu(F.batch_norm(F.conv2d(x, W1, pad=1), *bn1, None, None, True))
    return F.batch_norm(F.conv2d(h, W2, pad=1), *bn2, None, None, True)


@pytest.mark.parametrize("name", WINOGRAD)
def test_shared_weight_gets_the_sum_of_two_untied_im2col_convs(name, algorithm, transforms):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 9, 7))
    W = rng.standard_normal((6, 6, 3, 3)) * 0.3
    gy = rng.standard_normal((3, 6, 9, 7))
    bn = [tuple(Parameter(rng.standard_normal(6) + s) for s in (1, 0)) for _ in range(2)]

    algorithm(name)
    shared = Parameter(W.copy())
    out = shared_block(Tensor(x), shared, shared, *bn)
    convs = [f for f in _functions(out) if isinstance(f, F.conv.Conv2d)]
    assert len(convs) == 2 and convs[0].plan == convs[1].plan == conv.PLANS[int(name[-1])]
    assert convs[0].inputs[1] is convs[1].inputs[1]  # both uses consume ONE U...
    assert len(transforms) == 1  # ...made by one transform
    out.backward(gy)

    algorithm("im2col")
    first, second = Parameter(W.copy()), Parameter(W.copy())
    shared_block(Tensor(x), first, second, *bn).backward(gy)
    assert len(transforms) == 1  # im2col computes with W itself
    assert rel_error(shared.grad, first.grad + second.grad) < 1e-11


def _functions(out):
    """Every Function of the graph that produced ``out``."""
    seen, stack = {}, [out.creator]
    while stack:
        fn = stack.pop()
        if fn is not None and id(fn) not in seen:
            seen[id(fn)] = fn
            stack.extend(t.creator for t in fn.inputs)
    return list(seen.values())


@pytest.mark.parametrize("name", WINOGRAD)
@pytest.mark.parametrize("pad", [0, 1])
def test_gradcheck_through_conv2d(name, pad, algorithm):
    algorithm(name)
    rng = np.random.default_rng(1)
    x, W, b = (rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3)),
               rng.standard_normal(4))
    assert conv.conv2d_weight_plan(x.shape, W.shape, 1, 1, pad, pad) is not None
    assert_gradcheck(lambda x, W, b: F.conv2d(x, W, b, pad=pad), [x, W, b], seed=2)


@pytest.mark.parametrize("name", WINOGRAD)
def test_gradcheck_of_a_weight_used_twice(name, algorithm):
    algorithm(name)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 6, 7))
    W = 0.2 * rng.standard_normal((4, 4, 3, 3))  # keeps h*h small: central differences stay exact

    def twice(x, W):
        h = F.conv2d(x, W, pad=1)
        return F.conv2d(h * h, W, pad=1)
    assert_gradcheck(twice, [x, W], seed=4)


def test_a_weight_changed_in_place_is_transformed_again(algorithm, transforms):
    # An optimizer step and a checkpoint load both change the Parameter's values in place,
    # while the previous step's graph (and its U) may still be alive.
    algorithm("winograd4")
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((2, 3, 8, 8)))
    W = Parameter(rng.standard_normal((3, 3, 3, 3)))
    opt = SGD([W], lr=0.1, momentum=0.9)
    y0 = F.conv2d(x, W, pad=1)
    (y0 * y0).sum().backward()
    opt.step()  # in place
    y1 = F.conv2d(x, W, pad=1)  # y0's graph still holds the old U
    assert len(transforms) == 2
    np.testing.assert_allclose(y1.data, _im2col(x, W), rtol=1e-12, atol=1e-12)
    W.data[...] = rng.standard_normal(W.shape)  # as load_state_dict does
    y2 = F.conv2d(x, W, pad=1)
    assert len(transforms) == 3
    np.testing.assert_allclose(y2.data, _im2col(x, W), rtol=1e-12, atol=1e-12)
    W.data = W.data.astype(np.float32)  # a different dtype with equal values is a new U too
    assert F.conv2d(x, W, pad=1).dtype == np.float64 and len(transforms) == 4
    del y0, y1, y2


def _im2col(x, W):
    return conv.conv2d_forward(x.data, W.data, 1, 1, 1, 1)[0]


def test_a_transform_made_without_grad_never_serves_a_training_pass(algorithm, transforms):
    algorithm("winograd4")
    rng = np.random.default_rng(6)
    x = Tensor(rng.standard_normal((2, 3, 8, 8)))
    W = Parameter(rng.standard_normal((3, 3, 3, 3)))
    with no_grad():
        kept = F.conv2d(x, W, pad=1)  # evaluation; its U lives as long as nothing holds it
        again = F.conv2d(x, W, pad=1)
    y = F.conv2d(x, W, pad=1)
    y.sum().backward()
    assert W.grad is not None and np.abs(W.grad).max() > 0
    assert len(transforms) == 3  # no U survives a no_grad pass; training made its own
    np.testing.assert_array_equal(kept.data, again.data)


def test_training_steps_and_evaluation_match_im2col(algorithm, transforms, monkeypatch):
    # ResNet-8 with sharing: the stem, one shared 16-channel block, and in stages 2 and 3 a
    # stride-2 conv1 (im2col) and a 3x3 stride-1 conv2: four transformed weights per pass.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 16, 16))
    labels = rng.integers(0, 10, 4)
    results = {}
    for name in ("auto", "im2col"):
        algorithm(name)
        transforms.clear()
        model = resnet(depth=8, share="block", seed=0, dtype=np.float64)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        losses, evaluations = [], []
        for _ in range(3):  # train, evaluate, train again: every U follows the weights
            loss, _ = train_step(model, opt, x, labels)
            losses.append(float(loss))
            model.eval()
            with no_grad():
                evaluations.append(model(x).data)
            model.train()
        results[name] = losses, evaluations
        if name == "auto":
            # Per step 4 in training; 5 in evaluation, where no graph holds a U between the two
            # uses of the shared weight (see minires.functions.weight_transform).
            assert len(transforms) == 3 * (4 + 5)
            assert len({id(fn.inputs[0]) for fn in transforms[:4]}) == 4
    np.testing.assert_allclose(results["auto"][0], results["im2col"][0], rtol=1e-12)
    for a, b in zip(results["auto"][1], results["im2col"][1]):
        assert rel_error(a, b) < 1e-11


def test_nothing_is_kept_alive(algorithm):
    algorithm("winograd4")
    rng = np.random.default_rng(8)
    W = Parameter(rng.standard_normal((3, 3, 3, 3)))
    x = Tensor(rng.standard_normal((1, 3, 6, 6)))
    y = F.conv2d(x, W, pad=1)
    U = weakref.ref(y.creator.inputs[1])
    assert len(weight_transform._made[W]) == 1
    del y
    gc.collect()
    assert U() is None and len(weight_transform._made[W]) == 0  # the entry went with its U
    y = F.conv2d(x, W, pad=1)  # the graph holds W (through U's node) and U
    W_ref = weakref.ref(W)
    del W, y
    gc.collect()
    assert W_ref() is None and W_ref not in weight_transform._made


def test_plans_follow_the_shape_and_the_switch(algorithm):
    shape = (128, 16, 32, 32), (16, 16, 3, 3)
    assert conv.conv2d_weight_plan(*shape, 1, 1, 1, 1) == conv.PLANS[4]
    assert conv.conv2d_weight_plan(*shape, 2, 2, 1, 1) is None  # stride 2: im2col
    assert conv.conv2d_weight_plan((128, 16, 32, 32), (32, 16, 1, 1), 1, 1, 0, 0) is None
    algorithm("winograd2")
    assert conv.conv2d_weight_plan(*shape, 1, 1, 1, 1) == conv.PLANS[2]
    assert conv.conv2d_weight_plan(*shape, 2, 2, 1, 1) is None
    algorithm("im2col")
    assert conv.conv2d_weight_plan(*shape, 1, 1, 1, 1) is None
    algorithm("fast")
    with pytest.raises(ValueError, match="MINIRES_CPU_CONV must be one of auto, im2col"):
        conv.conv2d_weight_plan(*shape, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="unknown CPU convolution plan"):
        conv.conv2d_transform_weight(np.zeros((2, 2, 3, 3)), "F(6x6)")
