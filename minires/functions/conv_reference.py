"""A convolution you can read: ``conv2d_reference``, built only from differentiable primitives.

``minires.functions.conv2d`` is the fast path: hand-written kernels (numba on the CPU, CUDA C
on the GPU) with a hand-written backward. This module computes the same thing in a dozen lines
of slicing, reshaping and one matrix product, and lets the autograd engine derive the backward
from those primitives. Read it to see what a convolution computes; the tests hold the two
together (``tests/test_conv_reference.py``: same values and gradients, float64, random upstream
gradient, several strides, paddings and shapes). It is slow and memory-hungry: it is an oracle,
not a layer to train with.

What a convolution computes (a cross-correlation, as in every deep-learning framework)::

    y[n, oc, oh, ow] = b[oc] + sum over c, i, j of W[oc, c, i, j] * xpad[n, c, oh*SH+i, ow*SW+j]

for ``x (N, C, H, W)`` zero-padded by ``PH, PW`` into ``xpad``, ``W (OC, C, KH, KW)`` and
``y (N, OC, OH, OW)`` with ``OH = (H + 2*PH - KH) // SH + 1`` (likewise OW).

**im2col** turns that sum into one matrix product. Kernel tap ``(i, j)`` meets the pixels
``xpad[:, :, i + SH*oh, j + SW*ow]`` for all output positions: one strided slice of ``xpad``,
shaped ``(N, C, OH, OW)``. Stacking the ``KH*KW`` slices gives the columns ``cols (C*KH*KW,
N*OH*OW)``, one column per output pixel holding the patch it sees, with rows in the order
``(c, i, j)``, which is also the order of ``W.reshape(OC, C*KH*KW)``. Then
``y = W.reshape(OC, C*KH*KW) @ cols``, reshaped back to ``(N, OC, OH, OW)``.

The backward pass comes for free: the engine differentiates the slices (scattering gradients
back into ``xpad``, adding where patches overlap), the padding (cropping it off), the reshapes
and transposes (undoing them) and the matrix product (``gW = gy @ cols.T``, ``gcols = W.T @ gy``).
That is exactly what the fast kernels do by hand (``col2im`` is the adjoint of ``im2col``).
"""
from __future__ import annotations

from minires.autograd import as_tensor
from minires.functions.arithmetic import matmul
from minires.functions.shape import pad, reshape, transpose
from minires.kernels.interface import conv_output_size


def _pair(v) -> tuple:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _stack(parts, axis: int):
    """Stack equally shaped tensors along an existing axis of length 1, in order.

    There is no concatenation primitive in ``minires.functions``, so each part is zero-padded
    into its own place along ``axis`` and the parts are added: part ``k`` fills index ``k``.
    Both steps are differentiable, so the backward pass hands each part its own slice.
    """
    total = None
    for k, part in enumerate(parts):
        widths = [(0, 0)] * part.ndim
        widths[axis] = (k, len(parts) - 1 - k)
        placed = pad(part, widths)
        total = placed if total is None else total + placed
    return total


def im2col_reference(x, kernel_size, stride=1, padding=0):
    """The patches of ``x (N, C, H, W)`` as columns ``(C*KH*KW, N*OH*OW)``, differentiably.

    Column ``n*OH*OW + oh*OW + ow`` holds the ``C*KH*KW`` input values that output pixel
    ``(oh, ow)`` of image ``n`` sees, in the order ``(c, i, j)``; zeros where the patch
    overlaps the padding.
    """
    x = as_tensor(x)
    (KH, KW), (SH, SW), (PH, PW) = _pair(kernel_size), _pair(stride), _pair(padding)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    if OH <= 0 or OW <= 0:
        raise ValueError(f"conv2d_reference: kernel {KH}x{KW} does not fit input {H}x{W} with "
                         f"padding {PH},{PW}")
    if PH or PW:
        x = pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    taps = []
    for i in range(KH):
        for j in range(KW):
            # Every pixel that tap (i, j) meets: rows i, i+SH, ..., i+SH*(OH-1); likewise cols.
            seen = x[:, :, i:i + SH * (OH - 1) + 1:SH, j:j + SW * (OW - 1) + 1:SW]
            taps.append(reshape(seen, (N, C, 1, OH * OW)))
    patches = _stack(taps, axis=2)                             # (N, C, KH*KW, OH*OW)
    # rows (c, tap), columns (n, output pixel): the layout of one plain matrix product
    return reshape(transpose(patches, (1, 2, 0, 3)), (C * KH * KW, N * OH * OW))


def conv2d_reference(x, W, b=None, stride=1, pad=0):
    """2-D convolution from slicing, reshaping and one matrix product; same arguments and
    result as :func:`minires.functions.conv2d`.

    Args:
        x: input ``(N, C, H, W)``.
        W: filters ``(OC, C, KH, KW)``.
        b: optional bias ``(OC,)``.
        stride, pad: an int or an ``(SH, SW)`` / ``(PH, PW)`` pair; padding is with zeros.
    Returns:
        ``(N, OC, OH, OW)``; differentiable in ``x``, ``W`` and ``b`` through the primitives.
    """
    x, W = as_tensor(x), as_tensor(W)
    OC, C, KH, KW = W.shape
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"conv2d_reference: input {x.shape} should be (N, C, H, W) with the "
                         f"C = {C} of the weight {W.shape}")
    N, _, H, W_in = x.shape
    (SH, SW), (PH, PW) = _pair(stride), _pair(pad)
    cols = im2col_reference(x, (KH, KW), (SH, SW), (PH, PW))     # (C*KH*KW, N*OH*OW)
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W_in, KW, SW, PW)
    y = matmul(reshape(W, (OC, C * KH * KW)), cols)              # (OC, N*OH*OW)
    y = transpose(reshape(y, (OC, N, OH, OW)), (1, 0, 2, 3))     # (N, OC, OH, OW)
    if b is not None:
        y = y + reshape(as_tensor(b), (1, OC, 1, 1))
    return y
