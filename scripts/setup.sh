#!/usr/bin/env bash
# Set up a machine for gmmkernels: Python dependencies, then build the native extension in place.
# Idempotent and incremental: a second run only rebuilds what changed.
#   PYTHON=python3.11            interpreter to use (default: python3)
#   GMMKERNELS_TORCH="torch==X"  torch to install when none is importable (default: torch==2.13.0, the CPU build)
# Build switches (FORCE_CUDA, GMMKERNELS_NO_CUDA, TORCH_CUDA_ARCH_LIST, ...) are read by setup.py; see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pipi() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: installing ${GMMKERNELS_TORCH:-torch==2.13.0}"
  pipi "${GMMKERNELS_TORCH:-torch==2.13.0}"
fi
# triton is pinned to the release the GPU images carry, so interpreter runs here and native runs there agree
missing=$("$PY" - <<'PYEOF'
import importlib.util
mods = {"ninja": "ninja", "numpy": "numpy", "tqdm": "tqdm", "triton": "triton==3.6.0", "scipy": "scipy",
        "sklearn": "scikit-learn", "matplotlib": "matplotlib", "pytest": "pytest", "xdist": "pytest-xdist",
        "expecttest": "expecttest", "setuptools": "setuptools", "wheel": "wheel"}
# the optional front-ends' libraries (gmmkernels[sklearn], [pyro], [diffusers]), so their tests run; pinned as in
# pyproject.toml
mods.update({"pyro": "pyro-ppl==1.9.2", "diffusers": "diffusers==0.42.1"})
print(" ".join(spec for mod, spec in mods.items() if importlib.util.find_spec(mod) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "setup: installing $missing"
  # shellcheck disable=SC2086
  pipi $missing
fi
if ! "$PY" -m pip show -q gmmkernels >/dev/null 2>&1; then
  echo "setup: installing gmmkernels (editable) and building its kernels"
  MAX_JOBS=${MAX_JOBS:-2} pipi --no-build-isolation --no-deps -e .
else
  echo "setup: rebuilding the native extension in place (incremental)"
  MAX_JOBS=${MAX_JOBS:-2} "$PY" setup.py -q build_ext --inplace 2>&1 | grep -v -E "^(running|copying|  )" || true
fi
"$PY" -c "import gmmkernels, sys; b = gmmkernels.build_info(); print('setup: gmmkernels', gmmkernels.__version__, 'native:', b or 'not built'); sys.exit(0)"
