"""Differentiable functions, one module per family; import as ``minires.functions as F``.

Each family defines CamelCase ``Function`` classes (forward/backward on raw arrays) and the
lowercase wrappers users call (``F.conv2d``, ``F.batch_norm``...).
"""
from minires.functions.activation import add_relu, relu
from minires.functions.arithmetic import add, div, linear, matmul, mul, neg, power, sub, sum_to
from minires.functions.batchnorm import batch_norm, batch_norm_relu
from minires.functions.conv import conv2d
from minires.functions.conv_reference import conv2d_reference, im2col_reference
from minires.functions.dropout import dropout
from minires.functions.loss import softmax_cross_entropy
from minires.functions.pooling import global_avg_pool2d, max_pool2d
from minires.functions.reduction import mean, sum
from minires.functions.shape import get_item, pad, reshape, transpose

__all__ = ["relu", "add_relu", "add", "sub", "mul", "div", "neg", "power", "matmul", "linear",
           "sum_to", "batch_norm", "batch_norm_relu", "conv2d", "conv2d_reference",
           "im2col_reference", "softmax_cross_entropy", "global_avg_pool2d", "max_pool2d",
           "mean", "sum", "get_item", "pad", "reshape", "transpose", "dropout"]
