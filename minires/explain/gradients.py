"""Where the gradient of a shared weight comes from: the table of ``minires explain``.

The shared block applies ``W`` twice::

    h = relu(bn1(conv1(x)))          conv1 applies W
    y = relu(bn2(conv2(h)) + x)      conv2 applies the same W

so ``W`` receives one gradient from each use, and its gradient is their sum. The table puts
side by side, for a few entries of ``W``:

* **use 1, use 2**: measured on an *untied copy* of the block, whose two convolutions have
  separate weights holding ``W``'s values; the gradient of each copy is what that use
  contributes (the engine's trace hands ``W`` the same two arrays, see ``--trace``);
* **use1+use2**: their sum;
* **engine**: ``W.grad`` after one backward pass through the shared block;
* **numerical**: central differences of the objective as ``W`` (both uses at once) moves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minires.explain.lesson import Lesson, make_lesson, untied_copy
from minires.explain.text import index_label, pick_entries, table, wrapped
from minires.explain.trace import trace_backward
from minires.gradcheck import numerical_grad


@dataclass
class SharedGradientReport:
    """The numbers of the table; every array is float64 and shaped like ``weight``.

    Attributes:
        weight: the shared weight ``(C, C, 3, 3)``.
        grad_use1, grad_use2: the gradients of the untied copy's conv1 and conv2 weights.
        grad_engine: ``W.grad`` after backward through the shared block.
        grad_numerical: central differences of the objective with respect to ``W``.
        trace_use1, trace_use2: the gradients the engine handed ``W`` from each use.
        input_shape: ``(N, C, H, W)`` of the block's input.
        entries: the flat indices of ``W`` that the table shows.
    """

    weight: np.ndarray
    grad_use1: np.ndarray
    grad_use2: np.ndarray
    grad_engine: np.ndarray
    grad_numerical: np.ndarray
    trace_use1: np.ndarray
    trace_use2: np.ndarray
    input_shape: tuple
    entries: list

    @property
    def grad_sum(self) -> np.ndarray:
        return self.grad_use1 + self.grad_use2

    @property
    def max_diff_engine(self) -> float:
        """``max |use1 + use2 - engine|``."""
        return float(np.abs(self.grad_sum - self.grad_engine).max())

    @property
    def max_diff_numerical(self) -> float:
        """``max |engine - numerical|``."""
        return float(np.abs(self.grad_engine - self.grad_numerical).max())

    @property
    def max_diff_trace(self) -> float:
        """The largest difference between a use's gradient in the untied copy and in the trace."""
        return float(max(np.abs(self.grad_use1 - self.trace_use1).max(),
                         np.abs(self.grad_use2 - self.trace_use2).max()))

    def text(self) -> list:
        N, C, H, W = self.input_shape
        shape = tuple(self.weight.shape)
        lines = [
            "The paper's shared residual block: minires.models.resnet.BasicBlock with "
            "share_convs=True,",
            f"as resnet(share=\"block\") builds it, in float64, on an input x of shape "
            f"({N}, {C}, {H}, {W}):",
            "    h = relu(bn1(conv1(x)))        conv1 applies W",
            "    y = relu(bn2(conv2(h)) + x)    conv2 applies the same W",
            f"block.conv1.weight is block.conv2.weight: ONE Parameter W {shape}; bn1 and bn2 "
            "stay two.",
            "Objective: L = mean(y * r) for a random r (all ones could hide index bugs), so "
            "backward",
            "starts from gy = dL/dy = r / y.size.",
            "",
            "How each column is obtained:",
            "  use 1, use 2  an untied copy of the block: conv1 and conv2 get separate weights, "
            "both",
            "                set to W's values; the gradient of each is what that use "
            "contributes",
            "  use1+use2     the sum of the two",
            "  engine        W.grad after one backward pass through the shared block",
            "  numerical     central differences of the objective as W (both uses at once) "
            "moves",
            "",
        ]
        columns = [self.grad_use1, self.grad_use2, self.grad_sum, self.grad_engine,
                   self.grad_numerical]
        rows = [[index_label(k, shape)] + [float(c.reshape(-1)[k]) for c in columns]
                for k in self.entries]
        lines += table(["W index", "use 1", "use 2", "use1+use2", "engine", "numerical"], rows)
        lines += [
            "",
            f"max |use1 + use2 - engine| = {self.max_diff_engine:.3e}   (the engine sums the "
            "two uses)",
            f"max |engine - numerical|   = {self.max_diff_numerical:.3e}   (and the sum is the "
            "true gradient)",
        ]
        lines += wrapped(
            f"The engine's own trace hands W the same two contributions as the untied copy "
            f"(largest difference {self.max_diff_trace:.1e}): see --trace. The optimizer then "
            f"steps W once (--steps); --break inplace|dedup|bn-twice shows what goes wrong "
            f"without the three places where sharing lives; --dot/--png draw the graph.")
        return lines


def explain_shared_gradient(lesson: Lesson | None = None, entries: int = 6, *,
                            channels: int = 2, size: int = 4,
                            seed: int = 0) -> SharedGradientReport:
    """Compute the per-use, engine and numerical gradients of the lesson's shared weight.

    Args:
        lesson: the block, input and upstream gradient; by default ``make_lesson(channels,
            size, seed=seed)``.
        entries: how many entries of ``W`` the table shows.
    The lesson's block keeps its values (its running statistics are restored after the many
    forward passes of the numerical gradient).
    """
    lesson = lesson if lesson is not None else make_lesson(channels, size, seed=seed)
    block, W = lesson.block, lesson.weight

    untied = untied_copy(block)
    lesson.backward(untied)
    use1, use2 = untied.conv1.weight.grad, untied.conv2.weight.grad

    trace = trace_backward(lesson)   # one backward pass of the shared block, watched
    state = block.state_dict()
    # W.data itself is moved, so each evaluation moves both uses at once.
    (numerical,) = numerical_grad(lambda _: lesson.forward(), [W.data], lesson.gy)
    block.load_state_dict(state)     # training-mode forwards moved the running statistics
    return SharedGradientReport(
        weight=W.data.copy(), grad_use1=use1, grad_use2=use2, grad_engine=trace.grad,
        grad_numerical=numerical, trace_use1=trace.contributions[1],
        trace_use2=trace.contributions[2], input_shape=lesson.x.shape,
        entries=pick_entries(W.shape, entries))
