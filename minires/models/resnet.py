"""The CIFAR ResNet of He et al. (2016), with the convolution sharing of Dai, Yu & Wei (2019).

Layout for an ``(N, 3, 32, 32)`` input (any size divisible by 4 works: the pool is global)::

    conv1 3x3, 3->16, BN, ReLU                       (N, 16, 32, 32)
    stage1: n BasicBlocks, 16 -> 16, stride 1        (N, 16, 32, 32)
    stage2: n BasicBlocks, 16 -> 32, first stride 2  (N, 32, 16, 16)
    stage3: n BasicBlocks, 32 -> 64, first stride 2  (N, 64, 8, 8)
    global average pool, fc 64 -> num_classes        (N, num_classes)

with ``depth = 6n + 2`` (20, 32, 44, 56, 110: n = 3, 5, 7, 9, 18).

This module is the third of the three places where weight sharing lives: :class:`BasicBlock`
(the others are ``minires.autograd.engine.accumulate`` and ``minires.nn.Module.named_parameters``).
``share`` selects what is tied:

* ``"none"``: every convolution has its own weight (ResNet-20: 269,722 parameters);
* ``"block"`` (the paper): in every block whose two 3x3 convolutions have the same shape, conv2
  applies conv1's Parameter (ResNet-20: 170,650 parameters);
* ``"stage"`` (ShaResNet-like, Boulch 2018, for comparison): within a stage, the blocks whose
  two convolutions have the same shape all use ONE conv1 Parameter and ONE conv2 Parameter
  (those of the first such block); conv1 and conv2 stay distinct from each other. The first
  block of stages 2 and 3 changes width and stride, so it keeps its own two weights. Every
  block keeps its own two BatchNorms in every mode.
"""
from __future__ import annotations

import numpy as np

import minires.functions as F
from minires.nn import BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear, Module, Sequential

SHARE_MODES = ("none", "block", "stage")
SHORTCUTS = ("A", "B")


def check_share(share: str) -> str:
    if share not in SHARE_MODES:
        raise ValueError(f"share must be one of {', '.join(SHARE_MODES)}, got {share!r}")
    return share


def convs_have_same_shape(in_channels: int, out_channels: int, stride: int) -> bool:
    """Whether a block's two 3x3 convolutions can apply one weight: conv1 maps
    ``in_channels -> out_channels`` with ``stride``, conv2 ``out_channels -> out_channels`` with
    stride 1, so both are ``(out, out, 3, 3)`` stride 1 exactly when ``in == out and stride == 1``.
    """
    return in_channels == out_channels and stride == 1


def resnet_blocks_per_stage(depth: int) -> int:
    """``n`` for ``depth = 6n + 2``; a ValueError names the valid depths otherwise."""
    if not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet needs depth = 6n + 2 with n >= 1 (8, 14, 20, 32, 44, "
                         f"56, 110, ...), got {depth!r}")
    return (int(depth) - 2) // 6


class PadShortcut(Module):
    """Option-A shortcut (no parameters): subsample by ``stride`` (``x[:, :, ::2, ::2]``) and
    zero-pad the channels from ``in_channels`` to ``out_channels``, half before and half after.

    ``(N, C, H, W) -> (N, OC, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_channels - self.in_channels
        before = extra // 2
        return F.pad(x, ((0, 0), (before, extra - before), (0, 0), (0, 0)))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class ProjectionShortcut(Module):
    """Option-B shortcut: a 1x1 convolution with ``stride`` followed by BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, rng=None,
                 dtype=np.float32):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, 1, stride, rng=rng, dtype=dtype)
        self.bn = BatchNorm2d(out_channels, dtype=dtype)

    def forward(self, x):
        return self.bn(self.conv(x))


class BasicBlock(Module):
    """The post-activation residual block of He et al., optionally with ONE shared 3x3 weight.

    ::

        h = relu(bn1(conv1(x)))          conv1: in -> out, 3x3, stride
        y = relu(bn2(conv2(h)) + shortcut(x))   conv2: out -> out, 3x3, stride 1

    (BatchNorm+ReLU and the addition+ReLU of the join each run as one fused node.)

    **Sharing** (Dai, Yu & Wei 2019). When the two convolutions have the same shape (``in ==
    out`` and ``stride == 1``: every block except the first of stages 2 and 3), ``share_convs``
    makes conv2 apply *the same Parameter object* as conv1: ``self.conv2.weight is
    self.conv1.weight``. Nothing else is needed:

    * the forward pass simply uses the weight twice;
    * the backward pass gives the weight one gradient per use, and the engine SUMS them
      (``minires.autograd.engine``: the later use's gradient becomes the weight's ``.grad``, and
      the earlier use's convolution adds into that buffer, which nothing else holds);
    * ``Module.parameters()`` yields the Parameter once, so it is counted, stepped (momentum and
      weight decay applied once) and saved once.

    Each convolution keeps its own BatchNorm (``bn1``, ``bn2``): the two uses see differently
    distributed inputs, and one BatchNorm called twice would update its running statistics
    twice per step. A shared block has ``9 * C * C`` parameters fewer than an unshared one.

    Args:
        in_channels, out_channels, stride: conv1's geometry (conv2 is out -> out, stride 1).
        shortcut: ``"A"`` (subsample + zero channels, no parameters) or ``"B"`` (1x1 conv + BN)
            where the shapes change; the identity otherwise.
        share_convs: tie conv2 to conv1 (needs same-shaped convolutions).
        conv1_weight, conv2_weight: existing Parameters to apply instead of new ones (used to
            share across blocks, ``share="stage"``).
        rng, dtype: initialisation generator and parameter dtype.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A",
                 share_convs: bool = False, conv1_weight=None, conv2_weight=None, rng=None,
                 dtype=np.float32):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if share_convs and not convs_have_same_shape(in_channels, out_channels, stride):
            raise ValueError(f"a block {in_channels} -> {out_channels} with stride {stride} has "
                             f"two differently shaped convolutions; they cannot share a weight")
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, weight=conv1_weight,
                            rng=rng, dtype=dtype)
        self.bn1 = BatchNorm2d(out_channels, dtype=dtype)
        if share_convs:
            conv2_weight = self.conv1.weight  # THE sharing: the same object, not a copy
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, weight=conv2_weight, rng=rng,
                            dtype=dtype)
        self.bn2 = BatchNorm2d(out_channels, dtype=dtype)
        self.shortcut = None
        if not convs_have_same_shape(in_channels, out_channels, stride):
            self.shortcut = (PadShortcut(in_channels, out_channels, stride) if shortcut == "A"
                             else ProjectionShortcut(in_channels, out_channels, stride, rng, dtype))

    @property
    def is_shared(self) -> bool:
        """True when conv1 and conv2 apply one Parameter."""
        return self.conv1.weight is self.conv2.weight

    def forward(self, x):
        h = self.bn1(self.conv1(x), relu=True)  # relu(bn1(.)), fused
        y = self.bn2(self.conv2(h))
        return F.add_relu(y, x if self.shortcut is None else self.shortcut(x))  # fused join


def make_stage(block_class, in_channels: int, out_channels: int, num_blocks: int, stride: int,
               share: str, **block_kwargs) -> Sequential:
    """``num_blocks`` blocks; the first maps ``in -> out`` with ``stride``, the rest ``out -> out``.

    Applies the sharing mode (see the module docstring) to the blocks whose two convolutions
    have the same shape; ``block_class`` takes the arguments of :class:`BasicBlock`
    (``share_convs``, ``conv1_weight``, ``conv2_weight``) plus ``block_kwargs``.
    """
    check_share(share)
    blocks, stage_weights = [], None
    for i in range(num_blocks):
        block_in, block_stride = (in_channels, stride) if i == 0 else (out_channels, 1)
        same = convs_have_same_shape(block_in, out_channels, block_stride)
        kwargs = dict(block_kwargs)
        if same and share == "block":
            kwargs["share_convs"] = True
        elif same and share == "stage" and stage_weights is not None:
            kwargs["conv1_weight"], kwargs["conv2_weight"] = stage_weights
        block = block_class(block_in, out_channels, block_stride, **kwargs)
        if same and share == "stage" and stage_weights is None:
            stage_weights = (block.conv1.weight, block.conv2.weight)
        blocks.append(block)
    return Sequential(*blocks)


class ResNet(Module):
    """CIFAR ResNet-``depth``; see the module docstring for the layout and ``share`` modes.

    ``model(x)`` maps ``x (N, 3, H, W)`` to logits ``(N, num_classes)``.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, share: str = "none",
                 shortcut: str = "A", seed: int = 0, dtype=np.float32):
        super().__init__()
        n = resnet_blocks_per_stage(depth)
        check_share(share)
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.spec = dict(arch="resnet", depth=int(depth), num_classes=int(num_classes),
                         share=share, shortcut=shortcut, seed=int(seed))
        rng = np.random.default_rng(seed)
        common = dict(shortcut=shortcut, rng=rng, dtype=dtype)
        self.conv1 = Conv2d(3, 16, 3, 1, 1, rng=rng, dtype=dtype)
        self.bn1 = BatchNorm2d(16, dtype=dtype)
        self.stage1 = make_stage(BasicBlock, 16, 16, n, 1, share, **common)
        self.stage2 = make_stage(BasicBlock, 16, 32, n, 2, share, **common)
        self.stage3 = make_stage(BasicBlock, 32, 64, n, 2, share, **common)
        self.pool = GlobalAvgPool2d()
        self.fc = Linear(64, int(num_classes), rng=rng, dtype=dtype)

    def forward(self, x):
        x = self.bn1(self.conv1(x), relu=True)  # relu(bn1(.)), fused
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x))

    def extra_repr(self) -> str:
        s = self.spec
        return f"depth={s['depth']}, share={s['share']!r}, shortcut={s['shortcut']!r}"


def resnet(depth: int = 20, num_classes: int = 10, share: str = "none", shortcut: str = "A",
           seed: int = 0, dtype=np.float32) -> ResNet:
    """A CIFAR ResNet (He et al. 2016) with the chosen weight sharing.

    Args:
        depth: ``6n + 2`` (20, 32, 44, 56, 110).
        num_classes: outputs of the final linear layer.
        share: ``"none"``, ``"block"`` (the paper) or ``"stage"`` (see the module docstring).
        shortcut: ``"A"`` (parameter-free, the paper's CIFAR choice) or ``"B"`` (projection).
        seed: initialisation seed (same seed, same model).
        dtype: parameter dtype (float64 for gradient checks).
    """
    return ResNet(depth, num_classes, share, shortcut, seed, dtype)
