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
DEFAULT_RESNET_DEPTH = 20
DEFAULT_WRN_WIDTH = 10


def architecture_defaults(arch: str, depth: int | None = None, width: int | None = None,
                          shortcut: str | None = None, input_size: int = 32) -> dict:
    """``{"depth", "width", "shortcut"}`` of ``arch`` with each None replaced by its default.

    ResNet: depth 20, width 1, shortcut A. WRN: depth 20, 28 or 36 at input size 16, 32 or 64
    (:func:`default_wrn_depth`), width 10, shortcut B.
    """
    if arch == "resnet":
        defaults = {"depth": DEFAULT_RESNET_DEPTH, "width": 1, "shortcut": "A"}
    elif arch == "wrn":
        defaults = {"depth": None, "width": DEFAULT_WRN_WIDTH, "shortcut": "B"}
        if depth is None:
            defaults["depth"] = default_wrn_depth(int(input_size))
    else:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    given = {"depth": depth, "width": width, "shortcut": shortcut}
    return {key: defaults[key] if value is None else value for key, value in given.items()}


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
    elif arch == "wrn" and shortcut not in (None, "B"):
        raise ValueError(f"a Wide ResNet uses projection (B) shortcuts, got shortcut="
                         f"{shortcut!r}")
    filled = architecture_defaults(arch, depth, width, shortcut, input_size)
    if arch == "resnet":
        return resnet(filled["depth"], num_classes, share, filled["shortcut"], seed, dtype)
    return wide_resnet(filled["depth"], filled["width"], num_classes, share, input_size, seed,
                       dtype, dropout)


def unshared_count(**spec) -> int:
    """The parameter count of the model ``create(**spec)`` describes, built with ``share="none"``.

    The reduction achieved by sharing is ``unshared_count(**spec) -
    create(**spec).num_parameters()``.
    """
    return create(**{**spec, "share": "none"}).num_parameters()


__all__ = ["create", "unshared_count", "architecture_defaults", "ARCHS", "DEFAULT_RESNET_DEPTH",
           "DEFAULT_WRN_WIDTH", "resnet", "ResNet", "BasicBlock", "PadShortcut",
           "ProjectionShortcut", "wide_resnet", "WideResNet", "WideBasicBlock", "summarize",
           "ModelSummary", "LayerRow", "SharedWeight", "SHARE_MODES", "SHORTCUTS",
           "STAGES_FOR_INPUT", "convs_have_same_shape", "resnet_blocks_per_stage",
           "wrn_blocks_per_stage", "default_wrn_depth"]
