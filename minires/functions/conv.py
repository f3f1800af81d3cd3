"""2-D convolution.

Shapes: ``x (N, C, H, W)``, ``W (OC, C, KH, KW)``, ``b (OC,)``, ``y (N, OC, OH, OW)`` with
``OH = (H + 2*PH - KH) // SH + 1`` (likewise OW).

The kernels do the work (``conv2d_forward``/``conv2d_backward`` of ``minires.kernels.cpu.conv``
or ``minires.kernels.cuda.conv``): each output pixel is the dot product of a patch of ``x`` with
a filter, computed as matrix products over patch matrices. The forward kernel keeps what the
weight gradient needs only when a weight gradient will be asked for.

To read what a convolution computes, see ``minires.functions.conv_reference``: the same
function from slicing, reshaping and one matrix product, with the backward derived by autograd,
tested to agree with these kernels in value and gradient.

For a weight shared by two convolutions, each call is its own Function node. The engine
differentiates the second use (the later one in the network) first; that gradient becomes the
weight's ``.grad``, and the engine offers it to the first use (``Function.grad_into``), whose
kernel adds its own gradient into it: one buffer, no separate addition.
"""
from __future__ import annotations

from minires.autograd import Function
from minires.kernels.interface import conv_output_size


def _pair(v) -> tuple:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(Function):
    def __init__(self, stride=1, pad=0):
        (self.SH, self.SW), (self.PH, self.PW) = _pair(stride), _pair(pad)

    def forward(self, x, W, b=None):
        N, C, H, W_in = x.shape
        OC, WC, KH, KW = W.shape
        if C != WC:
            raise ValueError(f"conv2d: input has {C} channels, weight (OC, C, KH, KW) = "
                             f"{W.shape} expects {WC}")
        if (conv_output_size(H, KH, self.SH, self.PH) <= 0
                or conv_output_size(W_in, KW, self.SW, self.PW) <= 0):
            raise ValueError(f"conv2d: kernel {KH}x{KW} does not fit input {H}x{W_in} with "
                             f"padding {self.PH},{self.PW}")
        self.W = W
        y, self.saved = self.k.conv2d_forward(x, W, self.SH, self.SW, self.PH, self.PW,
                                              need_gW=self.needs_input_grad[1])
        if b is not None:
            y += b.reshape(1, OC, 1, 1)
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
    fn = Conv2d(stride, pad)
    return fn(x, W) if b is None else fn(x, W, b)
