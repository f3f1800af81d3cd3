"""Pooling: global average pooling and max pooling."""
from __future__ import annotations

from minires.autograd import Function
from minires.kernels.interface import conv_output_size


class GlobalAvgPool2d(Function):
    """``(N, C, H, W) -> (N, C)``: the mean over each feature map."""

    def forward(self, x):
        self.x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, gy):
        N, C, H, W = self.x_shape
        xp = self.k.xp
        scaled = gy.reshape(N, C, 1, 1) * gy.dtype.type(1.0 / (H * W))
        return xp.ascontiguousarray(xp.broadcast_to(scaled, self.x_shape))


class MaxPool2d(Function):
    """Max over ``k x k`` windows moved by ``stride`` (no padding): the windows are the patches
    of an im2col, and the gradient goes back through col2im to each window's maximum."""

    def __init__(self, size: int, stride: int):
        self.size, self.stride = size, stride

    def forward(self, x):
        N, C, H, W = x.shape
        k, s = self.size, self.stride
        OH, OW = conv_output_size(H, k, s, 0), conv_output_size(W, k, s, 0)
        col = self.k.im2col(x, k, k, s, s, 0, 0).reshape(N, C, k * k, OH, OW)
        self.argmax = col.argmax(axis=2)
        self.x_shape = x.shape
        return self.k.xp.take_along_axis(col, self.argmax[:, :, None], axis=2)[:, :, 0]

    def backward(self, gy):
        N, C, H, W = self.x_shape
        k, s = self.size, self.stride
        xp = self.k.xp
        OH, OW = gy.shape[2:]
        gcol = xp.zeros((N, C, k * k, OH, OW), dtype=gy.dtype)
        xp.put_along_axis(gcol, self.argmax[:, :, None], gy[:, :, None], axis=2)
        return self.k.col2im(gcol.reshape(N, C, k, k, OH, OW), H, W, s, s, 0, 0)


def global_avg_pool2d(x):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)``."""
    return GlobalAvgPool2d()(x)


def max_pool2d(x, k: int, stride: int | None = None):
    """Max pooling of ``x (N, C, H, W)`` over ``k x k`` windows (stride defaults to ``k``)."""
    return MaxPool2d(int(k), int(stride if stride is not None else k))(x)
