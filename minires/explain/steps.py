"""Optimizer steps of the shared weight, with the numbers (``minires explain --steps``).

Training steps on the lesson's block with the library's own ``SGD`` over
``block.parameters()``: each step runs forward and backward (``W.grad = g1 + g2``, the sum
of both uses) and one optimizer step, which updates ``W`` and its ONE momentum buffer once::

    d = g + weight_decay * W          g = W.grad
    v = momentum * v + d              v starts at zero: the first step sets v = d
    W = W - lr * v

The second step shows the momentum buffer carrying the first step's velocity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minires import optim
from minires.explain.bugs import LR, MOMENTUM, WEIGHT_DECAY
from minires.explain.lesson import Lesson
from minires.explain.text import heading, index_label, pick_entries, table, wrapped


@dataclass
class StepRecord:
    """One training step of the shared weight: every array is shaped like ``W``."""

    weight_before: np.ndarray
    grad: np.ndarray
    buffer_before: np.ndarray
    buffer_after: np.ndarray
    weight_after: np.ndarray


@dataclass
class StepsReport:
    """The steps, the optimizer's settings and which entries of ``W`` the text shows."""

    steps: list
    lr: float
    momentum: float
    weight_decay: float
    parameters: int
    names: int
    entries: list
    weight_shape: tuple

    def text(self) -> list:
        lines = heading("Optimizer steps of the shared weight (minires/optim.py, SGD)")
        lines += wrapped(
            f"SGD(block.parameters(), lr={self.lr:g}, momentum={self.momentum:g}, "
            f"weight_decay={self.weight_decay:g}). The block's {self.names} parameter names "
            f"hold {self.parameters} Parameters and parameters() yields each once, so W has ONE "
            f"momentum buffer v, and each step updates W and v once:")
        lines += ["    d = g + wd*W;   v = momentum*v + d;   W = W - lr*v"]
        lines += wrapped("where g = W.grad = g1 + g2, the sum of both uses, recomputed by a "
                         "forward and a backward pass before each step.")
        header = ["W index", "W before", "g = W.grad", "wd*W", "v before", "v after",
                  "W after"]
        for number, step in enumerate(self.steps, start=1):
            lines += ["", f"step {number}:"]
            rows = [[index_label(k, self.weight_shape), float(step.weight_before.flat[k]),
                     float(step.grad.flat[k]),
                     f"{self.weight_decay * step.weight_before.flat[k]:.3e}",
                     float(step.buffer_before.flat[k]), float(step.buffer_after.flat[k]),
                     float(step.weight_after.flat[k])] for k in self.entries]
            lines += table(header, rows, width=11)
        lines += [""] + wrapped("Step 1 starts from v = 0, so v = d; at step 2, v = momentum * "
                                "(step 1's v) + d: the momentum carries the first step on.")
        return lines


def explain_steps(lesson: Lesson, steps: int = 2, entries: int = 4, lr: float = LR,
                  momentum: float = MOMENTUM, weight_decay: float = WEIGHT_DECAY) -> StepsReport:
    """Take ``steps`` training steps of the lesson's block (objective ``sum(y * gy)``) with
    ``minires.optim.SGD`` and record the shared weight and its momentum buffer at each.

    The lesson's block is left as it was.
    """
    block, W = lesson.block, lesson.weight
    state = block.state_dict()
    optimizer = optim.SGD(block.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    index = optimizer.params.index(W)
    records = []
    for _ in range(steps):
        lesson.backward()
        before = (W.data.copy(), optimizer.momentum_buffers[index].copy())
        optimizer.step()
        records.append(StepRecord(before[0], W.grad.copy(), before[1],
                                  optimizer.momentum_buffers[index].copy(), W.data.copy()))
    block.zero_grad()
    block.load_state_dict(state)
    return StepsReport(records, lr, momentum, weight_decay, parameters=len(optimizer.params),
                       names=sum(len(names) for names in block.parameter_uses().values()),
                       entries=pick_entries(W.shape, entries), weight_shape=tuple(W.shape))
