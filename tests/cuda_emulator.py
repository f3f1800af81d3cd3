"""Run minires' CUDA kernels on the CPU, for machines without a GPU.

The ``.cu`` sources are compiled as ordinary C++ (g++) after a small shim that defines what CUDA
provides: ``threadIdx``/``blockIdx``, ``__syncthreads`` (a block-wide barrier), warp shuffles (a
per-warp exchange through memory between two barriers) and ``__shared__`` (a function-local
``static``, shared by the block's threads; blocks run one after another). A kernel that
synchronises runs each CUDA thread of a block as a fiber (its own stack, switched with
``ucontext`` on one OS thread), so barriers and shuffles behave as on a GPU for the kernels'
purposes, including threads that return early; a kernel that never synchronises runs its
threads one after another.

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
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <ucontext.h>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
static dim3 gridDim, blockDim, threadIdx, blockIdx;
static unsigned long long emu_slots[1024];

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

// Kernels that synchronise run each CUDA thread of a block as a fiber (its own stack, ucontext)
// on this one OS thread: a fiber runs until it waits at a barrier or returns, then the next
// runnable one continues. A barrier releases its waiters when every thread still running has
// arrived (an exited thread no longer takes part, as on a GPU); barrier 0 is the block's
// (__syncthreads), barrier 1 + w warp w's (shuffles).
struct EmuFiber {
    ucontext_t context;
    bool finished;
    int waiting_on;  // -1: runnable
};
struct EmuBarrier { unsigned expected, arrived; };
static std::vector<EmuFiber> emu_fibers;
static std::vector<std::unique_ptr<char[]>> emu_stacks;
static std::vector<EmuBarrier> emu_barriers;
static ucontext_t emu_scheduler;
static std::function<void()> emu_body;
static const size_t EMU_STACK = 256 * 1024;

static void emu_release(int which) {
    EmuBarrier& b = emu_barriers[which];
    if (b.expected > 0 && b.arrived == b.expected) {
        b.arrived = 0;
        for (auto& f : emu_fibers) {
            if (f.waiting_on == which) f.waiting_on = -1;
        }
    }
}

static void emu_wait(int which) {
    EmuFiber& me = emu_fibers[threadIdx.x];
    ++emu_barriers[which].arrived;
    me.waiting_on = which;
    emu_release(which);  // the last to arrive releases everyone, itself included
    if (me.waiting_on != -1) swapcontext(&me.context, &emu_scheduler);
}

static void emu_fiber_main() {
    emu_body();
    EmuFiber& me = emu_fibers[threadIdx.x];
    me.finished = true;
    for (int which : {0, 1 + (int)(threadIdx.x >> 5)}) {
        --emu_barriers[which].expected;
        emu_release(which);
    }
}  // returns to emu_scheduler through uc_link

inline void __syncthreads() { emu_wait(0); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline double __longlong_as_double(long long i) {
    double d; std::memcpy(&d, &i, sizeof d); return d;
}

template <typename T> T emu_shuffle(T v, unsigned source_lane) {
    const unsigned t = threadIdx.x, warp = t >> 5;
    std::memcpy(&emu_slots[t], &v, sizeof(T));
    emu_wait(1 + warp);
    T r = v;
    if (source_lane < 32 && warp * 32 + source_lane < blockDim.x) {
        std::memcpy(&r, &emu_slots[warp * 32 + source_lane], sizeof(T));
    }
    emu_wait(1 + warp);
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
    emu_body = body;
    while (emu_stacks.size() < block) emu_stacks.emplace_back(new char[EMU_STACK]);
    const unsigned warps = (block + 31) / 32;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        emu_barriers.assign(1 + warps, EmuBarrier{0, 0});
        emu_barriers[0].expected = block;
        for (unsigned w = 0; w < warps; ++w) {
            emu_barriers[1 + w].expected = block - w * 32 < 32 ? block - w * 32 : 32;
        }
        emu_fibers.assign(block, EmuFiber{});
        for (unsigned t = 0; t < block; ++t) {
            EmuFiber& f = emu_fibers[t];
            f.finished = false;
            f.waiting_on = -1;
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = emu_stacks[t].get();
            f.context.uc_stack.ss_size = EMU_STACK;
            f.context.uc_link = &emu_scheduler;
            makecontext(&f.context, emu_fiber_main, 0);
        }
        for (unsigned done = 0; done < block;) {
            bool progress = false;
            done = 0;
            for (unsigned t = 0; t < block; ++t) {
                EmuFiber& f = emu_fibers[t];
                if (!f.finished && f.waiting_on == -1) {
                    threadIdx.x = t;
                    swapcontext(&emu_scheduler, &f.context);
                    progress = true;
                }
                done += f.finished;
            }
            if (!progress && done < block) {
                std::fprintf(stderr, "emulated kernel deadlocked: threads wait at a barrier "
                                     "that the others never reach\n");
                std::abort();
            }
        }
    }
}
"""

_SIGNATURE = re.compile(r"template\s*<typename T>\s*__global__\s+void\s+(\w+)\s*\(([^)]*)\)")
#: What ``T`` becomes in each instantiation the loader asks for (``kernel<float>``...).
INSTANCES = ("float", "double")

# C parameter type -> what the argument must be: ("array", dtype) or ("scalar", numpy type).
# Any other type is a struct passed by value: a one-element structured NumPy array of the
# struct's size (which is what CuPy passes by value).
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
                ctype = re.sub(r"\bT\b", instance, ctype)
                parsed.append((ctype.replace(" *", "*"), pname))
            kernels[f"{name}<{instance}>"] = parsed
    return kernels


_COOPERATIVE = re.compile(r"__syncthreads|__shfl|block_sum|warp_sum|warp_max")


def cooperative_kernels(source: str) -> set:
    """Instantiations of kernels whose threads wait for each other (barriers, shuffles): they
    need one fiber per CUDA thread."""
    found = set()
    for name, _ in _SIGNATURE.findall(source):
        body = re.search(rf"__global__\s+void\s+{name}\s*\(.*?\n\}}\n", source, re.DOTALL)
        if body is None or _COOPERATIVE.search(body.group(0)):
            found |= {f"{name}<{instance}>" for instance in INSTANCES}  # when in doubt: threads
    return found


def _symbol(expression: str) -> str:
    """A C identifier for a name expression: ``im2col<float>`` -> ``im2col_float``."""
    return expression.replace("<", "_").replace(">", "")


def is_struct(ctype: str) -> bool:
    """Whether a parameter of C type ``ctype`` is a struct passed by value."""
    return not ctype.endswith("*") and ctype not in _PARAM_TYPES


def _launcher(expression, params, cooperative: bool) -> str:
    def declared(t, n):
        return f"void* {n}" if t.endswith("*") or is_struct(t) else f"{t} {n}"

    def passed(t, n):
        if is_struct(t):
            return f"*reinterpret_cast<const {t}*>({n})"
        return f"({t}){n}" if t.endswith("*") else n

    decl = ", ".join(declared(t, n) for t, n in params)
    call = ", ".join(passed(t, n) for t, n in params)
    launch = "emu_launch" if cooperative else "emu_launch_serial"
    return (f'extern "C" void launch_{_symbol(expression)}(unsigned grid, unsigned block, '
            f"{decl}) {{\n    {launch}(grid, block, [=] {{ {expression}({call}); }});\n}}\n")


def _sizeof(ctype: str) -> str:
    return f'extern "C" unsigned long sizeof_{_symbol(ctype)}() {{ return sizeof({ctype}); }}\n'


def _struct_types(signatures) -> set:
    return {t for params in signatures.values() for t, _ in params if is_struct(t)}


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
        parts += [_sizeof(t) for t in sorted(_struct_types(self.signatures))]
        text = "\n".join(parts)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        build_dir.mkdir(parents=True, exist_ok=True)
        lib = build_dir / f"emulated_{digest}.so"
        if not lib.exists():
            cpp = build_dir / f"emulated_{digest}.cpp"
            cpp.write_text(text)
            # -ffp-contract=off: no fused multiply-adds, as NVRTC with --fmad=false; the
            # kernels then round each operation as NumPy does.
            cmd = ["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
                   "-pthread",
                   "-Wall", "-Werror", "-Wno-unused-function", "-Wno-unused-variable",
                   str(cpp), "-o", str(lib)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"g++ failed on the emulated kernels:\n{out.stderr}")
        self.lib = ctypes.CDLL(str(lib))
        self.launches = []  # (kernel name, grid, block) of every launch, for tests to inspect
        self.launched_args = []  # (kernel name, arguments) of every launch

    def clear_launches(self) -> None:
        """Forget the launches recorded so far (both lists, which stay index for index)."""
        self.launches.clear()
        self.launched_args.clear()

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
            if is_struct(ctype):
                converted.append(ctypes.c_void_p(self._struct_argument(name, ctype, pname, a)))
                argtypes.append(ctypes.c_void_p)
                continue
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
        self.launched_args.append((name, args))
        self.launches.append((name, g, b))
        fn(g, b, *converted)

    def _struct_argument(self, name, ctype, pname, a) -> int:
        """The address of a struct argument: a one-element structured NumPy array exactly as
        large as the C struct (CuPy passes such an array's bytes by value)."""
        size = getattr(self.lib, f"sizeof_{_symbol(ctype)}")
        size.restype = ctypes.c_ulong
        if (type(a) is not np.ndarray or a.size != 1 or a.dtype.fields is None
                or a.dtype.itemsize != size()):
            raise TypeError(f"{name}: {pname} must be a one-element structured NumPy array of "
                            f"{size()} bytes (the size of {ctype}), got {type(a).__name__} "
                            f"{getattr(a, 'dtype', '')}")
        return a.ctypes.data


def _column_major(array, offset, rows, cols, ld, what):
    """The ``rows x cols`` column-major matrix with leading dimension ``ld`` that starts
    ``offset`` elements into ``array`` (a C-contiguous array read as flat memory), as a view;
    AssertionError when it reaches past the array, as cuBLAS would read or write there."""
    flat = array.reshape(-1)
    if rows == 0 or cols == 0:
        return np.zeros((rows, cols), dtype=array.dtype)
    last = offset + (rows - 1) + (cols - 1) * ld
    assert 0 <= offset and last < flat.size, (
        f"cuBLAS would access {what}[{last}] of an array of {flat.size} elements")
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[offset:], shape=(rows, cols),
                                           strides=(item, ld * item))


class EmulatedCublas:
    """cuBLAS's GEMMs in NumPy, taking exactly the column-major arguments that
    ``minires.kernels.cuda.blas.Cublas`` hands the library (and refusing what cuBLAS refuses),
    so that leading dimensions, strides and transposes are checked without a GPU. Every call is
    recorded in ``calls``."""

    def __init__(self):
        self.calls = []

    def gemm_strided_batched(self, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
                             strideB, beta, C, ldc, strideC, batch):
        assert transa in (0, 1) and transb in (0, 1), "cublasOperation_t is 0 (N) or 1 (T)"
        assert min(m, n, k) >= 0 and batch >= 1
        assert lda >= max(1, m if transa == 0 else k), "CUBLAS_STATUS_INVALID_VALUE: lda"
        assert ldb >= max(1, k if transb == 0 else n), "CUBLAS_STATUS_INVALID_VALUE: ldb"
        assert ldc >= max(1, m), "CUBLAS_STATUS_INVALID_VALUE: ldc"
        assert A.dtype == B.dtype == C.dtype, "one dtype for A, B and C"
        for x in (A, B, C):
            assert isinstance(x, np.ndarray) and x.flags.c_contiguous
        self.calls.append(dict(transa=transa, transb=transb, m=m, n=n, k=k, batch=batch,
                               alpha=alpha, beta=beta))
        for i in range(batch):
            a = _column_major(A, i * strideA, *((m, k) if transa == 0 else (k, m)), lda, "A")
            b = _column_major(B, i * strideB, *((k, n) if transb == 0 else (n, k)), ldb, "B")
            c = _column_major(C, i * strideC, m, n, ldc, "C")
            product = (a if transa == 0 else a.T) @ (b if transb == 0 else b.T)
            # As cuBLAS: with beta == 0, C is written without being read (NaN there is fine).
            value = alpha * product if beta == 0 else alpha * product + beta * c
            c[...] = value.astype(C.dtype)


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


class CaptureError(RuntimeError):
    """What CUDA or CuPy reports for an operation that a capturing stream does not allow."""


class EmulatedDeviceArray(np.ndarray):
    """A NumPy array that minires takes for a CuPy one (``minires.backend.is_cuda_array`` looks
    at the type's module), so the library's CUDA branches run, on the emulator. NumPy keeps the
    subclass through arithmetic, so whole forward and backward passes stay "on the device".

    Reading a value on the host (``get``, ``item``, ``float``, ``int``, ``bool``, ``tolist``)
    is a synchronisation on a GPU: each one is counted in ``host_reads``, and while
    ``capturing`` is set (a fake CUDA graph capture, see tests/graph_emulator.py) it raises
    :class:`CaptureError`, as does ``@`` (``cupy.matmul``, whose cuBLAS call CuPy refuses
    during capture).
    """

    capturing = False
    host_reads = 0

    @classmethod
    def host_read(cls, what: str) -> None:
        if cls.capturing:
            raise CaptureError(f"{what} waits for the GPU, which a capturing stream forbids")
        cls.host_reads += 1

    def get(self):
        """Like ``cupy.ndarray.get``: a plain NumPy copy."""
        self.host_read("get()")
        return np.array(self)

    def item(self, *args):
        self.host_read("item()")
        return np.ndarray.item(self, *args)

    def tolist(self):
        self.host_read("tolist()")
        return np.ndarray.tolist(self)

    def __float__(self):
        self.host_read("float()")
        return float(np.ndarray.item(self))

    def __int__(self):
        self.host_read("int()")
        return int(np.ndarray.item(self))

    def __bool__(self):
        self.host_read("bool()")
        return bool(np.ndarray.item(self))

    def __matmul__(self, other):
        _no_cublas_in_capture("the @ operator")
        return np.ndarray.__matmul__(self, other)

    def __rmatmul__(self, other):
        _no_cublas_in_capture("the @ operator")
        return np.ndarray.__rmatmul__(self, other)

    @property
    def data(self):
        """Like ``cupy.ndarray.data`` (a ``cupy.cuda.MemoryPointer``), not a memoryview:
        ``minires.backend`` looks at ``getattr(a, "data", a)`` to tell Tensors from arrays."""
        return EmulatedMemoryPointer(self)


def _no_cublas_in_capture(what):
    if EmulatedDeviceArray.capturing:
        raise CaptureError(f"{what} is cupy.matmul, whose cuBLAS call CuPy refuses during "
                           f"stream capture")


class EmulatedMemoryPointer:
    def __init__(self, array):
        self.array = array

    @property
    def ptr(self) -> int:
        """Like ``cupy.cuda.MemoryPointer.ptr``: the address of the array's first element."""
        return self.array.ctypes.data


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

    def asnumpy(a):
        EmulatedDeviceArray.host_read("cupy.asnumpy")
        return np.array(a)

    def from_device_only(name):
        fn = on_device(getattr(np, name))

        def wrapped(a, *args, **kwargs):
            if EmulatedDeviceArray.capturing and not isinstance(a, EmulatedDeviceArray):
                raise CaptureError(f"cupy.{name} of host data is a host-to-device copy, which "
                                   f"a capturing stream forbids")
            return fn(a, *args, **kwargs)
        return wrapped

    def refused_in_capture(name, value):
        def wrapped(*args, **kwargs):
            if EmulatedDeviceArray.capturing:
                raise CaptureError(f"cupy.{name} is refused by CuPy during stream capture")
            return value(*args, **kwargs)
        return wrapped

    fake.asnumpy = asnumpy
    fake.asarray, fake.array = from_device_only("asarray"), from_device_only("array")
    fake.matmul = refused_in_capture("matmul", on_device(np.matmul))
    fake.dot = refused_in_capture("dot", on_device(np.dot))

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
