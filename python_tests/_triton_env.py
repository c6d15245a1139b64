"""Where the Triton tests run their kernels: on a machine without CUDA, through the interpreter (TRITON_INTERPRET=1,
which must be set before triton is imported: conftest.py sets it, and importing this module first sets it too) on CPU
tensors; with CUDA and no interpreter, compiled, on CUDA tensors."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Where the interpreted kernels run: CPU tensors (the interpreter copies CUDA tensors around otherwise).
IDEV = "cpu" if INTERPRET else "cuda"
needs_kernels = pytest.mark.skipif(not INTERPRET and not torch.cuda.is_available(),
                                   reason="needs CUDA or TRITON_INTERPRET=1")
