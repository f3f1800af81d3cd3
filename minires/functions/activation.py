"""Activations."""
from __future__ import annotations

from minires.autograd import Function
from minires.backend import is_cuda_array
from minires.kernels import cuda
from minires.kernels.cpu import batchnorm as cpu_bn


class ReLU(Function):
    def forward(self, x):
        if is_cuda_array(x):  # one kernel each way (minires.kernels.cuda)
            self.y = cuda.relu_forward(x)
            return self.y
        self.y = cpu_bn.relu_forward(x)  # numba, split over the worker threads
        return self.y

    def backward(self, gy):
        if is_cuda_array(gy):
            return cuda.relu_backward(gy, self.y)
        return cpu_bn.relu_backward(self.y, gy)


def relu(x):
    """``max(x, 0)`` elementwise."""
    return ReLU()(x)
