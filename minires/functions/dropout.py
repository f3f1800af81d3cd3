"""Dropout as a differentiable function; the mask comes from the backend's counter-based hash."""
from __future__ import annotations

from minires import backend
from minires.autograd import Function, unwrap


class Dropout(Function):
    """Inverted dropout with the mask of ``state`` (``[key, calls]``, advanced by one)."""

    def __init__(self, p: float, state):
        self.p, self.state = float(p), state

    def forward(self, x):
        if backend.device_of(self.state) != self.k.device:
            raise ValueError(f"dropout: the state is on {backend.device_of(self.state)} but the "
                             f"input on {self.k.device}; move the layer with the model")
        y, self.saved = self.k.dropout_forward(x, self.p, self.state)
        return y

    def backward(self, gy):
        return self.k.dropout_backward(gy, self.saved)


def dropout(x, p: float, state):
    """Zero each element of ``x`` with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    ``state``: int64 array ``[key, calls]`` on ``x``'s device; the mask depends only on it and
    the element's index, and each call advances ``calls`` by one (in place), so the next call
    draws another mask. ``minires.nn.Dropout`` keeps one per layer.
    """
    return Dropout(p, unwrap(state))(x)
