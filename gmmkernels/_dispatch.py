"""The one backend dispatcher: which backends each op family has, what each can run, and which one runs a call.

Each op family declares its backends in priority order, with what each supports (devices, compute dtypes, and
per-family features such as the covariance type or the precision mode). :func:`select` picks the backend of one
call; when the requested one cannot run, the error lists the reason (and, for ``backend="auto"``, the reason of
every backend), so a user sees at once what to change.

Backend names (not every family has all of them):

  reference  the pure-PyTorch specification (:mod:`gmmkernels.reference`), any device and dtype, autograd
  torch      a fast composition of torch ops (``lowrank_adapter`` only)
  cpu, cuda  the native C++ / CUDA kernels of ``torch.ops.gmmkernels.<op>`` (when the extension provides them)
  triton     Triton kernels: CUDA tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before import

``backend="auto"`` picks, in the family's priority order, the first backend that can run the call: the native
kernel of the tensors' device, then Triton (CUDA tensors only), then the pure-PyTorch fallback.

The environment variable ``GMMKERNELS_BACKEND`` changes what ``"auto"`` means, with one rule for every op:

* unset, empty or ``auto``: the priority order above;
* a backend name that this op family has and that can run the call: that backend;
* a known backend name that this op family does not have, or that cannot run this call (device, dtype, build,
  features): a one-time warning, then the priority order above;
* anything else: ``ValueError`` (a typo must not silently change nothing).

An explicit ``backend=`` argument is never overridden by the environment variable.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import _backend

BACKEND_NAMES = ("auto", "reference", "torch", "cpu", "cuda", "triton")
ENV_VAR = "GMMKERNELS_BACKEND"
_ALL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FP32_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# A reason is (exception type, message): the type says what kind of thing is wrong (TypeError: dtype,
# ValueError: device or argument, RuntimeError: this installation lacks it).
Reason = Tuple[type, str]
FeatureCheck = Callable[..., Optional[Reason]]


@dataclass(frozen=True)
class Backend:
    """One backend of a family. ``kind`` is "reference", "torch", "native" or "triton"; ``auto_devices`` are the
    device types on which "auto" may choose it; ``check(name, op=..., **features)`` returns a reason when a feature
    of the call is not supported."""

    name: str
    kind: str
    dtypes: Tuple[torch.dtype, ...] = _ALL_DTYPES
    auto_devices: Tuple[str, ...] = ("cpu", "cuda")
    ops: Optional[Tuple[str, ...]] = None  # None: every op of the family
    check: Optional[FeatureCheck] = None


@dataclass(frozen=True)
class Family:
    """An op family: its public name (the module under gmmkernels/ops/), its native ops, its backends in priority
    order."""

    name: str
    ops: Tuple[str, ...]
    backends: Tuple[Backend, ...]
    names: Tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(b.name for b in self.backends))

    def backend(self, name: str) -> Backend:
        return self.backends[self.names.index(name)]


def _native(name: str, **kw) -> Backend:
    return Backend(name, "native", auto_devices=(name,), **kw)


def _triton(**kw) -> Backend:
    kw.setdefault("dtypes", _FP32_DTYPES)
    kw.setdefault("auto_devices", ("cuda",))
    return Backend("triton", "triton", **kw)


def _exact_precision(name: str, precision: str = "ieee", **_) -> Optional[Reason]:
    if precision != "ieee":
        kind = "a GEMM-form" if precision == "fp32-gemm" else "a tensor-core"
        return (ValueError, f"precision={precision!r} is {kind} mode of the 'triton' backend; backend "
                            f"{name!r} computes in exact arithmetic only (use precision='ieee')")
    return None


def _triton_mixture_features(name: str, cov_type: str = "diag", **_) -> Optional[Reason]:
    if cov_type == "full":
        return (ValueError, "backend='triton' supports cov_type 'diag' and 'spherical'; use 'cuda' or 'cpu' for 'full'")
    return None


# Largest D of the fused CUDA EM kernel (csrc/include/gmmkernels/mixture_em_stats_launch.h): diag / spherical, full.
EM_STATS_CUDA_MAX_D = {"diag": 256, "spherical": 256, "full": 16}


# Largest D of the CUDA M-step for full covariances (one thread per component factors its D x D matrix; larger ones
# take the host path of the fitting loops, whose batched factorisations suit them better).
EM_MSTEP_CUDA_MAX_FULL_D = 64


def _em_stats_cuda_features(name: str, cov_type: str = "diag", D: int = 0, op: str = "mixture_em_stats",
                            **_) -> Optional[Reason]:
    if op == "mixture_em_mstep":
        if cov_type == "full" and D > EM_MSTEP_CUDA_MAX_FULL_D:
            return (ValueError, f"backend='cuda' runs the full-covariance M-step for D <= {EM_MSTEP_CUDA_MAX_FULL_D} "
                                f"(one thread per component), got D={D}; use backend='reference'")
        return None
    limit = EM_STATS_CUDA_MAX_D.get(cov_type, 0)
    if D > limit:
        return (ValueError, f"backend='cuda' fuses D <= {limit} dimensions for cov_type={cov_type!r}, got D={D}; use "
                            "mixture_stats with responsibilities and mixture_suffstats")
    return None


FAMILIES: Dict[str, Family] = {f.name: f for f in (
    Family("mixture_stats", ("mixture_stats",), (
        _native("cuda", check=_exact_precision),
        _triton(check=_triton_mixture_features),
        _native("cpu", check=_exact_precision),
        Backend("reference", "reference", check=_exact_precision),
    )),
    Family("gms_fit", ("gms_fit", "gms_step"), (
        _native("cuda"),
        _triton(dtypes=_ALL_DTYPES, ops=("gms_fit",)),
        _native("cpu"),
        Backend("reference", "reference"),
    )),
    Family("mixture_dispatch", ("mixture_dispatch",), (
        _native("cuda"),
        _triton(),
        _native("cpu"),
        Backend("reference", "reference"),
    )),
    Family("lowrank_adapter", ("lowrank_adapter",), (
        _native("cuda"),
        _triton(),
        _native("cpu"),
        Backend("torch", "torch"),
        Backend("reference", "reference", auto_devices=()),  # materialises d x d per row: never chosen by "auto"
    )),
    Family("mixture_suffstats", ("mixture_suffstats",), (
        _native("cuda"),
        _native("cpu"),
        Backend("reference", "reference"),
    )),
    Family("gibbs_sweep", ("gibbs_sweep",), (
        _native("cuda"),
        _native("cpu"),
        Backend("reference", "reference"),
    )),
    Family("mgdm_step", ("mgdm_vi_step", "mgdm_bridge"), (
        _native("cuda"),
        _native("cpu"),
        Backend("reference", "reference"),
    )),
    Family("mixture_em_stats", ("mixture_em_stats", "mixture_em_mstep"), (
        _native("cuda", check=_em_stats_cuda_features),
        # not chosen by "auto" until it is measured on a GPU: explicit backend="triton" only
        _triton(auto_devices=(), ops=("mixture_em_stats",), check=_triton_mixture_features),
        _native("cpu"),
        Backend("reference", "reference"),
    )),
)}


# ----------------------------------------------------------------------------------------------------------
# reasons


def _device_reasons(b: Backend, device: torch.device, op: str) -> List[Reason]:
    """What keeps backend ``b`` from running ``op`` on ``device`` in this installation (dtype and features aside)."""
    if b.ops is not None and op not in b.ops:
        return [(ValueError, f"backend={b.name!r} is not available for {op}; use "
                             f"{', '.join(repr(n) for n in ('cpu', 'cuda', 'reference'))}")]
    if b.kind == "native":
        if device.type != b.name:
            return [(ValueError, f"backend={b.name!r} needs {b.name.upper()} tensors, got {device}")]
        if not _backend.has_kernel(op, b.name.upper()):
            if not _backend.HAS_C:
                why = f"the native extension is not built ({_backend.C_IMPORT_ERROR})"
            elif b.name == "cuda":
                why = "the extension was built without CUDA (see `gmmkernels info`)"
            else:
                why = f"the extension has no CPU kernel of {op} (rebuild it: bash scripts/setup.sh)"
            return [(RuntimeError, f"backend={b.name!r} needs the native extension, which does not provide it: {why}")]
    elif b.kind == "triton":
        if not _backend.HAS_TRITON:
            return [(RuntimeError, "backend='triton' needs the triton package")]
        if not _backend.triton_usable(device):
            return [(ValueError, "backend='triton' runs on CUDA tensors (or on CPU tensors under TRITON_INTERPRET=1)")]
    return []


def _call_reasons(b: Backend, device: torch.device, dtype: Optional[torch.dtype], op: str, features: dict) -> List[Reason]:
    out = _device_reasons(b, device, op)
    if b.check is not None:
        r = b.check(b.name, op=op, **features)
        if r is not None:
            out.append(r)
    if features.get("transforms") and b.kind in ("native", "triton"):
        out.append(_TRANSFORMS_REASON)
    if dtype is not None and dtype not in b.dtypes:
        out.append((TypeError, f"backend={b.name!r} computes in float32; use backend 'cpu'/'cuda'/'reference' for float64"))
    return out


def _raise(fn: str, reasons: List[Reason]):
    raise reasons[0][0](f"{fn}: " + "; ".join(msg for _, msg in reasons))


_WARNED: set = set()


def _env_backend(fn: str) -> str:
    env = (os.environ.get(ENV_VAR) or "auto").strip()
    if env not in BACKEND_NAMES:
        raise ValueError(f"{fn}: environment variable {ENV_VAR} must be one of {BACKEND_NAMES}, got {env!r}")
    return env


def _warn_once(fam: Family, env: str, device: torch.device, why: str) -> None:
    key = (fam.name, env, device.type, why)
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(f"{ENV_VAR}={env} cannot run {fam.name} here ({why}); using backend='auto' for it", RuntimeWarning,
                  stacklevel=4)


# ----------------------------------------------------------------------------------------------------------
# selection


def select(fn: str, family: str, backend, device: torch.device, dtype: Optional[torch.dtype] = None, *,
           op: Optional[str] = None, **features) -> str:
    """The backend that runs one call of ``fn`` (an op of ``family``) on tensors of ``device`` computed in ``dtype``.

    ``features`` are the family's call options that some backends do not support (``cov_type``, ``precision``).
    Raises ``ValueError`` for an unknown ``backend`` value, and the reason's exception type (see the module
    docstring) when the requested backend cannot run the call.
    """
    fam = FAMILIES[family]
    op = op or fam.ops[0]
    allowed = ("auto",) + fam.names
    if not isinstance(backend, str) or backend not in allowed:
        raise ValueError(f"{fn}: argument 'backend' must be one of {allowed}, got {backend!r}")
    if backend == "auto":
        env = _env_backend(fn)
        if env != "auto":
            if env not in fam.names:
                _warn_once(fam, env, device, f"it has no {env!r} backend")
            else:
                reasons = _call_reasons(fam.backend(env), device, dtype, op, features)
                if not reasons:
                    return env
                _warn_once(fam, env, device, "; ".join(m for _, m in reasons))
    else:
        reasons = _call_reasons(fam.backend(backend), device, dtype, op, features)
        if reasons:
            _raise(fn, reasons)
        return backend
    why = []
    for b in fam.backends:
        if device.type not in b.auto_devices:
            why.append(f"{b.name}: not chosen automatically for {device.type} tensors")
            continue
        reasons = _call_reasons(b, device, dtype, op, features)
        if not reasons:
            return b.name
        why.append(f"{b.name}: " + "; ".join(m for _, m in reasons))
    raise ValueError(f"{fn}: no backend can run this call here ({' | '.join(why)})")


def can_run(family: str, backend: str, device: torch.device, dtype: Optional[torch.dtype] = None, *,
            op: Optional[str] = None, **features) -> bool:
    """Whether ``backend`` (a backend name of ``family``) can run a call of ``op`` with these tensors and features,
    without choosing it (the environment variable plays no part)."""
    fam = FAMILIES[family]
    return backend in fam.names and not _call_reasons(fam.backend(backend), device, dtype, op or fam.ops[0], features)


def available(family: str, device="cpu", op: Optional[str] = None) -> List[str]:
    """Backends of ``family`` that can run ``op`` (default: the family's first op) on ``device`` in this
    installation, in priority order (some may still refuse a dtype or an option)."""
    fam = FAMILIES[family]
    device = torch.device(device)
    op = op or fam.ops[0]
    return [b.name for b in fam.backends if not _device_reasons(b, device, op)]


# ----------------------------------------------------------------------------------------------------------
# compute dtypes and torch.func transforms

_TRANSFORMS_REASON: Reason = (
    ValueError, "the fused backends cannot run under torch.func transforms (grad, jacrev, jacfwd, hessian, vmap): "
                "their autograd is a torch.library registration, which those transforms do not support; use the "
                "pure-PyTorch backend ('reference', or 'torch' for lowrank_adapter; backend='auto' picks it there) "
                "or torch.autograd.grad(..., create_graph=True)")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every backend computes a call in: float32 for float16 / bfloat16 inputs, else the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
