"""Numerical gradient checking, for tests and for users' own Functions.

The check compares the engine's gradient of ``sum(f(inputs) * gy)`` with central differences,
in float64, for a **random** upstream gradient ``gy``. An all-ones ``gy`` would hide index bugs: a
backward that forgets a flip or a transpose still sums to the right total.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
