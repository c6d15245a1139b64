#!/usr/bin/env bash
# GPU check on a fresh H100/H200 machine with torch (CUDA) already installed and no internet:
#   build the CUDA extension, run the CUDA/Triton tests, run the CUDA benchmark sweep, then the CPU headline case.
#
#   bash benchmarks/gpu_check.sh OUTDIR
#
# Writes OUTDIR/{build.log,build_info.txt,tests.log,sanitizer_{memcheck,racecheck}.log,bench_cuda.log,
# bench_cpu.log}, result JSON files (with roofline percentages) and OUTDIR/plots/*.png. Continues after failing
# tests; exits non-zero at the end if the build, the tests, the sanitizer or a benchmark step failed. With the
# default budgets the steps after the build take at most about 7.5 minutes (build: typically 3-5 minutes on 16
# cores, capped by BUILD_TIMEOUT), so the check is meant to fit one ten-minute call. Knobs (environment):
#   PYTHON=python3          interpreter
#   MAX_JOBS=16             parallel compile jobs for the build
#   TEST_SCOPE=gpu|all      "gpu" (default): pytest -m "cuda or triton" (the CUDA kernels and compiled Triton);
#                           "all": the whole suite
#   TEST_TIMEOUT=120        seconds for the test step;  BENCH_BUDGET=120  seconds for the CUDA sweep
#   SANITIZER_TESTS=...     test files run under compute-sanitizer (memcheck, then racecheck), CUDA cases only
#   SANITIZER_TIMEOUT=60    seconds per sanitizer tool;  SANITIZER=0  skips the sanitizer step
#   SKIP_BUILD=1            reuse an existing build;  BUILD_TIMEOUT=300  seconds for the build
#   STEPS=build,tests,sanitizer,bench,cpu,plots   the steps to run (default all), e.g. two calls on one warm
#                           machine: STEPS=build,tests,sanitizer, then STEPS=bench,cpu,plots
set -uo pipefail
export PYTHONUNBUFFERED=1

OUT=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
T0=$(date +%s)
status=0
step() { echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
STEPS=",${STEPS:-build,tests,sanitizer,bench,cpu,plots},"
[ "${SKIP_BUILD:-0}" = "1" ] && STEPS=${STEPS//,build,/,}
want() { [[ $STEPS == *",$1,"* ]]; }
for s in ${STEPS//,/ }; do
  case $s in build|tests|sanitizer|bench|cpu|plots) ;; *) echo "gpu_check: unknown step '$s' in STEPS"; exit 2;; esac
done

step "environment"
"$PY" - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
try:
    import triton; print("triton", triton.__version__)
except Exception as e:
    print("triton missing:", e)
try:
    from importlib.metadata import version; print("pykeops", version("pykeops"))
except Exception:
    print("pykeops not installed (the keops provider will be recorded as unavailable)")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$OUT/env.txt"

if want build; then
  step "build (pip install --no-build-isolation --no-deps -e .)"
  if ! MAX_JOBS=${MAX_JOBS:-16} timeout "${BUILD_TIMEOUT:-300}" "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . >"$OUT/build.log" 2>&1; then
    echo "BUILD FAILED (tail of $OUT/build.log):"; tail -40 "$OUT/build.log"
    status=1
  else
    tail -3 "$OUT/build.log"
  fi
fi
"$PY" -c "import gmmkernels, json; print(json.dumps(gmmkernels.build_info(), indent=1)); import torch; print('backends(cuda):', gmmkernels.available_backends('cuda') if torch.cuda.is_available() else None); print('backends(cpu):', gmmkernels.available_backends('cpu'))" 2>&1 | tee "$OUT/build_info.txt"

if want tests; then
step "tests (${TEST_SCOPE:-gpu})"
if [ "${TEST_SCOPE:-gpu}" = "all" ]; then marker=(); else marker=(-m "cuda or triton"); fi
timeout "${TEST_TIMEOUT:-120}" "$PY" -m pytest python_tests -q --maxfail=50 "${marker[@]}" -p no:cacheprovider \
  >"$OUT/tests.log" 2>&1
test_rc=$?
tail -15 "$OUT/tests.log"
if [ $test_rc -ne 0 ]; then
  echo "TESTS FAILED (rc=$test_rc; 124 = timeout), see $OUT/tests.log"
  status=1
fi
fi

step "compute-sanitizer (memcheck, racecheck) on the CUDA tests"
SAN_BIN=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
SAN_TESTS=${SANITIZER_TESTS:-python_tests/ops/test_mixture_em_stats.py python_tests/ops/test_mixture_suffstats.py python_tests/ops/test_gibbs_sweep.py}
if [ "${SANITIZER:-1}" = "0" ] || ! want sanitizer; then
  echo "skipped (SANITIZER=0 or not in STEPS)"
elif [ ! -x "$SAN_BIN" ]; then
  echo "SANITIZER MISSING: no compute-sanitizer on PATH or in \$CUDA_HOME/bin"; status=1
else
  for tool in memcheck racecheck; do
    # no caching allocator, so that memcheck sees every allocation's bounds; the reference-agreement tests of the
    # files, CUDA cases only, first failure stops the tool
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "${SANITIZER_TIMEOUT:-60}" "$SAN_BIN" --tool "$tool" --error-exitcode 99 \
      "$PY" -m pytest $SAN_TESTS -q -x -m cuda -k "reference or deterministic or zero_weight or first_sweep or layouts" -p no:cacheprovider >"$OUT/sanitizer_$tool.log" 2>&1
    rc=$?
    tail -4 "$OUT/sanitizer_$tool.log"
    if [ $rc -eq 124 ]; then echo "$tool: time budget reached (partial run, see log)";
    elif [ $rc -ne 0 ]; then echo "SANITIZER $tool FAILED (rc=$rc; 99 = a reported error)"; status=1; fi
  done
fi

if want bench; then
step "CUDA benchmarks (budget ${BENCH_BUDGET:-120} s)"
timeout $(( ${BENCH_BUDGET:-120} + 60 )) "$PY" benchmarks/run_all.py --device cuda --out "$OUT" \
  --budget-s "${BENCH_BUDGET:-120}" 2>&1 | tee "$OUT/bench_cuda.log"
rc=$?
if [ $rc -ne 0 ]; then echo "CUDA BENCHMARKS rc=$rc"; status=1; fi
fi

if want cpu; then
step "CPU headline case (N=65536, K=64, D=32, diag, fp32, log p + score)"
timeout 45 "$PY" benchmarks/bench_mixture_stats.py --device cpu --cases headline --cov diag --modes fwd \
  --providers 'gmmkernels-cpu,torch-eager,torch-gemm,torch-distributions' --out "$OUT" 2>&1 | tee "$OUT/bench_cpu.log"
rc=$?
if [ $rc -ne 0 ]; then echo "CPU HEADLINE rc=$rc"; status=1; fi
fi

if want plots; then
step "plots"
if compgen -G "$OUT/*.json" >/dev/null; then
  "$PY" benchmarks/plot.py "$OUT"/*.json --out "$OUT/plots" >"$OUT/summary.md" 2>"$OUT/plot.log" || status=1
  cat "$OUT/summary.md"
else
  echo "no result JSON in $OUT to plot"
fi
fi

step "done (status $status) in $(( $(date +%s) - T0 )) s; results in $OUT"
exit $status
