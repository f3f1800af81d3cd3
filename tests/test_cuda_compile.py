"""Every CUDA source compiles as CuPy compiles it at run time, without a GPU, and every kernel
fits a 1024-thread block without spilling registers.

NVRTC (what CuPy compiles with): each source goes through CuPy's own code path,
``cupy.cuda.compiler._compile_using_nvrtc_no_warning``, with the options ``cupy.RawModule``
ends up with: ``cupy._core.core.assemble_cupy_compiler_options`` applied to the loader's
options for that source (CuPy's include paths, the language standard, ``--fmad=false`` where
the loader asks for it), then ``-ftz=true`` (added by ``_compile_with_cache_cuda``), then
``-arch=sm_80`` / ``-arch=sm_90`` and ``--device-as-default-execution-space`` (added by the
function itself). Only the choice of ``-arch`` is made here instead of by CuPy, which would
ask the GPU; :func:`test_cupy_still_adds_the_options_this_test_relies_on` notices if a new
CuPy stops adding what this file assumes. ``--ptxas-options=-v`` makes ptxas report each
kernel's registers, shared memory and spills; a test checks that it changes nothing else in
the cubin. The README's test command (and so CI) installs CuPy and NVRTC (the ``nvrtc`` extra):
the test skips only where CuPy is not installed at all; a CuPy whose NVRTC cannot be loaded
fails it.

nvcc, when on the PATH, compiles the same text with ``--Werror all-warnings``, which NVRTC
has no equivalent for. nvcc has no name expressions, so its copy ends with a table that takes
the address of each instantiation, which makes the compiler emit them.
"""
import io
import re
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from minires.kernels.cuda import loader

ARCHES = ("80", "90")                 # A100; H100 and H200
SOURCES = loader.source_names()
NVCC = shutil.which("nvcc")
MAX_THREADS = 1024                    # the largest block any kernel may be launched with
REGISTERS_PER_BLOCK = 65536           # per multiprocessor, sm_80 and sm_90
STATIC_SHARED_BYTES = 48 * 1024       # the most shared memory a kernel may declare statically
VERBOSE = ("--ptxas-options=-v",)


# -- NVRTC, with CuPy's options ---------------------------------------------------------------

def _cupy_compiler():
    """CuPy's compiler module and option assembly: skip without CuPy, fail when CuPy is installed
    but cannot load NVRTC (the ``nvrtc`` extra brings both)."""
    pytest.importorskip("cupy", reason="CuPy is not installed: pip install -e '.[nvrtc]'")
    from cupy._core import core
    from cupy.cuda import compiler
    try:
        compiler._get_nvrtc_version()  # loads the NVRTC library
    except Exception as exc:  # noqa: BLE001 - any failure to load the library
        pytest.fail(f"CuPy is installed but NVRTC cannot be loaded ({type(exc).__name__}: "
                    f"{exc}); pip install -e '.[nvrtc]'")
    return core, compiler


def cupy_options(core, name: str) -> tuple:
    """The options CuPy hands NVRTC for ``name``, before the architecture."""
    return core.assemble_cupy_compiler_options(loader.compile_options(name)) + ("-ftz=true",)


def nvrtc_compile(core, compiler, name: str, arch: str, extra=()):
    """``(cubin, {name expression: lowered name}, program log)`` of source ``name``."""
    log = io.StringIO()
    cubin, mapping = compiler._compile_using_nvrtc_no_warning(
        loader.source(name), cupy_options(core, name) + tuple(extra), arch, name,
        loader.name_expressions(name), log, cache_in_memory=True)
    return cubin, mapping, log.getvalue()


@pytest.fixture(scope="module")
def nvrtc_results():
    """``{(source, arch): (cubin, mapping, log)}`` for every source and arch, compiled with
    the verbose ptxas report (about 4 s for everything)."""
    core, compiler = _cupy_compiler()
    with pytest.MonkeyPatch.context() as mp:
        # What CuPy asks the device for; NVRTC 13 compiles sm_80 and sm_90 to cubins.
        mp.setattr(compiler, "_get_arch_for_options_for_nvrtc",
                   lambda arch=None: (f"-arch=sm_{arch}", "cubin"))
        return {(name, arch): nvrtc_compile(core, compiler, name, arch, VERBOSE)
                for name in SOURCES for arch in ARCHES}


def kernel_resources(log: str) -> dict:
    """``{mangled kernel name: {"registers", "spill_stores", "spill_loads", "smem"}}`` from
    ptxas' verbose report."""
    found = {}
    for block in re.split(r"(?=ptxas info\s+: Compiling entry function)", log)[1:]:
        name = re.search(r"Compiling entry function '(\w+)'", block).group(1)
        spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", block)
        registers = re.search(r"Used (\d+) registers", block)
        smem = re.search(r"(\d+) bytes smem", block)
        found[name] = {"registers": int(registers.group(1)),
                       "spill_stores": int(spills.group(1)), "spill_loads": int(spills.group(2)),
                       "smem": int(smem.group(1)) if smem else 0}
    return found


def test_every_shipped_source_is_registered():
    assert set(SOURCES) == set(loader.KERNELS), "kernels/cuda/*.cu and loader.KERNELS disagree"


def test_cupy_still_adds_the_options_this_test_relies_on():
    """This file adds what CuPy's RawModule path adds after minires' options; check CuPy's own
    source still does so (``-ftz=true``, ``--device-as-default-execution-space``, sm cubins)."""
    import inspect
    _, compiler = _cupy_compiler()
    with_cache = inspect.getsource(compiler._compile_with_cache_cuda)
    nvrtc = inspect.getsource(compiler._compile_using_nvrtc_no_warning)
    arch = inspect.getsource(compiler._get_arch_for_options_for_nvrtc)
    assert "'-ftz=true'" in with_cache
    assert "'--device-as-default-execution-space'" in nvrtc
    assert "f'-arch=sm_{arch}', 'cubin'" in arch


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", SOURCES)
def test_nvrtc_compiles_with_cupys_options(nvrtc_results, name, arch):
    """Every name expression lowers to a kernel present in the cubin."""
    cubin, mapping, _ = nvrtc_results[(name, arch)]
    assert cubin[:4] == b"\x7fELF"
    assert set(mapping) == set(loader.name_expressions(name))
    for symbol in mapping.values():
        assert symbol.encode() + b"\x00" in cubin


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", SOURCES)
def test_every_kernel_fits_a_1024_thread_block_without_spills(nvrtc_results, name, arch):
    _, mapping, log = nvrtc_results[(name, arch)]
    resources = kernel_resources(log)
    for expression, symbol in mapping.items():
        assert symbol in resources, f"ptxas reported nothing for {expression}"
        used = resources[symbol]
        assert used["registers"] * MAX_THREADS <= REGISTERS_PER_BLOCK, (
            f"{expression} on sm_{arch} uses {used['registers']} registers a thread: a block "
            f"of {MAX_THREADS} threads would need more than {REGISTERS_PER_BLOCK}")
        assert used["spill_stores"] == used["spill_loads"] == 0, (expression, arch, used)
        assert used["smem"] <= STATIC_SHARED_BYTES, (expression, arch, used)


def elf_sections(data: bytes) -> dict:
    """``{section name: bytes}`` of a 64-bit little-endian ELF file (a cubin)."""
    (table,) = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, table + i * entry_size)
               for i in range(count)]
    names = headers[names_index][4]  # file offset of the section-name table

    def name(offset):
        start = names + offset
        return data[start:data.index(b"\0", start)].decode()

    return {name(h[0]): data[h[4]:h[4] + h[5]] for h in headers}


def test_the_verbose_report_changes_nothing_in_the_cubin(nvrtc_results):
    """The resources above are those of the cubin CuPy builds without ``-v``: every section
    is the same (code, kernel attributes, shared and constant memory) except the note that
    records the command line."""
    core, compiler = _cupy_compiler()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiler, "_get_arch_for_options_for_nvrtc",
                   lambda arch=None: (f"-arch=sm_{arch}", "cubin"))
        for name in SOURCES:
            cubin, mapping, _ = nvrtc_compile(core, compiler, name, "90")
            verbose, verbose_mapping, _ = nvrtc_results[(name, "90")]
            plain, reported = elf_sections(cubin), elf_sections(verbose)
            assert plain.keys() == reported.keys(), name
            differ = [k for k in plain if plain[k] != reported[k]]
            assert differ in ([], [".note.nv.tkinfo"]), (name, differ)
            assert any(k.startswith(".text.") for k in plain)
            assert mapping == verbose_mapping, name


def test_per_source_options_reach_nvrtc():
    """``loader.compile_options`` is what both the loader's RawModule and this test use."""
    core, _ = _cupy_compiler()
    for name in SOURCES:
        options = cupy_options(core, name)
        for option in loader.compile_options(name):
            assert option in options, (name, option)
        assert options[-1] == "-ftz=true"


def test_kernel_resources_parses_the_ptxas_report():
    log = ("ptxas info    : Compiling entry function '_Z3fooIfEvPT_i' for 'sm_90'\n"
           "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 70 registers, used 1 barriers, 256 bytes smem\n"
           "ptxas info    : Compiling entry function '_Z3barIdEvPT_i' for 'sm_90'\n"
           "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
           "ptxas info    : Used 20 registers, used 0 barriers, 368 bytes cmem[0]\n")
    assert kernel_resources(log) == {
        "_Z3fooIfEvPT_i": {"registers": 70, "spill_stores": 4, "spill_loads": 12, "smem": 256},
        "_Z3barIdEvPT_i": {"registers": 20, "spill_stores": 0, "spill_loads": 0, "smem": 0}}


# -- nvcc, with warnings as errors -------------------------------------------------------------

def _nvcc_options(name: str) -> list:
    """The loader's options as nvcc spells them (``--std=c++14`` -> ``-std=c++14``)."""
    return [o.replace("--std=", "-std=") for o in loader.compile_options(name)]


def _mangled_prefix(expression: str) -> bytes:
    """The start of the Itanium-mangled name of ``kernel<float>`` / ``kernel<double>``, e.g.
    ``_Z6im2colIfE``: the symbol a cubin holds for that instantiation."""
    name, ctype = re.fullmatch(r"(\w+)<(float|double)>", expression).groups()
    return f"_Z{len(name)}{name}I{ctype[0]}E".encode()


def _nvcc_text(name: str) -> str:
    addresses = ", ".join(f"(void*)&{e}" for e in loader.name_expressions(name))
    return (loader.source(name)
            + f"\nvoid* minires_instantiations[] = {{{addresses}}};\n")


@pytest.fixture(scope="module")
def nvcc_results(tmp_path_factory):
    """``{(source, arch): (returncode, stderr, cubin path)}`` for every source and arch."""
    if NVCC is None:
        pytest.skip("nvcc is not on PATH (install the CUDA toolkit to compile-check the kernels)")
    root = tmp_path_factory.mktemp("nvcc")
    for name in SOURCES:
        (root / name).write_text(_nvcc_text(name))

    def compile_one(job):
        name, arch = job
        out = root / f"{name}.{arch}.cubin"
        cmd = [NVCC, "-cubin", f"-arch=sm_{arch}", *_nvcc_options(name), "--Werror",
               "all-warnings", str(root / name), "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return job, (done.returncode, done.stderr, out)

    jobs = [(name, arch) for name in SOURCES for arch in ARCHES]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return dict(pool.map(compile_one, jobs))


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", SOURCES)
def test_nvcc_compiles_without_warnings(nvcc_results, name, arch):
    returncode, stderr, cubin = nvcc_results[(name, arch)]
    assert returncode == 0, f"nvcc -arch=sm_{arch} failed on {name}:\n{stderr}"
    data = cubin.read_bytes()
    assert data[:4] == b"\x7fELF", "nvcc did not write a cubin"
    for expression in loader.name_expressions(name):
        assert _mangled_prefix(expression) in data, f"{expression} not compiled"
