#!/usr/bin/env bash
# Set up a source checkout of gmmkernels: the Python dependencies, an editable install of this checkout (so
# `import gmmkernels` and the `gmmkernels` command use it from anywhere), and the native extension built in place
# (gmmkernels/_C*.so, its objects kept in build/).
# Idempotent and incremental: a second run recompiles only the sources and headers that changed (nothing at all
# when none did), so it takes seconds.
#   PYTHON=python3.11            interpreter to use (default: python3)
#   GMMKERNELS_TORCH="torch==X"  torch to install when none is importable (default: torch==2.13.0)
#   MAX_JOBS=N                   parallel compile jobs (default: 2)
# Build switches (FORCE_CUDA, GMMKERNELS_NO_CUDA, TORCH_CUDA_ARCH_LIST, ...) are read by setup.py; see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pipi() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }
say() { echo "setup: $*"; }
start=$SECONDS

if ! "$PY" -c "import torch" 2>/dev/null; then
  say "installing ${GMMKERNELS_TORCH:-torch==2.13.0}"
  pipi "${GMMKERNELS_TORCH:-torch==2.13.0}"
fi
# What the build, the package, its figures and its tests need: importable module -> pip requirement.
# An optional dependency is one more entry here (and an extra in pyproject.toml).
missing=$("$PY" - <<'PYEOF'
import importlib.metadata as md
import importlib.util
mods = {
    "setuptools": "setuptools>=77", "wheel": "wheel", "ninja": "ninja",      # build
    "numpy": "numpy", "tqdm": "tqdm",                                        # runtime
    "triton": "triton==3.6.0",   # the release the GPU images carry, so interpreter runs here and GPU runs agree
    "matplotlib": "matplotlib",                                              # figures of the demo and benchmarks
    "scipy": "scipy", "sklearn": "scikit-learn",                             # test oracles
    "pytest": "pytest", "xdist": "pytest-xdist", "expecttest": "expecttest", # tests
    # the optional front-ends (gmmkernels[sklearn], [pyro], [diffusers]), so their tests run; pinned as in pyproject
    "pyro": "pyro-ppl==1.9.2", "diffusers": "diffusers==0.42.1",
}
need = [spec for mod, spec in mods.items() if importlib.util.find_spec(mod) is None]
if "setuptools>=77" not in need and int(md.version("setuptools").split(".")[0]) < 77:
    need.append("setuptools>=77")  # SPDX licence metadata (PEP 639)
print(" ".join(need))
PYEOF
)
if [ -n "$missing" ]; then
  say "installing $missing"
  # shellcheck disable=SC2086
  pipi $missing
fi

# Editable install of this checkout, compiling nothing: the extension is built in place below, where its objects
# persist (pip would compile it in a temporary folder and throw the objects away).
if ! (cd / && "$PY" -c "import importlib.util as u, os, sys; s = u.find_spec('gmmkernels'); \
sys.exit(0 if s and s.origin and os.path.samefile(os.path.dirname(s.origin), sys.argv[1]) else 1)" \
      "$PWD/gmmkernels") 2>/dev/null; then
  say "registering this checkout with pip (editable install of $PWD)"
  GMMKERNELS_NO_EXTENSION=1 pipi --no-build-isolation --no-deps -e .
fi

say "building the native extension in place (MAX_JOBS=${MAX_JOBS:-2}; only changed sources are recompiled;" \
    "a full CPU build takes about 3 minutes on 2 cores)"
# ninja prints one screen-wide command line per finished file: show the file name only (errors pass unchanged)
MAX_JOBS=${MAX_JOBS:-2} "$PY" setup.py -q build_ext --inplace 2>&1 |
  sed -u -E 's#^\[([0-9]+/[0-9]+)\] .* -c (/[^ ]*/)?(csrc/[^ ]+) -o .*#setup:   [\1] compiled \3#'

"$PY" -W ignore -c "import gmmkernels, sys; from gmmkernels import _backend as b; \
print('setup: gmmkernels', gmmkernels.__version__, 'native:', b.build_info() or 'not built (' + str(b.C_IMPORT_ERROR) + ')'); \
b.LOAD_PROBLEM and print('setup: WARNING', b.LOAD_PROBLEM)"
say "done in $((SECONDS - start)) s"
