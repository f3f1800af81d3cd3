"""SGD on the GPU (``sgd.cu``): one kernel launch updates up to :data:`MAX_TENSORS` parameters
in place, PyTorch's semantics (see :mod:`minires.kernels.cpu.sgd` for the formulas).

The parameters' addresses go to the kernel by value, in a struct laid out here with NumPy
(:func:`tensor_list_dtype`) exactly as ``SgdTensors<T>`` in ``sgd.cu``: CuPy passes a NumPy
array of one element to a kernel as its bytes. The learning rate may be a one-element device
array, which the kernel reads when it runs: a captured CUDA graph then follows the rate the host
writes there before each replay, instead of the value it had at capture.
"""
from __future__ import annotations

import numpy as np

from minires.kernels.cuda.launch import check_int32, elementwise_launch, ints, same_dtype, scalar
from minires.kernels.cuda.loader import cupy, kernel

__all__ = ["sgd_step"]

#: Parameters per launch; must equal MINIRES_SGD_MAX_TENSORS in sgd.cu. 96 keeps the struct of
#: pointers under the classic 4 KB of kernel arguments for double too (ResNet-20 has 59
#: parameters: one launch; ResNet-56 has 167: two).
MAX_TENSORS = 96


def tensor_list_dtype(dtype):
    """The NumPy dtype of ``SgdTensors<T>`` for parameters of ``dtype`` (C layout)."""
    M = MAX_TENSORS
    return np.dtype([("param", np.uint64, (M,)), ("grad", np.uint64, (M,)),
                     ("velocity", np.uint64, (M,)), ("weight_decay", np.dtype(dtype), (M,)),
                     ("start", np.int32, (M + 1,)), ("count", np.int32)], align=True)


def _address(a) -> int:
    return a.data.ptr


def sgd_step(params, grads, velocities, lr: float, momentum: float, weight_decays,
             nesterov: bool) -> None:
    """Update every array of ``params`` (and of ``velocities``) in place: the arguments of
    :func:`minires.kernels.cpu.sgd.sgd_step`, as CuPy arrays; one launch per
    :data:`MAX_TENSORS` parameters of one dtype. ``lr`` is a float or a one-element device
    array (read on the device when the update runs)."""
    cp = cupy()
    groups = {}
    for i, (param, grad) in enumerate(zip(params, grads)):
        velocity = velocities[i] if momentum else None
        grad = _checked(param, grad, velocity, momentum)
        groups.setdefault(np.dtype(param.dtype), []).append(
            (param, grad, velocity if momentum else param, weight_decays[i]))
    for dtype, entries in groups.items():
        if hasattr(lr, "shape"):
            if lr.size != 1:
                raise ValueError(f"lr must be a number or a one-element array, got shape "
                                 f"{lr.shape}")
            lr_array, lr_value, from_device = cp.asarray(lr, dtype=dtype), 0.0, 1
        else:
            lr_array, lr_value, from_device = entries[0][0], lr, 0  # any array: not read
        for first in range(0, len(entries), MAX_TENSORS):
            _launch(entries[first:first + MAX_TENSORS], dtype, lr_array, lr_value, momentum,
                    from_device, nesterov)


def _checked(param, grad, velocity, momentum):
    if not param.flags.c_contiguous:
        raise ValueError("sgd_step updates params in place and needs them C-contiguous")
    grad = cupy().ascontiguousarray(grad)
    same_dtype(param.dtype, grad=grad)
    if grad.shape != param.shape:
        raise ValueError(f"grad shape {grad.shape} does not match param shape {param.shape}")
    if momentum:
        if velocity is None or velocity.shape != param.shape or not velocity.flags.c_contiguous:
            raise ValueError("momentum needs a C-contiguous velocity shaped like each param")
        same_dtype(param.dtype, velocity=velocity)
    return grad


def _launch(entries, dtype, lr_array, lr_value, momentum, from_device, nesterov):
    tensors = np.zeros(1, dtype=tensor_list_dtype(dtype))
    sizes = [param.size for param, _, _, _ in entries]
    total = check_int32(sum(sizes), "the parameters")
    count = len(entries)
    for name, column in (("param", 0), ("grad", 1), ("velocity", 2)):
        tensors[name][0, :count] = [_address(entry[column]) for entry in entries]
    tensors["weight_decay"][0, :count] = [entry[3] for entry in entries]
    tensors["start"][0, 1:count + 1] = np.cumsum(sizes)
    tensors["start"][0, count + 1:] = total
    tensors["count"][0] = count
    grid, block = elementwise_launch(total)
    kernel("sgd_update", dtype)(grid, block, (
        tensors, lr_array, scalar(lr_value, dtype), scalar(momentum, dtype),
        *ints(from_device, nesterov)))
