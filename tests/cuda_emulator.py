"""Run minires' CUDA kernels on the CPU, for machines without a GPU.

The ``.cu`` sources are compiled as ordinary C++ (g++) after a small shim that defines what CUDA
provides: ``threadIdx``/``blockIdx`` (thread-local), ``__syncthreads`` (a block-wide
``std::barrier``), warp shuffles (a per-warp exchange through memory between two barriers) and
``__shared__`` (a function-local ``static``, shared by the block's threads; blocks run one after
another). A kernel that synchronises runs one OS thread per CUDA thread of a block, so barriers
and shuffles behave as on a GPU for the kernels' purposes, including threads that return early;
a kernel that never synchronises runs its threads one after another.

:func:`fake_cupy` returns a stand-in ``cupy`` module: NumPy plus a ``RawModule`` whose kernels run
on the emulator. Installed as ``sys.modules["cupy"]``, it lets the real Python wrappers in
``minires.kernels.cuda`` run end to end on the CPU: launch shapes, argument order, dtypes and the
explicit ``np.int32``/``np.float32`` scalars are all checked, and arrays made by ``empty`` carry
guard zones that catch out-of-bounds writes.

Not a GPU: memory is coherent and threads are fair, so races that only a real GPU shows are not
found here, and nothing is timed. The GPU tests are still the ground truth.
"""
from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np

SHIM = r"""
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
static dim3 gridDim, blockDim;
static thread_local dim3 threadIdx, blockIdx;
static std::barrier<>* emu_block_barrier = nullptr;
static std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;
static unsigned long long emu_slots[1024];

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline double __longlong_as_double(long long i) {
    double d; std::memcpy(&d, &i, sizeof d); return d;
}

template <typename T> T emu_shuffle(T v, unsigned source_lane) {
    const unsigned t = threadIdx.x, warp = t >> 5;
    std::memcpy(&emu_slots[t], &v, sizeof(T));
    emu_warp_barriers[warp]->arrive_and_wait();
    T r = v;
    if (source_lane < 32 && warp * 32 + source_lane < blockDim.x) {
        std::memcpy(&r, &emu_slots[warp * 32 + source_lane], sizeof(T));
    }
    emu_warp_barriers[warp]->arrive_and_wait();
    return r;
}
template <typename T> T __shfl_down_sync(unsigned, T v, int offset) {
    return emu_shuffle(v, (threadIdx.x & 31u) + offset);
}
template <typename T> T __shfl_xor_sync(unsigned, T v, int mask) {
    return emu_shuffle(v, (threadIdx.x & 31u) ^ mask);
}

// Kernels without barriers or shuffles run their threads one after another on this thread.
template <typename F> static void emu_launch_serial(unsigned grid, unsigned block, F body) {
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        for (unsigned t = 0; t < block; ++t) {
            blockIdx.x = b;
            threadIdx.x = t;
            body();
        }
    }
}

template <typename F> static void emu_launch(unsigned grid, unsigned block, F body) {
    gridDim.x = grid;
    blockDim.x = block;
    // One OS thread per CUDA thread of a block, reused for every block in turn. Each block
    // gets fresh barriers (a thread that returned early was dropped from the old ones); the
    // two waits on `between` make sure nobody still uses them while thread 0 replaces them.
    std::unique_ptr<std::barrier<>> block_barrier;
    std::barrier<> between(block);
    auto fresh_barriers = [&] {
        block_barrier = std::make_unique<std::barrier<>>(block);
        emu_block_barrier = block_barrier.get();
        emu_warp_barriers.clear();
        for (unsigned w = 0; w * 32 < block; ++w) {
            const unsigned lanes = block - w * 32 < 32 ? block - w * 32 : 32;
            emu_warp_barriers.push_back(std::make_unique<std::barrier<>>(lanes));
        }
    };
    fresh_barriers();
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; ++t) {
        threads.emplace_back([=, &between, &fresh_barriers] {
            for (unsigned b = 0; b < grid; ++b) {
                blockIdx.x = b;
                threadIdx.x = t;
                body();
                // An exited thread no longer takes part in barriers, as on the GPU.
                emu_warp_barriers[t >> 5]->arrive_and_drop();
                emu_block_barrier->arrive_and_drop();
                between.arrive_and_wait();
                if (t == 0) fresh_barriers();
                between.arrive_and_wait();
            }
        });
    }
    for (auto& th : threads) th.join();
}
"""

_SIGNATURE = re.compile(r"template\s*<typename T>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)")
#: What ``T`` becomes in each instantiation the loader asks for (``kernel<float>``...).
INSTANCES = ("float", "double")

# C parameter type -> what the argument must be: ("array", dtype) or ("scalar", numpy type).
_PARAM_TYPES = {
    "float*": ("array", np.float32), "double*": ("array", np.float64),
    "long long*": ("array", np.int64), "int*": ("array", np.int32),
    "int": ("scalar", np.int32), "float": ("scalar", np.float32),
    "double": ("scalar", np.float64),
}
_CTYPES = {np.int32: ctypes.c_int, np.float32: ctypes.c_float, np.float64: ctypes.c_double}


def kernel_signatures(source: str) -> dict:
    """``{name expression: [(C type, parameter name), ...]}`` for both instantiations
    (``"im2col<float>"``, ``"im2col<double>"``) of every ``template <typename T> __global__``
    kernel in ``source``; the C type has ``const`` removed, ``T`` replaced and ``*`` attached."""
    kernels = {}
    for name, params in _SIGNATURE.findall(source):
        for instance in INSTANCES:
            parsed = []
            for p in params.split(","):
                p = " ".join(p.replace("const ", "").replace("*", " * ").split())
                ctype, pname = p.rsplit(" ", 1)
                ctype = " ".join(instance if word == "T" else word for word in ctype.split())
                parsed.append((ctype.replace(" *", "*"), pname))
            kernels[f"{name}<{instance}>"] = parsed
    return kernels


_COOPERATIVE = re.compile(r"__syncthreads|__shfl|block_sum|warp_sum|warp_max")


def cooperative_kernels(source: str) -> set:
    """Instantiations of kernels whose threads wait for each other (barriers, shuffles): they
    need one OS thread per CUDA thread."""
    found = set()
    for name, _ in _SIGNATURE.findall(source):
        body = re.search(rf"__global__\s+void\s+{name}\s*\(.*?\n\}}\n", source, re.DOTALL)
        if body is None or _COOPERATIVE.search(body.group(0)):
            found |= {f"{name}<{instance}>" for instance in INSTANCES}  # when in doubt: threads
    return found


def _symbol(expression: str) -> str:
    """A C identifier for a name expression: ``im2col<float>`` -> ``im2col_float``."""
    return expression.replace("<", "_").replace(">", "")


def _launcher(expression, params, cooperative: bool) -> str:
    decl = ", ".join(f"{'void*' if t.endswith('*') else t} {n}" for t, n in params)
    call = ", ".join(f"({t}){n}" if t.endswith("*") else n for t, n in params)
    launch = "emu_launch" if cooperative else "emu_launch_serial"
    return (f'extern "C" void launch_{_symbol(expression)}(unsigned grid, unsigned block, '
            f"{decl}) {{\n    {launch}(grid, block, [=] {{ {expression}({call}); }});\n}}\n")


def compiler_available() -> bool:
    return shutil.which("g++") is not None


class EmulatedLibrary:
    """Every kernel of the given sources compiled for the CPU into one shared library."""

    def __init__(self, sources: dict, build_dir: Path):
        """``sources``: ``{name: NVRTC source text}`` (as ``minires.kernels.cuda.source``)."""
        self.signatures, self.cooperative = {}, set()
        parts = [SHIM]
        for name in sorted(sources):
            parts.append(f"// ---- {name}\n{sources[name]}")
            self.signatures.update(kernel_signatures(sources[name]))
            self.cooperative |= cooperative_kernels(sources[name])
        parts += [_launcher(n, p, n in self.cooperative) for n, p in self.signatures.items()]
        text = "\n".join(parts)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        build_dir.mkdir(parents=True, exist_ok=True)
        lib = build_dir / f"emulated_{digest}.so"
        if not lib.exists():
            cpp = build_dir / f"emulated_{digest}.cpp"
            cpp.write_text(text)
            cmd = ["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
                   "-Wall", "-Werror", "-Wno-unused-function", "-Wno-unused-variable",
                   str(cpp), "-o", str(lib)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"g++ failed on the emulated kernels:\n{out.stderr}")
        self.lib = ctypes.CDLL(str(lib))
        self.launches = []  # (kernel name, grid, block) of every launch, for tests to inspect

    def launch(self, name, grid, block, args):
        """Launch kernel ``name`` (a name expression such as ``im2col<float>``), checking each
        argument against the C signature exactly as a
        GPU would need it (arrays of the right dtype, scalars of the right width)."""
        params = self.signatures[name]
        if len(args) != len(params):
            raise TypeError(f"{name} takes {len(params)} arguments, got {len(args)}")
        (g,), (b,) = tuple(grid), tuple(block)
        if not (1 <= b <= 1024 and g >= 1):
            raise ValueError(f"{name}: invalid launch grid={grid} block={block}")
        converted, argtypes = [], [ctypes.c_uint, ctypes.c_uint]
        for (ctype, pname), a in zip(params, args):
            kind, want = _PARAM_TYPES[ctype]
            if kind == "array":
                if not isinstance(a, np.ndarray) or a.dtype != want:
                    raise TypeError(f"{name}: {pname} must be a {np.dtype(want)} array, got "
                                    f"{type(a).__name__} {getattr(a, 'dtype', '')}")
                if not a.flags.c_contiguous:
                    raise TypeError(f"{name}: {pname} must be C-contiguous")
                converted.append(ctypes.c_void_p(a.ctypes.data))
                argtypes.append(ctypes.c_void_p)
            else:
                if type(a) is not want:
                    raise TypeError(f"{name}: {pname} must be passed as {want.__name__}, got "
                                    f"{type(a).__name__} (CuPy would pass the wrong width)")
                converted.append(_CTYPES[want](a))
                argtypes.append(_CTYPES[want])
        fn = getattr(self.lib, f"launch_{_symbol(name)}")
        fn.argtypes, fn.restype = argtypes, None
        self.launches.append((name, g, b))
        fn(g, b, *converted)


GUARD = 64                  # elements of guard zone on each side of an array made by ``empty``
_SENTINEL = {np.dtype(np.float32): np.float32(-7.25e30), np.dtype(np.float64): -7.25e300,
             np.dtype(np.int64): -7_250_000_000}


class GuardedAllocator:
    """Hands out arrays that sit between two guard zones filled with a sentinel value."""

    def __init__(self):
        self.blocks = []

    def empty(self, shape, dtype=np.float64):
        dtype = np.dtype(dtype)
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64))
        sentinel = _SENTINEL.get(dtype, 0)
        buf = np.full(n + 2 * GUARD, sentinel, dtype=dtype)
        self.blocks.append((buf, n, sentinel))
        return buf[GUARD:GUARD + n].reshape(shape)

    def check(self):
        """Raise AssertionError if any kernel wrote outside an array it was given."""
        for buf, n, sentinel in self.blocks:
            guards = np.concatenate([buf[:GUARD], buf[GUARD + n:]])
            assert (guards == sentinel).all(), "a kernel wrote outside its output array"


class EmulatedDeviceArray(np.ndarray):
    """A NumPy array that minires takes for a CuPy one (``minires.backend.is_cuda_array`` looks
    at the type's module), so the library's CUDA branches run, on the emulator. NumPy keeps the
    subclass through arithmetic, so whole forward and backward passes stay "on the device"."""

    def get(self):
        """Like ``cupy.ndarray.get``: a plain NumPy copy."""
        return np.array(self)

    @property
    def data(self):
        """Like ``cupy.ndarray.data`` (a ``cupy.cuda.MemoryPointer``), not a memoryview:
        ``minires.backend`` looks at ``getattr(a, "data", a)`` to tell Tensors from arrays."""
        return EmulatedMemoryPointer(self)


class EmulatedMemoryPointer:
    def __init__(self, array):
        self.array = array


EmulatedDeviceArray.__module__ = EmulatedMemoryPointer.__module__ = "cupy_emulated"


def to_emulated_device(array):
    """A copy of ``array`` as an :class:`EmulatedDeviceArray`."""
    return np.array(array).view(EmulatedDeviceArray)


def fake_cupy(library: EmulatedLibrary, allocator: GuardedAllocator):
    """A ``cupy`` stand-in: NumPy's functions, returning :class:`EmulatedDeviceArray`, and a
    ``RawModule`` whose kernels ``library`` runs. ``empty``/``empty_like`` (what the kernel
    wrappers allocate outputs with) hand out guarded arrays. It also serves as the array module
    ``xp`` of emulated arrays, so that ``xp.asarray`` and friends keep data "on the device"."""
    fake = types.ModuleType("cupy")
    fake.ndarray = np.ndarray

    def on_device(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            return out.view(EmulatedDeviceArray) if type(out) is np.ndarray else out
        return wrapped

    def module_getattr(name):
        value = getattr(np, name)
        return on_device(value) if callable(value) and not isinstance(value, type) else value

    fake.__getattr__ = module_getattr  # PEP 562: everything else comes from NumPy

    def empty(shape, dtype=np.float64):
        return allocator.empty(shape, dtype).view(EmulatedDeviceArray)

    fake.empty = empty
    fake.empty_like = lambda a, dtype=None: empty(a.shape, dtype or a.dtype)
    fake.asnumpy = lambda a: np.array(a)

    class RawKernel:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args):
            library.launch(self.name, grid, block, args)

    class RawModule:
        """Like CuPy's: only the instantiations named in ``name_expressions`` exist."""

        def __init__(self, code, options=(), name_expressions=()):
            self.code, self.options = code, tuple(options)
            self.names = set(kernel_signatures(code)) & set(name_expressions)

        def get_function(self, name):
            if name not in self.names:
                raise AttributeError(f"no kernel {name!r} in this module")
            return RawKernel(name)

    fake.RawModule = RawModule
    return fake
