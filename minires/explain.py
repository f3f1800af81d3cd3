"""The teaching view: where the gradient of a shared convolution weight comes from.

A shared residual block applies one 3x3 weight ``W`` twice::

    h = relu(bn1(conv(x, W)))
    y = relu(bn2(conv(h, W)) + x)

``W`` receives one gradient from each use, and its gradient is their sum. This module computes
that sum three ways on a tiny block, in float64:

1. **per use**: an untied copy of the block where each convolution has its own copy of ``W``
   with the same values; the copies' gradients are what each use contributes;
2. **engine**: the shared block, where the autograd engine accumulates both uses into ``W.grad``;
3. **numerical**: central differences of the same objective with respect to ``W``.

The objective is ``sum(y * gy)`` for a random upstream gradient ``gy`` (an all-ones ``gy`` could
hide index bugs). BatchNorm runs in training mode without running statistics, so evaluating the
block many times for the numerical gradient changes no state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import minires.functions as F
from minires.autograd import Parameter, Tensor
from minires.gradcheck import numerical_grad


@dataclass
class SharedGradientReport:
    """The numbers of the teaching view; every array is float64 and shaped like ``weight``.

    Attributes:
        weight: the shared weight ``(C, C, 3, 3)``.
        grad_use1, grad_use2: the gradient each convolution use contributes.
        grad_sum: ``grad_use1 + grad_use2``.
        grad_engine: ``W.grad`` after backward through the shared block.
        grad_numerical: central differences of the objective with respect to ``W``.
        max_diff_engine: ``max |grad_sum - grad_engine|``.
        max_diff_numerical: ``max |grad_engine - grad_numerical|``.
        input_shape: the shape ``(N, C, H, W)`` of the block's input.
    """

    weight: np.ndarray
    grad_use1: np.ndarray
    grad_use2: np.ndarray
    grad_sum: np.ndarray
    grad_engine: np.ndarray
    grad_numerical: np.ndarray
    max_diff_engine: float
    max_diff_numerical: float
    input_shape: tuple


def _block(x, W1, W2, bn1, bn2):
    """The residual block with weights ``W1`` (first use) and ``W2`` (second use)."""
    h = F.relu(F.batch_norm(F.conv2d(x, W1, pad=1), *bn1, None, None, training=True))
    z = F.batch_norm(F.conv2d(h, W2, pad=1), *bn2, None, None, training=True)
    return F.relu(z + x)


def explain_shared_gradient(channels: int = 2, size: int = 4, batch: int = 2,
                            seed: int = 0) -> SharedGradientReport:
    """Compute the per-use, summed, engine and numerical gradients of a shared 3x3 weight.

    Args:
        channels: C, the block's input and output channels (both uses need the same shape).
        size: H = W of the input.
        batch: N, images in the batch (BatchNorm needs more than one value per channel).
        seed: seeds the input, the weight, the BatchNorm affine parameters and ``gy``.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, size, size))
    weight = rng.standard_normal((channels, channels, 3, 3)) * 0.5
    # Each use keeps its own BatchNorm (gamma, beta): only the convolution weight is shared.
    bn1, bn2 = ([Tensor(1 + 0.1 * rng.standard_normal(channels)),
                 Tensor(0.1 * rng.standard_normal(channels))] for _ in range(2))
    gy = rng.standard_normal((batch, channels, size, size))

    # 1. Untied: two Parameters holding the same values, one per use.
    W1, W2 = Parameter(weight.copy()), Parameter(weight.copy())
    _block(Tensor(x), W1, W2, bn1, bn2).backward(gy)

    # 2. Tied: one Parameter used by both convolutions; the engine sums its two gradients.
    W = Parameter(weight.copy())
    _block(Tensor(x), W, W, bn1, bn2).backward(gy)

    # 3. Numerical, with respect to the one shared weight.
    (numerical,) = numerical_grad(lambda w: _block(Tensor(x), w, w, bn1, bn2), [weight.copy()],
                                  gy)

    grad_sum = W1.grad + W2.grad
    return SharedGradientReport(
        weight=weight, grad_use1=W1.grad, grad_use2=W2.grad, grad_sum=grad_sum,
        grad_engine=W.grad, grad_numerical=numerical,
        max_diff_engine=float(np.abs(grad_sum - W.grad).max()),
        max_diff_numerical=float(np.abs(W.grad - numerical).max()),
        input_shape=x.shape)
