"""CuPy's streams, events, memory pools and CUDA graphs, faked for the CPU emulator, so that
``minires.cuda_graph`` runs end to end without a GPU.

What a fake capture checks. :func:`fake_capture` stands in for ``minires.cuda_graph.capture``:
it runs the step with ``EmulatedDeviceArray.capturing`` set, so that everything a capturing
stream forbids raises (a host read of a device value, a host-to-device copy, ``cupy.matmul``
and CuPy's other cuBLAS/cuRAND calls), and it records the kernel launches and cuBLAS calls. A
replay of the :class:`FakeGraph` runs the step again under the same rules and compares its
launches with the captured ones: the same kernels, launch shapes, scalar arguments and cuBLAS
parameters. A real graph replays the captured arguments, so anything that changes from step to
step (the learning rate) must reach the kernels through device memory; a step that passed it
as a kernel argument would launch differently here and fail.

What it cannot check: a real replay reuses the captured addresses, while this one runs the
Python step again with fresh NumPy arrays. That the graph reads only buffers that outlive it
is the design's part (static inputs, a private memory pool); the GPU test compares real
replays with eager steps.
"""
from __future__ import annotations

import contextlib
import types

import numpy as np

from cuda_emulator import EmulatedDeviceArray

_streams = []  # the stack of streams made current with ``with stream:``


class FakeEvent:
    def __init__(self, disable_timing=False):
        self.recorded_on = None


class FakeStream:
    def __init__(self, non_blocking=False):
        self.non_blocking = non_blocking
        self.ptr = id(self)
        self.waited_for = []   # events this stream was made to wait for

    def __enter__(self):
        _streams.append(self)
        return self

    def __exit__(self, *exc):
        _streams.pop()
        return False

    def record(self, event=None):
        event = event if event is not None else FakeEvent()
        event.recorded_on = self
        return event

    def wait_event(self, event):
        assert event.recorded_on is not None, "waiting for an event that was never recorded"
        self.waited_for.append((event, event.recorded_on))

    def synchronize(self):
        EmulatedDeviceArray.host_read("Stream.synchronize()")

    def begin_capture(self):
        raise AssertionError("the fake graphs capture through graph_emulator.fake_capture")


NULL_STREAM = FakeStream()


def get_current_stream():
    return _streams[-1] if _streams else NULL_STREAM


class FakeMemoryPool:
    """Holds nothing: the emulator's arrays are NumPy's."""

    def malloc(self, size):
        raise AssertionError("the emulator's arrays are NumPy arrays; nothing allocates here")

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


@contextlib.contextmanager
def using_allocator(allocator=None):
    yield


def install(fake_cupy) -> None:
    """Give an emulator ``cupy`` (``cuda_emulator.fake_cupy``) the stream API minires uses."""
    fake_cupy.cuda = types.SimpleNamespace(
        Stream=FakeStream, Event=FakeEvent, MemoryPool=FakeMemoryPool,
        using_allocator=using_allocator, get_current_stream=get_current_stream,
        set_allocator=lambda allocator=None: None)
    default_pool = FakeMemoryPool()
    fake_cupy.get_default_memory_pool = lambda: default_pool


def _value(a):
    """How an argument enters the comparison of launches: a scalar by value, a struct by its
    fields that are not addresses, an array by dtype and shape."""
    if isinstance(a, np.ndarray) and a.dtype.fields is not None:
        return tuple(a[name].tobytes() for name in a.dtype.names
                     if a[name].dtype != np.uint64)
    if isinstance(a, np.ndarray):
        return ("array", a.dtype.str, a.shape)
    return (type(a).__name__, a.item() if hasattr(a, "item") else a)


class _Recording:
    """The kernel launches and cuBLAS calls made while it is open."""

    def __init__(self, library):
        self.library = library

    def __enter__(self):
        self.start = (len(self.library.launches), len(self.library.cublas.calls))
        EmulatedDeviceArray.capturing = True
        return self

    def __exit__(self, *exc):
        EmulatedDeviceArray.capturing = False
        launches = self.library.launches[self.start[0]:]
        args = self.library.launched_args[self.start[0]:]
        self.launches = [(name, grid, block, tuple(_value(a) for a in call_args))
                         for (name, grid, block), (_, call_args) in zip(launches, args)]
        self.cublas = self.library.cublas.calls[self.start[1]:]
        return False


class FakeGraph:
    """A captured step, replayed by running it again under capture rules. As a real graph
    writes its outputs where the capture put them, a replay copies its results into the arrays
    the capture returned."""

    def __init__(self, fn, stream, library, captured, outputs):
        self.fn, self.stream, self.library, self.captured = fn, stream, library, captured
        self.outputs = outputs
        self.replays = 0

    def launch(self, stream=None):
        assert stream is self.stream, "the graph runs on its own stream"
        with self.stream, _Recording(self.library) as replay:
            results = self.fn()
            for output, result in zip(self.outputs, results):
                output[...] = result
        assert replay.launches == self.captured.launches, \
            "a replay launched other kernels or arguments than the capture"
        assert replay.cublas == self.captured.cublas, "a replay called cuBLAS differently"
        self.replays += 1


def fake_capture(library, graphs: list):
    """A stand-in for ``minires.cuda_graph.capture`` on the emulator ``library``; every graph
    it makes is appended to ``graphs``."""
    def capture(stream, fn):
        assert get_current_stream() is stream, "capture on the current stream"
        with _Recording(library) as captured:
            result = fn()
        assert captured.launches, "the captured step launched no kernel"
        graph = FakeGraph(fn, stream, library, captured, result)
        graphs.append(graph)
        return graph, result
    return capture
