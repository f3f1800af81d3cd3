"""The lesson's subject: the library's own shared residual block, tiny and in float64.

Every part of ``minires explain`` runs on the same :class:`Lesson`: a real
``minires.models.resnet.BasicBlock`` built with ``share_convs=True`` (what ``resnet(share=
"block")`` builds in every same-shape block), so conv1 and conv2 apply ONE Parameter ``W`` and
keep their own BatchNorms, plus an input ``x`` and an upstream gradient ``gy``. The objective is
``L = mean(y * r)`` for ``y = block(x)`` and a fixed random ``r``, so ``gy = dL/dy = r / y.size``:
backward given ``gy`` computes ``dL/dW``. ``r`` is random, not all ones: an all-ones upstream
gradient can hide index bugs. (The mean keeps the gradients near the size of the weights, so
that an optimizer step with the usual learning rate looks like one.)

The block is in training mode, so BatchNorm normalises with batch statistics and the output
does not depend on the running statistics (which each forward pass updates).

The lesson's convolutions compute with ``W`` itself (``weights_as_given``): in training on the
CPU a 3x3 stride-1 convolution is a Winograd convolution, for which ``W`` first becomes one
transformed weight ``U`` that both uses consume; the engine then sums the two uses' gradients
w.r.t. ``U``, and one adjoint transform gives ``W.grad`` (docs/weight-sharing.md). The sum is
the same; the lesson shows it where it is easiest to see, on ``W``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from minires.autograd import Tensor, backward
from minires.functions.weight_transform import weights_as_given
from minires.models.resnet import BasicBlock

#: Which use of the shared weight each convolution is.
USE_OF = {"conv1": 1, "conv2": 2}
#: What each of the block's modules is called in the lesson's tables, traces and graphs.
MODULE_LABELS = {"conv1": "conv1 (use 1 of W)", "conv2": "conv2 (use 2 of W)",
                 "bn1": "bn1 + relu", "bn2": "bn2"}
#: The operations of ``BasicBlock.forward`` that are plain functions, not modules.
FUNCTION_LABELS = {"AddReLU": "relu(bn2 + x), the shortcut join"}


@dataclass
class Lesson:
    """A shared block, its input and the upstream gradient (all float64).

    Attributes:
        block: ``BasicBlock(C, C, share_convs=True)``; ``block.conv1.weight is
            block.conv2.weight``.
        x: the input ``(N, C, H, W)``.
        gy: the upstream gradient ``r / r.size`` for a random ``r`` shaped like the output
            ``(N, C, H, W)``.
        seed: what drew the weights, ``x`` and ``gy``.
    """

    block: BasicBlock
    x: np.ndarray
    gy: np.ndarray
    seed: int

    @property
    def weight(self):
        """The shared Parameter ``W (C, C, 3, 3)``."""
        return self.block.conv1.weight

    def forward(self, block=None):
        """``y = block(x)`` (the lesson's block unless another is given), recording the graph."""
        with weights_as_given():
            return (self.block if block is None else block)(Tensor(self.x))

    def backward(self, block=None, observer=None):
        """Forget the block's gradients, run forward and backward with ``gy``; returns ``y``.

        ``observer`` is handed to the engine (``minires.autograd.engine.backward``).
        """
        block = self.block if block is None else block
        block.zero_grad()
        y = self.forward(block)
        backward(y, self.gy, observer=observer)
        return y


def make_lesson(channels: int = 2, size: int = 4, batch: int = 2, seed: int = 0) -> Lesson:
    """The lesson's shared block with ``channels`` channels on a ``batch x channels x size x
    size`` input; the same ``seed`` always gives the same numbers."""
    if channels < 1 or size < 1 or batch < 2:
        raise ValueError(f"the lesson needs channels >= 1, size >= 1 and batch >= 2 (BatchNorm "
                         f"needs two values per channel), got {channels}, {size}, {batch}")
    rng = np.random.default_rng(seed)
    block = BasicBlock(channels, channels, share_convs=True, rng=rng, dtype=np.float64)
    x = rng.standard_normal((batch, channels, size, size))
    r = rng.standard_normal((batch, channels, size, size))
    return Lesson(block, x, r / r.size, seed)


def untied_copy(block: BasicBlock) -> BasicBlock:
    """A block like ``block`` whose two convolutions have SEPARATE weights, both initialised to
    the shared weight's values (its BatchNorms hold the same values too). Each copy's gradient
    is what its use contributes to the shared weight's gradient."""
    C, dtype = block.conv1.in_channels, block.conv1.weight.dtype
    # The generator only fills weights that load_state_dict then overwrites.
    untied = BasicBlock(C, C, share_convs=False, rng=np.random.default_rng(0), dtype=dtype)
    state = block.state_dict()  # the shared weight is stored once, as conv1.weight ...
    state["conv2.weight"] = state["conv1.weight"].copy()  # ... the untied block needs it twice
    untied.load_state_dict(state)
    return untied


@contextlib.contextmanager
def module_nodes(block):
    """Within the block, collect ``{Function: module name}`` for the graph nodes that the
    block's modules conv1, conv2, bn1 and bn2 create, through forward hooks removed on exit."""
    names = {}

    def hook_for(name):
        def hook(module, inputs, output):
            names[output.creator] = name
        return hook

    handles = [getattr(block, name).register_forward_hook(hook_for(name))
               for name in MODULE_LABELS]
    try:
        yield names
    finally:
        for handle in handles:
            handle.remove()


def node_label(fn, module_names: dict) -> str:
    """The lesson's name for Function node ``fn``: its module, or what the block uses it for."""
    what = MODULE_LABELS.get(module_names.get(fn)) or FUNCTION_LABELS.get(fn.name)
    return f"{fn.name}: {what}" if what else fn.name


def leaf_labels(block) -> dict:
    """``{id(parameter): label}``: the shared weight is ``W``, the others keep their names."""
    params = dict(block.named_parameters())
    return {id(params[first]): "W" if len(names) > 1 else first
            for first, names in block.parameter_uses().items()}
