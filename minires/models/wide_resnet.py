"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis 2016) for CIFAR and downsampled ImageNet.

Pre-activation blocks (BN-ReLU-conv-BN-ReLU-conv), no convolution biases. The stage layout
depends on the input size, following Chrabaszcz, Loshchilov & Hutter (2017), whose networks
all end on an 8x8 feature map::

    input_size  stages (output widths)          feature maps          depth
    16          16k, 32k                        16, 8                 4n + 4  (WRN-20: n = 4)
    32          16k, 32k, 64k   (CIFAR layout)  32, 16, 8             6n + 4  (WRN-28: n = 4)
    64          16k, 32k, 64k, 128k             64, 32, 16, 8         8n + 4  (WRN-36: n = 4)

so ``depth = 2 * n * S + 4`` for ``S`` stages of ``n`` blocks. The network is::

    conv 3x3, 3 -> 16                 (no BN/ReLU here: the first block pre-activates)
    stage s (s = 1..S): n WideBasicBlocks; the first changes width, with stride 2 for s >= 2
    BN, ReLU, global average pool, fc -> num_classes

The block layout is Zagoruyko & Komodakis' at every input size (Chrabaszcz et al.'s Lasagne
code differs in small details, such as a bias on the second convolution); only the stage layout
is taken from Chrabaszcz et al.

Sharing follows :mod:`minires.models.resnet`: with ``share="block"`` the two 3x3 convolutions of
every block whose input and output widths are equal and whose stride is 1 apply one Parameter;
``share="stage"`` ties conv1 of all such blocks of a stage together, and conv2 likewise.
"""
from __future__ import annotations

import numpy as np

import minires.functions as F
from minires.models.resnet import check_share, convs_have_same_shape, make_stage
from minires.nn import BatchNorm2d, Conv2d, Dropout, GlobalAvgPool2d, Linear, Module

#: input size -> number of stages (each stage after the first halves the feature map).
STAGES_FOR_INPUT = {16: 2, 32: 3, 64: 4}


def wrn_blocks_per_stage(depth: int, input_size: int = 32) -> int:
    """``n`` for ``depth = 2 * n * S + 4`` at this input size; ValueError otherwise."""
    if input_size not in STAGES_FOR_INPUT:
        raise ValueError(f"a Wide ResNet is defined for input sizes 16, 32 and 64, got "
                         f"{input_size!r}")
    S = STAGES_FOR_INPUT[input_size]
    if not isinstance(depth, (int, np.integer)) or depth < 2 * S + 4 or (depth - 4) % (2 * S):
        examples = ", ".join(str(2 * n * S + 4) for n in (1, 2, 3, 4))
        raise ValueError(f"a Wide ResNet at input size {input_size} has {S} stages, so it needs "
                         f"depth = {2 * S}n + 4 with n >= 1 ({examples}, ...), got {depth!r}")
    return (int(depth) - 4) // (2 * S)


def default_wrn_depth(input_size: int) -> int:
    """Chrabaszcz et al.'s depth for n = 4 blocks per stage: 20, 28 or 36."""
    if input_size not in STAGES_FOR_INPUT:
        raise ValueError(f"a Wide ResNet is defined for input sizes 16, 32 and 64, got "
                         f"{input_size!r}")
    return 2 * 4 * STAGES_FOR_INPUT[input_size] + 4


class WideBasicBlock(Module):
    """Pre-activation wide block, optionally with ONE shared 3x3 weight::

        o = relu(bn1(x))
        y = conv2(dropout(relu(bn2(conv1(o)))))      conv1: in -> out, stride; conv2: out -> out
        return y + (shortcut(o) if the shapes change else x)

    The shortcut is a 1x1 convolution with ``stride`` (no BN) applied to the pre-activated
    input, as in Zagoruyko & Komodakis' code. ``share_convs`` ties conv2 to conv1 exactly as in
    :class:`minires.models.resnet.BasicBlock` (see its docstring); each keeps its own BatchNorm.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 share_convs: bool = False, conv1_weight=None, conv2_weight=None,
                 dropout: float = 0.0, rng=None, dtype=np.float32):
        super().__init__()
        same = convs_have_same_shape(in_channels, out_channels, stride)
        if share_convs and not same:
            raise ValueError(f"a block {in_channels} -> {out_channels} with stride {stride} has "
                             f"two differently shaped convolutions; they cannot share a weight")
        self.bn1 = BatchNorm2d(in_channels, dtype=dtype)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, weight=conv1_weight,
                            rng=rng, dtype=dtype)
        self.bn2 = BatchNorm2d(out_channels, dtype=dtype)
        self.dropout = Dropout(dropout, rng) if dropout > 0 else None
        if share_convs:
            conv2_weight = self.conv1.weight  # the same object: one weight, two uses
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, weight=conv2_weight, rng=rng,
                            dtype=dtype)
        self.shortcut = None if same else Conv2d(in_channels, out_channels, 1, stride, rng=rng,
                                                 dtype=dtype)

    @property
    def is_shared(self) -> bool:
        return self.conv1.weight is self.conv2.weight

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = F.relu(self.bn2(self.conv1(o)))
        if self.dropout is not None:
            y = self.dropout(y)
        y = self.conv2(y)
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(Module):
    """WRN-``depth``-``width``; see the module docstring for the layout at each input size.

    ``model(x)`` maps ``x (N, 3, input_size, input_size)`` to logits ``(N, num_classes)``.
    """

    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10,
                 share: str = "none", input_size: int = 32, seed: int = 0, dtype=np.float32,
                 dropout: float = 0.0):
        super().__init__()
        n = wrn_blocks_per_stage(depth, input_size)
        check_share(share)
        if int(width) < 1 or int(width) != width:
            raise ValueError(f"width k must be a positive integer, got {width!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.spec = dict(arch="wrn", depth=int(depth), width=int(width),
                         num_classes=int(num_classes), share=share, input_size=int(input_size),
                         seed=int(seed), dropout=float(dropout))
        rng = np.random.default_rng(seed)
        self.conv1 = Conv2d(3, 16, 3, 1, 1, rng=rng, dtype=dtype)
        in_channels = 16
        for s in range(STAGES_FOR_INPUT[input_size]):
            out_channels = 16 * int(width) * 2 ** s
            stage = make_stage(WideBasicBlock, in_channels, out_channels, n, 1 if s == 0 else 2,
                               share, dropout=dropout, rng=rng, dtype=dtype)
            setattr(self, f"stage{s + 1}", stage)
            in_channels = out_channels
        self.bn = BatchNorm2d(in_channels, dtype=dtype)
        self.pool = GlobalAvgPool2d()
        self.fc = Linear(in_channels, int(num_classes), rng=rng, dtype=dtype)

    def forward(self, x):
        x = self.conv1(x)
        for s in range(STAGES_FOR_INPUT[self.spec["input_size"]]):
            x = getattr(self, f"stage{s + 1}")(x)
        return self.fc(self.pool(F.relu(self.bn(x))))

    def extra_repr(self) -> str:
        s = self.spec
        return (f"depth={s['depth']}, width={s['width']}, input_size={s['input_size']}, "
                f"share={s['share']!r}")


def wide_resnet(depth: int = 28, width: int = 10, num_classes: int = 10, share: str = "none",
                input_size: int = 32, seed: int = 0, dtype=np.float32,
                dropout: float = 0.0) -> WideResNet:
    """A Wide ResNet WRN-``depth``-``width`` with the chosen weight sharing.

    Args:
        depth: ``2 * n * S + 4`` for S stages (S = 2, 3, 4 at input sizes 16, 32, 64).
        width: the widening factor k (stage widths 16k, 32k, 64k, 128k).
        num_classes: outputs of the final linear layer (10/100 for CIFAR, 1000 for ImageNet).
        share: ``"none"``, ``"block"`` or ``"stage"`` (as for :func:`minires.models.resnet`).
        input_size: 16, 32 or 64 (image side); sets the number of stages.
        seed, dtype: initialisation seed and parameter dtype.
        dropout: probability between the two convolutions of a block (0 disables it).
    """
    return WideResNet(depth, width, num_classes, share, input_size, seed, dtype, dropout)
