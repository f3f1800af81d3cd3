"""Activations."""
from __future__ import annotations

from minires.autograd import Function


class ReLU(Function):
    def forward(self, x):
        self.y = self.k.relu_forward(x)
        return self.y

    def backward(self, gy):
        return self.k.relu_backward(gy, self.y)


class AddReLU(Function):
    """``relu(a + b)`` for same-shaped ``a`` and ``b`` as one node: the sum is never stored, and
    both inputs get the same gradient, ``relu_backward`` of the output."""

    def forward(self, a, b):
        self.y = self.k.add_relu_forward(a, b)
        return self.y

    def backward(self, gy):
        g = self.k.relu_backward(gy, self.y)
        # One array for both inputs, as Add's backward: the engine never writes into it.
        return tuple(g if need else None for need in self.needs_input_grad)


def relu(x):
    """``max(x, 0)`` elementwise."""
    return ReLU()(x)


def add_relu(a, b):
    """``relu(a + b)`` for same-shaped ``a`` and ``b`` (the join of a residual block), in one
    pass each way."""
    return AddReLU()(a, b)
