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
    #: Apply ReLU to the output in the same pass (see :class:`BatchNormReLU`).
    relu = False

    def __init__(self, running_mean, running_var, training: bool, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        # The kernels keep the input and the per-channel statistics (self.saved): the backward
        # pass recomputes xhat from them instead of storing a normalised copy of x.
        y, self.saved = self.k.batch_norm_forward(x, gamma, beta, self.running_mean,
                                                  self.running_var, self.training,
                                                  self.momentum, self.eps, relu=self.relu)
        return y

    def backward(self, gy):
        need = self.needs_input_grad
        gx, ggamma, gbeta = self.k.batch_norm_backward(gy, self.saved, need_gx=need[0])
        return gx, (ggamma if need[1] else None), (gbeta if need[2] else None)


class BatchNormReLU(BatchNorm):
    """``relu(batch_norm(x))`` as one node: the kernels apply the ReLU in the normalising pass
    and its mask in the gradient passes, saving a full read and write of the activation each
    way."""

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
