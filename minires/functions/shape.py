"""Shape operations: reshape, transpose, indexing and zero padding."""
from __future__ import annotations

from minires.autograd import Function


class Reshape(Function):
    def __init__(self, shape: tuple):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.x_shape)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return gy.transpose()
        inverse = sorted(range(len(self.axes)), key=lambda i: self.axes[i])
        return gy.transpose(inverse)


def _is_basic_index(index) -> bool:
    """True for slices, integers, None and Ellipsis: such an index never selects an element
    twice, so the backward pass can assign instead of scatter-adding."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (slice, int)) or p is None or p is Ellipsis for p in parts)


class GetItem(Function):
    """``x[index]`` for slices with steps, integers, or integer/boolean arrays."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        gx = self.k.xp.zeros(self.x_shape, dtype=self.x_dtype)
        if _is_basic_index(self.index):
            gx[self.index] = gy
        else:
            self.k.scatter_add(gx, self.index, gy)  # repeated indices must add up
        return gx


class Pad(Function):
    """Zero padding: ``pad_width`` holds one ``(before, after)`` pair per axis, as numpy.pad."""

    def __init__(self, pad_width):
        self.pad_width = tuple((int(b), int(a)) for b, a in pad_width)

    def forward(self, x):
        if len(self.pad_width) != x.ndim:
            raise ValueError(f"pad_width needs {x.ndim} (before, after) pairs, got "
                             f"{len(self.pad_width)}")
        out_shape = tuple(s + b + a for s, (b, a) in zip(x.shape, self.pad_width))
        y = self.k.xp.zeros(out_shape, dtype=x.dtype)
        y[self._inner(x.shape)] = x
        return y

    def backward(self, gy):
        shape = tuple(s - b - a for s, (b, a) in zip(gy.shape, self.pad_width))
        return gy[self._inner(shape)]

    def _inner(self, shape):
        return tuple(slice(b, b + s) for s, (b, _) in zip(shape, self.pad_width))


def reshape(x, shape):
    """``x`` with a new shape (one entry may be -1)."""
    shape = tuple(shape)
    return Reshape(shape)(x)


def transpose(x, axes=None):
    """Permute the axes of ``x`` (reverse them when ``axes`` is None)."""
    return Transpose(None if axes is None else tuple(axes))(x)


def get_item(x, index):
    """``x[index]``; differentiable for slices (with steps), integers and index arrays."""
    return GetItem(index)(x)


def pad(x, pad_width):
    """Zero-pad ``x``; ``pad_width`` is one ``(before, after)`` pair per axis.

    Used by the option-A ResNet shortcut to add channels: ``pad(x, ((0, 0), (p, p), (0, 0),
    (0, 0)))`` on an ``(N, C, H, W)`` input gives ``(N, C + 2p, H, W)``.
    """
    return Pad(pad_width)(x)
