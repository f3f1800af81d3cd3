#!/usr/bin/env bash
# Everything about minires that needs an NVIDIA GPU, in one command, from any directory:
#
#     bash benchmarks/run_gpu_checks.sh [RESULTS_DIR]
#
# 1. installs minires from this checkout without the network (pip --no-index --no-deps: NumPy,
#    numba, h5py, click, pytest, CuPy and, for the comparison, PyTorch must already be there);
# 2. stops at once (status 2) unless CuPy sees a usable GPU, so nothing is silently skipped;
# 3. runs every CUDA test, tests/test_cuda_*.py: each kernel against its NumPy reference and
#    every function's float64 gradient check on the GPU, GPU training against the CPU, plus the
#    compile, host-side and emulator tests (JUnit XML beside the log);
# 4. runs benchmarks/gpu_train_step.py: minires against PyTorch eager, ResNet-20 and ResNet-56,
#    images/s and peak GPU memory (.json and .md named after the device and the date).
#
# Everything lands in RESULTS_DIR (default benchmarks/results/). Exit status 0 only when the
# tests and the benchmark all succeeded. PYTHON selects the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-benchmarks/results}
python=${PYTHON:-python3}
mkdir -p "$results"

if ! "$python" -c "import minires.kernels.cuda" 2>/dev/null; then
    "$python" -m pip install --quiet --no-index --no-deps --no-build-isolation -e . || {
        echo "run_gpu_checks: could not install minires from $(pwd)" >&2
        exit 1
    }
fi

device=$("$python" - <<'EOF'
import re, sys
from minires.backend import cuda_available
if not cuda_available():
    sys.exit("run_gpu_checks: CuPy does not see a usable NVIDIA GPU; nothing to check here")
import cupy
name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
name = name.decode() if isinstance(name, bytes) else name
print(re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower())
EOF
) || exit 2

stamp="${device}_$(date +%Y-%m-%d_%H%M%S)"
log="$results/gpu_checks_${stamp}.log"
{
    echo "== minires GPU checks on ${device}, $(date -Iseconds)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
    echo "== tests"
} | tee "$log"

started=$SECONDS
"$python" -m pytest tests/test_cuda_*.py -q -rs -p no:cacheprovider \
    --junitxml="$results/gpu_tests_${stamp}.xml" 2>&1 | tee -a "$log"
tests_status=${PIPESTATUS[0]}
echo "== tests: exit ${tests_status} after $((SECONDS - started)) s" | tee -a "$log"

echo "== benchmark" | tee -a "$log"
started=$SECONDS
PYTHONUNBUFFERED=1 "$python" benchmarks/gpu_train_step.py --require-torch --out "$results" \
    2>&1 | tee -a "$log"
bench_status=${PIPESTATUS[0]}
echo "== benchmark: exit ${bench_status} after $((SECONDS - started)) s" | tee -a "$log"

if [ "$tests_status" -ne 0 ] || [ "$bench_status" -ne 0 ]; then
    echo "run_gpu_checks: FAILED (tests ${tests_status}, benchmark ${bench_status}); see ${log}" >&2
    exit 1
fi
echo "run_gpu_checks: all passed; results in ${results}/" | tee -a "$log"
