"""SGD (momentum, Nesterov, weight decay, uniqueness, resuming) and learning-rate schedules."""
import math

import numpy as np
import pytest

from minires import models, optim
from minires.autograd import Parameter


def _param(values, grad):
    p = Parameter(np.array(values, dtype=np.float64))
    p.grad = np.array(grad, dtype=np.float64)
    return p


# -- SGD ------------------------------------------------------------------------------------

def test_plain_step_is_p_minus_lr_grad():
    p = _param([1.0, -2.0], [0.5, 0.25])
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, -2.025])


def test_momentum_and_weight_decay_by_hand():
    p = _param([1.0, 2.0], [0.1, -0.2])
    opt = optim.SGD([p], lr=0.5, momentum=0.9, weight_decay=0.01)
    opt.step()
    g1 = np.array([0.1, -0.2]) + 0.01 * np.array([1.0, 2.0])   # buf = g on the first step
    p1 = np.array([1.0, 2.0]) - 0.5 * g1
    np.testing.assert_allclose(p.data, p1)
    p.grad = np.array([0.3, 0.4])
    opt.step()
    buf = 0.9 * g1 + (np.array([0.3, 0.4]) + 0.01 * p1)
    np.testing.assert_allclose(p.data, p1 - 0.5 * buf)


def test_nesterov_by_hand():
    p = _param([1.0], [2.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.5, nesterov=True)
    opt.step()                                   # buf = 2, g = 2 + 0.5 * 2 = 3
    np.testing.assert_allclose(p.data, [0.7])
    p.grad = np.array([1.0])
    opt.step()                                   # buf = 0.5 * 2 + 1 = 2, g = 1 + 0.5 * 2 = 2
    np.testing.assert_allclose(p.data, [0.5])


def test_no_decay_parameters_get_no_weight_decay():
    decayed, exempt = _param([1.0], [0.0]), _param([1.0], [0.0])
    optim.SGD([decayed, exempt], lr=1.0, weight_decay=0.1, no_decay=[exempt]).step()
    np.testing.assert_allclose(decayed.data, [0.9])
    np.testing.assert_allclose(exempt.data, [1.0])
    with pytest.raises(ValueError, match="not in params"):
        optim.SGD([decayed], lr=1.0, no_decay=[exempt])


def test_step_never_writes_into_the_gradient_arrays():
    grad = np.array([1.0, 1.0])
    a, b = _param([0.0, 0.0], grad), _param([1.0, 1.0], grad)
    a.grad = b.grad = grad  # one array shared by two tensors, as the engine may leave it
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.5, nesterov=True)
    for _ in range(3):
        opt.step()
    assert a.grad is grad and b.grad is grad
    np.testing.assert_array_equal(grad, [1.0, 1.0])


def test_parameters_without_gradient_are_skipped():
    p, q = _param([1.0], [1.0]), Parameter(np.array([5.0]))
    opt = optim.SGD([p, q], lr=0.1, momentum=0.9)
    opt.step()
    np.testing.assert_array_equal(q.data, [5.0])
    np.testing.assert_array_equal(opt.momentum_buffers[1], [0.0])  # q's velocity: untouched
    np.testing.assert_array_equal(opt.momentum_buffers[0], [1.0])
    opt.zero_grad()
    assert p.grad is None and q.grad is None


def test_duplicate_parameters_are_refused_by_name():
    model = models.resnet(8, share="block")
    # A naive walk over every module's own parameters meets the shared weight twice.
    naive = [(f"{m}.{n}" if m else n, p) for m, mod in model.named_modules()
             for n, p in mod._parameters.items() if p is not None]
    with pytest.raises(ValueError, match="stage1.0.conv2.weight is stage1.0.conv1.weight"):
        optim.SGD(naive, lr=0.1)
    p = _param([1.0], [1.0])
    with pytest.raises(ValueError, match="same Parameter twice: parameter 1 of shape \\(1,\\)"):
        optim.SGD([p, p], lr=0.1)
    optim.SGD(model.parameters(), lr=0.1)  # de-duplicated: accepted


def test_a_shared_weight_is_stepped_once_per_step():
    model = models.resnet(8, share="block", dtype=np.float64)
    W = model.stage1[0].conv1.weight
    assert model.stage1[0].conv2.weight is W
    decay, no_decay = optim.split_decay(model)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2,
                    no_decay=no_decay)
    rng = np.random.default_rng(0)
    w0 = W.data.copy()
    g1, g2 = rng.standard_normal(W.shape), rng.standard_normal(W.shape)
    W.grad = g1
    opt.step()
    d1 = g1 + 1e-2 * w0
    w1 = w0 - 0.1 * d1
    np.testing.assert_allclose(W.data, w1, rtol=1e-12)
    W.grad = g2
    opt.step()
    np.testing.assert_allclose(W.data, w1 - 0.1 * (0.9 * d1 + g2 + 1e-2 * w1), rtol=1e-12)
    # One velocity per unique parameter; only the shared weight's has moved.
    assert len(opt.momentum_buffers) == len(list(model.parameters()))
    moved = [i for i, v in enumerate(opt.momentum_buffers) if v.any()]
    assert [opt.params[i] for i in moved] == [W]


def test_split_decay_exempts_batchnorm_and_biases():
    model = models.resnet(20, share="block")
    decay, no_decay = optim.split_decay(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[1] for p in no_decay} == {"gamma", "beta", "bias"}
    assert all(names[id(p)].endswith("weight") for p in decay)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    assert sum(p.size for p in no_decay) == 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64) + 10


def test_state_dict_resumes_exactly():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(3) for _ in range(4)]
    start = rng.standard_normal(3)
    hyper = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)

    def run(opt, gs):
        for g in gs:
            opt.params[0].grad = g
            opt.step()

    uninterrupted = optim.SGD([Parameter(start.copy())], **hyper)
    run(uninterrupted, grads)

    first = optim.SGD([Parameter(start.copy())], **hyper)
    run(first, grads[:2])
    saved_params, saved_state = first.params[0].data.copy(), first.state_dict()
    saved_buffer = saved_state["momentum_buffers"][0].copy()
    run(first, grads[2:3])  # training goes on: the saved state must not follow it
    np.testing.assert_array_equal(saved_state["momentum_buffers"][0], saved_buffer)

    resumed = optim.SGD([Parameter(saved_params)], lr=0.5)  # hyper-parameters come from the state
    resumed.load_state_dict(saved_state)
    assert (resumed.lr, resumed.momentum, resumed.nesterov) == (0.1, 0.9, True)
    run(resumed, grads[2:])
    np.testing.assert_array_equal(resumed.params[0].data, uninterrupted.params[0].data)


@pytest.mark.parametrize("nesterov", [False, True])
def test_zero_velocity_gives_the_first_step_bit_for_bit(nesterov):
    """Velocities that start at zero give exactly the bits of PyTorch's rule of setting the
    buffer to the first update (``0.9 * 0 + d == d``), in float32, step after step."""
    model = models.resnet(8, share="block")
    params = list(model.parameters())
    _, no_decay = optim.split_decay(model)
    opt = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=nesterov,
                    no_decay=no_decay)
    exempt = {id(p) for p in no_decay}
    expected = [p.data.copy() for p in params]
    buffers = [None] * len(params)
    rng = np.random.default_rng(5)
    for _ in range(3):
        for i, p in enumerate(params):
            p.grad = rng.standard_normal(p.shape).astype(np.float32)
            d = p.grad + 5e-4 * expected[i] if id(p) not in exempt else p.grad
            if buffers[i] is None:
                buffers[i] = d.copy()
            else:
                buffers[i] = buffers[i] * np.float32(0.9) + d
            d = d + np.float32(0.9) * buffers[i] if nesterov else buffers[i]
            expected[i] = expected[i] - np.float32(0.1) * d
        opt.step()
    for p, want, v, v_want in zip(params, expected, opt.momentum_buffers, buffers):
        np.testing.assert_array_equal(p.data, want)
        np.testing.assert_array_equal(v, v_want)


def test_a_state_without_some_buffers_resumes_them_at_zero():
    """A parameter that has never been stepped has a zero velocity, saved or not."""
    p, q = _param([1.0], [1.0]), _param([2.0], [3.0])
    opt = optim.SGD([p, q], lr=0.1, momentum=0.9)
    opt.step()
    state = opt.state_dict()
    del state["momentum_buffers"][1]
    resumed = optim.SGD([Parameter(p.data.copy()), Parameter(np.array([2.0]))], lr=0.1,
                        momentum=0.9)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.momentum_buffers[0], opt.momentum_buffers[0])
    np.testing.assert_array_equal(resumed.momentum_buffers[1], [0.0])


def test_load_state_dict_checks_the_parameter_list():
    opt = optim.SGD([_param([1.0, 2.0], [1.0, 1.0])], lr=0.1, momentum=0.9)
    opt.step()
    state = opt.state_dict()
    with pytest.raises(ValueError, match="for 1 parameters, this optimizer has 2"):
        optim.SGD([_param([1.0], [1.0]), _param([1.0], [1.0])], lr=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="does not fit parameter 0"):
        optim.SGD([_param([1.0], [1.0])], lr=0.1).load_state_dict(state)


def test_invalid_hyper_parameters():
    p = _param([1.0], [1.0])
    with pytest.raises(ValueError, match="momentum > 0"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=">= 0"):
        optim.SGD([p], lr=-1.0)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)


def test_matches_torch_sgd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w0, grads = rng.standard_normal((3, 4)), [rng.standard_normal((3, 4)) for _ in range(5)]
    for nesterov in (False, True):
        p = Parameter(w0.copy())
        opt = optim.SGD([p], lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
        t = torch.tensor(w0.copy(), requires_grad=True)
        topt = torch.optim.SGD([t], lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
        for i, g in enumerate(grads):
            lr = 0.05 / (i + 1)
            opt.lr = lr
            for group in topt.param_groups:
                group["lr"] = lr
            p.grad = g
            t.grad = torch.tensor(g)
            opt.step()
            topt.step()
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


# -- schedules ------------------------------------------------------------------------------

def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    s = optim.make_schedule("step", 0.1, 160)
    assert s.milestones == (80.0, 120.0)
    for epoch, lr in [(0, 0.1), (79.999, 0.1), (80, 0.01), (119.5, 0.01), (120, 0.001),
                      (159.99, 0.001), (200, 0.001)]:
        assert math.isclose(s(epoch), lr, rel_tol=1e-12), epoch


def test_multistep_schedule():
    s = optim.make_schedule("multistep", 0.2, 100, milestones=[30, 60, 90], gamma=0.2)
    for epoch, lr in [(29.9, 0.2), (30, 0.04), (59.99, 0.04), (60, 0.008), (90.5, 0.0016)]:
        assert math.isclose(s(epoch), lr, rel_tol=1e-12), epoch


def test_cosine_schedule():
    s = optim.make_schedule("cosine", 0.1, 100)
    assert s(0) == 0.1 and math.isclose(s(50), 0.05) and s(100) == 0.0 and s(150) == 0.0
    assert math.isclose(s(25), 0.05 * (1 + math.cos(math.pi / 4)))
    assert math.isclose(s(12.5), 0.05 * (1 + math.cos(math.pi / 8)))


def test_warmup_ramps_linearly_then_hands_over():
    s = optim.make_schedule("step", 0.1, 100, warmup_epochs=5)
    for epoch, lr in [(0, 0.0), (0.5, 0.01), (2.5, 0.05), (5, 0.1), (49, 0.1), (50, 0.01)]:
        assert math.isclose(s(epoch), lr, rel_tol=1e-12, abs_tol=1e-15), epoch
    c = optim.make_schedule("cosine", 1.0, 25, warmup_epochs=5)
    assert math.isclose(c(1), 0.2) and c(5) == 1.0 and math.isclose(c(15), 0.5) and c(25) == 0
    assert optim.make_schedule("constant", 0.3, 10, warmup_epochs=2)(1) == 0.15


def test_schedule_errors():
    with pytest.raises(ValueError, match="constant, step, multistep, cosine"):
        optim.make_schedule("linear", 0.1, 10)
    with pytest.raises(ValueError, match="needs milestones"):
        optim.make_schedule("multistep", 0.1, 10)
    with pytest.raises(ValueError, match="increasing"):
        optim.make_schedule("multistep", 0.1, 10, milestones=[6, 3])
    with pytest.raises(ValueError, match="warmup_epochs"):
        optim.make_schedule("cosine", 0.1, 10, warmup_epochs=10)
    with pytest.raises(ValueError, match="use 'multistep'"):
        optim.make_schedule("step", 0.1, 10, milestones=[5])
