"""CUDA kernels of gmmkernels::mixture_stats / mixture_stats_backward against mixture_stats_kernel_ref (float64).

Skipped without a GPU (conftest marks `cuda` tests) or without the CUDA part of the extension.
"""
from __future__ import annotations

import math

import pytest
import torch

from gmmkernels import _backend
from gmmkernels.reference.mixture_stats import mixture_stats_kernel_ref

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(
        not _backend.has_kernel("mixture_stats", "CUDA"), reason="CUDA kernel of mixture_stats not built"
    ),
]

SMALL = [(1, 1, 1, 1), (1, 0, 3, 2), (2, 7, 5, 3), (1, 33, 17, 65), (3, 128, 8, 2), (2, 300, 40, 9),
         (1, 50, 3, 200)]


def _op(*a):
    return torch.ops.gmmkernels.mixture_stats(*a)


def _bop(*a):
    return torch.ops.gmmkernels.mixture_stats_backward(*a)


def make_inputs(B, N, K, D, full, dtype, device="cuda", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, dtype=torch.float64, generator=gen)
    means = torch.randn(B, K, D, dtype=torch.float64, generator=gen)
    logc = torch.randn(B, K, dtype=torch.float64, generator=gen)
    if full:
        prec = 0.3 * torch.randn(B, K, D, D, dtype=torch.float64, generator=gen) / math.sqrt(D)
        prec = prec + torch.diag_embed(0.5 + torch.rand(B, K, D, dtype=torch.float64, generator=gen))
    else:
        prec = 0.5 + torch.rand(B, K, D, dtype=torch.float64, generator=gen)
    return [t.to(device=device, dtype=dtype) for t in (x, means, prec, logc)]


def _ref(args, full, device="cuda"):
    a64 = [t.detach().to(device=device, dtype=torch.float64).requires_grad_() for t in args]
    return a64, mixture_stats_kernel_ref(*a64, full)


def _close(a, b, dtype, n, what):
    if b.numel() == 0:
        assert a.numel() == 0, what
        return
    scale = max(1.0, float(b.abs().max()))
    if dtype == torch.float64:
        rtol, atol = 1e-9, 1e-9 * math.sqrt(max(n, 1))
    else:
        rtol, atol = 2e-5, 2e-5 * math.sqrt(max(n, 1))
    torch.testing.assert_close(a.double(), b.to(a.device), rtol=rtol, atol=atol * scale, msg=lambda m: f"{what}: {m}")


def _check_all(shape, dtype, full, grads="gGH", device="cuda"):
    B, N, K, D = shape
    args = make_inputs(B, N, K, D, full, dtype, device)
    logp, score, resp = _op(*args, full, True, True)
    assert logp.device.type == "cuda" and logp.shape == (B, N)
    a64, (l2, s2, r2) = _ref(args, full)
    n_fwd = K * D * (D if full else 1)
    _close(logp, l2.detach(), dtype, n_fwd, "logp")
    _close(score, s2.detach(), dtype, n_fwd, "score")
    _close(resp, r2.detach(), dtype, n_fwd, "resp")
    lp_only, sc0, rs0 = _op(*args, full, False, False)
    assert sc0.shape == (0,) and rs0.shape == (0,)
    _close(lp_only, l2.detach(), dtype, n_fwd, "logp (logp only)")
    g = torch.randn_like(l2)
    G = torch.randn_like(s2) if "G" in grads else None
    H = torch.randn_like(r2) if "H" in grads else None
    L = (g * l2).sum() + (0 if G is None else (G * s2).sum()) + (0 if H is None else (H * r2).sum())
    want = torch.autograd.grad(L, a64, allow_unused=True)
    want = [torch.zeros_like(a) if w is None else w for w, a in zip(want, a64)]
    got = _bop(g.to(dtype), None if G is None else G.to(dtype), None if H is None else H.to(dtype), *args, logp, full)
    for name, a, w, n in zip(["grad_x", "grad_means", "grad_prec", "grad_logc"], got, want,
                             [n_fwd, N * D, N * D, N]):
        assert a.shape == w.shape and a.dtype == dtype, name
        _close(a, w, dtype, n, name)
    if full and D > 1:
        iu = torch.triu_indices(D, D, 1, device=got[2].device)
        assert (got[2][..., iu[0], iu[1]] == 0).all()
    return got


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SMALL, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("grads", ["g", "gG", "gGH"])
def test_cuda_matches_reference(shape, dtype, full, grads):
    _check_all(shape, dtype, full, grads)


@pytest.mark.parametrize("D", [1, 2, 3, 4, 5, 8, 13, 16, 31, 32, 33, 64, 65, 128, 300])
def test_cuda_diag_every_width(D):
    _check_all((2, 257, 7, D), torch.float32, False)


@pytest.mark.parametrize("D", [1, 2, 7, 16, 33, 64])
def test_cuda_full_widths(D):
    _check_all((1, 130, 5, D), torch.float32, True)


def test_cuda_large_D():
    # D=3072, N=4096, K=16 (diag), float32 vs float64 reference computed in chunks on the GPU
    B, N, K, D = 1, 4096, 16, 3072
    args = make_inputs(B, N, K, D, False, torch.float32)
    args[2] = args[2] / math.sqrt(D) * 4  # keep logits in a range where several components matter
    logp, score, _ = _op(*args, False, True, False)
    _, (l2, s2, _) = _ref(args, False)
    _close(logp, l2.detach(), torch.float32, D, "logp")
    _close(score, s2.detach(), torch.float32, D, "score")
    g = torch.randn(B, N, device="cuda")
    got = _bop(g, None, None, *args, logp, False)
    a64, (l3, _, _) = _ref(args, False)
    want = torch.autograd.grad((g.double() * l3).sum(), a64)
    for name, a, w, n in zip(["grad_x", "grad_means", "grad_prec", "grad_logc"], got, want, [D, N, N, N]):
        _close(a, w, torch.float32, n, name)


def test_cuda_headline_shape():
    # N=65536, K=64, D=32 diag float32: compare to the float64 reference in row chunks (memory)
    B, N, K, D = 1, 65536, 64, 32
    args = make_inputs(B, N, K, D, False, torch.float32)
    logp, score, resp = _op(*args, False, True, True)
    for lo in range(0, N, 8192):
        sl = [args[0][:, lo:lo + 8192]] + args[1:]
        _, (l2, s2, r2) = _ref(sl, False)
        _close(logp[:, lo:lo + 8192], l2.detach(), torch.float32, K * D, "logp")
        _close(score[:, lo:lo + 8192], s2.detach(), torch.float32, K * D, "score")
        _close(resp[:, lo:lo + 8192], r2.detach(), torch.float32, K * D, "resp")
    g = torch.randn(B, N, device="cuda")
    G = torch.randn(B, N, D, device="cuda")
    got = _bop(g, G, None, *args, logp, False)
    a64, (l2, s2, _) = _ref(args, False)
    want = torch.autograd.grad((g.double() * l2).sum() + (G.double() * s2).sum(), a64)
    for name, a, w, n in zip(["grad_x", "grad_means", "grad_prec", "grad_logc"], got, want, [K * D, N, N, N]):
        _close(a, w, torch.float32, n, name)
    # determinism: the parameter reductions use no atomics
    again = _bop(g, G, None, *args, logp, False)
    for a, b in zip(got, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
def test_cuda_matches_cpu_kernel(full):
    if not _backend.has_kernel("mixture_stats", "CPU"):
        pytest.skip("no CPU kernel")
    args = make_inputs(2, 100, 6, 5, full, torch.float64, device="cpu")
    cpu = _op(*args, full, True, True)
    gpu = _op(*[t.cuda() for t in args], full, True, True)
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
def test_cuda_n0_k1_d1(full):
    for shape in [(2, 0, 3, 4), (1, 5, 1, 1), (1, 1, 1, 1), (3, 17, 1, 6)]:
        got = _check_all(shape, torch.float32, full)
        if shape[1] == 0:
            assert all((t == 0).all() for t in got[1:])


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("D", [3, 40, 200])
def test_cuda_nan_row_is_isolated(full, D):
    B, N, K = 2, 300, 4
    args = make_inputs(B, N, K, D, full, torch.float32)
    clean = _op(*args, full, True, True)
    args[0][1, 5, 1] = float("nan")
    out = _op(*args, full, True, True)
    assert torch.isnan(out[0][1, 5])
    mask = torch.ones(B, N, dtype=torch.bool, device="cuda")
    mask[1, 5] = False
    for o, c in zip(out, clean):
        assert torch.isfinite(o[mask]).all()
        torch.testing.assert_close(o[mask], c[mask], rtol=0, atol=0)
    gx = _bop(torch.ones(B, N, device="cuda"), torch.ones_like(out[1]), None, *args, out[0], full)[0]
    assert torch.isfinite(gx[mask]).all()


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("D", [2, 40])
def test_cuda_far_points_are_finite(full, D):
    args = make_inputs(1, 64, 5, D, full, torch.float32)
    args[0] = args[0] * 1e4
    logp, score, resp = _op(*args, full, True, True)
    assert torch.isfinite(logp).all() and torch.isfinite(score).all() and torch.isfinite(resp).all()
    _, (l2, _, _) = _ref(args, full)
    torch.testing.assert_close(logp.double(), l2.detach(), rtol=1e-5, atol=0)
    grads = _bop(torch.ones_like(logp), torch.ones_like(score), None, *args, logp, full)
    assert all(torch.isfinite(t).all() for t in grads)


def test_cuda_errors():
    x, mu, w, c = make_inputs(2, 5, 3, 4, False, torch.float32)
    with pytest.raises(RuntimeError, match=r"mixture_stats: argument 'means' is on"):
        _op(x, mu.cpu(), w, c, False, True, False)
    with pytest.raises(RuntimeError, match=r"mixture_stats: argument 'prec' \(full=true\)"):
        _op(x, mu, w, c, True, True, False)


def test_cuda_non_default_stream_and_autograd():
    args = [t.requires_grad_() for t in make_inputs(1, 40, 3, 5, False, torch.float64)]
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = _op(*args, False, True, True)
        (out[0].sum() + out[1].square().sum()).backward()
    torch.cuda.synchronize()
    a64, (l2, s2, _) = _ref(args, False)
    want = torch.autograd.grad(l2.sum() + s2.square().sum(), a64)
    for a, w in zip(args, want):
        torch.testing.assert_close(a.grad, w, rtol=1e-9, atol=1e-9)
