"""What the Triton kernels share: whether the interpreter runs them, an interpreter fix, and the launch wrapper.

Imported by every module of gmmkernels/triton/ (and only from there: it imports ``triton``).
"""
from __future__ import annotations

import torch
import triton
from torch import Tensor
from torch.library import wrap_triton

from .._backend import TRITON_INTERPRET as INTERPRET


def _fix_interpreter_scalar_index() -> None:
    """Interpreter-only fix: triton 3.6's interpreter turns a scalar kernel argument into a Python int (``range``
    bounds) with ``int(array_of_shape_(1,))``, which numpy >= 2.4 rejects (triton-lang/triton#9171, fixed upstream
    by #9172). Re-patch ``tensor.__index__`` to take the single element explicitly; no effect on compiled kernels."""
    import numpy as np

    try:
        int(np.zeros(1))
        return  # numpy < 2.4: nothing to fix
    except TypeError:
        pass
    from triton.runtime import interpreter as _interp

    orig = getattr(_interp, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "_gmmkernels_fixed", False):
        return

    def _patch_lang_tensor(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    _patch_lang_tensor._gmmkernels_fixed = True
    _interp._patch_lang_tensor = _patch_lang_tensor


if INTERPRET:
    _fix_interpreter_scalar_index()


def launcher(kernel, like: Tensor):
    """The kernel to launch with ``[grid](...)``. Under tracing (torch.compile / export / make_fx: fake or functional
    tensors, or a dispatch mode on the stack) compiled kernels go through ``wrap_triton`` so the launch is recorded.
    In plain eager the kernel is launched directly: wrap_triton's eager path costs ~200 us of host time per launch
    (measured, torch 2.11) against ~20 us for a direct launch. Interpreted kernels (TRITON_INTERPRET=1) are never
    wrapped: older torch's wrap_triton rejects an InterpretedFunction (pytorch/pytorch#152868)."""
    if not isinstance(kernel, triton.runtime.JITFunction):
        return kernel
    if type(like) is torch.Tensor and torch._C._len_torch_dispatch_stack() == 0 and not torch.compiler.is_compiling():
        return kernel
    return wrap_triton(kernel)


# CUDA's limit on the second and third dimensions of a grid: kernels that put the mixtures of a batch there launch
# once per range of batch_ranges.
GRID_YZ_MAX = 65535


def batch_ranges(B: int) -> list:
    """[b0, b1) ranges of at most GRID_YZ_MAX mixtures covering [0, B)."""
    return [(b0, min(B, b0 + GRID_YZ_MAX)) for b0 in range(0, B, GRID_YZ_MAX)]


def check_device(fn: str, t: Tensor) -> None:
    """Triton kernels run on CUDA tensors, and on CPU tensors only when the interpreter is on."""
    if t.device.type != "cuda" and not INTERPRET:
        raise RuntimeError(f"{fn}: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set before import for CPU)")
