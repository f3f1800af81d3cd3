"""SGD on the GPU (``sgd.cu``): one in-place update kernel per parameter, PyTorch's semantics
(see :mod:`minires.kernels.cpu.sgd` for the formulas)."""
from __future__ import annotations

from minires.kernels.cuda.launch import check_int32, elementwise_launch, ints, same_dtype, scalar
from minires.kernels.cuda.loader import cupy, kernel

__all__ = ["sgd_step"]


def sgd_step(params, grads, velocities, lr: float, momentum: float, weight_decays,
             nesterov: bool) -> None:
    """Update every array of ``params`` (and of ``velocities``) in place: the arguments of
    :func:`minires.kernels.cpu.sgd.sgd_step`, as CuPy arrays; one kernel per parameter."""
    for i, (param, grad) in enumerate(zip(params, grads)):
        velocity = velocities[i] if momentum else None
        _update(param, grad, velocity, lr, momentum, weight_decays[i], nesterov)


def _update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
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
    else:
        velocity = param  # never touched when momentum is 0
    dtype = param.dtype
    grid, block = elementwise_launch(check_int32(param.size, "param"))
    kernel("sgd_update", dtype)(grid, block, (
        param, grad, velocity, *ints(param.size), scalar(lr, dtype), scalar(momentum, dtype),
        scalar(weight_decay, dtype), *ints(nesterov)))
