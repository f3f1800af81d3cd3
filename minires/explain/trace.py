"""The engine's walk through the shared block, watched step by step (``minires explain --trace``).

``minires.autograd.engine.backward`` takes an optional ``observer(fn, gxs)``, called for every
operation in the order the walk visits it, after the leaves among its inputs have received
their gradients. This module uses it to record which leaves each step accumulates into and,
for the shared weight ``W``, the gradient each use hands back and ``W.grad`` right after:
first ``W.grad = g2`` (conv2 is the later use in the forward pass, so the walk meets it first),
then ``W.grad = g2 + g1``. The values shown are the engine's own arrays, copied as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minires.explain.lesson import USE_OF, Lesson, leaf_labels, module_nodes, node_label
from minires.explain.text import heading, index_label, pick_entries, values, wrapped


@dataclass
class TraceStep:
    """One operation of the backward walk.

    Attributes:
        number: its 1-based position in the walk.
        node: the lesson's name for it (``Conv2d: conv2 (use 2 of W)``).
        leaves: the labels of the leaves whose ``.grad`` it accumulated into.
        use: 1 or 2 when it handed the shared weight a gradient, else None.
        contribution: that gradient (a copy), shaped like ``W``.
        w_grad: ``W.grad`` right after this step (a copy).
        terms: the contributions summed in ``W.grad`` so far, in order (``["g2", "g1"]``).
    """

    number: int
    node: str
    leaves: list
    use: int | None = None
    contribution: np.ndarray | None = None
    w_grad: np.ndarray | None = None
    terms: tuple = ()

    @property
    def formula(self) -> str:
        return "W.grad = " + " + ".join(self.terms)


@dataclass
class TraceReport:
    """The walk, plus what it tells about the shared weight.

    Attributes:
        steps: every operation in the order visited.
        contributions: ``{use: gradient}`` handed to ``W`` by each use (1 and 2).
        grad: ``W.grad`` after the walk.
        first_kept: whether the first contribution array still held its values after the walk
            (accumulation wrote the sum into a new array, not into it).
        weight_shape, entries: the shape of ``W`` and the flat indices shown.
    """

    steps: list
    contributions: dict
    grad: np.ndarray
    first_kept: bool
    weight_shape: tuple
    entries: list

    def text(self) -> list:
        lines = heading("The engine's walk (minires/autograd/engine.py, backward)")
        lines += wrapped("backward(y, gy) visits each operation once, from the output back "
                         "to the leaves, in decreasing generation (a topological order, no "
                         "recursion). Each operation hands every input its gradient; a leaf's "
                         "gradients are summed into its .grad by accumulate().") + [""]
        width = max(len(step.node) for step in self.steps)
        for step in self.steps:
            into = [step.formula if leaf == "W" else f"{leaf}.grad" for leaf in step.leaves]
            arrow = f"  -> {', '.join(into)}" if into else ""
            lines.append(f"{step.number:3d}. {step.node:<{width}}{arrow}".rstrip())
        shown = [step for step in self.steps if step.use is not None]
        lines += ["", f"The shared weight W at steps {' and '.join(str(s.number) for s in shown)}:"]
        label_width = max(len(step.formula) for step in shown) + 5
        lines.append(f"{'W entry':>{label_width}}  " + "  ".join(
            f"{index_label(k, self.weight_shape):>10}" for k in self.entries))
        for step in shown:
            lines.append(f"{f'{step.number}. g{step.use} (conv{step.use})':>{label_width}}  "
                         + values(step.contribution, self.entries))
            lines.append(f"{step.formula:>{label_width}}  " + values(step.w_grad, self.entries))
        first = shown[0]
        lines += [""] + wrapped(f"Use {first.use} comes first: conv{first.use} is the later "
                                "use in the forward pass, so the backward walk meets it first.")
        if self.first_kept:
            lines += wrapped(f"g{first.use} still holds its values after the walk: the engine "
                             "wrote the sum into a new array instead of adding into "
                             f"g{first.use} (accumulate is out of place).")
        return lines


def trace_backward(lesson: Lesson, entries: int = 6) -> TraceReport:
    """Run the lesson's backward pass with an observer and record every step of the walk.

    Args:
        lesson: the shared block, its input and upstream gradient (``make_lesson``).
        entries: how many entries of ``W`` the text shows.
    """
    W = lesson.weight
    leaves = leaf_labels(lesson.block)
    steps, contributions, terms, handed = [], {}, [], []

    with module_nodes(lesson.block) as modules:
        def observe(fn, gxs):
            touched = [leaves[id(x)] for x, g in zip(fn.inputs, gxs)
                       if g is not None and x.creator is None and id(x) in leaves]
            step = TraceStep(len(steps) + 1, node_label(fn, modules), touched)
            for x, g in zip(fn.inputs, gxs):
                if x is W and g is not None:
                    step.use = USE_OF[modules[fn]]
                    terms.append(f"g{step.use}")
                    step.contribution, step.w_grad = g.copy(), W.grad.copy()
                    step.terms = tuple(terms)
                    contributions[step.use] = step.contribution
                    # the engine's own array and a copy: does the later sum write into it?
                    handed.append((g, step.contribution))
            steps.append(step)

        lesson.backward(observer=observe)
    array, copy = handed[0]
    return TraceReport(steps=steps, contributions=contributions, grad=W.grad.copy(),
                       first_kept=bool(np.array_equal(array, copy)),
                       weight_shape=tuple(W.shape), entries=pick_entries(W.shape, entries))
