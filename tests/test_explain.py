"""The teaching view: a shared weight's gradient is the sum of its uses' gradients."""
import numpy as np
import pytest
from click.testing import CliRunner

from minires.cli.main import cli
from minires.explain import explain_shared_gradient


@pytest.mark.parametrize("seed", [0, 3])
def test_per_use_gradients_sum_to_engine_and_numerical(seed):
    report = explain_shared_gradient(seed=seed)
    assert report.weight.shape == (2, 2, 3, 3)
    # Both uses contribute, and differently: sharing is not just doubling one gradient.
    assert np.abs(report.grad_use1).max() > 1e-3 and np.abs(report.grad_use2).max() > 1e-3
    assert not np.allclose(report.grad_use1, report.grad_use2)
    np.testing.assert_allclose(report.grad_sum, report.grad_use1 + report.grad_use2)
    np.testing.assert_allclose(report.grad_engine, report.grad_sum, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(report.grad_numerical, report.grad_engine, rtol=1e-5, atol=1e-7)
    assert report.max_diff_engine < 1e-12 and report.max_diff_numerical < 1e-6


def test_engine_gradient_is_not_a_single_use():
    report = explain_shared_gradient(channels=3, size=5, seed=1)
    assert report.weight.shape == (3, 3, 3, 3)
    assert not np.allclose(report.grad_engine, report.grad_use1)
    assert not np.allclose(report.grad_engine, report.grad_use2)


def test_explain_command_prints_the_side_by_side_report():
    result = CliRunner().invoke(cli, ["explain", "--entries", "4"])
    assert result.exit_code == 0, result.output
    assert "use1+use2" in result.output and "numerical" in result.output
    report = explain_shared_gradient()
    # The printed maximum differences are the library's numbers.
    assert f"{report.max_diff_numerical:.3e}" in result.output
    rows = [line for line in result.output.splitlines() if line.strip().startswith("[")]
    assert len(rows) == 4
