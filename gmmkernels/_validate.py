"""Argument checks shared by every public function: one set of rules, one set of messages.

Every message has the form ``"<function>: argument '<name>' <what is wrong>"`` so that a user can see which call
and which argument failed. Type problems raise ``TypeError``; wrong shapes, devices and values raise ``ValueError``.

Two kinds of checks:

* structural checks (types, dtypes, devices, shapes, Python scalars) always run; they never read tensor data;
* value checks (positive finite scales, triangular factors, NaN weights, finite data) read tensor data, which costs
  a device synchronisation on a GPU. :func:`set_validation` turns them off globally, and they are skipped while
  ``torch.compile`` traces and under torch.func transforms (:func:`values_enabled`).
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional, Sequence, Tuple

import torch
from torch import Tensor

COV_TYPES = ("diag", "spherical", "full")
_SCALE_SHAPES = {"diag": "[..., K, D]", "spherical": "[..., K]", "full": "[..., K, D, D]"}

_VALUE_CHECKS = True


def set_validation(enabled: bool) -> None:
    """Turn the value checks (positive finite scales, triangular factors, NaN weights, finite data) on or off.

    They read tensor values, which costs a device synchronisation per call on GPUs. Type, dtype, device and shape
    checks always run. Value checks are also skipped inside torch.compile regions. The switch applies to every op,
    to :class:`gmmkernels.GaussianMixture` and to the fitting functions.
    """
    global _VALUE_CHECKS
    _VALUE_CHECKS = bool(enabled)


def compiling() -> bool:
    """True while torch.compile (dynamo) traces the caller."""
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - very old torch
        return False


def values_enabled() -> bool:
    """Whether value checks run now (switched on, not inside a torch.compile trace, and not under a torch.func
    transform, whose batched tensors cannot be read into Python bools)."""
    return _VALUE_CHECKS and not compiling() and not torch._C._are_functorch_transforms_active()


def _has_data(t: Tensor) -> bool:
    """Meta tensors (shape-only tracing) have no values to check."""
    return t.numel() > 0 and t.device.type != "meta"


has_data = _has_data


# ----------------------------------------------------------------------------------------------------------
# tensors


def tensor(fn: str, name: str, t, *, floating: bool = True) -> Tensor:
    """``t`` must be a tensor (a floating-point one when ``floating``)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{fn}: argument '{name}' must be a floating-point tensor, got {t.dtype}")
    return t


def tensors(fn: str, named: Sequence[Tuple[str, object]], *, floating: bool = True, same_dtype: bool = True) -> None:
    """Every (name, tensor) pair is a (floating) tensor on the device of the first one, and of its dtype when
    ``same_dtype``. ``None`` entries are skipped (optional arguments)."""
    named = [(n, t) for n, t in named if t is not None]
    for name, t in named:
        tensor(fn, name, t, floating=floating)
    if not named:
        return
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise ValueError(f"{fn}: argument '{name}' is on {t.device} but '{first_name}' is on {first.device}")
        if same_dtype and t.dtype != first.dtype:
            raise TypeError(f"{fn}: argument '{name}' has dtype {t.dtype} but '{first_name}' has {first.dtype}; pass one dtype")


def finite(fn: str, name: str, t: Tensor) -> None:
    """Value check: no NaN or infinity in ``t``."""
    if values_enabled() and _has_data(t) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{fn}: argument '{name}' contains NaN or infinite values")


def positive(fn: str, name: str, t: Tensor) -> None:
    """Value check: every entry of ``t`` is positive and finite."""
    if values_enabled() and _has_data(t) and not bool(((t > 0) & torch.isfinite(t)).all()):
        raise ValueError(f"{fn}: argument '{name}' must be positive and finite")


def nonnegative(fn: str, name: str, t: Tensor) -> None:
    """Value check: every entry of ``t`` is >= 0 and finite."""
    if values_enabled() and _has_data(t) and not bool(((t >= 0) & torch.isfinite(t)).all()):
        raise ValueError(f"{fn}: argument '{name}' must be non-negative and finite")


def nonzero(fn: str, name: str, t) -> None:
    """No entry of ``t`` is 0: a value check for a tensor, always checked for a Python number."""
    if isinstance(t, Tensor):
        bad = values_enabled() and _has_data(t) and bool((t == 0).any())
    else:
        bad = float(t) == 0
    if bad:
        raise ValueError(f"{fn}: argument '{name}' must be non-zero")


def points(fn: str, name: str, x, like: Tensor, D: int) -> Tensor:
    """Structural check of points ``x`` [..., N, D] for a mixture whose parameters look like ``like``: a
    floating-point tensor on its device and of its dtype, with at least two dimensions and D in the last."""
    tensors(fn, [(name, x), ("means", like)])
    if x.dim() < 2 or x.shape[-1] != D:
        raise ValueError(f"{fn}: argument '{name}' must have shape [..., N, D={D}], got {tuple(x.shape)}")
    return x


def shape(fn: str, name: str, t: Tensor, want: Sequence[int], what: Optional[str] = None) -> None:
    """``t`` has exactly the shape ``want``; ``what`` names the layout in the message (e.g. "[C, K, D]")."""
    if tuple(t.shape) != tuple(want):
        layout = f" {what} =" if what else ""
        raise ValueError(f"{fn}: argument '{name}' must have shape{layout} {list(want)}, got {list(t.shape)}")


# ----------------------------------------------------------------------------------------------------------
# Python scalars


def choice(fn: str, name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{fn}: argument '{name}' must be one of {choices}, got {value!r}")


def flag(fn: str, name: str, value) -> bool:
    """A bool (0 and 1 as ints are accepted too)."""
    if not (isinstance(value, bool) or (isinstance(value, numbers.Integral) and value in (0, 1))):
        raise TypeError(f"{fn}: argument '{name}' must be a bool, got {value!r}")
    return bool(value)


def integer(fn: str, name: str, value, *, lo: Optional[int] = None, hi: Optional[int] = None,
            what: Optional[str] = None) -> int:
    """An int (not a bool) in [lo, hi]. ``what`` replaces the default range wording of the message."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        value = int(value)
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        if what is None:
            if lo is not None and hi is not None:
                what = f"an int in [{lo}, {hi}]"
            elif lo is not None:
                what = f"an int >= {lo}"
            elif hi is not None:
                what = f"an int <= {hi}"
            else:
                what = "an int"
        exc = ValueError if isinstance(value, numbers.Integral) and not isinstance(value, bool) else TypeError
        raise exc(f"{fn}: argument '{name}' must be {what}, got {value!r}")
    return value


def number(fn: str, name: str, value, *, lo: Optional[float] = None, hi: Optional[float] = None,
           lo_open: bool = False, hi_open: bool = False, finite: bool = True, what: Optional[str] = None) -> float:
    """A real number (bool excluded; a 0-d tensor is accepted) within the bounds; NaN is always refused and
    infinities unless ``finite=False``. ``what`` replaces the default wording of the message."""
    if isinstance(value, Tensor) and value.dim() == 0 and (value.is_floating_point() or not value.dtype == torch.bool):
        value = value.item()
    is_num = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = is_num and not math.isnan(float(value)) and (not finite or math.isfinite(float(value)))
    if ok:
        v = float(value)
        if lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
    if not ok:
        if what is None:
            parts = []
            if lo is not None and hi is not None:
                parts.append(f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")
            elif lo is not None:
                parts.append(f"{'>' if lo_open else '>='} {lo:g}")
            elif hi is not None:
                parts.append(f"{'<' if hi_open else '<='} {hi:g}")
            what = ("a finite number " if finite else "a number ") + (parts[0] if parts else "")
        raise (ValueError if is_num else TypeError)(f"{fn}: argument '{name}' must be {what.strip()}, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------------------------------
# mixtures


def mixture(fn: str, logits, means, scale, cov_type, x=None) -> Tuple[torch.Size, int, int]:
    """Checks of a (batched) mixture's parameters, and of points ``x`` [..., N, D] when given.

    logits [..., K], means [..., K, D], scale: diag [..., K, D] standard deviations, spherical [..., K], full
    [..., K, D, D] lower-triangular Cholesky factors. Returns (broadcast batch shape, K, D). Value checks (gated by
    :func:`values_enabled`): logits without NaN / +inf and with at least one finite entry per mixture; scales
    positive and finite (full: lower-triangular with a positive finite diagonal).
    """
    named = ([("x", x)] if x is not None else []) + [("logits", logits), ("means", means), ("scale", scale)]
    for name, t in named:
        tensor(fn, name, t)
    choice(fn, "cov_type", cov_type, COV_TYPES)
    tensors(fn, named)
    if x is not None and x.dim() < 2:
        raise ValueError(f"{fn}: argument 'x' must have shape [..., N, D], got {tuple(x.shape)}")
    if means.dim() < 2:
        raise ValueError(f"{fn}: argument 'means' must have shape [..., K, D], got {tuple(means.shape)}")
    K, D = means.shape[-2], means.shape[-1]
    if x is not None:
        if x.shape[-1] == 0:
            raise ValueError(f"{fn}: argument 'x' has D=0 dimensions")
        if D != x.shape[-1]:
            raise ValueError(f"{fn}: argument 'means' has D={D} but 'x' has D={x.shape[-1]}")
    elif D == 0:
        raise ValueError(f"{fn}: argument 'means' has D=0 dimensions")
    if K == 0:
        raise ValueError(f"{fn}: argument 'means' has K=0 components")
    if logits.dim() < 1 or logits.shape[-1] != K:
        raise ValueError(f"{fn}: argument 'logits' must have shape [..., K={K}], got {tuple(logits.shape)}")
    want = {"diag": (K, D), "spherical": (K,), "full": (K, D, D)}[cov_type]
    if scale.dim() < len(want) or tuple(scale.shape[-len(want):]) != want:
        raise ValueError(
            f"{fn}: argument 'scale' for cov_type={cov_type!r} must have shape {_SCALE_SHAPES[cov_type]} = "
            f"[..., {', '.join(map(str, want))}], got {tuple(scale.shape)}")
    shapes = ([x.shape[:-2]] if x is not None else []) + [logits.shape[:-1], means.shape[:-2], scale.shape[: -len(want)]]
    try:
        batch = torch.broadcast_shapes(*shapes)
    except RuntimeError as e:
        what = "x, logits, means and scale" if x is not None else "logits, means and scale"
        raise ValueError(f"{fn}: the leading (batch) dimensions of {what} do not broadcast: {e}") from None
    if values_enabled():
        mixture_values(fn, logits, scale, cov_type)
    return batch, K, D


def _mixture_values_ok(logits: Tensor, scale: Tensor, cov_type: str) -> bool:
    """Whether a mixture passes every value check of :func:`mixture_values`, from a few reductions read back in one
    host transfer (one device synchronisation on a GPU, against one per check). Maxima and minima propagate NaN, so:
    each mixture's largest logit is finite (no NaN, no +inf, not all -inf) and the scales' minimum is positive and
    their maximum finite; for full factors, the diagonal's, and the strict upper triangle's largest magnitude is 0."""
    parts = list(torch.aminmax(logits.amax(-1)))
    if cov_type == "full":
        parts += [torch.diagonal(scale, dim1=-2, dim2=-1).amin(), scale.abs().amax(), torch.triu(scale, 1).abs().amax()]
    else:
        parts += list(torch.aminmax(scale))
    v = torch.stack(parts).tolist()
    if not (math.isfinite(v[0]) and math.isfinite(v[1]) and v[2] > 0 and math.isfinite(v[3])):
        return False
    return cov_type != "full" or v[4] == 0


def mixture_values(fn: str, logits: Tensor, scale: Tensor, cov_type: str) -> None:
    """The value checks of :func:`mixture` (they read tensor data). A mixture that passes them all costs one host
    read (:func:`_mixture_values_ok`); one that does not goes through the checks one by one, for the message."""
    if not (_has_data(logits) and _has_data(scale)):
        return
    if _mixture_values_ok(logits, scale, cov_type):
        return
    log_weights(fn, "logits", logits)
    if cov_type == "full":
        diag = torch.diagonal(scale, dim1=-2, dim2=-1)
        if scale.numel() and bool(torch.triu(scale, 1).ne(0).any()):
            raise ValueError(f"{fn}: argument 'scale' for cov_type='full' must be lower-triangular (a Cholesky factor)")
        if diag.numel() and not bool(((diag > 0) & torch.isfinite(diag)).all()):
            raise ValueError(
                f"{fn}: argument 'scale' for cov_type='full' must have a positive finite diagonal (singular or invalid factor)")
        if scale.numel() and not bool(torch.isfinite(scale).all()):
            raise ValueError(f"{fn}: argument 'scale' contains non-finite values")
    elif scale.numel() and not bool(((scale > 0) & torch.isfinite(scale)).all()):
        raise ValueError(f"{fn}: argument 'scale' must be positive and finite")


# ----------------------------------------------------------------------------------------------------------
# arguments of the algorithms (fitting, samplers, training): values they read, generators, seeds, layouts


def log_weights(fn: str, name: str, t: Tensor) -> None:
    """Value check of log-weights / logits [..., K]: no NaN or +inf, and at least one finite entry per row."""
    if not (values_enabled() and _has_data(t)):
        return
    if bool(torch.isnan(t).any()):
        raise ValueError(f"{fn}: argument '{name}' contains NaN")
    if bool((t == float("inf")).any()):
        raise ValueError(f"{fn}: argument '{name}' contains +inf")
    if bool(torch.isneginf(t).all(-1).any()):
        raise ValueError(f"{fn}: argument '{name}' gives some mixture no component with positive weight (all -inf)")


def spd(fn: str, name: str, t: Tensor) -> None:
    """Value check: ``t`` [..., D, D] holds symmetric positive definite matrices."""
    if not (values_enabled() and _has_data(t)):
        return
    finite(fn, name, t)
    tol = 1e3 * torch.finfo(t.dtype).eps * t.abs().amax((-1, -2), keepdim=True).clamp_min(1)
    if not bool(((t - t.transpose(-1, -2)).abs() <= tol).all()):
        raise ValueError(f"{fn}: argument '{name}' must hold symmetric matrices")
    if bool((torch.linalg.cholesky_ex(t.double())[1] != 0).any()):
        raise ValueError(f"{fn}: argument '{name}' must hold positive definite matrices")


def values(fn: str, name: str, t: Tensor) -> Tensor:
    """``t`` must hold values: functions that read data (fitting, training) refuse meta tensors (shapes only)."""
    if t.device.type == "meta":
        raise ValueError(f"{fn}: argument '{name}' is a meta tensor (a shape without values); {fn} reads the values")
    return t


def generator(fn: str, name: str, g) -> Optional[torch.Generator]:
    """None or a torch.Generator."""
    if g is not None and not isinstance(g, torch.Generator):
        raise TypeError(f"{fn}: argument '{name}' must be a torch.Generator or None, got {type(g).__name__}")
    return g


def seed(fn: str, name: str, value) -> int:
    """A 64-bit seed: an int in [-2^63, 2^64), what ``torch.Generator.manual_seed`` takes."""
    return integer(fn, name, value, lo=-(1 << 63), hi=(1 << 64) - 1, what="an int in [-2^63, 2^64)")


def dtype(fn: str, name: str, value) -> torch.dtype:
    """A floating-point torch.dtype."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{fn}: argument '{name}' must be a floating-point torch.dtype, got {value!r}")
    return value


def device(fn: str, name: str, value) -> Optional[torch.device]:
    """None, or a torch.device / device string."""
    if value is None:
        return None
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{fn}: argument '{name}' must be a torch.device, a device string or None, got {value!r}")
    try:
        return torch.device(value)
    except RuntimeError:
        raise ValueError(f"{fn}: argument '{name}' is not a device: {value!r}") from None


def sizes(fn: str, name: str, value, *, what: str = "a tuple of positive ints") -> Tuple[int, ...]:
    """A non-empty sequence of positive ints (a tensor shape)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, torch.Size)):
        raise TypeError(f"{fn}: argument '{name}' must be {what}, got {value!r}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{fn}: argument '{name}' must be {what}, got {value!r}")
    if len(value) == 0 or any(int(v) < 1 for v in value):
        raise ValueError(f"{fn}: argument '{name}' must be {what}, got {tuple(value)!r}")
    return tuple(int(v) for v in value)


def batched(fn: str, name: str, t: Tensor, batch: Sequence[int], tail: Sequence[int], layout: str) -> None:
    """``t`` has shape [*b, *tail] where b broadcasts to ``batch`` (b may be empty: one value for every data set);
    ``layout`` names the shape in the message (e.g. "[..., K, D]")."""
    tail, n = tuple(tail), len(tuple(tail))
    ok = t.dim() >= n and tuple(t.shape[t.dim() - n:]) == tail and t.dim() - n <= len(batch)
    if ok:
        lead = tuple(t.shape[: t.dim() - n])
        ok = all(a in (1, b) for a, b in zip(lead[::-1], tuple(batch)[::-1]))
    if not ok:
        want = list(batch) + list(tail)
        raise ValueError(f"{fn}: argument '{name}' must have shape {layout} = {want} (leading dimensions may be "
                         f"left out or 1), got {list(t.shape)}")
