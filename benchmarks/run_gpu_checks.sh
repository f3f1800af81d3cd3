#!/usr/bin/env bash
# Everything about minires that needs an NVIDIA GPU, in one command of at most 8 minutes, from a
# fresh GPU machine with no network (CuPy, numba, h5py, click, pytest, PyTorch, threadpoolctl
# already installed):
#
#     bash benchmarks/run_gpu_checks.sh [--dry-run] [--phases 0,1,2,3,4,5] [--budget S] OUTDIR
#
# Phases, each under its own time limit (and all of them under --budget, default 470 s):
#   0  install this checkout (pip --no-deps --no-build-isolation --no-index -e .), check that
#      the minires that imports IS this checkout, record versions and the device, compile every
#      kernel and run each once on tiny inputs (benchmarks/gpu_preflight.py)        60 + 90 s
#   1  the gpu-marked tests: every kernel against its NumPy reference, every function's float64
#      gradient check on the device, GPU training steps against CPU ones, train(device="cuda")
#      end to end (not the CPU-only emulator and compile tests)                          180 s
#   2  minires against PyTorch on the device (benchmarks/gpu_crosscheck.py)              90 s
#   3  the training-step benchmark (benchmarks/gpu_train_step.py --out-dir OUTDIR; with
#      less than 240 s of the budget left, its --quick variant)                           150 s
#   4  the step profile (benchmarks/gpu_train_step.py --profile --out-dir OUTDIR)        60 s
#   5  if at least 100 s are left: ResNet-20 on real CIFAR-10, unshared and shared at once,
#      from data/cifar-10-python.tar.gz or data/cifar10-jpeg.tar.xz (an ignored folder of the
#      checkout; docs/gpu.md) (benchmarks/gpu_cifar_run.py)                  what is left
#
# OUTDIR (absent or empty) receives at most 8 files: gpu_checks.log (everything printed),
# environment.json (phase 0), gpu_tests.xml (1), gpu_crosscheck.json (2), gpu_train_step.json
# and gpu_train_step.md (3), gpu_profile.txt (4), cifar_runs.json (5).
#
# Phase 0 failing stops everything (the rest needs it); a later phase failing does not stop the
# next. Each failure is one line, repeated at the end. --dry-run runs, on any machine, what needs
# no GPU: the environment and checkout checks, the NVRTC compile test, numba, the CPU half of
# the preflight, collecting the gpu tests, listing the cross-check's cases, the benchmark's own
# --dry-run, and preparing CIFAR-10 if an archive is there; it installs nothing. PYTHON selects
# the interpreter (default python3).
#
# Exit status: 0 every phase run passed; 1 a phase failed; 2 a usage error.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
DRY_RUN=0
PHASES="0,1,2,3,4,5"
BUDGET=470
OUT=""
TITLES=("install and preflight" "gpu-marked tests" "cross-check against PyTorch"
        "training-step benchmark" "step profile" "CIFAR-10 run")

usage() {
    echo "usage: bash benchmarks/run_gpu_checks.sh [--dry-run] [--phases 0,1,2,3,4,5]" \
         "[--budget SECONDS] OUTDIR" >&2
    [ $# -gt 0 ] && echo "run_gpu_checks: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --phases) [ $# -ge 2 ] || usage "--phases needs a list such as 0,1,2"; PHASES=$2; shift ;;
        --budget) [ $# -ge 2 ] || usage "--budget needs a number of seconds"; BUDGET=$2; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) usage "unknown option $1" ;;
        *) [ -z "$OUT" ] || usage "one OUTDIR only (got $OUT and $1)"; OUT=$1 ;;
    esac
    shift
done
[ -n "$OUT" ] || usage "OUTDIR is missing"
[[ "$PHASES" =~ ^[0-5](,[0-5])*$ ]] || usage "--phases takes digits 0-5 separated by commas"
[[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -ge 60 ] || usage "--budget takes seconds (>= 60)"
if [ -e "$OUT" ] && { [ ! -d "$OUT" ] || [ -n "$(ls -A "$OUT")" ]; }; then
    usage "OUTDIR $OUT must be absent or an empty folder (at most 8 result files come back)"
fi
mkdir -p "$OUT" || usage "cannot create OUTDIR $OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_checks.log"
WORK=$(mktemp -d) || { echo "run_gpu_checks: cannot create a scratch folder" >&2; exit 1; }
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
export PYTHONUNBUFFERED=1
declare -A STATUS=()
FAILURES=()

say() { echo "$*" | tee -a "$LOG"; }

wanted() { [[ ",$PHASES," == *",$1,"* ]]; }

# step LIMIT COMMAND...: run COMMAND from the checkout under a time limit (cut to what is left of
# the budget), its output to the terminal and the log; the status of COMMAND, 124 on timeout.
step() {
    local limit=$1 left=$((BUDGET - (SECONDS - START)))
    shift
    [ "$limit" -le "$left" ] || limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "no time left in the ${BUDGET}-s budget" >"$WORK/step.out"
        say "run_gpu_checks: no time left for: $*"
        return 124
    fi
    (cd "$ROOT" && timeout --kill-after=10 "$limit" "$@") 2>&1 | tee "$WORK/step.out" \
        | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "stopped at its ${limit}-s time limit" >>"$WORK/step.out"
        say "run_gpu_checks: stopped at its ${limit}-s time limit: $*"
    fi
    return $rc
}

# The last line a failed step printed: what to repeat at the end.
last_line() { grep -v '^\s*$' "$WORK/step.out" | tail -n 1; }

begin() { say "== phase $1: ${TITLES[$1]} ($(date -u +%H:%M:%S), $((SECONDS - START)) s in)"; }

finish() {  # finish N STATUS [REASON]
    STATUS[$1]=$2
    if [ "$2" = "FAILED" ]; then
        FAILURES+=("phase $1 (${TITLES[$1]}) FAILED: $3")
        say "run_gpu_checks: phase $1 (${TITLES[$1]}) FAILED: $3"
    else
        say "== phase $1: $2"
    fi
}

fail_now() {  # a missing prerequisite: one line, and stop
    say "run_gpu_checks: $*"
    exit 1
}

# -- phase 0 ----------------------------------------------------------------------------------
if wanted 0 || [ "$DRY_RUN" = 0 ]; then
    begin 0
    command -v timeout >/dev/null || fail_now "needs coreutils' timeout on the PATH"
    command -v "$PY" >/dev/null || fail_now "no $PY on the PATH (set PYTHON=...)"
    version=$("$PY" -c 'import platform; print(platform.python_version())')
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || fail_now "$PY is Python $version; minires needs 3.11 or newer"
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: not installing; checking the minires that is installed"
    else
        step 60 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e "$ROOT" \
            || fail_now "phase 0: pip could not install $ROOT: $(last_line)"
    fi
    preflight=("$PY" benchmarks/gpu_preflight.py --root "$ROOT" --out "$OUT/environment.json")
    [ "$DRY_RUN" = 1 ] && preflight+=(--dry-run)
    if wanted 2 || wanted 3 || wanted 4; then  # they compare against PyTorch on the GPU
        preflight+=(--need-torch)
    fi
    step 90 "${preflight[@]}" || fail_now "phase 0 failed: $(last_line)"
    if [ "$DRY_RUN" = 1 ]; then  # what the device would compile: every kernel, CuPy's options
        step 60 "$PY" -m pytest tests/test_cuda_compile.py -q -p no:cacheprovider \
            || fail_now "phase 0 failed: the NVRTC compile test: $(last_line)"
    fi
    finish 0 passed
fi

# -- phase 1 ----------------------------------------------------------------------------------
if wanted 1; then
    begin 1
    if [ "$DRY_RUN" = 1 ]; then
        if step 60 "$PY" -m pytest -m gpu --collect-only -q -p no:cacheprovider tests; then
            finish 1 "prepared ($(grep -c '::' "$WORK/step.out") gpu tests collect)"
        else
            finish 1 FAILED "the gpu tests do not collect: $(last_line)"
        fi
    else
        timeout_option=()
        "$PY" -c 'import pytest_timeout' 2>/dev/null && timeout_option=(--timeout=120)
        if step 180 "$PY" -m pytest -m gpu tests -q -rs -p no:cacheprovider \
                --junitxml="$OUT/gpu_tests.xml" "${timeout_option[@]}"; then
            finish 1 passed
        else
            finish 1 FAILED "$(last_line)"
        fi
    fi
fi

# -- phase 2 ----------------------------------------------------------------------------------
if wanted 2; then
    begin 2
    if [ "$DRY_RUN" = 1 ]; then
        if step 60 "$PY" benchmarks/gpu_crosscheck.py --list; then
            finish 2 "prepared ($(last_line | cut -d';' -f1))"
        else
            finish 2 FAILED "$(last_line)"
        fi
    elif step 90 "$PY" benchmarks/gpu_crosscheck.py --out "$OUT/gpu_crosscheck.json"; then
        finish 2 passed
    else
        finish 2 FAILED "$(last_line)"
    fi
fi

# -- phases 3 and 4: benchmarks/gpu_train_step.py ----------------------------------------------
bench() {  # bench N LIMIT OPTION...: phase N runs (in a dry run: checks) the benchmark
    local n=$1 limit=$2
    shift 2
    local options=("$@")
    if [ "$DRY_RUN" = 1 ]; then  # its own dry run: arguments, imports, models
        options+=(--dry-run --out-dir "$WORK/benchmark")
    else
        options+=(--out-dir "$OUT")
    fi
    if step "$limit" "$PY" benchmarks/gpu_train_step.py "${options[@]}"; then
        finish "$n" "$([ "$DRY_RUN" = 1 ] && echo prepared || echo passed)"
    else
        finish "$n" FAILED "benchmarks/gpu_train_step.py: $(last_line)"
    fi
}
if wanted 3; then
    begin 3
    if [ "$DRY_RUN" = 0 ] && [ $((BUDGET - (SECONDS - START))) -lt 240 ]; then
        say "less than 240 s left: the benchmark's --quick variant (ResNet-20 shared only)"
        bench 3 150 --quick
    else
        bench 3 150
    fi
fi
if wanted 4; then
    begin 4
    bench 4 60 --profile
fi

# -- phase 5 ----------------------------------------------------------------------------------
if wanted 5; then
    begin 5
    left=$((BUDGET - (SECONDS - START)))
    cifar=("$PY" benchmarks/gpu_cifar_run.py --data "$ROOT/data" --work "$WORK/cifar"
           --out "$OUT/cifar_runs.json" --epochs 3)
    if [ "$DRY_RUN" = 0 ] && [ "$left" -lt 100 ]; then
        finish 5 "skipped (only $left s of the budget left; it needs 100)"
    else
        [ "$DRY_RUN" = 1 ] && cifar+=(--dry-run) || cifar+=(--seconds $((left - 15)))
        step $((left - 5)) "${cifar[@]}"
        case $? in
            0) finish 5 "$([ "$DRY_RUN" = 1 ] && echo prepared || echo passed)" ;;
            3) finish 5 "skipped (no archive in data/)" ;;
            4) finish 5 "skipped (too little time left after preparing the data)" ;;
            *) finish 5 FAILED "$(last_line)" ;;
        esac
    fi
fi

# -- summary ----------------------------------------------------------------------------------
count=$(find "$OUT" -type f | wc -l)
[ "$count" -le 8 ] || FAILURES+=("OUTDIR holds $count files; at most 8 are meant to come back")
summary=""
for n in 0 1 2 3 4 5; do
    [ -n "${STATUS[$n]:-}" ] && summary+=" $n:${STATUS[$n]%% *}"
done
say "== summary after $((SECONDS - START)) s:$summary"
if [ ${#FAILURES[@]} -gt 0 ]; then
    for line in "${FAILURES[@]}"; do say "run_gpu_checks: $line"; done
    exit 1
fi
if [ "$DRY_RUN" = 1 ]; then
    say "run_gpu_checks: dry run passed (phases $PHASES prepared); a real run needs a GPU" \
        "from phase 0 on"
else
    say "run_gpu_checks: all phases passed; results in $OUT"
fi
exit 0
