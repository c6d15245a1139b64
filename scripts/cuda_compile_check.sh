#!/usr/bin/env bash
# Compile-and-link check of the CUDA build of gmmkernels._C on a machine without a GPU.
#
#   scripts/cuda_compile_check.sh [PYTHON]
#
# PYTHON (or $GMMKERNELS_CUDA_PYTHON) is a Python whose torch is a CUDA build; CUDA_HOME (default
# /usr/local/cuda) holds the nvcc to use; TORCH_CUDA_ARCH_LIST defaults to 9.0. The extension is built out of
# tree (the in-place CPU build in gmmkernels/ is left alone), then imported with that Python to prove it links and
# that the CUDA kernels are registered. Exits non-zero on any failure.
set -euo pipefail

PY="${1:-${GMMKERNELS_CUDA_PYTHON:-python}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export FORCE_CUDA=1
export MAX_JOBS="${MAX_JOBS:-2}"
unset GMMKERNELS_NO_CUDA GMMKERNELS_NO_EXTENSION || true

if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "cuda_compile_check: no nvcc at $CUDA_HOME/bin/nvcc (set CUDA_HOME)" >&2
  exit 2
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" || {
  echo "cuda_compile_check: $PY has no CUDA build of torch" >&2
  exit 2
}

# pip wheels of CUDA torch ship the cuBLAS/cuSPARSE/... headers ATen's CUDA headers include under
# site-packages/nvidia/*/include; make them visible to gcc and nvcc.
NV_DIRS="$("$PY" - <<'PYEOF'
import glob, os, site
roots = []
for s in site.getsitepackages():
    roots += glob.glob(os.path.join(s, "nvidia", "*"))
print(" ".join(r for r in roots if os.path.isdir(os.path.join(r, "include"))))
PYEOF
)"
for d in $NV_DIRS; do
  export CPATH="$d/include${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$d/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
  NVCC_FLAGS="${NVCC_FLAGS:-} -I$d/include"
done
export NVCC_FLAGS="${NVCC_FLAGS:-}"

WORK="${GMMKERNELS_CUDA_CHECK_DIR:-$(mktemp -d /tmp/gmmkernels-cuda-check.XXXXXX)}"
mkdir -p "$WORK/build" "$WORK/lib"
echo "cuda_compile_check: building with $PY (archs $TORCH_CUDA_ARCH_LIST) in $WORK"
cd "$ROOT"
"$PY" setup.py build_ext --build-temp "$WORK/build" --build-lib "$WORK/lib"

SO="$(ls "$WORK"/lib/gmmkernels/_C*.so | head -n 1)"
[ -n "$SO" ] || { echo "cuda_compile_check: no _C*.so was produced" >&2; exit 1; }

# Import the freshly built module in place of the package's own _C, without a GPU.
GMMKERNELS_ROOT="$ROOT" "$PY" - "$SO" <<'PYEOF'
import importlib.util, sys
import torch
so = sys.argv[1]
spec = importlib.util.spec_from_file_location("gmmkernels._C", so)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
info = dict(mod.build_info())
assert info.get("with_cuda"), f"extension was built without CUDA: {info}"
import glob, os, re
root = os.environ["GMMKERNELS_ROOT"]
# every op that has a CUDA implementation in csrc/cuda must be registered for both CPU and CUDA
ops = sorted({m for f in glob.glob(os.path.join(root, "csrc", "cuda", "*.cpp"))
              for m in re.findall(r'm\.impl\("([a-z_0-9]+)"', open(f).read())})
assert "mixture_stats" in ops, ops
missing = [(op, key) for op in ops for key in ("CPU", "CUDA")
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"gmmkernels::{op}", key)]
assert not missing, f"kernels not registered: {missing}"
print(f"cuda_compile_check: OK, {len(ops)} ops with CPU and CUDA kernels:", ", ".join(ops))
print("cuda_compile_check:", so, info)
PYEOF
