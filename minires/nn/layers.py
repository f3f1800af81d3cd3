"""Layers: Conv2d, BatchNorm2d, Linear, ReLU, Dropout, GlobalAvgPool2d and Sequential.

Initialisation is deterministic: every layer that draws random values takes ``rng``, a
``numpy.random.Generator`` (models create one from their ``seed``); without it the module-level
generator is used, which :func:`manual_seed` resets. Values are drawn in float64 and then cast
to ``dtype``, so a float32 and a float64 model built from the same seed hold the same numbers
(up to rounding).

Sharing a convolution weight is expressed by passing an existing Parameter:
``Conv2d(16, 16, 3, pad=1, weight=other_conv.weight)`` draws nothing and applies the very same
Parameter object.
"""
from __future__ import annotations

import math

import numpy as np

import minires.functions as F
from minires.autograd import Parameter
from minires.nn.module import Module

_default_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reset the generator that layers use when no ``rng`` is passed."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def _rng(rng):
    return _default_rng if rng is None else rng


def _pair(v) -> tuple:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


class Conv2d(Module):
    """2-D convolution ``(N, C, H, W) -> (N, OC, OH, OW)``.

    Args:
        in_channels (C), out_channels (OC), kernel_size (KH, KW; an int or a pair).
        stride, pad: an int or a pair; zero padding.
        bias: whether to learn a bias ``(OC,)`` (ResNet convolutions have none: BN follows).
        weight: an existing Parameter ``(OC, C, KH, KW)`` to apply instead of a new one; this is
            how weight sharing is expressed (the same object, not a copy).
        rng: the generator for initialisation; dtype: of new parameters.

    A new weight is He/Kaiming normal with fan_out, as torchvision's ResNet:
    ``std = sqrt(2 / (OC * KH * KW))``. A bias is uniform(+-1/sqrt(C * KH * KW)), PyTorch's default.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, pad=0,
                 bias: bool = False, weight: Parameter | None = None, rng=None,
                 dtype=np.float32):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.pad = _pair(kernel_size), _pair(stride), _pair(pad)
        KH, KW = self.kernel_size
        shape = (self.out_channels, self.in_channels, KH, KW)
        if weight is None:
            std = math.sqrt(2.0 / (self.out_channels * KH * KW))
            weight = Parameter((_rng(rng).standard_normal(shape) * std).astype(dtype))
        elif not isinstance(weight, Parameter):
            raise TypeError(f"Conv2d weight must be a Parameter (to share it), got "
                            f"{type(weight).__name__}")
        elif tuple(weight.shape) != shape:
            raise ValueError(f"Conv2d({in_channels}, {out_channels}, {kernel_size}) needs a weight "
                             f"of shape (OC, C, KH, KW) = {shape}, got {tuple(weight.shape)}")
        self.weight = weight
        self.bias = None
        if bias:
            bound = 1.0 / math.sqrt(self.in_channels * KH * KW)
            self.bias = Parameter(_rng(rng).uniform(-bound, bound, self.out_channels)
                                  .astype(weight.dtype))

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.pad)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, pad={self.pad}, bias={self.bias is not None}")


class BatchNorm2d(Module):
    """Batch normalisation of ``(N, C, H, W)`` per channel, PyTorch's conventions.

    Parameters ``gamma`` (ones) and ``beta`` (zeros), buffers ``running_mean`` (zeros) and
    ``running_var`` (ones). In training mode the batch statistics normalise (biased variance)
    and the running ones are updated in place (unbiased variance, weight ``momentum``); in eval
    mode the running statistics normalise. Each use of a shared convolution keeps its OWN
    BatchNorm: calling one BatchNorm twice per step would update its statistics twice.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5,
                 dtype=np.float32):
        super().__init__()
        self.num_features, self.momentum, self.eps = int(num_features), float(momentum), float(eps)
        self.gamma = Parameter(np.ones(self.num_features, dtype=dtype))
        self.beta = Parameter(np.zeros(self.num_features, dtype=dtype))
        self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(self.num_features, dtype=dtype))

    def forward(self, x, relu: bool = False):
        # relu=True: relu(bn(x)) as one fused node (F.batch_norm_relu), a memory pass less
        norm = F.batch_norm_relu if relu else F.batch_norm
        return norm(x, self.gamma, self.beta, self.running_mean, self.running_var,
                    self.training, self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"


class Linear(Module):
    """Fully connected layer ``(N, in_features) -> (N, out_features)``: ``y = x @ W.T + b``.

    ``weight (out, in)`` and ``bias (out,)`` start uniform(+-1/sqrt(in)), PyTorch's default.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None,
                 dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / math.sqrt(self.in_features)
        rng = _rng(rng)
        self.weight = Parameter(rng.uniform(-bound, bound, (self.out_features, self.in_features))
                                .astype(dtype))
        self.bias = (Parameter(rng.uniform(-bound, bound, self.out_features).astype(dtype))
                     if bias else None)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    """``max(x, 0)`` elementwise."""

    def forward(self, x):
        return F.relu(x)


class GlobalAvgPool2d(Module):
    """``(N, C, H, W) -> (N, C)``: the mean of each feature map."""

    def forward(self, x):
        return F.global_avg_pool2d(x)


class Dropout(Module):
    """Zero each element with probability ``p`` in training mode and scale the rest by
    ``1 / (1 - p)`` (inverted dropout); the identity in eval mode or when ``p == 0``.

    The mask is a hash of the layer's key, the number of masks it drew before and the element's
    index (``F.dropout``), computed on the input's device: nothing random is drawn on the host
    or copied to the GPU, and the CPU and the GPU draw the same masks. The buffer ``state``
    (int64 ``[key, calls]``) is saved with the model, so a resumed run draws the masks an
    uninterrupted one would have. The key comes from ``rng`` (a child generator of it, so the
    values drawn from ``rng`` after this layer, the next layers' weights, stay the same as
    without dropout); two layers made from one generator get different keys.
    """

    def __init__(self, p: float = 0.5, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        key = int(_rng(rng).spawn(1)[0].integers(0, 2**63))
        self.register_buffer("state", np.array([key, 0], dtype=np.int64))

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return F.dropout(x, self.p, self.state)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Sequential(Module):
    """Apply sub-modules in order; they are named ``"0"``, ``"1"``... (``stage1.0.conv1``)."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential takes Modules, argument {i} is a "
                                f"{type(module).__name__}")
            setattr(self, str(i), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int) -> Module:
        items = list(self._modules.values())
        return items[index]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
