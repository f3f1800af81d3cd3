"""Tensor and Parameter: an array plus what autograd needs to differentiate through it."""
from __future__ import annotations

import numpy as np

from minires.backend import device_of, get_array_module, is_array, to_device, to_numpy


def _functions():
    # The operators below are thin wrappers over minires.functions, which itself builds on this
    # module; importing it lazily keeps the layering one-way at import time.
    import minires.functions as F
    return F


class Tensor:
    """An n-dimensional array (NumPy or CuPy) that can record the operations applied to it.

    Args:
        data: an array, a Tensor, or anything ``numpy.asarray`` accepts.
        requires_grad: whether ``backward`` should compute a gradient for this tensor.

    Attributes:
        data: the array itself.
        grad: the accumulated gradient, an array of ``data``'s array module and shape, or None.
        creator: the Function that produced this tensor (None for leaves).
    """

    # Make ``ndarray + Tensor`` call ``Tensor.__radd__`` instead of NumPy broadcasting over us.
    __array_priority__ = 200

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        elif not is_array(data):
            data = np.asarray(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator = None
        self.generation = 0

    # -- array-like properties -----------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def xp(self):
        """The array module of ``data``: numpy or cupy."""
        return get_array_module(self.data)

    @property
    def device(self) -> str:
        return device_of(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"{type(self).__name__}({to_numpy(self.data)!r}{flag})"

    # -- autograd ------------------------------------------------------------------------
    def backward(self, gy=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``; ``gy`` defaults to ones."""
        from minires.autograd.engine import backward  # the engine imports this module
        backward(self, gy)

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def numpy(self) -> np.ndarray:
        return to_numpy(self.data)

    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor of one element, got shape {self.shape}")
        return float(self.data.item())

    def to(self, device: str) -> "Tensor":
        """A leaf copy of this tensor on ``device`` (``cpu`` or ``cuda``)."""
        moved = to_device(self.data, device)
        if isinstance(self, Parameter):
            return Parameter(moved)
        return Tensor(moved, requires_grad=self.requires_grad)

    # -- operators (see minires.functions for the Functions behind them) -----------------
    def __add__(self, other):
        return _functions().add(self, other)

    def __radd__(self, other):
        return _functions().add(other, self)

    def __sub__(self, other):
        return _functions().sub(self, other)

    def __rsub__(self, other):
        return _functions().sub(other, self)

    def __mul__(self, other):
        return _functions().mul(self, other)

    def __rmul__(self, other):
        return _functions().mul(other, self)

    def __truediv__(self, other):
        return _functions().div(self, other)

    def __rtruediv__(self, other):
        return _functions().div(other, self)

    def __neg__(self):
        return _functions().neg(self)

    def __pow__(self, exponent):
        return _functions().power(self, exponent)

    def __matmul__(self, other):
        return _functions().matmul(self, other)

    def __rmatmul__(self, other):
        return _functions().matmul(other, self)

    def __getitem__(self, index):
        return _functions().get_item(self, index)

    def sum(self, axis=None, keepdims: bool = False):
        return _functions().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return _functions().mean(self, axis, keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _functions().reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _functions().transpose(self, axes or None)

    @property
    def T(self):
        return self.transpose()


class Parameter(Tensor):
    """A learnable leaf tensor: always requires a gradient.

    One Parameter object used in two places *is* weight sharing; see ``minires.nn.Module``
    for how it is still counted and optimised once.
    """

    def __init__(self, data):
        super().__init__(data, requires_grad=True)


def unwrap(x):
    """The array inside a Tensor; any other value unchanged (None stays None)."""
    return x.data if isinstance(x, Tensor) else x


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """Return ``x`` as a Tensor; a Python scalar takes the dtype and device of ``like``."""
    if isinstance(x, Tensor):
        return x
    if like is not None and np.isscalar(x):
        return Tensor(like.xp.asarray(x, dtype=like.dtype))
    return Tensor(x)
