"""The autograd engine: Tensor, Parameter, the Function protocol and the backward pass."""
from minires.autograd.config import debug_mode, enable_grad, no_grad, set_debug
from minires.autograd.engine import accumulate, backward
from minires.autograd.function import Function
from minires.autograd.tensor import Parameter, Tensor, as_tensor, unwrap

__all__ = ["Tensor", "Parameter", "Function", "as_tensor", "unwrap", "backward", "accumulate",
           "no_grad", "enable_grad", "debug_mode", "set_debug"]
