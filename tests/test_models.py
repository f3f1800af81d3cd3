"""ResNet and Wide ResNet: parameter counts, shapes, weight sharing, state, summary and CLI."""
import numpy as np
import pytest
from click.testing import CliRunner

import minires.functions as F
from minires import backend, models
from minires.autograd import Tensor, no_grad
from minires.cli.main import cli

# Computed once with minires and pinned. The paper gives ResNet-20 (option A): 269,722
# unshared and 170,650 with block sharing.
RESNET_COUNTS = {  # (depth, shortcut): (none, block, stage)
    (20, "A"): (269_722, 170_650, 168_346),
    (32, "A"): (464_154, 268_314, 169_242),
    (44, "A"): (658_586, 365_978, 170_138),
    (56, "A"): (853_018, 463_642, 171_034),
    (110, "A"): (1_727_962, 903_130, 175_066),
    (20, "B"): (272_474, 173_402, 171_098),
}
WRN_COUNTS = {  # (depth, width, input_size, num_classes): (none, block, stage)
    (20, 1, 16, 1000): (122_296, 85_432, 71_608),
    (28, 2, 32, 1000): (1_595_320, 1_014_712, 821_176),
    (36, 1, 64, 1000): (1_614_008, 1_024_184, 826_040),
    (16, 8, 32, 10): (10_961_370, 7_864_794, 10_961_370),  # stage: one same-shape block each
}
SHARES = ("none", "block", "stage")


@pytest.mark.parametrize("depth, shortcut", list(RESNET_COUNTS))
@pytest.mark.parametrize("share_index", range(3))
def test_resnet_parameter_counts(depth, shortcut, share_index):
    model = models.resnet(depth, share=SHARES[share_index], shortcut=shortcut)
    assert model.num_parameters() == RESNET_COUNTS[depth, shortcut][share_index]


@pytest.mark.parametrize("key", list(WRN_COUNTS))
@pytest.mark.parametrize("share_index", range(3))
def test_wide_resnet_parameter_counts(key, share_index):
    depth, width, size, classes = key
    model = models.wide_resnet(depth, width, classes, SHARES[share_index], input_size=size)
    assert model.num_parameters() == WRN_COUNTS[key][share_index]


def test_wrn_28_10_has_its_published_size():
    assert models.wide_resnet(28, 10).num_parameters() == 36_479_194


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_block_sharing_saves_one_3x3_weight_per_same_shape_block(depth):
    # An independent count: each same-shape block of width C saves one (C, C, 3, 3) weight;
    # that is every block of stage 1 and all but the first of stages 2 and 3.
    n = (depth - 2) // 6
    saved = 9 * (n * 16 ** 2 + (n - 1) * 32 ** 2 + (n - 1) * 64 ** 2)
    none = models.resnet(depth).num_parameters()
    assert none - models.resnet(depth, share="block").num_parameters() == saved


@pytest.mark.parametrize("depth", [21, 4, 2, 19.0])
def test_invalid_resnet_depth_is_a_clear_error(depth):
    with pytest.raises(ValueError, match="6n \\+ 2"):
        models.resnet(depth)


def test_invalid_options_are_clear_errors():
    with pytest.raises(ValueError, match="share must be one of none, block, stage"):
        models.resnet(20, share="all")
    with pytest.raises(ValueError, match="shortcut must be 'A' or 'B'"):
        models.resnet(20, shortcut="C")
    with pytest.raises(ValueError, match="depth = 6n \\+ 4"):
        models.wide_resnet(20, 1)
    with pytest.raises(ValueError, match="depth = 8n \\+ 4"):
        models.wide_resnet(30, 1, input_size=64)
    with pytest.raises(ValueError, match="16, 32 and 64"):
        models.wide_resnet(28, 1, input_size=48)
    with pytest.raises(ValueError, match="no width"):
        models.create("resnet", width=4)
    with pytest.raises(ValueError, match="projection"):
        models.create("wrn", shortcut="A")
    with pytest.raises(ValueError, match="arch must be one of resnet, wrn"):
        models.create("vgg")


# -- sharing facts --------------------------------------------------------------------------

def test_block_sharing_ties_exactly_the_same_shape_blocks():
    model = models.resnet(20, share="block")
    for stage in (model.stage1, model.stage2, model.stage3):
        for i, block in enumerate(stage):
            same_shape = block.conv1.in_channels == block.conv1.out_channels and \
                block.conv1.stride == (1, 1)
            assert same_shape == (stage is model.stage1 or i > 0)
            assert (block.conv1.weight is block.conv2.weight) == same_shape
            assert block.bn1 is not block.bn2 and block.bn1.gamma is not block.bn2.gamma
    assert model.stage2[0].conv1.weight.shape == (32, 16, 3, 3)
    params = list(model.parameters())
    assert len({id(p) for p in params}) == len(params)
    assert model.num_parameters() == sum(p.size for p in params)


def test_stage_sharing_ties_same_shape_blocks_across_a_stage():
    model = models.resnet(20, share="stage")
    for stage in (model.stage1, model.stage2, model.stage3):
        same = [b for b in stage if b.shortcut is None]
        assert {id(b.conv1.weight) for b in same} == {id(same[0].conv1.weight)}
        assert {id(b.conv2.weight) for b in same} == {id(same[0].conv2.weight)}
        assert same[0].conv1.weight is not same[0].conv2.weight
        assert len({id(b.bn1) for b in stage} | {id(b.bn2) for b in stage}) == 2 * len(stage)
    first = model.stage2[0]
    assert first.conv2.weight is not model.stage2[1].conv2.weight
    uses = model.parameter_uses()
    assert uses["stage1.0.conv1.weight"] == [f"stage1.{i}.conv1.weight" for i in range(3)]


def test_unshared_model_shares_nothing():
    uses = models.resnet(20).parameter_uses()
    assert all(len(names) == 1 for names in uses.values())


def test_wide_resnet_sharing_follows_the_same_rule():
    model = models.wide_resnet(16, 1, share="block", input_size=32)
    shared = [b.is_shared for s in (model.stage1, model.stage2, model.stage3) for b in s]
    assert shared == [True, True, False, True, False, True]  # width 1: 16 -> 16 can share
    model = models.wide_resnet(16, 2, share="block", input_size=32)
    assert not model.stage1[0].is_shared and model.stage1[1].is_shared


def _untied_copy(shared_model, **spec):
    """An unshared model holding, for every use of a shared weight, a copy of its values."""
    untied = models.create(**spec, share="none", dtype=np.float64)
    first_of = {name: names[0] for names in shared_model.parameter_uses().values()
                for name in names}
    values = dict(shared_model.named_parameters())
    assert {n for n, _ in untied.named_parameters()} == set(first_of)
    for name, p in untied.named_parameters():
        p.data[...] = values[first_of[name]].data
    return untied


@pytest.mark.parametrize("share", ["block", "stage"])
def test_shared_gradient_is_the_sum_of_the_untied_copies_gradients(share):
    spec = dict(arch="resnet", depth=20)
    shared = models.create(**spec, share=share, dtype=np.float64)
    untied = _untied_copy(shared, **spec)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8))
    gy = rng.standard_normal((2, 10))
    shared(Tensor(x)).backward(gy)
    untied(Tensor(x)).backward(gy)
    grads = {n: p.grad for n, p in untied.named_parameters()}
    checked = 0
    for first, names in shared.parameter_uses().items():
        p = dict(shared.named_parameters())[first]
        expected = sum(grads[n] for n in names)
        np.testing.assert_allclose(p.grad, expected, rtol=1e-9, atol=1e-12)
        if len(names) > 1:
            checked += 1
            assert not np.allclose(grads[names[0]], grads[names[1]])  # the uses really differ
    assert checked == (7 if share == "block" else 6)


# -- forward --------------------------------------------------------------------------------

@pytest.mark.parametrize("share, shortcut", [("none", "A"), ("block", "A"), ("stage", "B")])
def test_resnet20_maps_images_to_logits(share, shortcut):
    model = models.resnet(20, num_classes=7, share=share, shortcut=shortcut)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    y = model(Tensor(x))
    assert y.shape == (2, 7) and y.dtype == np.float32 and np.all(np.isfinite(y.data))


@pytest.mark.parametrize("size, stages", [(16, 2), (32, 3), (64, 4)])
def test_wide_resnet_shapes_end_on_8x8(size, stages):
    model = models.wide_resnet(2 * stages + 4, 1, num_classes=5, share="block",
                               input_size=size)
    summary = models.summarize(model, (2, 3, size, size))
    shapes = {row.name: row.output_shape for row in summary.rows}
    assert shapes["conv1"] == (2, 16, size, size)
    assert shapes[f"stage{stages}.0.conv2"] == (2, 16 * 2 ** (stages - 1), 8, 8)
    assert f"stage{stages + 1}.0.conv1" not in shapes
    assert shapes["fc"] == (2, 5)


def test_eval_mode_uses_running_statistics():
    model = models.resnet(8, share="block", dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    with no_grad():
        train_one = model(Tensor(x[:1])).data
        train_two = model(Tensor(x)).data
        assert not np.allclose(train_one[0], train_two[0])  # batch statistics differ
        model.eval()
        stats = [b.copy() for b in model.buffers()]
        eval_one, eval_two = model(Tensor(x[:1])).data, model(Tensor(x)).data
    np.testing.assert_allclose(eval_one[0], eval_two[0], rtol=1e-12)
    for before, after in zip(stats, model.buffers()):
        np.testing.assert_array_equal(before, after)


def test_same_seed_same_model():
    a, b = models.resnet(20, seed=3), models.resnet(20, seed=3)
    c = models.resnet(20, seed=4)
    for (na, pa), (nb, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(),
                                           c.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(pa.data, pb.data)
    assert not np.array_equal(a.conv1.weight.data, c.conv1.weight.data)


# -- state ----------------------------------------------------------------------------------

def test_state_dict_round_trip_keeps_sharing():
    a = models.resnet(14, share="block", seed=1, dtype=np.float64)
    b = models.resnet(14, share="block", seed=2, dtype=np.float64)
    state = a.state_dict()
    assert "stage1.0.conv2.weight" not in state and "stage1.0.conv1.weight" in state
    assert len(state) == len(list(a.parameters())) + len(list(a.buffers()))
    shared = b.stage1[0].conv1.weight
    b.load_state_dict(state)
    assert b.stage1[0].conv2.weight is shared and b.stage1[0].conv1.weight is shared
    x = Tensor(np.random.default_rng(3).standard_normal((2, 3, 8, 8)))
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).data, b(x).data)
    state["stage1.0.conv1.weight"] = np.zeros_like(state["stage1.0.conv1.weight"])
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.stage1[0].conv2.weight.data, 0.0)  # one load, both uses


def test_shared_and_unshared_states_do_not_mix():
    shared, unshared = models.resnet(8, share="block"), models.resnet(8)
    with pytest.raises(ValueError, match="missing keys: stage1.0.conv2.weight"):
        unshared.load_state_dict(shared.state_dict())
    with pytest.raises(ValueError, match="second name of the shared parameter"):
        shared.load_state_dict(unshared.state_dict())


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and a GPU")
def test_model_on_the_gpu_matches_the_cpu():
    model = models.resnet(8, share="block", dtype=np.float64)
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8))
    cpu = model(Tensor(x)).data
    params = list(model.parameters())
    model.to("cuda")
    assert list(model.parameters()) == params and model.stage1[0].is_shared
    gpu = model(Tensor(backend.to_device(x, "cuda")))
    np.testing.assert_allclose(backend.to_numpy(gpu.data), cpu, rtol=1e-9, atol=1e-12)
    F.softmax_cross_entropy(gpu, backend.to_device(np.array([1, 2]), "cuda")).backward()
    assert backend.is_cuda_array(model.stage1[0].conv1.weight.grad)


# -- create, summary, CLI -------------------------------------------------------------------

def test_create_defaults_and_unshared_count():
    assert models.create().spec == dict(arch="resnet", depth=20, num_classes=10, share="none",
                                        shortcut="A", seed=0)
    wrn = models.create("wrn", width=1, input_size=64, num_classes=1000)
    assert wrn.spec["depth"] == 36 and hasattr(wrn, "stage4")
    assert models.unshared_count(arch="resnet", depth=20, share="block") == 269_722


def test_summary_of_the_paper_model():
    model = models.resnet(20, share="block")
    before = [b.copy() for b in model.buffers()]
    s = models.summarize(model, unshared_model=models.resnet(20))
    assert s.total_params == 170_650 and s.unshared_params == 269_722
    assert s.untied_params == 269_722 and s.unshared_source == "model"
    assert s.reduction == 99_072 and round(s.reduction_percent, 2) == 36.73
    assert sum(r.params for r in s.rows) == s.total_params
    assert len(s.shared_weights) == 7 and all(len(w.uses) == 2 for w in s.shared_weights)
    row = {r.name: r for r in s.rows}
    assert row["stage1.0.conv2"].params == 0 and row["stage1.0.conv2"].params_used == 2304
    assert row["stage1.0.conv2"].shared == [("S1", 2, 2)]
    assert row["stage3.0.shortcut"].output_shape == (1, 64, 8, 8)
    # MACs per image: 3x3 convs at 32x32 (16 ch), 16x16 (32 ch), 8x8 (64 ch), plus fc.
    n = 3
    convs = 1024 * 16 * 27 + 1024 * 16 * 144 * 2 * n + 256 * 32 * 144 + 256 * 32 * 288 * \
        (2 * n - 1) + 64 * 64 * 288 + 64 * 64 * 576 * (2 * n - 1)
    assert s.macs == convs + 640
    assert model.training and all(m.training for m in model.modules())
    for b0, b1 in zip(before, model.buffers()):
        np.testing.assert_array_equal(b0, b1)
    text = s.table()
    for fragment in ("170,650", "269,722", "99,072", "36.73%", "S7", "stage3.2.conv2"):
        assert fragment in text


def test_summary_untied_count_equals_the_unshared_model_for_stage_sharing():
    s = models.summarize(models.resnet(14, share="stage"), (1, 3, 8, 8))
    assert s.untied_params == models.resnet(14).num_parameters()
    assert max(len(w.uses) for w in s.shared_weights) == 2


def test_cli_summary_prints_the_paper_numbers():
    result = CliRunner().invoke(cli, ["summary", "--shared"])
    assert result.exit_code == 0, result.output
    for fragment in ("ResNet-20 (share=block", "170,650", "269,722", "99,072", "36.73%"):
        assert fragment in result.output


def test_cli_summary_errors():
    runner = CliRunner()
    result = runner.invoke(cli, ["summary", "--depth", "21"])
    assert result.exit_code == 1 and "Error: a CIFAR ResNet needs depth = 6n + 2" in result.output
    result = runner.invoke(cli, ["summary", "--shared", "--share", "none"])
    assert result.exit_code == 2 and "--shared means --share block" in result.output
