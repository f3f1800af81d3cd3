"""ReLU on the GPU (``activation.cu``): one kernel each way, and one for ``relu(a + b)``.

(A ReLU right after a BatchNorm is fused into the BatchNorm kernels instead: see
:mod:`minires.kernels.cuda.batchnorm`'s ``relu`` flag.)
"""
from __future__ import annotations

from minires.kernels.cuda.launch import check_int32, elementwise_launch, ints, same_dtype
from minires.kernels.cuda.loader import cupy, kernel

__all__ = ["relu_forward", "relu_backward", "add_relu_forward"]


def relu_forward(x):
    """``max(x, 0)`` elementwise, same shape and dtype as ``x``."""
    cp = cupy()
    x = cp.ascontiguousarray(x)
    y = cp.empty_like(x)
    grid, block = elementwise_launch(check_int32(x.size))
    kernel("relu_forward", x.dtype)(grid, block, (x, y, *ints(x.size)))
    return y


def relu_backward(gy, y):
    """``gy`` where the forward output ``y`` is positive, else 0."""
    cp = cupy()
    gy, y = cp.ascontiguousarray(gy), cp.ascontiguousarray(y)
    same_dtype(y.dtype, gy=gy)
    gx = cp.empty_like(y)
    grid, block = elementwise_launch(check_int32(y.size))
    kernel("relu_backward", y.dtype)(grid, block, (gy, y, gx, *ints(y.size)))
    return gx


def add_relu_forward(a, b):
    """``max(a + b, 0)`` for same-shaped ``a`` and ``b`` of one dtype. Its gradient with respect
    to either input is :func:`relu_backward` of the output."""
    cp = cupy()
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"add_relu needs two arrays of one shape and dtype, got {a.shape} "
                         f"{a.dtype} and {b.shape} {b.dtype}")
    a, b = cp.ascontiguousarray(a), cp.ascontiguousarray(b)
    y = cp.empty_like(a)
    grid, block = elementwise_launch(check_int32(y.size))
    kernel("add_relu_forward", y.dtype)(grid, block, (a, b, y, *ints(y.size)))
    return y
