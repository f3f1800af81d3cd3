"""The three classic weight-sharing bugs, switched on one at a time (``minires explain --break``).

Each lesson reruns part of the shared-block lesson with ONE bug switched on and prints the
wrong result next to the right one. The bugs live here, in small functions and one class
whose names start with ``wrong_`` / ``WrongBlock``, each marked as a deliberately wrong
TEACHING VARIANT; the library's real code path (the engine, ``Module.parameters``, ``SGD``,
``BasicBlock``) is only ever used for the right result.

* ``inplace``: gradients accumulated in place (``grad += g``) after storing the first one
  as it is (``grad = g``). ``Add.backward`` returns the same array for both inputs, so the
  ``+=`` also changes the other input's gradient: ``(x + x) + x`` gives 4 instead of 3.
  The engine's ``accumulate`` returns a new array instead.
* ``dedup``: parameters collected once per *name*: the shared weight is reached as
  ``conv1.weight`` and as ``conv2.weight``, so an optimizer given that list steps it twice,
  with two momentum buffers and weight decay applied twice. ``Module.parameters``
  de-duplicates by identity, and ``SGD`` refuses a list with a repeated Parameter.
* ``bn-twice``: one BatchNorm serving both uses. Its running statistics are updated twice
  per forward pass, from two different distributions, so in evaluation mode it normalises
  both uses with a blend that fits neither. ``BasicBlock`` keeps ``bn1`` and ``bn2``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import minires.functions as F
from minires import optim
from minires.autograd import Parameter, Tensor
from minires.explain.lesson import Lesson
from minires.explain.text import heading, index_label, pick_entries, table, wrapped
from minires.models.resnet import BasicBlock

BUGS = ("inplace", "dedup", "bn-twice")

#: The training defaults of ``minires train`` (He et al. 2016), used by the optimizer lessons.
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4
#: Training-mode forward passes in the bn-twice lesson: enough for the running statistics to
#: settle (momentum 0.1: 0.9**60 is about 0.002).
BN_FORWARDS = 60


@dataclass
class BugReport:
    """One bug's lesson: a title, what it shows (text lines) and the numbers behind it."""

    bug: str
    lines: list
    numbers: dict = field(default_factory=dict)

    def text(self) -> list:
        return self.lines


# -- inplace --------------------------------------------------------------------------------

def wrong_backward_accumulating_in_place(root) -> dict:
    """TEACHING VARIANT, DELIBERATELY WRONG. A backward pass like the engine's but with the
    classic accumulation ``grad = g`` for the first gradient, ``grad += g`` for the next.

    Returns ``{id(tensor): gradient}`` for every tensor of the graph (nothing is stored on the
    tensors themselves). Only single-output operations, as in ``(x + x) + x``.
    """
    functions, stack = [], [root.creator]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in functions:
            functions.append(fn)
            stack.extend(t.creator for t in fn.inputs)
    grads = {id(root): np.ones_like(root.data)}
    for fn in sorted(functions, key=lambda f: -f.generation):
        (out,) = [ref() for ref in fn.outputs]
        gxs = fn.backward(grads[id(out)])
        for x, gx in zip(fn.inputs, gxs if isinstance(gxs, tuple) else (gxs,)):
            if gx is None:
                continue
            if id(x) not in grads:
                grads[id(x)] = gx          # stores the array itself, which may be shared ...
            else:
                grads[id(x)] += gx         # ... and adds into it: THE BUG
    return grads


def inplace_lesson(x_value: float = 2.0) -> BugReport:
    """``(x + x) + x``: its derivative 3 by hand, 3 by the engine, 4 with in-place adds."""
    x = Parameter(np.array([x_value]))
    y = (x + x) + x
    wrong = float(wrong_backward_accumulating_in_place(y)[id(x)][0])
    x.grad = None
    y.backward()                                  # the engine: accumulate, out of place
    right = float(x.grad[0])
    lines = heading("--break inplace: gradients accumulated in place")
    lines += [f"y = (x + x) + x with x = {x_value:g}: y = {float(y.data[0]):g}, and by hand "
              "dy/dx = 3.", "",
              f"  wrong (grad = g, then grad += g)         dy/dx = {wrong:g}",
              f"  right (minires: accumulate, a new array) dy/dx = {right:g}", ""]
    lines += wrapped(
        "Why: Add.backward returns ONE array for both of its inputs (gy, gy). The wrong walk "
        "stores that array as the gradient of (x + x) AND of x, then adds into it in place: "
        "x.grad += g doubles the very array that (x + x) still holds, and the two "
        "contributions of the inner x + x, being that array, double it again.")
    lines += wrapped(
        "minires/autograd/engine.py, accumulate, returns current + g, a new array, and a leaf "
        "copies a gradient it would share (tests/test_autograd.py, "
        "test_aliasing_regression_on_arrays). The one addition in place it allows is into a "
        "weight's .grad that the same backward pass created, which nothing else can hold (see "
        "--trace). The wrong walk is the teaching variant wrong_backward_accumulating_in_place "
        "in minires/explain/bugs.py.")
    return BugReport("inplace", lines, {"wrong": wrong, "right": right, "by_hand": 3.0})


# -- dedup ----------------------------------------------------------------------------------

def wrong_parameters_by_name(module) -> list:
    """TEACHING VARIANT, DELIBERATELY WRONG. ``(name, Parameter)`` for every NAME a parameter
    is reachable under: a shared weight appears once per use."""
    found = []
    for names in module.parameter_uses().values():
        for name in names:
            owner = module
            for part in name.split("."):
                owner = getattr(owner, part)
            found.append((name, owner))
    return found


def wrong_sgd_step(entries: list, arrays: dict, buffers: list, lr: float, momentum: float,
                   weight_decay: float) -> None:
    """TEACHING VARIANT, DELIBERATELY WRONG only in what it is given: one SGD step (PyTorch's
    formula, as ``minires.optim.SGD``) over ``entries`` ``[(name, Parameter), ...]`` WITHOUT
    checking for repeats, with one momentum buffer per entry (``buffers``, a list). The values
    live in ``arrays`` ``{id(Parameter): array}``, so a repeated Parameter moves twice."""
    for (_, param), buffer in zip(entries, buffers):
        p = arrays[id(param)]
        d = param.grad + weight_decay * p
        buffer *= momentum
        buffer += d
        p -= lr * buffer


def dedup_lesson(lesson: Lesson, entries: int = 4, steps: int = 2) -> BugReport:
    """Step the shared weight with the right optimizer and with a name-collected list.

    Both optimizers see the same gradient (one backward pass of the lesson) at every step, so
    that only the optimizer differs.
    """
    block, W = lesson.block, lesson.weight
    lesson.backward()
    gradients = {id(p): p.grad.copy() for p in block.parameters()}
    start = {id(p): p.data.copy() for p in block.parameters()}
    by_name = wrong_parameters_by_name(block)
    try:
        optim.SGD(by_name, lr=LR)
        refusal = "(not refused!)"
    except ValueError as exc:
        refusal = str(exc)

    # Right: the library's own SGD over block.parameters(), each Parameter once.
    right = optim.SGD(block.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    index = right.params.index(W)
    for _ in range(steps):
        for p in block.parameters():
            p.grad = gradients[id(p)]
        right.step()
    right_W, right_buffer = W.data.copy(), right.momentum_buffers[index].copy()

    # Wrong: the same formula over the list collected by name, on copies of the values.
    arrays = {key: value.copy() for key, value in start.items()}
    buffers = [np.zeros_like(p.data) for _, p in by_name]
    for _ in range(steps):
        wrong_sgd_step(by_name, arrays, buffers, LR, MOMENTUM, WEIGHT_DECAY)
    wrong_W = arrays[id(W)]
    W_buffers = [b for (_, p), b in zip(by_name, buffers) if p is W]

    for p in block.parameters():                    # leave the lesson's block as it was
        p.data[...] = start[id(p)]
    W0, g = start[id(W)], gradients[id(W)]
    moved_right = float(np.linalg.norm(right_W - W0))
    moved_wrong = float(np.linalg.norm(wrong_W - W0))
    shown = pick_entries(W.shape, entries)
    rows = [[index_label(k, W.shape), float(W0.flat[k]), float(g.flat[k]),
             float(right_W.flat[k]), float(wrong_W.flat[k]), float(right_buffer.flat[k]),
             float(W_buffers[0].flat[k]), float(W_buffers[1].flat[k])] for k in shown]
    names = [name for name, p in by_name if p is W]
    lines = heading("--break dedup: a shared weight collected twice")
    lines += wrapped(
        f"Collected once per name (the teaching variant wrong_parameters_by_name), the "
        f"block's parameters are {len(by_name)} entries for {len(right.params)} Parameters: W "
        f"appears as {' and '.join(names)}. minires.optim.SGD refuses such a list:")
    lines += wrapped(f"ValueError: {refusal}", indent="  ")
    lines += [""] + wrapped(
        f"The teaching variant wrong_sgd_step steps the list anyway. {steps} steps, with the "
        f"same gradient g at each so that only the optimizer differs; lr {LR:g}, momentum "
        f"{MOMENTUM:g}, weight decay {WEIGHT_DECAY:g}; an update is d = g + wd*W, "
        f"v = momentum*v + d, W = W - lr*v. Right (block.parameters(), W once): each step "
        f"updates W and its one buffer v once. Wrong: each step updates W twice, each time "
        f"through its own buffer and with its own weight decay.") + [""]
    lines += table(["W index", "W before", "g", "right W", "wrong W", "right v", "wrong v1",
                    "wrong v2"], rows, width=10)
    lines += [""] + wrapped(
        f"After {steps} steps W moved {moved_right:.4f} (right) and {moved_wrong:.4f} "
        f"(wrong): {moved_wrong / moved_right:.2f} times as far. Each wrong buffer holds as "
        f"much velocity as the right one, so together they push twice as hard, and weight "
        f"decay was applied {2 * steps} times instead of {steps}. (minires/nn/module.py, "
        f"named_parameters; minires/optim.py, SGD)")
    return BugReport("dedup", lines, {
        "weight_before": W0, "gradient": g, "right_weight": right_W, "wrong_weight": wrong_W,
        "right_buffer": right_buffer, "wrong_buffers": W_buffers, "refusal": refusal,
        "entries_by_name": len(by_name), "parameters": len(right.params), "steps": steps})


# -- bn-twice -------------------------------------------------------------------------------

class WrongBlockWithOneBatchNorm(BasicBlock):
    """TEACHING VARIANT, DELIBERATELY WRONG: the shared block with ONE BatchNorm (bn1) serving
    both uses; bn2 exists but is never called."""

    def forward(self, x):
        h = self.bn1(self.conv1(x), relu=True)
        y = self.bn1(self.conv2(h))                 # THE BUG: bn1 again, for use 2
        return F.relu(y + x)


def _running_means_after(block, lesson, forwards):
    """Run ``forwards`` training-mode passes of ``block``; return the batch means that each
    BatchNorm call saw (per call, per channel) and how often each module was called."""
    seen, calls = [], {"bn1": 0, "bn2": 0}

    def hook_for(name):
        def hook(module, inputs, output):
            calls[name] += 1
            seen.append((name, inputs[0].data.mean(axis=(0, 2, 3))))
        return hook

    handles = [getattr(block, name).register_forward_hook(hook_for(name)) for name in calls]
    try:
        block.train()
        for _ in range(forwards):
            block(Tensor(lesson.x))
    finally:
        for handle in handles:
            handle.remove()
    return seen[:2], calls


def bn_twice_lesson(lesson: Lesson, forwards: int = BN_FORWARDS) -> BugReport:
    """The shared block with one BatchNorm per use (right) and one for both (wrong): running
    statistics after one and after ``forwards`` training passes, and what eval mode does."""
    # The lesson's parameters, and fresh running statistics (mean 0, variance 1).
    state = {name: p.data for name, p in lesson.block.named_parameters()}
    right = BasicBlock(lesson.x.shape[1], lesson.x.shape[1], share_convs=True,
                       rng=np.random.default_rng(0), dtype=np.float64)
    wrong = WrongBlockWithOneBatchNorm(lesson.x.shape[1], lesson.x.shape[1], share_convs=True,
                                       rng=np.random.default_rng(0), dtype=np.float64)
    right.load_state_dict(state, strict=False)
    wrong.load_state_dict(state, strict=False)

    first_right, calls_right = _running_means_after(right, lesson, 1)
    right_once = (right.bn1.running_mean.copy(), right.bn2.running_mean.copy())
    first_wrong, calls_wrong = _running_means_after(wrong, lesson, 1)
    wrong_once = wrong.bn1.running_mean.copy()
    _running_means_after(right, lesson, forwards - 1)
    _running_means_after(wrong, lesson, forwards - 1)

    gaps = {}
    for name, block in (("right", right), ("wrong", wrong)):
        train_y = block.train()(Tensor(lesson.x)).data
        eval_y = block.eval()(Tensor(lesson.x)).data
        gaps[name] = float(np.abs(eval_y - train_y).max())
    m1, m2 = first_right[0][1], first_right[1][1]
    C = len(m1)
    rows = [[f"channel {c}", float(m1[c]), float(m2[c]), float(right_once[0][c]),
             float(right_once[1][c]), float(wrong_once[c])] for c in range(C)]
    settled = [[f"channel {c}", float(m1[c]), float(m2[c]), float(right.bn1.running_mean[c]),
                float(right.bn2.running_mean[c]), float(wrong.bn1.running_mean[c])]
               for c in range(C)]
    lines = heading("--break bn-twice: one BatchNorm for both uses")
    lines += wrapped(
        f"The teaching variant WrongBlockWithOneBatchNorm calls bn1 for both convolutions: in "
        f"one training forward pass bn1 is called {calls_wrong['bn1']} times (right: bn1 "
        f"{calls_right['bn1']}, bn2 {calls_right['bn2']}), and every call updates its "
        f"running statistics: running_mean = 0.9 * running_mean + 0.1 * batch mean, from 0. "
        f"m1 and m2 are the batch means of what use 1 and use 2 normalise (the outputs of "
        f"conv1 and conv2).")
    header = ["running_mean", "m1", "m2", "right bn1", "right bn2", "wrong bn1"]
    lines += ["", "After one forward pass:"] + table(header, rows, width=10)
    lines += wrapped("right: bn1 = 0.1*m1 and bn2 = 0.1*m2. wrong: the one BatchNorm holds "
                     "0.9*(0.1*m1) + 0.1*m2, a blend of two distributions, moved twice per "
                     "step.", indent="  ")
    lines += ["", f"After {forwards} forward passes on the same batch:"]
    lines += table(header, settled, width=10)
    lines += wrapped("right: each BatchNorm has settled on the mean of its own use; wrong: on "
                     "a blend that fits neither.", indent="  ")
    lines += [""] + wrapped(
        "So in evaluation mode, which normalises with the running statistics, the wrong block "
        "no longer computes what it computed in training:")
    lines += [f"  max |eval output - training output|: right {gaps['right']:.4f}, "
              f"wrong {gaps['wrong']:.4f}"]
    lines += wrapped("(right is not exactly 0: running_var holds the unbiased variance, the "
                     "batch is normalised with the biased one)", indent="  ")
    lines += wrapped("The paper shares only the convolution weight; BasicBlock keeps bn1 and "
                     "bn2 (minires/models/resnet.py).")
    return BugReport("bn-twice", lines, {
        "m1": m1, "m2": m2, "right_once": right_once, "wrong_once": wrong_once,
        "calls_right": calls_right, "calls_wrong": calls_wrong, "eval_gap": gaps,
        "right_settled": (right.bn1.running_mean.copy(), right.bn2.running_mean.copy()),
        "wrong_settled": wrong.bn1.running_mean.copy()})


def show_bug(bug: str, lesson: Lesson, entries: int = 4) -> BugReport:
    """The lesson of ``bug`` (one of :data:`BUGS`)."""
    if bug == "inplace":
        return inplace_lesson()
    if bug == "dedup":
        return dedup_lesson(lesson, entries)
    if bug == "bn-twice":
        return bn_twice_lesson(lesson)
    raise ValueError(f"bug must be one of {', '.join(BUGS)}, got {bug!r}")
