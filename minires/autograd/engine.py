"""Reverse-mode differentiation: the backward pass and gradient accumulation.

This is the first of the three places where weight sharing lives. A tensor used by several
operations (a shared convolution weight used by both convolutions of a block, or simply
``x + x``) receives one gradient from each use; its gradient is their **sum**. All summing goes
through :func:`accumulate`, which never writes into an existing array: operations may return the
same array object for two inputs (``Add`` returns ``(gy, gy)``), so an in-place ``+=`` on one
gradient would silently change another (``(x + x) + x`` would give 4 instead of 3).

The graph is walked without recursion (deep graphs would overflow Python's stack near depth
1,000): functions are visited in decreasing ``generation``, a topological order, because a
function's outputs always have a higher generation than its inputs.
"""
from __future__ import annotations

import heapq

from minires.autograd.config import config
from minires.autograd.debug import check_backward
from minires.autograd.tensor import unwrap


def accumulate(current, g):
    """Return the sum of gradient ``current`` (or ``None``) and ``g``, without aliasing.

    ``current + g`` allocates a new array, so neither argument is modified; when ``current`` is
    ``None`` the incoming array is stored as it is, which is safe because no gradient array is
    ever modified in place afterwards.
    """
    return g if current is None else current + g


def backward(root, gy=None) -> None:
    """Backpropagate from tensor ``root`` and accumulate into the ``.grad`` of every leaf.

    Args:
        root: the Tensor to differentiate (usually a scalar loss).
        gy: the upstream gradient, shaped like ``root``; defaults to ones (``root`` is then
            normally a scalar).
    Leaves are tensors with ``requires_grad`` and no creator (Parameters, inputs); their
    ``.grad`` keeps accumulating across calls until it is reset to ``None``. Gradients of
    intermediate tensors live only for the duration of the pass.
    """
    xp = root.xp
    if gy is None:
        gy = xp.ones_like(root.data)
    else:
        gy = xp.asarray(unwrap(gy), dtype=root.data.dtype)
        if gy.shape != root.shape:
            raise ValueError(f"backward: gradient shape {gy.shape} differs from the tensor's "
                             f"shape {root.shape}")
    if root.creator is None:
        if root.requires_grad:
            root.grad = accumulate(root.grad, gy)
        return

    # grads maps id(tensor) -> (tensor, gradient so far); holding the tensor keeps its id unique.
    grads = {id(root): (root, gy)}
    heap, seen, counter = [], set(), 0

    def push(fn):
        nonlocal counter
        if fn is not None and id(fn) not in seen:
            seen.add(id(fn))
            # counter breaks ties between equal generations without comparing Functions.
            heapq.heappush(heap, (-fn.generation, counter, fn))
            counter += 1

    push(root.creator)
    while heap:
        _, _, fn = heapq.heappop(heap)
        gys = []
        for ref in fn.outputs:
            out = ref()
            entry = grads.pop(id(out), None) if out is not None else None
            gys.append(entry[1] if entry is not None else None)
        if all(g is None for g in gys):
            continue
        gys = [g if g is not None else fn.k.xp.zeros(*spec)
               for g, spec in zip(gys, fn.output_specs)]
        gxs = fn.backward(*gys)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        if len(gxs) != len(fn.inputs):
            raise RuntimeError(f"{fn.name}.backward returned {len(gxs)} gradients for "
                               f"{len(fn.inputs)} inputs")
        if config.debug:
            check_backward(fn, gxs)
        for x, gx, needed in zip(fn.inputs, gxs, fn.needs_input_grad):
            if not needed or gx is None:
                continue
            if x.creator is None:
                x.grad = accumulate(x.grad, gx)
            else:
                previous = grads.get(id(x))
                grads[id(x)] = (x, accumulate(previous[1] if previous else None, gx))
                push(x.creator)
