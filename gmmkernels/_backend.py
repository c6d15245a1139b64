"""What this installation can run: the native extension, its CUDA part, Triton, the interpreter."""
from __future__ import annotations

import importlib.util
import os

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
