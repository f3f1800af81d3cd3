"""A convolution weight in the form the kernels compute with, once per value of the weight.

Some convolution kernels do not compute with the weight ``W (OC, C, KH, KW)`` itself but with a
transform of it: the CPU's Winograd convolutions use ``U = G W G^T`` (see
``minires.kernels.interface``, "weight plans"). The transform is a node of the graph of its
own, :class:`TransformWeight` (``W -> U``; backward: the adjoint transform ``gU -> gW``), and
every convolution that applies the same Parameter with the same plan in one forward pass
consumes the SAME ``U`` tensor. That is what makes weight sharing cheap here:

* the forward pass transforms a shared weight once, not once per use;
* in the backward pass both convolutions return a gradient w.r.t. ``U``, the engine adds them
  (``minires.autograd.engine.accumulate``) and the transform node turns the sum into ``gW`` with
  ONE adjoint transform. ``W.grad`` is still exactly the sum of both uses' gradients, because
  the adjoint is linear: ``G^T (gU_1 + gU_2) G = G^T gU_1 G + G^T gU_2 G``.

**How a use finds the U of the earlier use** (:func:`transformed_weight`): a weak dictionary,
keyed by the weight Tensor, remembers for each ``(plan, recording)`` the last ``U`` made and a
copy of the values it was made from. The entry is used only while

* that ``U`` is alive (it is held by the graph of the pass that made it, and by nothing in this
  module: a weak reference), and
* the weight still holds exactly those values (an optimizer step, a checkpoint load or any
  other in-place change makes a new ``U``; comparing is cheaper than the transform itself), and
* gradient recording is the same as when it was made (a ``U`` made under ``no_grad`` has no
  graph back to the weight, so it must never serve a training pass).

:func:`weights_as_given` turns the transforms off for a block of code: every convolution then
computes with its weight itself (im2col on the CPU), so a weight's gradients are gradients
w.r.t. ``W`` in every node (``minires explain`` teaches the engine's sum that way).

The dictionary holds no strong reference to a weight or to a ``U``: an entry disappears with its
``U`` (when the graph that holds it is freed) or with its weight, so nothing is kept alive
beyond what the user holds (tested in tests/test_weight_transform.py). The price: under
``no_grad`` no graph holds ``U`` from one use to the next, so a shared weight is transformed
once per use there (a few tens of microseconds each; keeping every ``U`` would cost four times
the model's weights in memory for as long as the model lives).
"""
from __future__ import annotations

import contextlib
import weakref

from minires.autograd import Function, Tensor
from minires.autograd.config import config


class TransformWeight(Function):
    """``U = transform(W)`` under a kernel plan; the backward pass is the adjoint transform."""

    def __init__(self, plan):
        self.plan = plan

    def forward(self, W):
        return self.k.conv2d_transform_weight(W, self.plan)

    def backward(self, gU):
        return self.k.conv2d_transform_weight_adjoint(gU, self.plan)


# weight Tensor -> {(plan, recording): (weak reference to U, copy of the weight's values)}
_made = weakref.WeakKeyDictionary()
_state = {"transforms": True}


def transforms_enabled() -> bool:
    """False inside :func:`weights_as_given`."""
    return _state["transforms"]


@contextlib.contextmanager
def weights_as_given():
    """Context manager: convolutions compute with their weights as given, never a transform."""
    old, _state["transforms"] = _state["transforms"], False
    try:
        yield
    finally:
        _state["transforms"] = old


def transformed_weight(W: Tensor, plan) -> Tensor:
    """``TransformWeight(plan)(W)``, or the ``U`` an earlier use made from the same values of
    ``W`` in the same recording mode (see the module docstring)."""
    key = (plan, bool(config.enable_grad and W.requires_grad))
    made = _made.setdefault(W, {})
    ref, values = made.get(key, (None, None))
    U = ref() if ref is not None else None
    if (U is not None and values.dtype == W.dtype and values.shape == W.shape
            and bool((values == W.data).all())):
        return U
    U = TransformWeight(plan)(W)

    def forget(ref, made=made, key=key):
        # This U died with its graph: drop the copy of the values too (unless a newer U has
        # taken the entry meanwhile).
        if made.get(key, (None,))[0] is ref:
            del made[key]
    made[key] = (weakref.ref(U, forget), W.data.copy())
    return U
