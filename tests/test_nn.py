"""Module (registration, de-duplicated parameters, state, modes, devices) and the layers."""
import numpy as np
import pytest

import minires
from minires import nn
from minires.autograd import Parameter, Tensor


class Tied(nn.Module):
    """Two convolutions applying one weight, each with its own BatchNorm."""

    def __init__(self, rng):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, pad=1, rng=rng, dtype=np.float64)
        self.bn1 = nn.BatchNorm2d(3, dtype=np.float64)
        self.conv2 = nn.Conv2d(3, 3, 3, pad=1, weight=self.conv1.weight, dtype=np.float64)
        self.bn2 = nn.BatchNorm2d(3, dtype=np.float64)
        self.fc = nn.Linear(3, 2, rng=rng, dtype=np.float64)

    def forward(self, x):
        h = minires.functions.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.fc(minires.functions.global_avg_pool2d(h))


@pytest.fixture
def tied():
    return Tied(np.random.default_rng(0))


# -- registration ---------------------------------------------------------------------------

def test_assignment_registers_parameters_modules_and_buffers():
    m = nn.Module()
    m.w = Parameter(np.ones(3))
    m.child = nn.Linear(3, 2)
    m.register_buffer("count", np.zeros(1))
    m.note = "plain attribute"
    assert [n for n, _ in m.named_parameters()] == ["w", "child.weight", "child.bias"]
    assert [n for n, _ in m.named_buffers()] == ["count"]
    assert [n for n, _ in m.named_modules()] == ["", "child"]
    assert m.note == "plain attribute" and "note" not in m._parameters
    with pytest.raises(TypeError, match="assign a Parameter"):
        m.w = np.ones(3)
    with pytest.raises(TypeError, match="array or None"):
        m.count = [1, 2]
    del m.child
    assert [n for n, _ in m.named_parameters()] == ["w"]


def test_forgetting_super_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.w = Parameter(np.ones(2))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_a_module_containing_itself_is_refused():
    m = nn.Sequential(nn.ReLU())
    m._modules["loop"] = m
    with pytest.raises(ValueError, match="contains itself"):
        list(m.parameters())


# -- parameters once ------------------------------------------------------------------------

def test_shared_parameter_is_yielded_once_under_its_first_name(tied):
    names = [n for n, _ in tied.named_parameters()]
    assert names == ["conv1.weight", "bn1.gamma", "bn1.beta", "bn2.gamma", "bn2.beta",
                     "fc.weight", "fc.bias"]
    params = list(tied.parameters())
    assert len({id(p) for p in params}) == len(params) == 7
    assert tied.num_parameters() == 81 + 4 * 3 + 6 + 2


def test_parameter_uses_lists_every_name(tied):
    uses = tied.parameter_uses()
    assert uses["conv1.weight"] == ["conv1.weight", "conv2.weight"]
    assert all(len(v) == 1 for k, v in uses.items() if k != "conv1.weight")
    assert list(uses) == [n for n, _ in tied.named_parameters()]


def test_zero_grad_clears_every_parameter(tied):
    for p in tied.parameters():
        p.grad = np.ones_like(p.data)
    tied.zero_grad()
    assert all(p.grad is None for p in tied.parameters())


def test_train_and_eval_are_recursive(tied):
    assert all(m.training for m in tied.modules())
    assert tied.eval() is tied
    assert not any(m.training for m in tied.modules())
    tied.train()
    assert all(m.training for m in tied.modules())


def test_forward_hook_sees_the_output_and_can_be_removed():
    layer = nn.ReLU()
    seen = []
    handle = layer.register_forward_hook(lambda m, inputs, out: seen.append(out.shape))
    layer(Tensor(np.ones((2, 3))))
    handle.remove()
    layer(Tensor(np.ones((4, 3))))
    assert seen == [(2, 3)]


# -- state ----------------------------------------------------------------------------------

def test_state_dict_stores_a_shared_weight_once_plus_buffers(tied):
    state = tied.state_dict()
    assert "conv2.weight" not in state
    assert set(state) == {"conv1.weight", "bn1.gamma", "bn1.beta", "bn2.gamma", "bn2.beta",
                          "fc.weight", "fc.bias", "bn1.running_mean", "bn1.running_var",
                          "bn2.running_mean", "bn2.running_var"}
    before = state["conv1.weight"].copy()
    tied.conv1.weight.data += 1.0  # the state is a copy, not a view of the model
    np.testing.assert_array_equal(state["conv1.weight"], before)


def test_loading_into_a_shared_weight_changes_both_uses(tied):
    weight, array = tied.conv1.weight, tied.conv1.weight.data
    state = tied.state_dict()
    state["conv1.weight"] = np.full((3, 3, 3, 3), 0.5)
    state["bn2.running_var"] = np.array([2.0, 3.0, 4.0])
    result = tied.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert tied.conv1.weight is weight and tied.conv2.weight is weight  # still shared
    assert tied.conv1.weight.data is array                              # filled in place
    np.testing.assert_array_equal(tied.conv2.weight.data, 0.5)
    np.testing.assert_array_equal(tied.bn2.running_var, [2.0, 3.0, 4.0])


def test_load_state_dict_errors_name_the_keys_and_change_nothing(tied):
    good = tied.state_dict()
    with pytest.raises(ValueError, match="missing keys: fc.bias"):
        tied.load_state_dict({k: v for k, v in good.items() if k != "fc.bias"})
    with pytest.raises(ValueError, match="conv2.weight \\(a second name of the shared parameter "
                                         "conv1.weight"):
        tied.load_state_dict({**good, "conv2.weight": good["conv1.weight"]})
    bad = {k: v + 1.0 for k, v in good.items()}
    bad["fc.weight"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match="fc.weight has shape \\(3, 2\\).*expects \\(2, 3\\)"):
        tied.load_state_dict(bad)
    for key, value in tied.state_dict().items():  # nothing was copied before the shape check
        np.testing.assert_array_equal(value, good[key])


def test_non_strict_load_reports_what_it_skipped(tied):
    state = tied.state_dict()
    del state["fc.bias"]
    state["extra"] = np.zeros(1)
    result = tied.load_state_dict(state, strict=False)
    assert result.missing_keys == ["fc.bias"] and result.unexpected_keys == ["extra"]


def test_to_cpu_keeps_parameter_objects_and_sharing(tied):
    params = list(tied.parameters())
    assert tied.to("cpu") is tied
    assert list(tied.parameters()) == params
    assert tied.conv2.weight is tied.conv1.weight


# -- layers ---------------------------------------------------------------------------------

def test_conv2d_applies_a_given_parameter_and_checks_it():
    conv = nn.Conv2d(4, 8, 3)
    other = nn.Conv2d(4, 8, 3, weight=conv.weight)
    assert other.weight is conv.weight
    with pytest.raises(ValueError, match=r"\(8, 8, 3, 3\)"):
        nn.Conv2d(8, 8, 3, weight=conv.weight)
    with pytest.raises(TypeError, match="Parameter"):
        nn.Conv2d(4, 8, 3, weight=conv.weight.data)


def test_conv2d_init_is_kaiming_normal_fan_out_and_deterministic():
    conv = nn.Conv2d(64, 128, 3, rng=np.random.default_rng(3))
    assert conv.weight.dtype == np.float32 and conv.bias is None
    expected_std = np.sqrt(2.0 / (128 * 9))
    assert abs(conv.weight.data.std() / expected_std - 1) < 0.02
    assert abs(conv.weight.data.mean()) < 0.05 * expected_std
    again = nn.Conv2d(64, 128, 3, rng=np.random.default_rng(3), dtype=np.float64)
    np.testing.assert_allclose(conv.weight.data, again.weight.data, rtol=1e-6)


def test_conv2d_bias_and_forward_match_a_direct_sum():
    rng = np.random.default_rng(4)
    conv = nn.Conv2d(2, 3, 3, stride=2, pad=1, bias=True, rng=rng, dtype=np.float64)
    bound = 1 / np.sqrt(2 * 9)
    assert np.all(np.abs(conv.bias.data) <= bound)
    x = rng.standard_normal((1, 2, 5, 5))
    y = conv(Tensor(x)).data
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    W, b = conv.weight.data, conv.bias.data
    assert y.shape == (1, 3, 3, 3)
    for oc, i, j in [(0, 0, 0), (2, 1, 2), (1, 2, 1)]:
        window = xp[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
        assert np.isclose(y[0, oc, i, j], (window * W[oc]).sum() + b[oc])


def test_linear_init_is_pytorch_uniform_and_forward_is_affine():
    rng = np.random.default_rng(5)
    fc = nn.Linear(400, 50, rng=rng, dtype=np.float64)
    bound = 1 / np.sqrt(400)
    for p in (fc.weight.data, fc.bias.data):
        assert np.all(np.abs(p) <= bound) and p.max() > 0.9 * bound and p.min() < -0.9 * bound
    x = rng.standard_normal((3, 400))
    np.testing.assert_allclose(fc(Tensor(x)).data, x @ fc.weight.data.T + fc.bias.data)
    assert nn.Linear(4, 2, bias=False).bias is None


def test_batchnorm_trains_running_stats_and_eval_uses_them():
    rng = np.random.default_rng(6)
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    np.testing.assert_array_equal(bn.running_mean, 0)
    np.testing.assert_array_equal(bn.running_var, 1)
    x = rng.standard_normal((4, 3, 2, 2)) * 2 + 1
    bn(Tensor(x))
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var)

    bn.gamma.data[:] = [1.0, 2.0, 3.0]
    bn.beta.data[:] = [0.0, -1.0, 1.0]
    bn.eval()
    stats = bn.running_mean.copy(), bn.running_var.copy()
    y = bn(Tensor(x)).data
    expected = ((x - stats[0].reshape(1, 3, 1, 1)) / np.sqrt(stats[1].reshape(1, 3, 1, 1) + 1e-5)
                * bn.gamma.data.reshape(1, 3, 1, 1) + bn.beta.data.reshape(1, 3, 1, 1))
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, stats[0])  # eval changes no statistics
    np.testing.assert_array_equal(bn.running_var, stats[1])


def test_dropout_drops_and_rescales_in_training_only():
    drop = nn.Dropout(0.25, rng=np.random.default_rng(7))
    x = Tensor(np.ones((200, 50)))
    y = drop(x).data
    assert set(np.unique(y)) == {0.0, 1.0 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.02
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="\\[0, 1\\)"):
        nn.Dropout(1.0)


def test_sequential_names_indexes_and_applies_in_order():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and list(seq)[2] is seq[2]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = np.random.default_rng(8).standard_normal((5, 3)).astype(np.float32)
    h = np.maximum(x @ seq[0].weight.data.T + seq[0].bias.data, 0)
    np.testing.assert_allclose(seq(Tensor(x)).data, h @ seq[2].weight.data.T + seq[2].bias.data,
                               rtol=1e-5)
    with pytest.raises(TypeError, match="argument 1"):
        nn.Sequential(nn.ReLU(), "relu")


def test_manual_seed_makes_default_initialisation_repeatable():
    nn.manual_seed(11)
    a = nn.Linear(3, 3).weight.data.copy()
    nn.manual_seed(11)
    np.testing.assert_array_equal(nn.Linear(3, 3).weight.data, a)


def test_shared_weight_through_modules_gets_the_sum_of_both_uses(tied):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 4, 4))
    gy = rng.standard_normal((2, 2))
    tied(Tensor(x)).backward(gy)
    shared_grad = tied.conv1.weight.grad

    untied = Tied(np.random.default_rng(0))
    untied.conv2.weight = Parameter(untied.conv1.weight.data.copy())
    untied(Tensor(x)).backward(gy)
    g1, g2 = untied.conv1.weight.grad, untied.conv2.weight.grad
    assert not np.allclose(g1, g2)
    np.testing.assert_allclose(shared_grad, g1 + g2, rtol=1e-10, atol=1e-12)
