"""Every CUDA source compiles, without a GPU: with nvcc for sm_80 and sm_90, and with NVRTC (the
compiler CuPy uses at run time) when CuPy and its NVRTC library are installed.

Both compilers get the text the loader hands to ``cupy.RawModule``
(``minires.kernels.cuda.loader.source``: the ``.cu`` file with ``common.cuh`` pasted in), with
the same language standard. NVRTC instantiates the kernel templates from the loader's name
expressions (``im2col<float>``...), as CuPy asks it to; nvcc has no name expressions, so its
copy ends with a table that takes the address of each instantiation, which makes the compiler
emit them. All nvcc runs start at once in a thread pool (about 3 s on two cores).
"""
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from minires.kernels.cuda import loader

ARCHES = ("sm_80", "sm_90")
SOURCES = loader.source_names()
NVCC = shutil.which("nvcc")


def _std_flag():
    (option,) = loader.COMPILE_OPTIONS  # "--std=c++14": nvcc spells it -std=
    return option.replace("--std=", "-std=")


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
        cmd = [NVCC, "-cubin", f"-arch={arch}", _std_flag(), "--Werror", "all-warnings",
               str(root / name), "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return job, (done.returncode, done.stderr, out)

    jobs = [(name, arch) for name in SOURCES for arch in ARCHES]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return dict(pool.map(compile_one, jobs))


def test_every_shipped_source_is_registered():
    assert set(SOURCES) == set(loader.KERNELS), "kernels/cuda/*.cu and loader.KERNELS disagree"


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", SOURCES)
def test_nvcc_compiles(nvcc_results, name, arch):
    returncode, stderr, cubin = nvcc_results[(name, arch)]
    assert returncode == 0, f"nvcc -arch={arch} failed on {name}:\n{stderr}"
    data = cubin.read_bytes()
    assert data[:4] == b"\x7fELF", "nvcc did not write a cubin"
    for expression in loader.name_expressions(name):
        assert _mangled_prefix(expression) in data, f"{expression} not compiled"


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - no CuPy, or no NVRTC library: either way, skip
        pytest.skip(f"NVRTC is not available through CuPy ({type(exc).__name__})")
    return nvrtc


@pytest.mark.parametrize("arch", ["compute_80", "sm_90"])
@pytest.mark.parametrize("name", SOURCES)
def test_nvrtc_compiles(name, arch):
    """As CuPy compiles a RawModule: our options, then the ones it adds itself, and the name
    expressions; PTX for a virtual architecture, a cubin for a real one (what it does on an
    H100 with NVRTC 13). Every name expression must lower to a kernel in the output."""
    nvrtc = _nvrtc()
    options = list(loader.COMPILE_OPTIONS) + [f"-arch={arch}",
                                               "--device-as-default-execution-space"]
    program = nvrtc.createProgram(loader.source(name), name, (), ())
    try:
        for expression in loader.name_expressions(name):
            nvrtc.addNameExpression(program, expression)
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError:
            pytest.fail(f"NVRTC failed on {name}:\n{nvrtc.getProgramLog(program)}")
        lowered = {e: nvrtc.getLoweredName(program, e) for e in loader.name_expressions(name)}
        binary = nvrtc.getPTX(program) if arch.startswith("compute") else nvrtc.getCUBIN(program)
    finally:
        nvrtc.destroyProgram(program)
    binary = binary.encode() if isinstance(binary, str) else binary
    if arch.startswith("compute"):
        entries = set(re.findall(rb"\.entry\s+(\w+)", binary))
        assert entries == {symbol.encode() for symbol in lowered.values()}
    else:
        assert binary[:4] == b"\x7fELF"
        for symbol in lowered.values():
            assert symbol.encode() + b"\x00" in binary
