"""Numerical gradient checking, for tests and for users' own Functions.

The check compares the engine's gradient of ``sum(f(inputs) * gy)`` with central differences,
in float64, for a **random** upstream gradient ``gy``. An all-ones ``gy`` would hide index bugs: a
backward that forgets a flip or a transpose still sums to the right total.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import minires.functions as F
from minires.autograd import Tensor, no_grad
from minires.backend import get_array_module


@dataclass
class GradcheckResult:
    """Outcome of :func:`gradcheck`: one entry per checked input."""

    analytic: list = field(default_factory=list)
    numerical: list = field(default_factory=list)
    max_abs_error: list = field(default_factory=list)
    max_rel_error: list = field(default_factory=list)
    ok: bool = True


def numerical_grad(f, inputs, gy, eps: float = 1e-6):
    """Central-difference gradients of ``sum(f(*inputs) * gy)`` for every array in ``inputs``.

    Args:
        f: maps Tensors to one Tensor.
        inputs: float64 arrays; each is perturbed in place and restored.
        gy: the upstream gradient, shaped like ``f``'s output.
    Returns:
        a list of arrays shaped like ``inputs``.
    """
    xp = get_array_module(*inputs)

    def objective():
        with no_grad():
            return float((f(*[Tensor(a) for a in inputs]).data * gy).sum())

    grads = []
    for a in inputs:
        g = xp.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)  # views: writing them writes a and g
        for i in range(flat.size):
            original = flat[i].item()
            flat[i] = original + eps
            plus = objective()
            flat[i] = original - eps
            minus = objective()
            flat[i] = original
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(f, inputs, *, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7,
              seed: int = 0) -> GradcheckResult:
    """Compare the engine's gradients of ``f`` with numerical ones.

    Args:
        f: maps one Tensor per input to one Tensor.
        inputs: arrays (NumPy or CuPy); converted to float64 copies.
        eps: finite-difference step. rtol, atol: tolerance as in ``numpy.allclose``.
        seed: seeds the random upstream gradient.
    Returns:
        a :class:`GradcheckResult`; ``ok`` is True when every gradient agrees.
    """
    xp = get_array_module(*inputs)
    arrays = [xp.array(a, dtype=xp.float64) for a in inputs]
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    y = f(*tensors)
    rng = np.random.default_rng(seed)
    gy = xp.asarray(rng.standard_normal(y.shape))
    y.backward(gy)
    numerical = numerical_grad(f, arrays, gy, eps)
    result = GradcheckResult()
    for t, n in zip(tensors, numerical):
        a = t.grad if t.grad is not None else xp.zeros_like(n)
        diff = abs(a - n)
        result.analytic.append(a)
        result.numerical.append(n)
        result.max_abs_error.append(float(diff.max()) if diff.size else 0.0)
        result.max_rel_error.append(float((diff / xp.maximum(abs(n), atol)).max())
                                    if diff.size else 0.0)
        result.ok &= bool((diff <= atol + rtol * abs(n)).all())
    return result


def assert_gradcheck(f, inputs, **kwargs) -> GradcheckResult:
    """:func:`gradcheck`, raising AssertionError with the errors when it fails."""
    result = gradcheck(f, inputs, **kwargs)
    if not result.ok:
        raise AssertionError(
            f"gradient check failed: max abs errors {result.max_abs_error}, max rel errors "
            f"{result.max_rel_error}")
    return result


@dataclass
class GradcheckCase:
    """One named gradient check: ``f`` maps one Tensor per array in ``inputs`` to a Tensor."""

    name: str
    f: object
    inputs: list


def standard_cases(xp=np, seed: int = 0) -> list[GradcheckCase]:
    """The gradient checks of every differentiable function, on float64 arrays of ``xp``.

    Used by the test suite, by ``minires gradcheck`` on the user's own machine and device, and
    by the GPU tests, so all three check exactly the same things.
    """
    rng = np.random.default_rng(seed)

    def arr(*shape):
        return xp.asarray(rng.standard_normal(shape))

    def away_from_zero(*shape):
        # ReLU and max have kinks; keep inputs where finite differences are valid.
        a = rng.standard_normal(shape)
        return xp.asarray(np.sign(a) * (0.2 + np.abs(a)))

    def bn_stats(C):
        return xp.asarray(rng.standard_normal(C) * 0.1), xp.asarray(rng.uniform(0.5, 2.0, C))

    eval_mean, eval_var = bn_stats(3)
    labels = xp.asarray(rng.integers(0, 5, size=4))
    dropout_state = xp.asarray(np.array([20190407, 3], dtype=np.int64))  # [key, calls]
    case = GradcheckCase
    return [
        case("add (broadcast)", lambda a, b: a + b, [arr(3, 4), arr(1, 4)]),
        case("sub (broadcast)", lambda a, b: a - b, [arr(3, 4), arr(3, 1)]),
        case("mul (broadcast)", lambda a, b: a * b, [arr(2, 3, 4), arr(4)]),
        case("div", lambda a, b: a / b, [arr(3, 4), away_from_zero(3, 4) + 3.0]),
        case("power", lambda a: a ** 3, [arr(3, 4)]),
        case("matmul", lambda a, b: a @ b, [arr(3, 4), arr(4, 5)]),
        case("linear", lambda x, W, b: F.linear(x, W, b), [arr(4, 5), arr(3, 5), arr(3)]),
        case("linear (no bias)", lambda x, W: F.linear(x, W), [arr(4, 5), arr(3, 5)]),
        case("relu", F.relu, [away_from_zero(2, 3, 4)]),
        case("add_relu", F.add_relu, [away_from_zero(2, 3, 4),
                                      xp.asarray(rng.uniform(-0.1, 0.1, (2, 3, 4)))]),
        case("sum (axis)", lambda a: a.sum(axis=(0, 2)), [arr(2, 3, 4)]),
        case("mean (keepdims)", lambda a: a.mean(axis=1, keepdims=True), [arr(2, 3, 4)]),
        case("reshape", lambda a: a.reshape(4, 6), [arr(2, 3, 4)]),
        case("transpose", lambda a: a.transpose(2, 0, 1), [arr(2, 3, 4)]),
        case("getitem (steps)", lambda a: a[:, 1:, ::2, 1::2], [arr(2, 3, 5, 6)]),
        case("pad", lambda a: F.pad(a, ((0, 0), (2, 1), (0, 0), (1, 0))), [arr(2, 3, 2, 2)]),
        case("conv2d s1 p1", lambda x, W: F.conv2d(x, W, pad=1), [arr(2, 3, 5, 6),
                                                                   arr(4, 3, 3, 3)]),
        case("conv2d s2 p1 +bias", lambda x, W, b: F.conv2d(x, W, b, stride=2, pad=1),
             [arr(2, 3, 7, 6), arr(4, 3, 3, 3), arr(4)]),
        case("conv2d s1 p0 2x3", lambda x, W: F.conv2d(x, W), [arr(2, 2, 5, 6),
                                                               arr(3, 2, 2, 3)]),
        case("conv2d 1x1 s2", lambda x, W: F.conv2d(x, W, stride=2), [arr(2, 3, 5, 4),
                                                                      arr(4, 3, 1, 1)]),
        case("batch_norm train", lambda x, g, b: F.batch_norm(x, g, b, None, None, True),
             [arr(4, 3, 3, 2), arr(3) + 1.0, arr(3)]),
        case("batch_norm train (N, C)", lambda x, g, b: F.batch_norm(x, g, b, None, None, True),
             [arr(6, 3), arr(3) + 1.0, arr(3)]),
        case("batch_norm eval", lambda x, g, b: F.batch_norm(x, g, b, eval_mean, eval_var,
                                                             False),
             [arr(4, 3, 3, 2), arr(3) + 1.0, arr(3)]),
        case("global_avg_pool2d", F.global_avg_pool2d, [arr(2, 3, 4, 5)]),
        case("max_pool2d", lambda x: F.max_pool2d(x, 2, 2), [arr(2, 3, 4, 6)]),
        case("softmax_cross_entropy", lambda z: F.softmax_cross_entropy(z, labels),
             [arr(4, 5)]),
        case("shared conv weight (two uses)",
             lambda x, W: F.conv2d(F.relu(F.conv2d(x, W, pad=1)), W, pad=1),
             [arr(2, 3, 4, 5), arr(3, 3, 3, 3)]),
        # Each call advances a dropout state: a copy per call keeps the mask fixed while the
        # numerical gradient evaluates the function again and again.
        case("dropout", lambda x: F.dropout(x, 0.3, dropout_state.copy()), [arr(3, 4, 5)]),
    ]
