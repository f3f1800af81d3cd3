"""The engine's walk through the shared block, watched step by step (``minires explain --trace``).

``minires.autograd.engine.backward`` takes an optional ``observer(fn, gxs)``, called for every
operation in the order the walk visits it, after the leaves among its inputs have received
their gradients. This module uses it to record which leaves each step accumulates into and,
for the shared weight ``W``, the gradient each use hands back and ``W.grad`` right after:
first ``W.grad = g2`` (conv2 is the later use in the forward pass, so the walk meets it first),
then ``W.grad = g2 + g1``. The values shown are the engine's own arrays, copied as they are.

How the second use is added: the engine offers ``W.grad``, an array this pass created, to
conv1 (``Function.grad_into``), and the convolution kernel adds ``g1`` into it. conv1 then
returns that array itself, so ``g1`` is read as the change it made to ``W.grad``.
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
        in_place: the contribution was added into the existing ``W.grad`` array by the
            operation's own kernel (offered by the engine), not summed into a new array.
    """

    number: int
    node: str
    leaves: list
    use: int | None = None
    contribution: np.ndarray | None = None
    w_grad: np.ndarray | None = None
    terms: tuple = ()
    in_place: bool = False

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
        weight_shape, entries: the shape of ``W`` and the flat indices shown.
    """

    steps: list
    contributions: dict
    grad: np.ndarray
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
            into = [step.formula + ("  (added in place)" if step.in_place else "")
                    if leaf == "W" else f"{leaf}.grad" for leaf in step.leaves]
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
        first, second = shown[0], shown[-1]
        lines += [""] + wrapped(f"Use {first.use} comes first: conv{first.use} is the later "
                                "use in the forward pass, so the backward walk meets it first.")
        if second.in_place:
            lines += wrapped(
                f"g{first.use}, an array conv{first.use} made in this pass, became W's own .grad. "
                f"The engine then offered that array to conv{second.use} (Function.grad_into), "
                f"whose kernel added g{second.use} into it: one buffer, no separate addition. "
                "That is safe only because nothing else can hold an array this pass created; "
                "every other sum is made out of place (accumulate), since an operation may hand "
                "one array to two inputs (see --break inplace).")
        else:
            lines += wrapped(f"The engine summed g{first.use} and g{second.use} into a new "
                             "array (accumulate, out of place).")
        return lines


def trace_backward(lesson: Lesson, entries: int = 6) -> TraceReport:
    """Run the lesson's backward pass with an observer and record every step of the walk.

    Args:
        lesson: the shared block, its input and upstream gradient (``make_lesson``).
        entries: how many entries of ``W`` the text shows.
    """
    W = lesson.weight
    leaves = leaf_labels(lesson.block)
    steps, contributions, terms = [], {}, []

    with module_nodes(lesson.block) as modules:
        def observe(fn, gxs):
            touched = [leaves[id(x)] for x, g in zip(fn.inputs, gxs)
                       if g is not None and x.creator is None and id(x) in leaves]
            step = TraceStep(len(steps) + 1, node_label(fn, modules), touched)
            for x, g in zip(fn.inputs, gxs):
                if x is W and g is not None:
                    before = steps_with_w[-1].w_grad if steps_with_w else None
                    step.use = USE_OF[modules[fn]]
                    step.w_grad = W.grad.copy()
                    # A kernel that added into the offered W.grad returns that very array.
                    step.in_place = before is not None and g is W.grad
                    step.contribution = step.w_grad - before if step.in_place else g.copy()
                    terms.append(f"g{step.use}")
                    step.terms = tuple(terms)
                    contributions[step.use] = step.contribution
                    steps_with_w.append(step)
            steps.append(step)

        steps_with_w = []
        lesson.backward(observer=observe)
    return TraceReport(steps=steps, contributions=contributions, grad=W.grad.copy(),
                       weight_shape=tuple(W.shape), entries=pick_entries(W.shape, entries))
