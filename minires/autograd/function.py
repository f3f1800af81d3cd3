"""The Function protocol: one differentiable operation on raw arrays.

A subclass implements

* ``forward(*xs) -> y or tuple of ys``: NumPy/CuPy arrays in, arrays out. It may store what
  backward needs on ``self``; ``self.needs_input_grad`` is already set, so it can skip saving
  what no gradient will use.
* ``backward(*gys) -> tuple``: one gradient array per forward input, in order, or ``None`` for
  an input whose gradient is not needed (``self.needs_input_grad[i]`` is False). ``gys`` holds
  one array per output; an output nobody used gets zeros.

Calling a Function instance wraps its inputs as Tensors, runs ``forward``, and, when recording
is on and some input requires a gradient, links the outputs to this node of the graph.
"""
from __future__ import annotations

import weakref

from minires.autograd.config import config


class Function:
    #: Set by ``__call__``: the input Tensors, and which of them need a gradient.
    inputs: tuple = ()
    needs_input_grad: tuple = ()

    def __call__(self, *inputs):
        from minires.autograd.tensor import as_tensor

        tensors = tuple(as_tensor(x) for x in inputs)
        record = config.enable_grad and any(t.requires_grad for t in tensors)
        self.needs_input_grad = tuple(record and t.requires_grad for t in tensors)
        ys = self.forward(*(t.data for t in tensors))
        if not isinstance(ys, tuple):
            ys = (ys,)
        if config.debug:
            from minires.autograd.debug import check_forward
            check_forward(self, tensors, ys)
        outputs = tuple(_new_tensor(y, record) for y in ys)
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


def _new_tensor(array, requires_grad):
    from minires.autograd.tensor import Tensor
    return Tensor(array, requires_grad=requires_grad)
