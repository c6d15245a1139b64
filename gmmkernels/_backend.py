"""What this installation can run: the native extension, its CUDA part, Triton, the interpreter."""
from __future__ import annotations

import importlib.util
import os
import warnings

import torch

try:
    from . import _C  # noqa: F401  (runs the TORCH_LIBRARY static initialisers)

    HAS_C = True
    C_IMPORT_ERROR: Exception | None = None
except ImportError as e:  # GMMKERNELS_NO_EXTENSION=1, or a broken build: reference and Triton still work
    _C = None
    HAS_C = False
    C_IMPORT_ERROR = e

HAS_TRITON = importlib.util.find_spec("triton") is not None


def _release(version: str) -> str:
    """'2.13.0+cpu' -> '2.13.0' (the local build tag does not change the C++ ABI)."""
    return version.split("+", 1)[0].strip()


def torch_mismatch(built: str | None, running: str) -> str | None:
    """What to tell the user when the extension was compiled against another torch than the one running (None when
    they agree). A C++ extension is tied to the torch release it was compiled with: with another one its kernels
    can fail to load, fail at call time or crash."""
    if not built or _release(built) == _release(running):
        return None
    return (f"gmmkernels: the native extension was built against torch {built} but torch {running} is running; "
            "its kernels may fail or crash. Rebuild it against this torch: `bash scripts/setup.sh` in a source "
            "checkout, or `pip install --no-build-isolation --no-deps --force-reinstall <the gmmkernels sdist or "
            "checkout>` (without --no-build-isolation pip compiles against the torch it downloads).")


def _load_problem() -> str | None:
    """The warning to give at import, if any: a stale build, or a built extension that does not load."""
    if HAS_C:
        return torch_mismatch(dict(_C.build_info()).get("torch_version_built"), torch.__version__)
    here = os.path.dirname(os.path.abspath(__file__))
    if any(f.startswith("_C.") and f.endswith((".so", ".pyd")) for f in os.listdir(here)):
        return (f"gmmkernels: the native extension is present but does not load ({C_IMPORT_ERROR}); only the "
                "reference and Triton backends are available. It was probably built against another torch than "
                f"{torch.__version__}: rebuild it (`bash scripts/setup.sh` in a source checkout, or "
                "`pip install --no-build-isolation --no-deps --force-reinstall <sdist or checkout>`).")
    return None


#: the warning given at import (None when the extension is absent on purpose or matches the running torch)
LOAD_PROBLEM = _load_problem()
if LOAD_PROBLEM:
    warnings.warn(LOAD_PROBLEM, RuntimeWarning, stacklevel=2)
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def build_info() -> dict:
    """How the native extension was built ({} if it is missing)."""
    if not HAS_C:
        return {}
    return dict(_C.build_info())


def _native_schemas() -> frozenset:
    """Names of the ops the extension defines (its TORCH_LIBRARY block runs when _C is imported)."""
    if not HAS_C:
        return frozenset()
    return frozenset(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("gmmkernels::"))


# computed once at import: backend selection then stays plain Python that torch.compile can trace
NATIVE_SCHEMAS = _native_schemas()
NATIVE_KERNELS = frozenset((op, key) for op in NATIVE_SCHEMAS for key in ("CPU", "CUDA")
                           if torch._C._dispatch_has_kernel_for_dispatch_key(f"gmmkernels::{op}", key))


def has_schema(op: str) -> bool:
    """True if the native extension defines ``gmmkernels::<op>`` (then its fake kernel and autograd are registered;
    an extension built from older sources may lack newer ops)."""
    return op in NATIVE_SCHEMAS


def has_kernel(op: str, key: str) -> bool:
    """True if ``gmmkernels::<op>`` has a native kernel for dispatch key ``key`` ("CPU" or "CUDA")."""
    return (op, key) in NATIVE_KERNELS


def triton_usable(device: torch.device) -> bool:
    """Triton kernels run natively on CUDA tensors, and on CPU tensors only under TRITON_INTERPRET=1."""
    if not HAS_TRITON:
        return False
    return device.type == "cuda" or TRITON_INTERPRET
