"""Batch normalisation over every axis but the channel axis 1 (PyTorch's conventions).

Training mode normalises with the batch mean and the *biased* variance, and updates the running
statistics in place with the *unbiased* variance:
``running = (1 - momentum) * running + momentum * batch_statistic``.
Evaluation mode normalises with the running statistics and updates nothing.

In the shared ResNet block each convolution use keeps its own BatchNorm: sharing a BatchNorm as
well would update its running statistics twice per step, from two different distributions.
"""
from __future__ import annotations

from minires.autograd import Function, unwrap
from minires.backend import is_cuda_array
from minires.kernels import cuda
from minires.kernels.cpu import batchnorm as cpu_bn


class BatchNorm(Function):
    #: Apply ReLU to the output in the same pass (see :class:`BatchNormReLU`).
    relu = False

    def __init__(self, running_mean, running_var, training: bool, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        if is_cuda_array(x):  # fused CUDA kernels; same results (minires.kernels.cuda)
            y, self.saved = cuda.batch_norm_forward(x, gamma, beta, self.running_mean,
                                                    self.running_var, self.training,
                                                    self.momentum, self.eps, relu=self.relu)
            return y
        if not self.training and self.running_mean is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        # One numba pass for the statistics, one for the output (minires.kernels.cpu.batchnorm);
        # the backward pass recomputes xhat from x, mean and inv_std instead of storing it.
        y, self.mean, self.inv_std = cpu_bn.batch_norm_forward(
            x, gamma, beta, self.running_mean, self.running_var, self.training, self.momentum,
            self.eps, relu=self.relu)
        self.x, self.gamma = x, gamma
        self.y = y if self.relu else None
        return y

    def backward(self, gy):
        if is_cuda_array(gy):
            return cuda.batch_norm_backward(gy, self.saved, self.needs_input_grad[0])
        gx, ggamma, gbeta = cpu_bn.batch_norm_backward(
            self.x, self.y, gy, self.gamma, self.mean, self.inv_std, self.training,
            relu=self.relu, need_gx=self.needs_input_grad[0])
        need = self.needs_input_grad
        return gx, (ggamma if need[1] else None), (gbeta if need[2] else None)


class BatchNormReLU(BatchNorm):
    """``relu(batch_norm(x))`` as one node: on the CPU the ReLU is applied in the normalising
    pass and its mask in the gradient passes, saving a full read and write of the activation
    each way. On the GPU the CUDA BatchNorm kernels do the same (their ``relu`` flag)."""

    relu = True


def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Batch normalisation of ``x (N, C)`` or ``(N, C, H, W)`` per channel.

    Args:
        gamma, beta: scale and shift ``(C,)`` (Tensors or Parameters).
        running_mean, running_var: arrays ``(C,)`` updated in place when ``training`` (may be
            None in training mode to keep no statistics); used to normalise when not training.
        training: use batch statistics (True) or running statistics (False).
        momentum: weight of the new batch statistic in the running average.
        eps: added to the variance before the square root.
    """
    running_mean, running_var = unwrap(running_mean), unwrap(running_var)
    return BatchNorm(running_mean, running_var, bool(training), momentum, eps)(x, gamma, beta)


def batch_norm_relu(x, gamma, beta, running_mean, running_var, training, momentum=0.1,
                    eps=1e-5):
    """``relu(batch_norm(x, ...))`` in one fused node; arguments as :func:`batch_norm`."""
    running_mean, running_var = unwrap(running_mean), unwrap(running_var)
    return BatchNormReLU(running_mean, running_var, bool(training), momentum, eps)(x, gamma, beta)
