"""minires: a small autograd engine and ResNets whose blocks share one convolution weight.

Implements and reproduces "Parameters Sharing in Residual Neural Networks" (Dai, Yu & Wei,
Neural Processing Letters, 2019).
"""
__version__ = "0.1.0"

from minires.autograd import (Function, Parameter, Tensor, debug_mode, enable_grad,  # noqa: E402
                              no_grad, set_debug)
from minires import functions  # noqa: E402

__all__ = ["Tensor", "Parameter", "Function", "no_grad", "enable_grad", "debug_mode",
           "set_debug", "functions", "__version__"]
