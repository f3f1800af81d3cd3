"""The backend interface: what ``minires.kernels.cpu`` and ``minires.kernels.cuda`` both provide.

Each side is a package with one module per family below; every family module exports the same
functions with the same signatures on both sides (its ``__all__``), and the package re-exports
them together with ``xp`` (the array module: numpy or cupy) and ``device`` (``"cpu"`` or
``"cuda"``). ``minires.backend.kernels_for(*arrays)`` picks the side once; code above it calls
``k.conv2d_forward(...)`` and never asks which device it is on.

**Weight plans.** A convolution may compute with its weight in another form than ``W (OC, C,
KH, KW)``: the CPU's Winograd convolutions use ``U = G W G^T``. ``conv2d_weight_plan(x_shape,
W_shape, ...)`` says which (an opaque value of the side, or None for ``W`` as it is: always
None on the GPU); ``conv2d_transform_weight(W, plan)`` and its adjoint map between the two, and
``conv2d_forward(..., plan=plan)`` takes the transformed weight. Keeping the transform out of
the convolution lets a weight used twice be transformed once and its gradients be added in the
transformed domain (``minires.functions.conv``).

This module also holds what both sides share and that needs neither numba nor CuPy: the
convolution geometry and the records a forward kernel hands to its backward kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

#: family module -> the public functions it exports, on both sides.
FAMILIES = {
    "conv": ("im2col", "col2im", "conv2d_forward", "conv2d_backward", "conv2d_weight_plan",
             "conv2d_transform_weight", "conv2d_transform_weight_adjoint"),
    "batchnorm": ("batch_norm_forward", "batch_norm_backward"),
    "activation": ("relu_forward", "relu_backward", "add_relu_forward"),
    "loss": ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"),
    "sgd": ("sgd_step",),
    "augment": ("crop_flip_normalize",),
    "indexing": ("scatter_add",),
    "linalg": ("matmul",),
}


def conv_output_size(size: int, k: int, s: int, p: int) -> int:
    """Output length of a convolution (or pooling) along one axis: ``(size + 2p - k) // s + 1``."""
    return (size + 2 * p - k) // s + 1


@dataclass
class ConvSaved:
    """What ``conv2d_forward`` leaves for ``conv2d_backward``.

    ``x_shape``: ``(N, C, H, W)`` of the input. ``for_gW``: the input, from which both sides
    rebuild what the weight gradient needs (the CPU chunk by chunk, the GPU in one im2col), or
    None when no weight gradient was asked for, so that a frozen weight keeps no activation
    alive. ``plan``: the weight's domain in the forward pass (``conv2d_weight_plan``; None:
    the weight as it is), which is also the domain of the weight gradient.
    """

    x_shape: tuple
    for_gW: object = None
    plan: object = None


@dataclass
class BatchNormSaved:
    """What ``batch_norm_forward`` leaves for ``batch_norm_backward``.

    ``x``: the input; ``y``: the output (kept only with ``relu``, for the ReLU mask); ``gamma``;
    ``mean``, ``inv_std``: ``(C,)`` statistics the forward pass normalised with (batch ones in
    training, running ones in eval); ``training``; ``relu``: whether ReLU was fused.
    """

    x: object
    y: object
    gamma: object
    mean: object
    inv_std: object
    training: bool
    relu: bool
