"""2-D convolution.

Shapes: ``x (N, C, H, W)``, ``W (OC, C, KH, KW)``, ``b (OC,)``, ``y (N, OC, OH, OW)`` with
``OH = (H + 2*PH - KH) // SH + 1`` (likewise OW).

* CPU (NumPy arrays): ``minires.kernels.cpu.conv`` builds the patch matrix a few images at a
  time in channels-last rows and never keeps it; the backward pass recomputes it chunk by chunk
  (see that module for why this is faster and smaller than a whole-batch im2col).
* GPU (CuPy arrays): ``col (N, C*KH*KW, OH*OW)`` from the CUDA im2col, then for every image
  ``y[n] = W.reshape(OC, C*KH*KW) @ col[n]``, already in NCHW order.

For a weight shared by two convolutions nothing special happens here: each call is its own
Function node, and each returns its own ``gW``; the engine adds them.
"""
from __future__ import annotations

from minires import kernels
from minires.autograd import Function
from minires.backend import is_cuda_array
from minires.kernels.cpu import conv as cpu_conv
from minires.kernels.cpu.im2col import conv_output_size


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
        OH = conv_output_size(H, KH, self.SH, self.PH)
        OW = conv_output_size(W_in, KW, self.SW, self.PW)
        if OH <= 0 or OW <= 0:
            raise ValueError(f"conv2d: kernel {KH}x{KW} does not fit input {H}x{W_in} with "
                             f"padding {self.PH},{self.PW}")
        self.x_hw, self.W, self.x, self.col = (H, W_in), W, None, None
        if is_cuda_array(x):
            col = kernels.im2col(x, KH, KW, self.SH, self.SW, self.PH, self.PW)
            col = col.reshape(N, C * KH * KW, OH * OW)
            y = (W.reshape(OC, -1) @ col).reshape(N, OC, OH, OW)
            # col is what gW needs; keep it only when a weight gradient will be asked for.
            self.col = col if self.needs_input_grad[1] else None
        else:
            y = cpu_conv.conv2d_forward(x, W, self.SH, self.SW, self.PH, self.PW)
            # The CPU backward rebuilds the patches from x, chunk by chunk, when gW is needed.
            self.x = x if self.needs_input_grad[1] else None
        if b is not None:
            y += b.reshape(1, OC, 1, 1)
        return y

    def backward(self, gy):
        if is_cuda_array(gy):
            gx, gW = self._backward_im2col(gy)
        else:
            N, C = gy.shape[0], self.W.shape[1]
            gx, gW = cpu_conv.conv2d_backward(
                self.x, self.W, gy, self.SH, self.SW, self.PH, self.PW,
                need_gx=self.needs_input_grad[0], need_gW=self.needs_input_grad[1],
                x_shape=(N, C) + self.x_hw)
        if len(self.needs_input_grad) == 2:
            return gx, gW
        gb = gy.sum(axis=(0, 2, 3)) if self.needs_input_grad[2] else None
        return gx, gW, gb

    def _backward_im2col(self, gy):
        N, OC, OH, OW = gy.shape
        _, C, KH, KW = self.W.shape
        gy3 = gy.reshape(N, OC, OH * OW)
        gx = gW = None
        if self.needs_input_grad[0]:
            gcol = self.W.reshape(OC, -1).T @ gy3                   # (N, C*KH*KW, OH*OW)
            gcol = gcol.reshape(N, C, KH, KW, OH, OW)
            gx = kernels.col2im(gcol, *self.x_hw, self.SH, self.SW, self.PH, self.PW)
        if self.needs_input_grad[1]:
            # Sum over images of gy[n] @ col[n].T; the transposed view costs no copy.
            gW = (gy3 @ self.col.transpose(0, 2, 1)).sum(axis=0).reshape(self.W.shape)
        return gx, gW


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
