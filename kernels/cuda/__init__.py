"""The GPU side of the backend interface (:mod:`minires.kernels.interface`): CUDA C kernels
compiled through CuPy, for CuPy arrays, one wrapper module per family, re-exported here.

Sources and their kernels -> wrapper modules:

- ``im2col.cu``: im2col, col2im, channel_major -> :mod:`.conv` (with the cuBLAS GEMMs of the
  convolution, :mod:`.blas`)
- ``batchnorm.cu``: bn_partial_sums, bn_normalize, bn_forward_eval, bn_backward_partial_sums,
  bn_backward_apply -> :mod:`.batchnorm`
- ``activation.cu``: relu_forward, relu_backward, add_relu_forward -> :mod:`.activation`
- ``softmax_ce.cu``: softmax_ce_forward, softmax_ce_backward -> :mod:`.loss`
- ``sgd.cu``: sgd_update (all parameters in one launch) -> :mod:`.sgd`
- ``dropout.cu``: dropout_forward, dropout_backward -> :mod:`.dropout`
- (cuBLAS through :mod:`.blas`, no source) -> :mod:`.linalg`
- (array code, no source) -> :mod:`.augment`, :mod:`.indexing`

:mod:`.loader` reads and compiles the sources, :mod:`.launch` computes launch shapes. Importing
this package never imports CuPy: the wrappers import it when they first launch, and ``xp``
imports it when first read. Every kernel has a NumPy reference in the tests
(tests/cuda_reference.py) that the emulator and GPU tests compare it with.
"""
from minires.kernels.cuda.activation import add_relu_forward, relu_backward, relu_forward
from minires.kernels.cuda.augment import crop_flip_normalize
from minires.kernels.cuda.batchnorm import batch_norm_backward, batch_norm_forward
from minires.kernels.cuda.conv import (col2im, conv2d_backward, conv2d_forward,
                                       conv2d_transform_weight, conv2d_transform_weight_adjoint,
                                       conv2d_weight_plan, im2col)
from minires.kernels.cuda.dropout import dropout_backward, dropout_forward
from minires.kernels.cuda import loader
from minires.kernels.cuda.indexing import scatter_add
from minires.kernels.cuda.linalg import matmul
from minires.kernels.cuda.loss import (softmax_cross_entropy_backward,
                                       softmax_cross_entropy_forward)
from minires.kernels.cuda.sgd import sgd_step

#: The device these kernels run on, as ``minires.backend`` names it.
device = "cuda"

__all__ = ["xp", "device", "im2col", "col2im", "conv2d_forward", "conv2d_backward",
           "conv2d_weight_plan", "conv2d_transform_weight", "conv2d_transform_weight_adjoint",
           "batch_norm_forward", "batch_norm_backward", "relu_forward", "relu_backward",
           "add_relu_forward", "matmul",
           "softmax_cross_entropy_forward", "softmax_cross_entropy_backward", "sgd_step",
           "crop_flip_normalize", "scatter_add", "dropout_forward", "dropout_backward"]


def __getattr__(name):
    if name == "xp":  # the array module, ``cupy``, imported when first asked for
        return loader.cupy()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
