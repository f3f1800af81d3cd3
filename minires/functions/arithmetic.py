"""Elementwise arithmetic with NumPy broadcasting, matrix products and ``linear``.

Matrix products go through the kernels' ``matmul`` (NumPy's on the CPU, cuBLAS on the GPU,
which unlike ``cupy.matmul`` can run inside a CUDA graph).
"""
from __future__ import annotations

from minires.autograd import Function, as_tensor


def sum_to(g, shape):
    """Sum gradient ``g`` down to ``shape``: the adjoint of broadcasting ``shape`` to g.shape."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and g.shape[lead + i] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape) if lead else g


def _operands(a, b):
    """Tensors for a binary op; a Python scalar takes the other operand's dtype and device."""
    ta = as_tensor(a) if not _is_scalar(a) else None
    tb = as_tensor(b) if not _is_scalar(b) else None
    if ta is None:
        ta = as_tensor(a, like=tb)
    if tb is None:
        tb = as_tensor(b, like=ta)
    return ta, tb


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float))


class Add(Function):
    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, gy):
        # The same array goes to both inputs; the engine never writes into it (see accumulate).
        return tuple(sum_to(gy, s) if need else None
                     for s, need in zip(self.shapes, self.needs_input_grad))


class Sub(Function):
    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, gy):
        ga = sum_to(gy, self.shapes[0]) if self.needs_input_grad[0] else None
        gb = -sum_to(gy, self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        ga = sum_to(gy * self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(gy * self.a, self.b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = sum_to(gy / self.b, self.a.shape) if self.needs_input_grad[0] else None
        gb = (sum_to(-gy * self.a / (self.b * self.b), self.b.shape)
              if self.needs_input_grad[1] else None)
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Power(Function):
    """``x ** exponent`` for a constant Python number ``exponent``."""

    def __init__(self, exponent: float):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, gy):
        return gy * self.exponent * self.x ** (self.exponent - 1)


class MatMul(Function):
    """``a @ b`` for 2-D operands ``a (M, K)`` and ``b (K, N)``."""

    def forward(self, a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul expects 2-D operands, got shapes {a.shape} and {b.shape}")
        self.a, self.b = a, b
        return self.k.matmul(a, b)

    def backward(self, gy):
        ga = self.k.matmul(gy, self.b.T) if self.needs_input_grad[0] else None
        gb = self.k.matmul(self.a.T, gy) if self.needs_input_grad[1] else None
        return ga, gb


class Linear(Function):
    """``y = x @ W.T + b`` with ``x (N, in)``, ``W (out, in)``, ``b (out,)``."""

    def forward(self, x, W, b=None):
        self.x, self.W = x, W
        y = self.k.matmul(x, W.T)
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        gx = self.k.matmul(gy, self.W) if self.needs_input_grad[0] else None
        gW = self.k.matmul(gy.T, self.x) if self.needs_input_grad[1] else None
        if len(self.needs_input_grad) == 2:
            return gx, gW
        gb = gy.sum(axis=0) if self.needs_input_grad[2] else None
        return gx, gW, gb


def add(a, b):
    """``a + b`` with broadcasting."""
    return Add()(*_operands(a, b))


def sub(a, b):
    """``a - b`` with broadcasting."""
    return Sub()(*_operands(a, b))


def mul(a, b):
    """``a * b`` with broadcasting."""
    return Mul()(*_operands(a, b))


def div(a, b):
    """``a / b`` with broadcasting."""
    return Div()(*_operands(a, b))


def neg(x):
    """``-x``."""
    return Neg()(x)


def power(x, exponent: float):
    """``x ** exponent`` for a constant exponent."""
    return Power(float(exponent))(x)


def matmul(a, b):
    """Matrix product of ``a (M, K)`` and ``b (K, N)`` -> ``(M, N)``."""
    return MatMul()(a, b)


def linear(x, W, b=None):
    """Fully connected layer: ``x (N, in)``, ``W (out, in)``, ``b (out,)`` -> ``(N, out)``."""
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[1]:
        raise ValueError(f"linear expects x (N, in) and W (out, in), got {x.shape} and {W.shape}")
    return Linear()(x, W) if b is None else Linear()(x, W, b)
