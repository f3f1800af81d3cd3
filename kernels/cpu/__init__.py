"""The CPU side of the backend interface (:mod:`minires.kernels.interface`): numba kernels and
NumPy code for NumPy arrays, one module per family, re-exported here."""
import numpy as xp

from minires.kernels.cpu.activation import add_relu_forward, relu_backward, relu_forward
from minires.kernels.cpu.augment import crop_flip_normalize
from minires.kernels.cpu.batchnorm import batch_norm_backward, batch_norm_forward
from minires.kernels.cpu.conv import (col2im, conv2d_backward, conv2d_forward,
                                      conv2d_transform_weight, conv2d_transform_weight_adjoint,
                                      conv2d_weight_plan, im2col)
from minires.kernels.cpu.dropout import dropout_backward, dropout_forward
from minires.kernels.cpu.indexing import scatter_add
from minires.kernels.cpu.linalg import matmul
from minires.kernels.cpu.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from minires.kernels.cpu.sgd import sgd_step

#: The device these kernels run on, as ``minires.backend`` names it.
device = "cpu"

__all__ = ["xp", "device", "im2col", "col2im", "conv2d_forward", "conv2d_backward",
           "conv2d_weight_plan", "conv2d_transform_weight", "conv2d_transform_weight_adjoint",
           "batch_norm_forward", "batch_norm_backward", "relu_forward", "relu_backward",
           "add_relu_forward", "matmul",
           "softmax_cross_entropy_forward", "softmax_cross_entropy_backward", "sgd_step",
           "crop_flip_normalize", "scatter_add", "dropout_forward", "dropout_backward"]
