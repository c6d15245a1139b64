"""Property-style differential tests of the public mixture ops.

Seeded random cases (shapes, broadcast batch dimensions, strides, covariance types, dtypes, scales from 1e-2 to 1e2,
points up to 1e4 standard deviations from every component, logits down to -inf) run on every backend (reference,
cpu, cuda when present, triton: through the interpreter on CPU machines) and are compared with the float64 reference
on the same rounded inputs: values, first derivatives and second derivatives (Hessian-vector products, through the
score: third derivatives of log p). The tolerances live in python_tests/_tolerances.py.
"""
import pytest
import torch

import gmmkernels
from gmmkernels import available_backends
from gmmkernels._dispatch import compute_dtype
from gmmkernels.reference import mixture_stats as ref

from _tolerances import check, resp_condition

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N_VALUE, N_GRAD, N_GRAD2 = 240, 72, 24
TRITON_EVERY = 4  # the interpreter is slow: Triton runs every 4th case on CPU (every case on CUDA)
DTYPES = [torch.float32, torch.float32, torch.float64, torch.float16, torch.bfloat16]


def make_case(i: int):
    """Case i: (cov_type, dtype, float64 arguments (x, logits, means, scale) rounded to dtype, a strided copy flag)."""
    g = torch.Generator().manual_seed(1000 + i)

    def pick(seq):
        return seq[int(torch.randint(len(seq), (1,), generator=g))]

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    cov = pick(["diag", "spherical", "full"])
    dtype = pick(DTYPES)
    batch = pick([(), (), (2,), (3,), (2, 2)])
    N, K, D = pick([1, 2, 5, 9, 17, 24]), pick([1, 2, 3, 5, 6]), pick([1, 2, 3, 4, 7, 9])
    sigma = pick([1.0, 1e-2, 1e2]) if dtype != torch.float16 else 1.0  # float16 overflows past 65504
    offset = pick([0.0, 0.0, 3.0, 1e2, 1e3, 1e4]) if dtype != torch.float16 else pick([0.0, 1.0, 3.0])
    # each argument carries all, some or none of the batch dimensions (they broadcast)
    lead = [pick([batch, batch[len(batch) // 2:], ()]) for _ in range(4)]
    means = 3 * sigma * randn(*lead[2], K, D)
    comp = torch.randint(K, (N,), generator=g)
    centre = means.reshape(-1, K, D)[0, comp]  # [N, D]
    direction = randn(N, D)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    x = centre + sigma * randn(*lead[0], N, D) + offset * sigma * direction
    logits = 2 * randn(*lead[1], K)
    if K > 1 and bool(torch.rand((), generator=g) < 0.3):  # some components dropped (weight 0); one always stays
        drop = torch.rand(K, generator=g) < 0.5
        drop[int(torch.randint(K, (1,), generator=g))] = False
        logits = logits.masked_fill(drop, float("-inf"))
    if cov == "diag":
        scale = sigma * torch.exp(0.3 * randn(*lead[3], K, D))
    elif cov == "spherical":
        scale = sigma * torch.exp(0.3 * randn(*lead[3], K))
    else:
        A = 0.3 * randn(*lead[3], K, D, D)
        scale = sigma * torch.linalg.cholesky(A @ A.transpose(-1, -2) + torch.eye(D, dtype=torch.float64))
    args = [t.to(dtype).double() for t in (x, logits, means, scale)]  # the rounded inputs, in float64
    strided = bool(torch.rand((), generator=g) < 0.5)
    return cov, dtype, args, strided


def _as_backend_input(t64, dtype, device, strided):
    """t64 in dtype on device; strided: the same values in a non-contiguous tensor (every other column of a wider
    buffer)."""
    t = t64.to(device=device, dtype=dtype)
    if strided and t.dim() >= 1 and t.shape[-1] > 0:
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=dtype, device=device)
        wide[..., ::2] = t
        t = wide[..., ::2]
        assert not t.is_contiguous() or t.numel() <= 1
    return t


def _backends(device, cov, dtype, i):
    out = []
    for b in available_backends(device):
        if b == "triton":
            if cov == "full" or dtype == torch.float64 or (device == "cpu" and i % TRITON_EVERY):
                continue
        out.append(b)
    return out


def _cases(n):
    return [(d, i) for d in DEVICES for i in range(n)]


def _weights(out64, seed, dtype):
    """Cotangents of the three outputs, rounded to dtype: every arm (float64 reference, eager, backend) gets the
    same values."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(o.shape, generator=g, dtype=torch.float64).to(dtype).double() for o in out64]


def _loss(out, weights, use=(True, True, True)):
    return sum((o * w.to(o)).sum() for o, w, u in zip(out, weights, use) if u)


def _stats(fn_args, cov, backend=None):
    if backend is None:
        return ref.mixture_stats_ref(*fn_args, cov)
    st = gmmkernels.mixture_stats(*fn_args, cov, backend=backend, with_score=True, with_resp=True)
    return st.log_prob, st.score, st.responsibilities


def _eager_args(args64, dtype):
    """The eager comparison runs the reference in the compute dtype on the rounded inputs."""
    return [a.to(compute_dtype(dtype)) for a in args64]


@pytest.mark.parametrize("device,i", _cases(N_VALUE), ids=lambda v: str(v))
def test_values(device, i):
    cov, dtype, args64, strided = make_case(i)
    want = ref.mixture_stats_ref(*args64, cov)
    cond = resp_condition(want.log_prob, want.responsibilities)
    eager = [o.to(dtype) for o in ref.mixture_stats_ref(*_eager_args(args64, dtype), cov)]
    for backend in _backends(device, cov, dtype, i):
        a = [_as_backend_input(t, dtype, device, strided) for t in args64]
        got = _stats(a, cov, backend)
        for name, o, w, e in zip(("log_prob", "score", "responsibilities"), got, want, eager):
            assert o.dtype == dtype and o.shape == w.shape, f"{backend} {name}: {o.dtype} {tuple(o.shape)}"
            check(o.cpu(), w, e, dtype, "value", f"case {i} {cov} {dtype} {backend} {name}", cond)


def _grads(args, cov, backend, weights, create_graph=False):
    a = [t.detach().requires_grad_() for t in args]
    out = _stats(a, cov, backend)
    return a, torch.autograd.grad(_loss(out, weights), a, create_graph=create_graph)


def _tril_scale(cov, grads):
    """For full covariances only the lower triangle of scale is an argument."""
    if cov != "full":
        return list(grads)
    return [*grads[:3], torch.tril(grads[3])]


def _derivative_case(i):
    """make_case(i) plus the responsibility condition term and the output cotangents."""
    cov, dtype, args64, strided = make_case(i)
    out64 = ref.mixture_stats_ref(*args64, cov)
    return cov, dtype, args64, strided, resp_condition(out64.log_prob, out64.responsibilities), _weights(out64, i, dtype)


@pytest.mark.parametrize("device,i", _cases(N_GRAD), ids=lambda v: str(v))
def test_first_derivatives(device, i):
    cov, dtype, args64, strided, cond, weights = _derivative_case(i)
    _, want = _grads(args64, cov, None, weights)
    _, eager = _grads(_eager_args(args64, dtype), cov, None, weights)
    want, eager = _tril_scale(cov, want), [g.to(dtype) for g in _tril_scale(cov, eager)]
    for backend in _backends(device, cov, dtype, i):
        a = [_as_backend_input(t, dtype, device, strided) for t in args64]
        _, got = _grads(a, cov, backend, weights)
        for name, o, w, e in zip(("x", "logits", "means", "scale"), _tril_scale(cov, got), want, eager):
            assert o.dtype == dtype
            check(o.cpu(), w, e, dtype, "grad", f"case {i} {cov} {dtype} {backend} grad {name}", cond)


def _hvp(args, cov, backend, weights, v):
    """Hessian-vector product of the loss (log p, score and responsibilities weighted) w.r.t. all four arguments."""
    a, g = _grads(args, cov, backend, weights, create_graph=True)
    dot = sum((gi * vi.to(gi)).sum() for gi, vi in zip(_tril_scale(cov, g), v))
    return torch.autograd.grad(dot, a)


@pytest.mark.parametrize("device,i", _cases(N_GRAD2), ids=lambda v: str(v))
def test_second_derivatives(device, i):
    cov, dtype, args64, strided, cond, weights = _derivative_case(i)
    g = torch.Generator().manual_seed(7 + i)
    v = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in args64]
    want = _tril_scale(cov, _hvp(args64, cov, None, weights, v))
    eager = [h.to(dtype) for h in _tril_scale(cov, _hvp(_eager_args(args64, dtype), cov, None, weights, v))]
    for backend in _backends(device, cov, dtype, i):
        a = [_as_backend_input(t, dtype, device, strided) for t in args64]
        got = _tril_scale(cov, _hvp(a, cov, backend, weights, v))
        for name, o, w, e in zip(("x", "logits", "means", "scale"), got, want, eager):
            check(o.cpu(), w, e, dtype, "grad2", f"case {i} {cov} {dtype} {backend} hvp {name}", cond)


def test_cases_cover_the_space():
    """The generator reaches what the module docstring promises (so a change to it cannot quietly narrow the tests)."""
    seen = {"cov": set(), "dtype": set(), "inf": False, "far": False, "broadcast": False, "strided": False}
    for i in range(N_VALUE):
        cov, dtype, (x, logits, means, scale), strided = make_case(i)
        seen["cov"].add(cov)
        seen["dtype"].add(dtype)
        seen["inf"] |= bool(torch.isneginf(logits).any())
        seen["far"] |= bool((x.unsqueeze(-2) - means.unsqueeze(-3)).abs().amin((-1, -2)).max() > 1e3 * scale.min())
        seen["broadcast"] |= len({x.shape[:-2], logits.shape[:-1], means.shape[:-2]}) > 1
        seen["strided"] |= strided
    assert seen["cov"] == {"diag", "spherical", "full"}
    assert seen["dtype"] == {torch.float32, torch.float64, torch.float16, torch.bfloat16}
    assert seen["inf"] and seen["far"] and seen["broadcast"] and seen["strided"]
