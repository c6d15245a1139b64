"""CPU kernels of gmmkernels::mixture_stats / mixture_stats_backward against mixture_stats_kernel_ref (float64)."""
from __future__ import annotations

import math

import pytest
import torch

from gmmkernels import _backend
from gmmkernels.reference.mixture_stats import mixture_stats_kernel_ref

pytestmark = pytest.mark.skipif(
    not _backend.has_kernel("mixture_stats", "CPU"), reason="native CPU kernel of mixture_stats not built"
)

SHAPES = [(1, 1, 1, 1), (1, 0, 3, 2), (2, 7, 5, 3), (1, 33, 17, 65), (3, 128, 8, 2)]


def _op(*a):
    return torch.ops.gmmkernels.mixture_stats(*a)


def _bop(*a):
    return torch.ops.gmmkernels.mixture_stats_backward(*a)


def make_inputs(B, N, K, D, full, dtype, gen=None):
    x = torch.randn(B, N, D, dtype=torch.float64, generator=gen)
    means = torch.randn(B, K, D, dtype=torch.float64, generator=gen)
    logc = torch.randn(B, K, dtype=torch.float64, generator=gen)
    if full:
        # a well-conditioned lower factor with random upper entries (they must be ignored)
        prec = 0.3 * torch.randn(B, K, D, D, dtype=torch.float64, generator=gen) / math.sqrt(D)
        prec = prec + torch.diag_embed(0.5 + torch.rand(B, K, D, dtype=torch.float64, generator=gen))
    else:
        prec = 0.5 + torch.rand(B, K, D, dtype=torch.float64, generator=gen)
    return [t.to(dtype) for t in (x, means, prec, logc)]


def _tol(dtype, n):
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-10 * math.sqrt(max(n, 1)))
    return dict(rtol=1e-5, atol=1e-5 * math.sqrt(max(n, 1)))


def _close(a, b, dtype, n, what):
    # float32: compare relative to the magnitude of the reference tensor (the inputs are rounded to float32)
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    t = _tol(dtype, n)
    torch.testing.assert_close(a.double(), b, rtol=t["rtol"], atol=t["atol"] * scale, msg=lambda m: f"{what}: {m}")


def _reference(args, full):
    a64 = [t.detach().double().requires_grad_() for t in args]
    out = mixture_stats_kernel_ref(*a64, full)
    return a64, out


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_matches_reference(shape, dtype, full):
    B, N, K, D = shape
    args = make_inputs(B, N, K, D, full, dtype)
    logp, score, resp = _op(*args, full, True, True)
    assert logp.shape == (B, N) and score.shape == (B, N, D) and resp.shape == (B, N, K)
    assert logp.dtype == dtype
    _, (l2, s2, r2) = _reference(args, full)
    n = K * D * (D if full else 1)
    _close(logp, l2.detach(), dtype, n, "logp")
    _close(score, s2.detach(), dtype, n, "score")
    _close(resp, r2.detach(), dtype, n, "resp")
    # the optional outputs are empty when not asked for, logp unchanged
    lp2, sc2, rs2 = _op(*args, full, False, False)
    assert sc2.shape == (0,) and rs2.shape == (0,)
    torch.testing.assert_close(lp2, logp)


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("grads", ["g", "gG", "gH", "gGH"])
def test_backward_matches_autograd(shape, dtype, full, grads):
    B, N, K, D = shape
    args = make_inputs(B, N, K, D, full, dtype)
    logp, _, _ = _op(*args, full, False, False)
    a64, (l2, s2, r2) = _reference(args, full)
    g = torch.randn_like(l2)
    G = torch.randn_like(s2) if "G" in grads else None
    H = torch.randn_like(r2) if "H" in grads else None
    L = (g * l2).sum()
    if G is not None:
        L = L + (G * s2).sum()
    if H is not None:
        L = L + (H * r2).sum()
    want = torch.autograd.grad(L, a64, allow_unused=True)
    want = [torch.zeros_like(a) if w is None else w for w, a in zip(want, a64)]
    got = _bop(
        g.to(dtype), None if G is None else G.to(dtype), None if H is None else H.to(dtype), *args, logp, full
    )
    names = ["grad_x", "grad_means", "grad_prec", "grad_logc"]
    lens = [K * D * (D if full else 1), N * D, N * D, N]
    for name, a, w, n in zip(names, got, want, lens):
        assert a.shape == w.shape and a.dtype == dtype, name
        _close(a, w, dtype, n, name)
    if full:  # upper triangle gradient is exactly zero
        iu = torch.triu_indices(D, D, 1)
        assert (got[2][..., iu[0], iu[1]] == 0).all()


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
def test_non_contiguous_inputs(full):
    B, N, K, D = 2, 19, 6, 5
    args = make_inputs(B, N, K, D, full, torch.float64)
    # build non-contiguous views holding the same values
    nc = []
    for t in args:
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        big[..., ::2] = t
        nc.append(big[..., ::2])
    assert not nc[0].is_contiguous()
    xt = args[0].transpose(1, 2).contiguous().transpose(1, 2)  # another non-contiguous layout
    out_ref = _op(*args, full, True, True)
    for a in (nc, [xt] + args[1:]):
        out = _op(*a, full, True, True)
        for o, r in zip(out, out_ref):
            torch.testing.assert_close(o, r, rtol=0, atol=0)
    logp = out_ref[0]
    g = torch.randn(B, N, dtype=torch.float64)
    G = torch.randn(B, N, D, dtype=torch.float64)
    gr = _bop(g, G, None, *args, logp, full)
    gn = _bop(g, G.transpose(1, 2).contiguous().transpose(1, 2), None, *nc, logp, full)
    for a, b in zip(gn, gr):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_nan_row_is_isolated(full, dtype):
    B, N, K, D = 2, 40, 4, 3
    args = make_inputs(B, N, K, D, full, dtype)
    clean = _op(*args, full, True, True)
    args[0][1, 5, 1] = float("nan")
    logp, score, resp = _op(*args, full, True, True)
    assert torch.isnan(logp[1, 5]) and torch.isnan(score[1, 5]).all() and torch.isnan(resp[1, 5]).all()
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 5] = False
    for o, c in zip((logp, score, resp), clean):
        assert torch.isfinite(o[mask]).all()
        torch.testing.assert_close(o[mask], c[mask], rtol=0, atol=0)
    # grad_x of the other rows stays finite (parameter gradients legitimately become NaN)
    g = torch.ones(B, N, dtype=dtype)
    gx = _bop(g, torch.ones_like(score), None, *args, logp, full)[0]
    assert torch.isfinite(gx[mask]).all()


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_far_points_are_finite(full, dtype):
    B, N, K, D = 1, 20, 5, 4
    args = make_inputs(B, N, K, D, full, torch.float64)
    args[0] = args[0] * 1e4  # ~1e4 sigma from every component
    args = [t.to(dtype) for t in args]
    logp, score, resp = _op(*args, full, True, True)
    assert torch.isfinite(logp).all() and torch.isfinite(score).all() and torch.isfinite(resp).all()
    torch.testing.assert_close(resp.sum(-1).double(), torch.ones(B, N, dtype=torch.float64), rtol=0, atol=1e-5)
    _, (l2, s2, _) = _reference(args, full)
    torch.testing.assert_close(logp.double(), l2.detach(), rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=0)
    grads = _bop(torch.ones_like(logp), torch.ones_like(score), None, *args, logp, full)
    assert all(torch.isfinite(t).all() for t in grads)


def test_deterministic_and_thread_independent():
    args = make_inputs(2, 1000, 7, 6, False, torch.float32)
    logp = _op(*args, False, False, False)[0]
    g = torch.randn(2, 1000)
    G = torch.randn(2, 1000, 6)
    a = _bop(g, G, None, *args, logp, False)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = _bop(g, G, None, *args, logp, False)
    finally:
        torch.set_num_threads(prev)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_autograd_through_op():
    args = [t.requires_grad_() for t in make_inputs(1, 9, 3, 2, False, torch.float64)]
    torch.autograd.gradcheck(
        lambda *a: tuple(o for o in _op(*a, False, True, True)), args, eps=1e-6, atol=1e-6, rtol=1e-5
    )


def _bad(match, *a):
    with pytest.raises(RuntimeError, match=match):
        _op(*a)


def test_error_messages():
    x, mu, w, c = make_inputs(2, 5, 3, 4, False, torch.float32)
    _bad(r"mixture_stats: argument 'x' must have shape \[B, N, D\]", x[0], mu, w, c, False, True, False)
    _bad(r"mixture_stats: argument 'means' must have shape", x, mu[:, :, :3], w, c, False, True, False)
    _bad(r"mixture_stats: argument 'means' must have shape", x, mu[:1], w, c, False, True, False)
    _bad(r"mixture_stats: argument 'prec' \(full=false\)", x, mu, w[:, :2], c, False, True, False)
    _bad(r"mixture_stats: argument 'prec' \(full=true\)", x, mu, w, c, True, True, False)
    _bad(r"mixture_stats: argument 'logc' must have shape", x, mu, w, c[:, :2], False, True, False)
    _bad(r"mixture_stats: argument 'means' has dtype", x, mu.double(), w, c, False, True, False)
    _bad(r"mixture_stats: argument 'x' must be float32 or float64", x.half(), mu.half(), w.half(), c.half(), False,
         True, False)
    _bad(r"mixture_stats: argument 'means' has K=0", x, mu[:, :0], w[:, :0], c[:, :0], False, True, False)
    logp = _op(x, mu, w, c, False, False, False)[0]
    with pytest.raises(RuntimeError, match=r"mixture_stats: argument 'grad_logp' must have shape"):
        _bop(logp[:, :2], None, None, x, mu, w, c, logp, False)
    with pytest.raises(RuntimeError, match=r"mixture_stats: argument 'grad_score' must have shape"):
        _bop(logp, torch.ones(2, 5, 3), None, x, mu, w, c, logp, False)
    with pytest.raises(RuntimeError, match=r"mixture_stats: argument 'grad_resp' must have shape"):
        _bop(logp, None, torch.ones(2, 5, 4), x, mu, w, c, logp, False)
    with pytest.raises(RuntimeError, match=r"mixture_stats: argument 'logp' has dtype"):
        _bop(logp, None, None, x, mu, w, c, logp.double(), False)
