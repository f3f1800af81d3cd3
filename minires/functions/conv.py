"""2-D convolution.

Shapes: ``x (N, C, H, W)``, ``W (OC, C, KH, KW)``, ``b (OC,)``, ``y (N, OC, OH, OW)`` with
``OH = (H + 2*PH - KH) // SH + 1`` (likewise OW).

The kernels do the work (``conv2d_forward``/``conv2d_backward`` of ``minires.kernels.cpu.conv``
or ``minires.kernels.cuda.conv``). Before the convolution, :func:`conv2d` asks them in which
form they compute with the weight (``conv2d_weight_plan``): ``W`` itself (im2col, the GPU), or a
transform of it (Winograd's ``U = G W G^T`` for 3x3 stride-1 convolutions on the CPU). A
transformed weight is its own node, made once per value of the weight and shared by every
convolution that applies it (:mod:`minires.functions.weight_transform`).

To read what a convolution computes, see ``minires.functions.conv_reference``: the same
function from slicing, reshaping and one matrix product, with the backward derived by autograd,
tested to agree with these kernels in value and gradient.

For a weight shared by two convolutions, each call is its own Function node, and the engine
sums the gradients of both uses:

* with a transform, both convolutions consume the same ``U``: the engine adds their two
  gradients w.r.t. ``U``, and one adjoint transform gives ``W.grad``;
* without one, the engine differentiates the second use (the later one in the network) first;
  that gradient becomes the weight's ``.grad``, and the engine offers it to the first use
  (``Function.grad_into``), whose kernel adds its own gradient into it: one buffer, no
  separate addition.
"""
from __future__ import annotations

from minires import backend
from minires.autograd import Function, as_tensor
from minires.functions.weight_transform import transformed_weight, transforms_enabled
from minires.kernels.interface import conv_output_size


def _pair(v) -> tuple:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(Function):
    """``y = x * W (+ b)``; with a ``plan``, the second input is the weight in that plan's form
    (``conv2d_transform_weight(W, plan)``) and its gradient is in that form too."""

    def __init__(self, stride=1, pad=0, plan=None):
        (self.SH, self.SW), (self.PH, self.PW) = _pair(stride), _pair(pad)
        self.plan = plan

    def forward(self, x, W, b=None):
        self.W = W
        y, self.saved = self.k.conv2d_forward(x, W, self.SH, self.SW, self.PH, self.PW,
                                              need_gW=self.needs_input_grad[1], plan=self.plan)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, gy):
        need = self.needs_input_grad
        gW_into = self.grad_into[1] if self.grad_into else None
        gx, gW = self.k.conv2d_backward(gy, self.W, self.saved, self.SH, self.SW, self.PH,
                                        self.PW, need_gx=need[0], need_gW=need[1],
                                        gW_into=gW_into)
        if len(need) == 2:
            return gx, gW
        gb = gy.sum(axis=(0, 2, 3)) if need[2] else None
        return gx, gW, gb


def _check_shapes(x_shape, W_shape, SH, SW, PH, PW):
    N, C, H, W_in = x_shape
    OC, WC, KH, KW = W_shape
    if C != WC:
        raise ValueError(f"conv2d: input has {C} channels, weight (OC, C, KH, KW) = "
                         f"{tuple(W_shape)} expects {WC}")
    if conv_output_size(H, KH, SH, PH) <= 0 or conv_output_size(W_in, KW, SW, PW) <= 0:
        raise ValueError(f"conv2d: kernel {KH}x{KW} does not fit input {H}x{W_in} with "
                         f"padding {PH},{PW}")


def conv2d(x, W, b=None, stride=1, pad=0):
    """2-D convolution (cross-correlation, as in every DL framework).

    Args:
        x: input ``(N, C, H, W)``.
        W: filters ``(OC, C, KH, KW)``.
        b: optional bias ``(OC,)``.
        stride, pad: an int or an ``(SH, SW)`` / ``(PH, PW)`` pair; padding is with zeros.
    Returns:
        ``(N, OC, OH, OW)``.
    """
    x, W = as_tensor(x), as_tensor(W)
    (SH, SW), (PH, PW) = _pair(stride), _pair(pad)
    _check_shapes(x.shape, W.shape, SH, SW, PH, PW)
    plan = None
    if transforms_enabled():
        plan = backend.kernels_for(x, W).conv2d_weight_plan(x.shape, W.shape, SH, SW, PH, PW)
    if plan is not None:
        W = transformed_weight(W, plan)
    fn = Conv2d((SH, SW), (PH, PW), plan)
    return fn(x, W) if b is None else fn(x, W, b)
