"""Every differentiable function against central differences, float64, random upstream grad."""
import numpy as np
import pytest

import minires
from minires.gradcheck import gradcheck, numerical_grad, standard_cases

CASES = standard_cases(np)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_gradient_matches_numerical(case):
    result = gradcheck(case.f, case.inputs, rtol=1e-5, atol=1e-7)
    assert result.ok, (case.name, result.max_abs_error, result.max_rel_error)
    for analytic in result.analytic:
        assert np.abs(analytic).max() > 0  # a zero gradient would pass vacuously


def test_gradcheck_catches_a_wrong_backward():
    class WrongTranspose(minires.Function):
        """x @ W with a backward that forgets a transpose for a square W."""

        def forward(self, x, W):
            self.x, self.W = x, W
            return x @ W

        def backward(self, gy):
            return gy @ self.W, self.x.T @ gy  # should be gy @ self.W.T

    rng = np.random.default_rng(1)
    result = gradcheck(lambda x, W: WrongTranspose()(x, W),
                       [rng.standard_normal((3, 4)), rng.standard_normal((4, 4))])
    assert not result.ok


def test_numerical_grad_of_a_known_function():
    x = np.array([1.0, -2.0, 3.0])
    gy = np.array([0.5, 2.0, -1.0])
    (g,) = numerical_grad(lambda t: t * t, [x], gy)
    np.testing.assert_allclose(g, 2 * x * gy, rtol=1e-8)
