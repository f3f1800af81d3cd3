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
convolution geometry, the dropout mask's hash constants, and the records a forward kernel hands
to its backward kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: family module -> the public functions it exports, on both sides.
FAMILIES = {
    "conv": ("im2col", "col2im", "conv2d_forward", "conv2d_backward", "conv2d_weight_plan",
             "conv2d_transform_weight", "conv2d_transform_weight_adjoint"),
    "batchnorm": ("batch_norm_forward", "batch_norm_backward"),
    "activation": ("relu_forward", "relu_backward", "add_relu_forward"),
    "loss": ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"),
    "sgd": ("sgd_step",),
    "dropout": ("dropout_forward", "dropout_backward"),
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


# -- dropout --------------------------------------------------------------------------------------
#
# Both sides draw the same mask from a counter-based hash, so the CPU is the GPU's exact
# reference and no random numbers are drawn on the host or copied to the device. A Dropout
# layer's ``state`` is an int64 array ``[key, calls]`` on its device: ``key`` tells layers apart
# (drawn once when the layer is made), ``calls`` counts the masks drawn so far. Element ``i`` of
# call ``c`` is kept when the top 31 bits of
#
#     mix64(base + (i + 1) * GOLDEN),   base = mix64(key ^ mix64(c))
#
# are at least ``dropout_threshold(p)``, where ``mix64`` is SplitMix64's finaliser (Steele, Lea
# & Flood 2014): so each call reads a SplitMix64 stream of its own, in integer arithmetic that
# numba and CUDA C compute bit for bit alike. tests/cuda_reference.py writes it with Python ints.

#: SplitMix64's increment (2^64 / golden ratio) and the two multipliers of its finaliser.
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def dropout_threshold(p: float) -> int:
    """The int32 threshold on 31 random bits below which an element is dropped:
    ``round(p * 2^31)``, so the drop probability is ``p`` to within 2^-32."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return min(math.floor(p * 2**31 + 0.5), 2**31 - 1)


def dropout_scale(p: float) -> float:
    """The factor kept elements are multiplied by (inverted dropout): ``1 / (1 - p)``."""
    return 1.0 / (1.0 - p)


def check_dropout_state(state) -> None:
    """ValueError unless ``state`` is an int64 array ``[key, calls]`` of shape ``(2,)``."""
    if getattr(state, "shape", None) != (2,) or getattr(state, "dtype", None) != "int64":
        raise ValueError(f"dropout: state must be an int64 array [key, calls] of shape (2,), "
                         f"got {getattr(state, 'dtype', type(state).__name__)} "
                         f"{getattr(state, 'shape', '')}".rstrip())


@dataclass
class DropoutSaved:
    """What ``dropout_forward`` leaves for ``dropout_backward``: ``stream``, an int64 array
    ``[key, call]`` on the input's device naming the mask that was applied (so the backward
    pass recomputes the mask instead of keeping it), and ``p``."""

    stream: object
    p: float
