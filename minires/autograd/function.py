"""The Function protocol: one differentiable operation on raw arrays.

A subclass implements

* ``forward(*xs) -> y or tuple of ys``: NumPy/CuPy arrays in, arrays out. It may store what
  backward needs on ``self``; ``self.needs_input_grad`` is already set, so it can skip saving
  what no gradient will use, and ``self.k`` holds the kernels for the inputs' device
  (``minires.backend.kernels_for``: ``self.k.conv2d_forward(...)``, ``self.k.xp.zeros(...)``),
  chosen once here so that no Function ever asks which device it runs on.
* ``backward(*gys) -> tuple``: one gradient array per forward input, in order, or ``None`` for
  an input whose gradient is not needed (``self.needs_input_grad[i]`` is False). ``gys`` holds
  one array per output; an output nobody used gets zeros. A gradient is either a new array or
  one of ``gys`` (or a view of one), never an array the Function keeps (nor a view of one):
  the engine hands a new array to a leaf as its own ``.grad`` without copying it.
  One exception, by invitation: ``self.grad_into[i]``, when not None, is a gradient array the
  engine owns for input ``i`` (a leaf's gradient created earlier in this backward pass, when a
  shared weight's other use was differentiated); a Function may add its gradient into that
  array and return it, instead of returning a new array for the engine to add.

Calling a Function instance wraps its inputs as Tensors, runs ``forward``, and, when recording
is on and some input requires a gradient, links the outputs to this node of the graph.
"""
from __future__ import annotations

import weakref

from minires import backend
from minires.autograd.config import config
from minires.autograd.debug import check_forward
from minires.autograd.tensor import Tensor, as_tensor


class Function:
    #: Set by ``__call__``: the input Tensors, and which of them need a gradient.
    inputs: tuple = ()
    needs_input_grad: tuple = ()
    #: Set by the engine around ``backward``: per input, an array to add the gradient into, or
    #: None (see the module docstring).
    grad_into: tuple = ()

    def __call__(self, *inputs):
        tensors = tuple(as_tensor(x) for x in inputs)
        arrays = tuple(t.data for t in tensors)
        record = config.enable_grad and any(t.requires_grad for t in tensors)
        self.needs_input_grad = tuple(record and t.requires_grad for t in tensors)
        self.k = backend.kernels_for(*arrays)
        ys = self.forward(*arrays)
        if not isinstance(ys, tuple):
            ys = (ys,)
        if config.debug:
            check_forward(self, tensors, ys)
        outputs = tuple(Tensor(y, requires_grad=record) for y in ys)
        if record:
            self.inputs = tensors
            self.generation = max(t.generation for t in tensors)
            self.output_specs = tuple((y.shape, y.dtype) for y in ys)
            for out in outputs:
                out.creator = self
                out.generation = self.generation + 1
            # Weak references: the outputs hold their creator, so strong ones would make a cycle
            # that only the garbage collector could free, keeping activations alive for longer.
            self.outputs = tuple(weakref.ref(out) for out in outputs)
        return outputs[0] if len(outputs) == 1 else outputs

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.name}>"
