"""Reverse-mode differentiation: the backward pass and gradient accumulation.

This is the first of the three places where weight sharing lives. A tensor used by several
operations (a shared convolution weight used by both convolutions of a block, or simply
``x + x``) receives one gradient from each use; its gradient is their **sum**. All summing goes
through :func:`accumulate`, which never writes into an existing array: operations may return the
same array object for two inputs (``Add`` returns ``(gy, gy)``), so an in-place ``+=`` on one
gradient would silently change another (``(x + x) + x`` would give 4 instead of 3).

A leaf's ``.grad`` belongs to that leaf alone (:func:`accumulate_leaf`): after
``(x + y).backward(g)``, ``x.grad *= 0.5`` changes neither ``y.grad`` nor ``g``. The first
gradient stored into a leaf is copied only when it shares memory with an upstream gradient or
with another input's gradient, so the arrays that kernels freshly allocate (every gradient of a
convolution, a BatchNorm or a linear layer) are kept as they are.

A weight used twice gets its two gradients in one buffer: once the first use's gradient is the
leaf's own ``.grad`` (created in this pass, so nothing else can hold it), the engine offers that
array to the next Function that differentiates the leaf (``Function.grad_into``). A convolution
adds its weight gradient into it directly (one GEMM with ``beta = 1``); a Function that ignores
the offer returns a new array and the engine sums out of place as always.

The graph is walked without recursion (deep graphs would overflow Python's stack near depth
1,000): functions are visited in decreasing ``generation``, a topological order, because a
function's outputs always have a higher generation than its inputs. An optional ``observer``
sees each visited function and the gradients it returned, in that order (``minires explain
--trace`` prints the walk with it); without one the walk pays a single ``is None`` test per
function.
"""
from __future__ import annotations

import heapq

from minires.autograd.config import config
from minires.autograd.debug import check_backward
from minires.autograd.tensor import unwrap


def accumulate(current, g):
    """Return the sum of gradient ``current`` (or ``None``) and ``g``, without aliasing.

    ``current + g`` allocates a new array, so neither argument is modified; when ``current`` is
    ``None`` the incoming array is returned as it is, which is safe because the engine never
    modifies a gradient array in place.
    """
    return g if current is None else current + g


def accumulate_leaf(leaf, g, private: bool) -> None:
    """Add gradient ``g`` into ``leaf.grad`` so that the result belongs to the leaf alone.

    ``private``: whether nothing but this call refers to ``g`` (see :func:`_private`); if not,
    the first gradient is copied. Later ones are summed into a new array anyway.
    """
    if leaf.grad is None:
        leaf.grad = g if private else g.copy()
    else:
        leaf.grad = leaf.grad + g


def _memory(a):
    """The object that owns the memory of array ``a`` (``a`` itself unless it is a view)."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def _private(g, gys, gxs) -> bool:
    """True when a gradient ``g`` that a backward returned (among ``gxs``, for upstream ``gys``)
    may become a leaf's own ``.grad`` without a copy: its memory is neither that of an upstream
    gradient the backward was given (``Add`` passes ``gy`` through, ``Reshape`` a view of it)
    nor that of another gradient it returned. A backward never returns an array it keeps (see
    ``minires.autograd.function``), so what is left is memory it allocated for ``g`` alone."""
    memory = _memory(g)
    return (all(_memory(gy) is not memory for gy in gys)
            and sum(_memory(other) is memory for other in gxs if other is not None) == 1)


def backward(root, gy=None, observer=None) -> None:
    """Backpropagate from tensor ``root`` and accumulate into the ``.grad`` of every leaf.

    Args:
        root: the Tensor to differentiate (usually a scalar loss).
        gy: the upstream gradient, shaped like ``root``; defaults to ones (``root`` is then
            normally a scalar). It is never modified, nor stored as anyone's ``.grad``.
        observer: optional ``observer(fn, gxs)``, called for every Function in the order the
            walk visits them, after ``fn.backward`` returned ``gxs`` (one gradient or None per
            input in ``fn.inputs``) and after the gradients of leaves among ``fn.inputs`` were
            accumulated into their ``.grad``. For tracing; it must not modify what it is shown.
    Leaves are tensors with ``requires_grad`` and no creator (Parameters, inputs); their
    ``.grad`` keeps accumulating across calls until it is reset to ``None``. Gradients of
    intermediate tensors live only for the duration of the pass.
    """
    xp = root.xp
    given = gy is not None
    if not given:
        gy = xp.ones_like(root.data)
    else:
        gy = xp.asarray(unwrap(gy), dtype=root.data.dtype)
        if gy.shape != root.shape:
            raise ValueError(f"backward: gradient shape {gy.shape} differs from the tensor's "
                             f"shape {root.shape}")
    if root.creator is None:
        if root.requires_grad:
            accumulate_leaf(root, gy, private=not given)
        return

    # grads maps id(tensor) -> (tensor, gradient so far); holding the tensor keeps its id unique.
    grads = {id(root): (root, gy)}
    owned = set()  # ids of leaves whose .grad this pass created: no one else can hold it yet
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
        fn.grad_into = tuple(x.grad if needed and x.creator is None and id(x) in owned else None
                             for x, needed in zip(fn.inputs, fn.needs_input_grad))
        try:
            gxs = fn.backward(*gys)
        finally:
            offered, fn.grad_into = fn.grad_into, ()
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        if len(gxs) != len(fn.inputs):
            raise RuntimeError(f"{fn.name}.backward returned {len(gxs)} gradients for "
                               f"{len(fn.inputs)} inputs")
        if config.debug:
            check_backward(fn, gxs)
        for i, (x, gx, needed) in enumerate(zip(fn.inputs, gxs, fn.needs_input_grad)):
            if not needed or gx is None:
                continue
            if x.creator is None:
                if gx is not offered[i]:  # else the Function added into the leaf's own array
                    accumulate_leaf(x, gx, _private(gx, gys, gxs))
                owned.add(id(x))
            else:
                previous = grads.get(id(x))
                grads[id(x)] = (x, accumulate(previous[1] if previous else None, gx))
                push(x.creator)
        if observer is not None:
            observer(fn, gxs)
