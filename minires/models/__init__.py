"""Models: the CIFAR ResNet (He et al. 2016) and Wide ResNets, with and without weight sharing.

The shared block, where the paper's idea lives, is ``BasicBlock`` in
``minires/models/resnet.py``. :func:`create` builds either family from plain keyword arguments
(what the CLI and checkpoints store as a model description).
"""
from __future__ import annotations

import numpy as np

from minires.models.resnet import (SHARE_MODES, SHORTCUTS, BasicBlock, PadShortcut,
                                   ProjectionShortcut, ResNet, convs_have_same_shape, resnet,
                                   resnet_blocks_per_stage)
from minires.models.summary import LayerRow, ModelSummary, SharedWeight, summarize
from minires.models.wide_resnet import (STAGES_FOR_INPUT, WideBasicBlock, WideResNet,
                                        default_wrn_depth, wide_resnet, wrn_blocks_per_stage)

ARCHS = ("resnet", "wrn")
DEFAULT_WRN_WIDTH = 10


def create(arch: str = "resnet", depth: int | None = None, width: int | None = None,
           num_classes: int = 10, share: str = "none", shortcut: str | None = None,
           input_size: int = 32, seed: int = 0, dtype=np.float32, dropout: float = 0.0):
    """Build a model from plain arguments (used by the CLI and by checkpoints).

    Args:
        arch: ``"resnet"`` (CIFAR ResNet) or ``"wrn"`` (Wide ResNet).
        depth: ResNet ``6n + 2`` (default 20); WRN ``2nS + 4`` (default 20, 28, 36 at input
            size 16, 32, 64: n = 4 as Chrabaszcz et al.).
        width: WRN widening factor k (default 10); a ResNet has none (None or 1).
        num_classes: outputs of the final linear layer.
        share: ``"none"``, ``"block"`` (the paper) or ``"stage"``.
        shortcut: ResNet ``"A"`` (default) or ``"B"``; a WRN always projects (None or ``"B"``).
        input_size: image side; a WRN's stage layout depends on it (16, 32, 64); a ResNet
            accepts any size (its pool is global), so it is only checked to be positive.
        seed, dtype: initialisation seed and parameter dtype.
        dropout: WRN only: dropout between a block's two convolutions.
    Raises:
        ValueError: an unknown ``arch`` or an option that does not apply to it.
    """
    if arch == "resnet":
        if width not in (None, 1):
            raise ValueError(f"a ResNet has no width factor (got width={width}); use arch 'wrn' "
                             f"for Wide ResNets")
        if dropout:
            raise ValueError("dropout is only available for arch 'wrn'")
        if int(input_size) < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        return resnet(20 if depth is None else depth, num_classes, share,
                      "A" if shortcut is None else shortcut, seed, dtype)
    if arch == "wrn":
        if shortcut not in (None, "B"):
            raise ValueError(f"a Wide ResNet uses projection (B) shortcuts, got shortcut="
                             f"{shortcut!r}")
        depth = default_wrn_depth(input_size) if depth is None else depth
        width = DEFAULT_WRN_WIDTH if width is None else width
        return wide_resnet(depth, width, num_classes, share, input_size, seed, dtype, dropout)
    raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")


def unshared_count(**spec) -> int:
    """The parameter count of the model ``create(**spec)`` describes, built with ``share="none"``.

    The reduction achieved by sharing is ``unshared_count(**spec) -
    create(**spec).num_parameters()``.
    """
    return create(**{**spec, "share": "none"}).num_parameters()


__all__ = ["create", "unshared_count", "ARCHS", "resnet", "ResNet", "BasicBlock", "PadShortcut",
           "ProjectionShortcut", "wide_resnet", "WideResNet", "WideBasicBlock", "summarize",
           "ModelSummary", "LayerRow", "SharedWeight", "SHARE_MODES", "SHORTCUTS",
           "STAGES_FOR_INPUT", "convs_have_same_shape", "resnet_blocks_per_stage",
           "wrn_blocks_per_stage", "default_wrn_depth"]
