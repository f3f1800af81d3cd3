"""Pooling: global average pooling and max pooling."""
from __future__ import annotations

from minires import kernels
from minires.autograd import Function
from minires.backend import get_array_module
from minires.kernels.cpu.im2col import conv_output_size


class GlobalAvgPool2d(Function):
    """``(N, C, H, W) -> (N, C)``: the mean over each feature map."""

    def forward(self, x):
        self.x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, gy):
        N, C, H, W = self.x_shape
        xp = get_array_module(gy)
        scaled = gy.reshape(N, C, 1, 1) * gy.dtype.type(1.0 / (H * W))
        return xp.ascontiguousarray(xp.broadcast_to(scaled, self.x_shape))


class MaxPool2d(Function):
    """Max over ``k x k`` windows moved by ``stride`` (no padding)."""

    def __init__(self, k: int, stride: int):
        self.k, self.stride = k, stride

    def forward(self, x):
        N, C, H, W = x.shape
        k, s = self.k, self.stride
        OH, OW = conv_output_size(H, k, s, 0), conv_output_size(W, k, s, 0)
        col = kernels.im2col(x, k, k, s, s, 0, 0).reshape(N, C, k * k, OH, OW)
        self.argmax = col.argmax(axis=2)
        self.x_shape = x.shape
        xp = get_array_module(x)
        return xp.take_along_axis(col, self.argmax[:, :, None], axis=2)[:, :, 0]

    def backward(self, gy):
        N, C, H, W = self.x_shape
        k, s = self.k, self.stride
        xp = get_array_module(gy)
        OH, OW = gy.shape[2:]
        gcol = xp.zeros((N, C, k * k, OH, OW), dtype=gy.dtype)
        xp.put_along_axis(gcol, self.argmax[:, :, None], gy[:, :, None], axis=2)
        return kernels.col2im(gcol.reshape(N, C, k, k, OH, OW), H, W, s, s, 0, 0)


def global_avg_pool2d(x):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)``."""
    return GlobalAvgPool2d()(x)


def max_pool2d(x, k: int, stride: int | None = None):
    """Max pooling of ``x (N, C, H, W)`` over ``k x k`` windows (stride defaults to ``k``)."""
    return MaxPool2d(int(k), int(stride if stride is not None else k))(x)
