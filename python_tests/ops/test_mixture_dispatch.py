"""mixDDPM dispatcher (nearest center + centred forward noising): every backend against the float64 reference,
tie-breaking and NaN conventions, gradients, opcheck, gradcheck, torch.compile, forward-process statistics and
bad inputs (k-means on this kernel: python_tests/fit/test_kmeans.py)."""
import math

import pytest
import torch

import gmmkernels
from gmmkernels.reference import mixture_dispatch as ref
from gmmkernels import kmeans, mixture_dispatch, nearest_center  # noqa: F401
from gmmkernels.ops.mixture_dispatch import dispatch_backends

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKEND_DEVICE = [(b, d) for d in DEVICES for b in dispatch_backends(d)]
NATIVE = [(b, d) for b, d in BACKEND_DEVICE if b in ("cpu", "cuda")]
# (N, K, D); the Triton interpreter gets the small ones
CASES = [(1, 1, 1), (0, 3, 2), (7, 5, 3), (33, 17, 65), (130, 40, 20), (64, 3, 784)]
SMALL = CASES[:4]


def _data(N, K, D, dtype=torch.float64, device="cpu", seed=0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    c = spread * torch.randn(K, D, **kw)
    x = torch.randn(N, D, **kw) + (c[torch.randint(K, (N,), generator=g)] if N else 0)
    a = torch.rand(N, **kw)
    s = torch.rand(N, **kw)
    e = torch.randn(N, D, **kw)
    return [t.to(device=device, dtype=dtype) for t in (x, c, a, s, e)]


def _skip(backend, device, dtype, case=None):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("the Triton backend computes in float32")
    if backend == "triton" and device == "cpu" and case is not None and case not in SMALL:
        pytest.skip("interpreter: small shapes only")


def _assert_assignment_ok(j, want, x64, c64, tol):
    """Assignments equal the reference except on near ties, where the chosen center must be within tol of the min."""
    if j.numel() == 0:
        return
    d = ((x64.unsqueeze(1) - c64.unsqueeze(0)) ** 2).sum(-1)
    dj = d.gather(1, j.cpu().unsqueeze(1)).squeeze(1)
    dmin = d.min(1).values
    assert bool(((j.cpu() == want) | (dj - dmin <= tol * (1 + dmin))).all())


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("with_eps", [True, False])
def test_matches_reference(backend, device, dtype, case, with_eps):
    _skip(backend, device, dtype, case)
    N, K, D = case
    x, c, a, s, e = _data(N, K, D, seed=N + K + D)
    want = ref.mixture_dispatch_ref(x, c, a, s, e if with_eps else None)
    args = [t.to(device=device, dtype=dtype) for t in (x, c, a, s, e)]
    out = mixture_dispatch(*args[:4], args[4] if with_eps else None, backend=backend)
    assert out.x_t.shape == (N, D) and out.assignment.dtype == torch.int64 and out.assignment.shape == (N,)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5 * math.sqrt(D))
    if dtype == torch.float64:
        assert torch.equal(out.assignment.cpu(), want.assignment)
    else:
        _assert_assignment_ok(out.assignment, want.assignment, x, c, 1e-5 * math.sqrt(D))
    # compare the noising and distance given the kernel's assignment (identical to the reference's except near ties)
    want_j = ref.mixture_dispatch_ref(x, c, a, s, e if with_eps else None, assignment=out.assignment.cpu())
    torch.testing.assert_close(out.x_t.double().cpu(), want_j.x_t, **tol)
    torch.testing.assert_close(out.dist2.double().cpu(), want_j.dist2, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_image_shapes_and_scalar_coefficients(backend, device):
    x, c, _, _, e = _data(12, 4, 64, dtype=torch.float32, device=device, seed=3)
    xi, ci, ei = x.reshape(12, 1, 8, 8), c.reshape(4, 1, 8, 8), e.reshape(12, 1, 8, 8)
    out = mixture_dispatch(xi, ci, 0.6, 0.8, ei, backend=backend)
    assert out.x_t.shape == (12, 1, 8, 8)
    want = ref.mixture_dispatch_ref(x.double().cpu(), c.double().cpu(), torch.full((12,), 0.6, dtype=torch.float64),
                                    torch.full((12,), 0.8, dtype=torch.float64), e.double().cpu())
    torch.testing.assert_close(out.x_t.reshape(12, 64).double().cpu(), want.x_t, rtol=1e-5, atol=1e-5)
    out2 = mixture_dispatch(xi, ci, torch.tensor(0.6, device=device), torch.full((12,), 0.8, device=device), ei,
                            backend=backend)
    torch.testing.assert_close(out2.x_t, out.x_t)


# ---------------------------------------------------------------------------------------------
# conventions: ties and NaN


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_ties_take_the_lowest_index(backend, device):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(5, 20, generator=g)
    c = torch.cat([base[:2], base[1:2], base[2:], base[0:1]]).to(device)  # duplicates: 1 == 2, 0 == 6
    x = torch.cat([base + 0.01 * torch.randn(5, 20, generator=g), torch.zeros(1, 20)]).to(device)
    j = nearest_center(x, c, backend=backend).cpu()
    assert j[:5].tolist() == [0, 1, 3, 4, 5]
    # x = 0 with centers +/- e_1: both distances are exactly 1 in every form -> index 0 of the pair
    c2 = torch.zeros(4, 20, device=device)
    c2[0, 0], c2[1, 0], c2[2, 1], c2[3, 1] = 5.0, 1.0, -1.0, 1.0
    j2 = nearest_center(torch.zeros(3, 20, device=device), c2, backend=backend).cpu()
    assert j2.tolist() == [1, 1, 1]
    # all-equal centers (K spans several kernel tiles): index 0
    c3 = torch.ones(70, 20, device=device)
    assert nearest_center(x, c3, backend=backend).cpu().eq(0).all()


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_nan_conventions(backend, device):
    x, c, a, s, e = _data(9, 20, 3, dtype=torch.float32, device=device, seed=4)
    x[4, 1] = float("nan")
    c[0, 2] = float("nan")  # a NaN center is never chosen
    out = mixture_dispatch(x, c, a, s, e, backend=backend)
    keep = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8])
    assert torch.isfinite(out.x_t[keep]).all() and torch.isfinite(out.dist2[keep]).all()
    assert (out.assignment[keep] != 0).all()
    assert out.assignment[4].item() == 0  # all distances NaN -> center 0
    assert torch.isnan(out.x_t[4, 1]) and torch.isnan(out.dist2[4])
    x2 = x.clone()
    x2[4] = float("inf")
    assert mixture_dispatch(x2, c, a, s, e, backend=backend).assignment[4].item() == 0


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_backends_agree_exactly_on_separated_data(backend, device):
    x, c, a, s, e = _data(300, 26, 50, dtype=torch.float32, device=device, seed=5, spread=3.0)
    j = mixture_dispatch(x, c, a, s, e, backend=backend).assignment.cpu()
    assert torch.equal(j, ref.nearest_center_ref(x.double().cpu(), c.double().cpu()))


# ---------------------------------------------------------------------------------------------
# gradients and torch.library integration


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("with_eps", [True, False])
def test_gradients_match_reference(backend, device, with_eps):
    dtype = torch.float32 if backend == "triton" else torch.float64
    x, c, a, s, e = _data(20, 4, 5, seed=6)
    g = torch.Generator().manual_seed(2)
    wx = torch.randn(20, 5, dtype=torch.float64, generator=g)
    wd = torch.randn(20, dtype=torch.float64, generator=g)
    leaves64 = [t.clone().requires_grad_() for t in (x, c, a, s, e)]
    r = ref.mixture_dispatch_ref(*leaves64[:4], leaves64[4] if with_eps else None)
    g_ref = torch.autograd.grad((r.x_t * wx).sum() + (r.dist2 * wd).sum(), leaves64, allow_unused=True)
    leaves = [t.detach().to(device=device, dtype=dtype).requires_grad_() for t in (x, c, a, s, e)]
    o = mixture_dispatch(*leaves[:4], leaves[4] if with_eps else None, backend=backend)
    loss = (o.x_t * wx.to(o.x_t)).sum() + (o.dist2 * wd.to(o.dist2)).sum()
    g_out = torch.autograd.grad(loss, leaves, allow_unused=True)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for name, go, gr in zip(("x0", "centers", "a", "sigma", "eps"), g_out, g_ref):
        if gr is None:
            assert go is None or bool((go == 0).all()), name
            continue
        torch.testing.assert_close(go.double().cpu(), gr, **tol, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.skipif(not gmmkernels._backend.HAS_C, reason="native extension not built")
@pytest.mark.parametrize("backend,device", NATIVE)
@pytest.mark.parametrize("with_eps", [True, False])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(backend, device, with_eps, requires_grad):
    x, c, a, s, e = _data(10, 4, 3, device=device, seed=7)
    args = [x, c, a, s, e if with_eps else None]
    if requires_grad:
        args = [t.requires_grad_() if t is not None else None for t in args]
    torch.library.opcheck(torch.ops.gmmkernels.mixture_dispatch.default, tuple(args))


@pytest.mark.skipif(not gmmkernels._backend.HAS_C, reason="native extension not built")
@pytest.mark.parametrize("backend,device", NATIVE)
def test_gradcheck(backend, device):
    x, c, a, s, e = (t.requires_grad_() for t in _data(6, 3, 2, device=device, seed=8))

    def f(x, c, a, s, e):
        o = mixture_dispatch(x, c, a, s, e, backend=backend)
        return o.x_t, o.dist2

    assert torch.autograd.gradcheck(f, (x, c, a, s, e), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", NATIVE)
def test_torch_compile_fullgraph(backend, device):
    x, c, a, s, e = _data(32, 5, 4, dtype=torch.float32, device=device, seed=9)
    x.requires_grad_()

    def f(x, c, a, s, e):
        o = mixture_dispatch(x, c, a, s, e, backend=backend)
        return (o.x_t**2).sum() + o.dist2.sum() + o.assignment.sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    torch.testing.assert_close(cf(x, c, a, s, e), f(x, c, a, s, e))
    g = torch.autograd.grad(f(x, c, a, s, e), x)[0]
    g_c = torch.autograd.grad(cf(x, c, a, s, e), x)[0]
    torch.testing.assert_close(g_c, g)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    x, c, a, s, e = _data(16, 4, 8, seed=10)
    out = mixture_dispatch(*(t.to(dtype) for t in (x, c, a, s, e)))
    assert out.x_t.dtype == dtype and out.dist2.dtype == dtype
    want = ref.mixture_dispatch_ref(*(t.to(dtype).double() for t in (x, c, a, s, e)))
    assert torch.equal(out.assignment, want.assignment)
    torch.testing.assert_close(out.x_t.double(), want.x_t, rtol=1e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------------
# the centred forward process


def test_centred_forward_statistics():
    """x_t | x0 ~ N(a x0 + (1 - a) c_j, sigma^2 I): DDPM on y = x - c_j. At a_T ~ 0 the marginal of each cluster's
    x_T is N(c_j, I), so the prior is the mixture sum_k pi_k N(c_k, I)."""
    torch.manual_seed(0)
    K, D, M = 3, 4, 200000
    c = torch.tensor([[6.0, 0, 0, 0], [-6.0, 0, 0, 0], [0, 6.0, 0, 0]], dtype=torch.float64)
    x0 = torch.tensor([[5.5, 0.3, -0.2, 0.1]], dtype=torch.float64).expand(M, D)
    abar = torch.tensor(0.3, dtype=torch.float64)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    out = mixture_dispatch(x0, c, a, s, torch.randn(M, D, dtype=torch.float64))
    assert out.assignment.eq(0).all()
    mean = a * x0[0] + (1 - a) * c[0]
    se = float(s) / math.sqrt(M)
    assert (out.x_t.mean(0) - mean).abs().max() < 5 * se
    torch.testing.assert_close(out.x_t.var(0), torch.full((D,), float(s**2), dtype=torch.float64), rtol=0.02, atol=0)
    # the whole data set at abar_T ~ 4e-5 (linear DDPM schedule, T = 1000): per-cluster N(c_k, I)
    from gmmkernels.diffusion.schedules import DiscreteSchedule

    a_T, s_T = DiscreteSchedule.linear(1000).alpha_sigma(1000)
    lab = torch.randint(K, (M,))
    data = c[lab] + 0.5 * torch.randn(M, D, dtype=torch.float64)
    o = mixture_dispatch(data, c, a_T, s_T, torch.randn(M, D, dtype=torch.float64))
    assert torch.equal(o.assignment, lab)
    for k in range(K):
        xk = o.x_t[lab == k]
        assert (xk.mean(0) - c[k]).abs().max() < 0.03
        torch.testing.assert_close(xk.var(0), torch.ones(D, dtype=torch.float64), rtol=0.03, atol=0)
    # Reverse Effort (docs/methods.md (mixDDPM)): E|x0 - c_j|^2 + D for mixDDPM against E|x0|^2 + D for DDPM
    assert float(o.dist2.mean()) < float((data**2).sum(1).mean())


# ---------------------------------------------------------------------------------------------
# k-means


# ---------------------------------------------------------------------------------------------
# bad inputs


def _good():
    x, c, a, s, e = _data(4, 3, 2, seed=12)
    return [x, c, a, s, e]


@pytest.mark.parametrize(
    "mutate,exc,pattern",
    [
        (lambda a: (a[0][0], *a[1:]), ValueError, "'x0' must have shape [N, ...]"),
        (lambda a: (a[0][:, :1], *a[1:]), ValueError, "'centers' has D=2 values per center but 'x0' has D=1"),
        (lambda a: (a[0], a[1][:0], *a[2:]), ValueError, "'centers' has K=0 centers"),
        (lambda a: (a[0][:, :0], a[1][:, :0], *a[2:]), ValueError, "'x0' has D=0"),
        (lambda a: (a[0], a[1].float(), *a[2:]), TypeError, "'centers' has dtype torch.float32 but 'x0' has torch.float64"),
        (lambda a: (a[0].long(), *a[1:]), TypeError, "'x0' must be a floating-point"),
        (lambda a: (a[0], a[1].to("meta"), *a[2:]), ValueError, "'centers' is on meta"),
        (lambda a: (*a[:2], a[2][:3], *a[3:]), ValueError, "'a' must be a scalar or have shape [N=4]"),
        (lambda a: (*a[:3], "x", a[4]), TypeError, "'sigma' must be a float or a tensor"),
        (lambda a: (*a[:4], a[4][:, :1]), ValueError, "'eps' must have the shape of 'x0'"),
        (lambda a: ([1.0], *a[1:]), TypeError, "'x0' must be a torch.Tensor"),
    ],
)
def test_bad_inputs(mutate, exc, pattern):
    import re

    with pytest.raises(exc, match=f"mixture_dispatch: .*{re.escape(pattern)}"):
        mixture_dispatch(*mutate(_good()))


def test_bad_options():
    a = _good()
    with pytest.raises(ValueError, match="mixture_dispatch: argument 'backend' must be one of"):
        mixture_dispatch(*a, backend="fast")
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        mixture_dispatch(*a, backend="cuda")
    if gmmkernels._backend.triton_usable(torch.device("cpu")):
        with pytest.raises(TypeError, match="backend='triton' computes in float32"):
            mixture_dispatch(*a, backend="triton")
    with pytest.raises(ValueError, match="kmeans: argument 'k' must be an int >= 1"):
        kmeans(a[0], 0)
    with pytest.raises(ValueError, match="kmeans: need at least k=5 points"):
        kmeans(a[0], 5)
