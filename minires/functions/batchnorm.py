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


class BatchNorm(Function):
    def __init__(self, running_mean, running_var, training: bool, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        C = x.shape[1]
        self.axes = (0,) + tuple(range(2, x.ndim))
        self.bshape = (1, C) + (1,) * (x.ndim - 2)  # broadcasts a (C,) vector against x
        if self.training:
            mean = x.mean(axis=self.axes)
            var = x.var(axis=self.axes)  # biased: what normalises the batch
            count = x.size // C
            if self.running_mean is not None:
                m = self.momentum
                self.running_mean *= 1 - m
                self.running_mean += m * mean
                self.running_var *= 1 - m
                self.running_var += m * var * (count / max(count - 1, 1))  # unbiased
        else:
            if self.running_mean is None:
                raise ValueError("batch_norm in eval mode needs running_mean and running_var")
            mean, var = self.running_mean, self.running_var
        inv_std = 1 / (var + x.dtype.type(self.eps)) ** 0.5
        xhat = (x - mean.reshape(self.bshape)) * inv_std.reshape(self.bshape)
        self.xhat, self.inv_std, self.gamma = xhat, inv_std.astype(x.dtype), gamma
        return xhat * gamma.reshape(self.bshape) + beta.reshape(self.bshape)

    def backward(self, gy):
        gbeta = gy.sum(axis=self.axes)
        ggamma = (gy * self.xhat).sum(axis=self.axes)
        gx = None
        if self.needs_input_grad[0]:
            scale = (self.gamma * self.inv_std).reshape(self.bshape)
            if self.training:
                # The batch statistics depend on x too: subtract the mean gradient and the
                # component along xhat (the standard closed form).
                count = gy.size // gy.shape[1]
                gx = scale * (gy - (gbeta.reshape(self.bshape)
                                    + self.xhat * ggamma.reshape(self.bshape)) / count)
            else:
                gx = scale * gy
        return gx, ggamma, gbeta


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
