"""The whole training step as one CUDA graph (``minires train --cuda-graph``).

An eager step launches a few hundred kernels, each costing several microseconds of Python and
driver time; for a small network at batch 128 that time exceeds the GPU's. A CUDA graph
records the launches once and replays them with one call. :class:`GraphedTrainStep` wraps a
step function (``minires.train.train_step``) and replays it:

* **static inputs**: the graph reads the batch from two buffers it owns; each call copies the
  loader's batch into them first, outside the graph (the loader's augmentation, and the
  randomness it draws, stay outside too).
* **per-step scalars live in device memory**: a graph freezes kernel arguments, so the learning
  rate is a one-element device array the SGD kernel reads (``sgd_step`` takes an array as
  ``lr``); each call writes the current rate there before the replay.
* **nothing synchronises inside**: the step returns its loss and mistake count as device
  arrays; the caller sums them on the device and reads the sums once per epoch. Matrix products
  go through cuBLAS on minires' own handle (``minires.kernels.cuda.blas``), because CuPy's
  cuBLAS and cuRAND bindings raise while a stream captures.
* **memory**: everything the step allocates comes from a private memory pool, used only while
  warming up and capturing, so no later allocation can take an address the graph writes to.
  The pool keeps the step's working set (as PyTorch's graph pools do).
* **warm-up on the capture stream**: a couple of eager steps first compile the kernels, create
  the cuBLAS workspace and fill the private pool, so the capture itself allocates nothing new.
  They would train the model, so the parameters, momentum buffers and BatchNorm statistics are
  copied before and restored after: the first replayed step starts from the caller's state.
* **shapes**: the graph is captured for the first batch's shape; another batch (the smaller
  last batch of an epoch) runs eagerly, with the same parameters and buffers.

Streams: the caller's work (loading, augmentation, evaluation) stays on its current stream;
the graph runs on its own stream, which waits for the copies into the static buffers, and the
caller's stream waits for the graph before anything else touches the model or the buffers.
"""
from __future__ import annotations

from minires.backend import get_cupy
from minires.nn import Dropout

__all__ = ["GraphedTrainStep", "capture"]

#: Eager steps on the capture stream before the capture.
WARMUP_STEPS = 2


def capture(stream, fn):
    """Run ``fn()`` while ``stream`` (the current stream) records it; returns ``(graph,
    fn's result)``. A failure ends the capture before it propagates."""
    stream.begin_capture()
    try:
        result = fn()
    except BaseException:
        try:
            stream.end_capture()
        except Exception:  # the capture was invalidated by the failure itself
            pass
        raise
    return stream.end_capture(), result


def _state_arrays(model, optimizer) -> list:
    """The arrays a training step changes in place: parameters, momentum buffers, BatchNorm
    statistics."""
    return ([p.data for p in optimizer.params] + list(optimizer.momentum_buffers)
            + [b for b in model.buffers() if b is not None])


class GraphedTrainStep:
    """``step(model, optimizer, x, y)``, replayed from a CUDA graph.

    Call it exactly like ``step`` (it returns fresh device arrays ``(loss, mistakes)``); the
    first call captures the graph for that model, optimizer and batch shape.

    Args:
        step: the eager training step to capture (``minires.train.train_step``).
        warmup: eager steps on the capture stream before capturing (default
            :data:`WARMUP_STEPS`).
    """

    def __init__(self, step, warmup: int | None = None):
        self.step = step
        self.warmup = WARMUP_STEPS if warmup is None else int(warmup)
        self.graph = None

    def __call__(self, model, optimizer, x, y):
        if self.graph is None:
            self._capture(model, optimizer, x, y)
        if (model is not self.model or optimizer is not self.optimizer
                or x.shape != self.static_x.shape or y.shape != self.static_y.shape):
            return self.step(model, optimizer, x, y)  # a batch of another shape: eagerly
        return self._replay(x, y)

    # -- capture -------------------------------------------------------------------------
    def _capture(self, model, optimizer, x, y):
        cp = get_cupy()
        for module in model.modules():
            if isinstance(module, Dropout) and module.p > 0:
                raise ValueError("a CUDA graph replays every random draw it captured, so it "
                                 "cannot train a model with dropout; train without "
                                 "--cuda-graph")
        self.model, self.optimizer = model, optimizer
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.pool = cp.cuda.MemoryPool()
        self.static_x, self.static_y = cp.empty_like(x), cp.empty_like(y)
        self.lr = cp.empty((), dtype=optimizer.params[0].dtype)
        self._ready, self._done = (cp.cuda.Event(disable_timing=True) for _ in range(2))
        caller = cp.cuda.get_current_stream()
        self._fill(x, y)
        state = _state_arrays(model, optimizer)
        saved = [a.copy() for a in state]
        self._hand_over(caller, self.stream)
        with self.stream, cp.cuda.using_allocator(self.pool.malloc):
            for _ in range(self.warmup):
                self._run_step()
            self.graph, self.outputs = capture(self.stream, self._run_step)
            # After the capture (which runs nothing on a GPU), so that a capture that does run
            # the step, as the CPU emulator's does, is undone too.
            for a, before in zip(state, saved):
                a[...] = before
        self._hand_over(self.stream, caller)

    def _run_step(self):
        """The captured step: the static batch, the learning rate read from device memory."""
        rate, self.optimizer.lr = self.optimizer.lr, self.lr
        try:
            return self.step(self.model, self.optimizer, self.static_x, self.static_y)
        finally:
            self.optimizer.lr = rate

    # -- replay --------------------------------------------------------------------------
    def _fill(self, x, y):
        """Copy the batch and the current learning rate into the graph's buffers (on the
        caller's stream)."""
        self.static_x[...] = x
        self.static_y[...] = y
        self.lr.fill(self.optimizer.lr)

    def _hand_over(self, first, then):
        """Make stream ``then`` wait for the work queued so far on stream ``first``."""
        event = self._ready if then is self.stream else self._done
        first.record(event)
        then.wait_event(event)

    def _replay(self, x, y):
        caller = get_cupy().cuda.get_current_stream()
        self._fill(x, y)
        self._hand_over(caller, self.stream)
        self.graph.launch(self.stream)
        self._hand_over(self.stream, caller)
        loss, mistakes = self.outputs
        return loss.copy(), mistakes.copy()  # the next replay overwrites the graph's outputs
