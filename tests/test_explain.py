"""minires explain: every number is checked against a computation made here, independently.

The independent computations: central differences written in this file, an untied block built
in this file, the SGD formula written out by hand, BatchNorm statistics computed with NumPy,
and small values worked out by hand. None of them calls the explain code's own formulas.
"""
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import minires.functions as F
from minires import optim
from minires.autograd import Parameter, Tensor, no_grad
from minires.cli.main import cli
from minires.explain import (block_graph, explain_shared_gradient, explain_steps, make_lesson,
                             show_bug, to_dot, trace_backward)
from minires.models.resnet import BasicBlock


def objective(block, lesson):
    """sum(y * gy), the quantity whose gradient backward(y, gy) computes."""
    with no_grad():
        return float((block(Tensor(lesson.x)).data * lesson.gy).sum())


def central_differences(block, lesson, array, eps=1e-6):
    """d objective / d array, moving ``array`` (a parameter's data) in place."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        original = array[i]
        array[i] = original + eps
        plus = objective(block, lesson)
        array[i] = original - eps
        minus = objective(block, lesson)
        array[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def my_untied_block(lesson):
    """Two weights holding the shared weight's values, every other parameter copied."""
    shared = lesson.block
    C = shared.conv1.in_channels
    block = BasicBlock(C, C, share_convs=False, rng=np.random.default_rng(7), dtype=np.float64)
    for name in ("bn1", "bn2"):
        for part in ("gamma", "beta"):
            getattr(getattr(block, name), part).data[...] = \
                getattr(getattr(shared, name), part).data
    block.conv1.weight.data[...] = shared.conv1.weight.data
    block.conv2.weight.data[...] = shared.conv1.weight.data
    assert block.conv1.weight is not block.conv2.weight
    return block


@pytest.fixture(scope="module", params=[0, 3])
def lesson(request):
    return make_lesson(seed=request.param)


@pytest.fixture(scope="module")
def independent(lesson):
    """Per-use gradients by central differences on an untied block built here, and the shared
    weight's gradient by central differences on the lesson's block."""
    untied = my_untied_block(lesson)
    return {"use1": central_differences(untied, lesson, untied.conv1.weight.data),
            "use2": central_differences(untied, lesson, untied.conv2.weight.data),
            "shared": central_differences(lesson.block, lesson, lesson.weight.data)}


def test_the_lesson_uses_the_real_shared_block(lesson):
    assert type(lesson.block) is BasicBlock
    assert lesson.block.conv1.weight is lesson.block.conv2.weight
    assert lesson.block.bn1 is not lesson.block.bn2
    assert lesson.weight.dtype == np.float64


def test_table_columns_agree_with_independent_gradients(lesson, independent):
    report = explain_shared_gradient(lesson)
    tol = dict(rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(report.grad_use1, independent["use1"], **tol)
    np.testing.assert_allclose(report.grad_use2, independent["use2"], **tol)
    np.testing.assert_allclose(report.grad_engine, independent["shared"], **tol)
    np.testing.assert_allclose(report.grad_numerical, independent["shared"], **tol)
    np.testing.assert_allclose(report.trace_use1, independent["use1"], **tol)
    np.testing.assert_allclose(report.trace_use2, independent["use2"], **tol)
    # The claim of the lesson, on independent numbers: two different uses that add up.
    assert not np.allclose(independent["use1"], independent["use2"], atol=1e-3)
    np.testing.assert_allclose(independent["use1"] + independent["use2"],
                               independent["shared"], rtol=1e-5, atol=1e-8)


def test_explaining_leaves_the_block_unchanged(lesson):
    before = {k: v.copy() for k, v in lesson.block.state_dict().items()}
    explain_shared_gradient(lesson)
    explain_steps(lesson)
    show_bug("dedup", lesson)
    for key, value in lesson.block.state_dict().items():
        if "running" not in key:  # training-mode forwards move running statistics
            np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_trace_walks_use_2_then_use_1(lesson, independent):
    trace = trace_backward(lesson)
    kinds = [step.node.split(":")[0] for step in trace.steps]
    # The block, read backwards: relu(. + x) (one fused node), bn2, conv2, bn1 (fused with its
    # relu), conv1.
    assert kinds == ["AddReLU", "BatchNorm", "Conv2d", "BatchNormReLU", "Conv2d"]
    uses = [step for step in trace.steps if step.use is not None]
    assert [step.use for step in uses] == [2, 1]
    assert [step.formula for step in uses] == ["W.grad = g2", "W.grad = g2 + g1"]
    # conv1's kernel adds g1 into the array that holds g2 (offered by the engine).
    assert [step.in_place for step in uses] == [False, True]
    tol = dict(rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(uses[0].w_grad, independent["use2"], **tol)
    np.testing.assert_allclose(uses[1].contribution, independent["use1"], **tol)
    np.testing.assert_allclose(uses[1].w_grad, independent["shared"], **tol)
    assert trace.steps[1].leaves == ["bn2.gamma", "bn2.beta"]


def test_graph_has_one_shared_weight_node_with_two_edges():
    dot = to_dot(block_graph(make_lesson()))
    labels = dict(re.findall(r'^\s+(n\d+) \[label="([^"]*)"', dot, re.M))
    edges = re.findall(r"^\s+(n\d+) -> (n\d+);", dot, re.M)
    weights = [key for key, label in labels.items() if label.startswith("W ")]
    assert len(weights) == 1
    targets = [labels[dst] for src, dst in edges if src == weights[0]]
    assert sorted(targets) == ["Conv2d\\nconv1 (use 1 of W)", "Conv2d\\nconv2 (use 2 of W)"]
    batchnorms = [key for key, label in labels.items() if label.startswith("BatchNorm")]
    assert len(batchnorms) == 2
    for bn, name in zip(sorted(batchnorms, key=lambda k: int(k[1:])), ("bn1", "bn2")):
        sources = sorted(labels[src] for src, dst in edges if dst == bn)
        assert f"{name}.beta" in sources and f"{name}.gamma" in sources
    # x, W, 4 BatchNorm parameters, 5 operations, y; 13 edges (x feeds conv1 and the shortcut)
    assert len(labels) == 12 and len(edges) == 13


def test_break_inplace_gives_4_instead_of_3():
    report = show_bug("inplace", make_lesson())
    assert report.numbers["wrong"] == 4.0      # d/dx of (x + x) + x, by hand: 3
    assert report.numbers["right"] == 3.0


def test_break_dedup_steps_twice_with_two_buffers():
    lesson = make_lesson(seed=1)
    report = show_bug("dedup", lesson).numbers
    W0, g, steps = report["weight_before"], report["gradient"], report["steps"]
    assert report["entries_by_name"] == 6 and report["parameters"] == 5
    assert "conv2.weight is conv1.weight" in report["refusal"]
    lr, mu, wd = 0.1, 0.9, 1e-4
    # Right, by hand (PyTorch's SGD): one buffer, one update per step.
    W, v = W0.copy(), np.zeros_like(W0)
    for _ in range(steps):
        v = mu * v + (g + wd * W)
        W = W - lr * v
    np.testing.assert_allclose(report["right_weight"], W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(report["right_buffer"], v, rtol=1e-12, atol=1e-14)
    # Wrong: two optimizers, each with its own buffer, both stepping the same weight.
    shared = Parameter(W0.copy())
    first = optim.SGD([shared], lr=lr, momentum=mu, weight_decay=wd)
    second = optim.SGD([shared], lr=lr, momentum=mu, weight_decay=wd)
    for _ in range(steps):
        shared.grad = g
        first.step()
        second.step()
    np.testing.assert_allclose(report["wrong_weight"], shared.data, rtol=1e-12, atol=1e-14)
    moved_right = np.linalg.norm(report["right_weight"] - W0)
    moved_wrong = np.linalg.norm(report["wrong_weight"] - W0)
    assert 1.9 < moved_wrong / moved_right < 2.1


def test_break_bn_twice_updates_one_batchnorm_twice():
    lesson = make_lesson(seed=2)
    numbers = show_bug("bn-twice", lesson).numbers
    block = lesson.block
    # The batch means that each use normalises, with NumPy and the fast convolution.
    z1 = F.conv2d(lesson.x, block.conv1.weight.data, pad=1).data
    mean, var = z1.mean(axis=(0, 2, 3), keepdims=True), z1.var(axis=(0, 2, 3), keepdims=True)
    gamma, beta = block.bn1.gamma.data[None, :, None, None], block.bn1.beta.data[None, :, None,
                                                                                 None]
    h = np.maximum(gamma * (z1 - mean) / np.sqrt(var + 1e-5) + beta, 0)
    z2 = F.conv2d(h, block.conv1.weight.data, pad=1).data
    m1, m2 = z1.mean(axis=(0, 2, 3)), z2.mean(axis=(0, 2, 3))
    right1, right2 = numbers["right_once"]
    np.testing.assert_allclose(right1, 0.1 * m1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(right2, 0.1 * m2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(numbers["wrong_once"], 0.9 * 0.1 * m1 + 0.1 * m2, rtol=1e-10,
                               atol=1e-12)
    assert numbers["calls_wrong"] == {"bn1": 2, "bn2": 0}
    assert numbers["calls_right"] == {"bn1": 1, "bn2": 1}
    # Settled: the right statistics are each use's own mean, the wrong one the fixed point
    # of r = 0.9 * (0.9 * r + 0.1 * m1) + 0.1 * m2.
    np.testing.assert_allclose(numbers["right_settled"][0], m1, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(numbers["wrong_settled"], (0.09 * m1 + 0.1 * m2) / 0.19,
                               rtol=1e-2, atol=1e-3)
    assert numbers["eval_gap"]["wrong"] > 3 * numbers["eval_gap"]["right"]


def test_steps_follow_the_sgd_formula_with_the_true_gradient():
    lesson = make_lesson(seed=4)
    report = explain_steps(lesson, steps=2)
    lr, mu, wd = report.lr, report.momentum, report.weight_decay
    assert report.parameters == 5 and report.names == 6
    first, second = report.steps
    np.testing.assert_allclose(first.grad, central_differences(lesson.block, lesson,
                                                                lesson.weight.data),
                               rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(first.buffer_before, 0)
    v1 = first.grad + wd * first.weight_before
    np.testing.assert_allclose(first.buffer_after, v1, rtol=1e-12)
    np.testing.assert_allclose(first.weight_after, first.weight_before - lr * v1, rtol=1e-12)
    np.testing.assert_array_equal(second.weight_before, first.weight_after)
    v2 = mu * v1 + second.grad + wd * second.weight_before
    np.testing.assert_allclose(second.buffer_after, v2, rtol=1e-12)
    np.testing.assert_allclose(second.weight_after, second.weight_before - lr * v2, rtol=1e-12)


# -- the command, as a student runs it ---------------------------------------------------------

def run(*args):
    return CliRunner().invoke(cli, ["explain", *args])


def test_explain_prints_the_engine_and_numerical_gradients_of_the_block():
    result = run("--entries", "4", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "untied copy" in result.output and "BasicBlock" in result.output
    lesson = make_lesson(seed=3)
    shared = central_differences(lesson.block, lesson, lesson.weight.data)
    rows = [line.split() for line in result.output.splitlines() if line.startswith("[")]
    assert len(rows) == 4
    for index, use1, use2, total, engine, numerical in rows:
        k = tuple(int(i) for i in index.strip("[]").split(","))
        assert float(engine) == pytest.approx(shared[k], abs=2e-6)
        assert float(numerical) == pytest.approx(shared[k], abs=2e-6)
        assert float(use1) + float(use2) == pytest.approx(shared[k], abs=4e-6)


@pytest.mark.parametrize("option, expected", [
    (["--trace"], ["-> W.grad = g2\n", "-> W.grad = g2 + g1  (added in place)\n"]),
    (["--steps"], ["step 1:", "step 2:", "v = momentum*v + d"]),
    (["--break", "inplace"], ["dy/dx = 4", "dy/dx = 3"]),
    (["--break", "dedup"], ["ValueError: SGD got the same Parameter twice", "2.00 times as far"]),
    (["--break", "bn-twice"], ["bn1 is called 2 times", "wrong bn1"]),
])
def test_each_option_prints_its_lesson(option, expected):
    result = run(*option)
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output


def test_dot_file(tmp_path):
    dot = tmp_path / "block.dot"
    result = run("--dot", str(dot))
    assert result.exit_code == 0, result.output
    assert f"Wrote the graph of the block (DOT text) to {dot}" in result.output
    assert dot.read_text() == to_dot(block_graph(make_lesson()))
    assert [p.name for p in tmp_path.iterdir()] == ["block.dot"]


def test_png_file(tmp_path):
    pytest.importorskip("matplotlib", reason="--png needs the optional matplotlib")
    from matplotlib.image import imread

    png = tmp_path / "block.png"
    result = run("--png", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(png).shape[:2]
    assert height > 400 and width > 400
    assert [p.name for p in tmp_path.iterdir()] == ["block.png"]


@pytest.mark.parametrize("args, message", [
    (["--break", "nope"], "'nope' is not one of 'inplace', 'dedup', 'bn-twice'"),
    (["--dot", "/nonexistent-folder/x.dot"], "the folder '/nonexistent-folder' does not exist"),
    (["--channels", "0"], "0 is not in the range"),
])
def test_bad_values_are_usage_errors(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.count("Error:") == 1 and message in result.output
    assert "Traceback" not in result.output


def test_png_without_matplotlib_is_one_error_line(tmp_path, monkeypatch):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    result = run("--png", str(tmp_path / "g.png"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --png needs matplotlib, which is not installed: pip install 'minires[plot]' "
        "(or write DOT text with --dot)"]
    assert list(tmp_path.iterdir()) == []
