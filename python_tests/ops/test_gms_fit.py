"""GMS per-element fit and fused step: closed form against the moment equations, the Adan solver of every backend
against the float64 re-implementation of the official solver, fallbacks, determinism, sample moments, opcheck,
torch.compile and bad inputs."""
import math

import pytest
import torch

import gmmkernels  # noqa: F401  (loads the extension)
from gmmkernels import _backend
from gmmkernels.reference import gms_fit as R
from gmmkernels.reference import rng as RNG
from gmmkernels import GMSCoeffs, available_gms_backends, gms_fit, gms_step

W = 1.0 / 3.0
HAS_CPU = _backend.has_kernel("gms_fit", "CPU")
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="native CPU extension not built")


def _moments(n, seed=0, dtype=torch.float64, skew=0.5, shape=None):
    """Feasible (mean, var, raw third moment): third central moment within the closed form's reach."""
    g = torch.Generator().manual_seed(seed)
    M1 = torch.randn(n, generator=g, dtype=torch.float64) * 0.5
    V = torch.rand(n, generator=g, dtype=torch.float64) * 0.5 + 0.05
    kmax = (2.0 / 27.0) * (4.5 * V) ** 1.5  # |k3| < kmax  <=>  v > 0 for w = 1/3
    k3 = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * skew * kmax
    M3 = k3 + 3 * M1 * V + M1 ** 3
    out = [t.to(dtype) for t in (M1, V, M3)]
    if shape is not None:
        out = [t.reshape(shape) for t in out]
    return out


def _mix_moments(mu1, mu2, v, w=W):
    m1 = w * mu1 + (1 - w) * mu2
    m2 = w * (mu1 ** 2 + v) + (1 - w) * (mu2 ** 2 + v)
    m3 = w * (mu1 ** 3 + 3 * mu1 * v) + (1 - w) * (mu2 ** 3 + 3 * mu2 * v)
    return m1, m2 - m1 ** 2, m3


def _fit_backends():
    return [b for b in available_gms_backends("cpu", "gms_fit") if b != "reference"]


# ----------------------------------------------------------------------------------------------------------
# closed form


@pytest.mark.parametrize("backend", ["reference"] + _fit_backends())
@pytest.mark.parametrize("w", [W, 0.2, 0.7])
def test_closed_form_matches_three_moments(backend, w):
    n = 64 if backend == "triton" else 2000
    M1, V, M3 = _moments(n, seed=1, skew=0.9 if w == W else 0.0)
    if w != W:  # other weights: a skew inside the feasible range of that weight
        c = w * (1 - w) * (1 - 2 * w)
        d = torch.linspace(-1, 1, n, dtype=torch.float64) * 0.9 * torch.sqrt(V / (w * (1 - w)))
        M3 = c * d ** 3 + 3 * M1 * V + M1 ** 3
    fit = gms_fit(M1, V, M3, weight=w, method="closed", var_floor=0.0, backend=backend)
    m1, var, m3 = _mix_moments(fit.mu1, fit.mu2, fit.var, w)
    torch.testing.assert_close(m1, M1, rtol=0, atol=1e-12)
    torch.testing.assert_close(var, V, rtol=0, atol=1e-12)
    torch.testing.assert_close(m3, M3, rtol=0, atol=1e-11)
    assert bool((fit.var >= 0).all())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the Triton interpreter's numpy on inf / NaN lanes
@pytest.mark.parametrize("backend", ["reference"] + _fit_backends())
def test_closed_form_fallbacks(backend):
    nan, inf = math.nan, math.inf
    #            ok     zero var  huge skew  +inf m3  NaN m3  NaN mean  inf var  neg var  symmetric-free
    M1 = torch.tensor([0.1, 0.5, 0.0, 0.2, 0.0, nan, 0.0, 0.3, 0.5], dtype=torch.float64)
    V = torch.tensor([0.5, 0.0, 0.01, 0.3, 0.2, 0.2, inf, -1.0, 0.25], dtype=torch.float64)
    M3 = torch.tensor([0.2, 3.0, 50.0, inf, nan, 0.1, 0.0, 1.0, 0.5], dtype=torch.float64)  # last: m3c = 0 exactly
    fit = gms_fit(M1, V, M3, method="closed", var_floor=0.1, backend=backend)
    mu1, mu2, v = fit
    # NaN only where documented, and element-wise
    assert torch.isnan(mu1[[4, 5, 6]]).all() and torch.isnan(v[[4, 5, 6]]).all()
    ok = [0, 1, 2, 3, 7, 8]
    assert torch.isfinite(torch.stack([mu1[ok], mu2[ok], v[ok]])).all()
    # zero (and negative) variance: a point mass at the mean
    for i in (1, 7):
        assert mu1[i] == M1[i] and mu2[i] == M1[i] and v[i] == 0
    # huge skew and +inf: v at the floor, mean and variance still exact, skew sign kept
    for i in (2, 3):
        assert v[i].item() == pytest.approx(0.1 * V[i].item(), rel=1e-12)
        m1, var, _ = _mix_moments(mu1[i], mu2[i], v[i])
        assert m1.item() == pytest.approx(M1[i].item(), abs=1e-12)
        assert var.item() == pytest.approx(V[i].item(), rel=1e-10)
        assert mu1[i] > mu2[i]  # positive skew: the light component (w = 1/3) sits on the right
    # zero central third moment: a single Gaussian
    assert mu1[8].item() == 0.5 and mu2[8].item() == 0.5 and v[8].item() == 0.25


@pytest.mark.parametrize("backend", ["reference"] + _fit_backends())
def test_closed_form_half_weight(backend):
    M1 = torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64)
    V = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    M3 = torch.tensor([0.0, 0.3, -0.5], dtype=torch.float64)
    mu1, mu2, v = gms_fit(M1, V, M3, weight=0.5, method="closed", var_floor=0.1, backend=backend)
    assert mu1[0] == 0 and mu2[0] == 0 and v[0] == 1  # no skew: one Gaussian
    # skewed: the w -> 1/2 limit (v at the floor, split from the variance, sign of the skew)
    assert v[1].item() == pytest.approx(0.1, rel=1e-12) and mu1[1].item() == pytest.approx(math.sqrt(0.9), rel=1e-12)
    assert mu2[1].item() == pytest.approx(-math.sqrt(0.9), rel=1e-12)
    assert mu1[2] < mu2[2]
    m1, var, _ = _mix_moments(mu1, mu2, v, 0.5)
    torch.testing.assert_close(m1, M1, rtol=0, atol=1e-12)
    torch.testing.assert_close(var, V, rtol=0, atol=1e-12)


@needs_cpu
def test_closed_form_float32_and_shapes():
    M1, V, M3 = _moments(6 * 5 * 4, seed=3, shape=(6, 5, 4))
    want = R.closed_fit_ref(M1, V, M3)
    # non-contiguous inputs (a transposed view) and broadcasting of a scalar-like variance
    got = gms_fit(M1.transpose(0, 2), V.transpose(0, 2), M3.transpose(0, 2), backend="cpu")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b.transpose(0, 2), rtol=1e-12, atol=1e-12)
    got32 = gms_fit(M1.float(), V.float(), M3.float(), backend="cpu")
    want32 = R.closed_fit_ref(M1.float(), V.float(), M3.float())  # same float32 inputs, float64 math
    for a, b in zip(got32, want32):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-6, atol=1e-6)
    b = gms_fit(M1, torch.tensor(0.3, dtype=torch.float64), M3, backend="cpu")
    assert b.mu1.shape == M1.shape
    e = gms_fit(M1[:0], V[:0], M3[:0], backend="cpu")
    assert e.mu1.shape == (0, 5, 4)
    h = gms_fit(M1.half(), V.half(), M3.half(), backend="cpu")
    assert h.mu1.dtype == torch.float16


# ----------------------------------------------------------------------------------------------------------
# the official Adan solver


def _objective(fit, M1, V, M3):
    m1, var, m3 = _mix_moments(*fit)
    return ((m1 - M1) ** 2 + (var + m1 ** 2 - M1 ** 2 - V) ** 2 + (m3 - M3) ** 2).mean().item()


def test_adan_reference_reduces_the_objective():
    """Sanity of the re-implementation: the official solver lowers J from its initial point (it does not reach the
    exact fit: Adan's per-coordinate normalisation moves mu1 and mu2 together, so the split grows slowly)."""
    M1, V, M3 = _moments(4096, seed=5, skew=0.5)
    j0 = _objective((M1, M1 - 1e-3, 0.998 * V), M1, V, M3)
    a = R.adan_fit_ref(M1, V, M3)
    assert _objective(a, M1, V, M3) < 0.5 * j0
    assert _objective(R.closed_fit_ref(M1, V, M3), M1, V, M3) < 1e-20


@pytest.mark.parametrize("backend", _fit_backends())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("iters", [40, 70])
def test_adan_matches_official_reimplementation(backend, dtype, iters):
    n = 64 if backend == "triton" else 3000
    M1, V, M3 = _moments(n, seed=7, skew=0.8)
    want = R.adan_fit_ref(M1, V, M3, iters=iters)  # float64 official solver, N_el = n
    got = gms_fit(M1.to(dtype), V.to(dtype), M3.to(dtype), method="adan", iters=iters, backend=backend)
    assert all(a.dtype == dtype for a in got)
    _check_adan(got, want, dtype, iters)


def _check_adan(got, want, dtype, iters):
    diff = torch.stack([(a.cpu().double() - b.cpu()).abs() for a, b in zip(got, want)]).amax(0).flatten()
    if dtype == torch.float32:  # the official float32 solver itself lands ~1e-2 from the float64 one
        assert diff.max() < 5e-2 and diff.mean() < 5e-3
    elif iters == 40:
        assert diff.max() < 1e-10
    else:
        # Between ~50 and 70 iterations the official Adan iterates oscillate about the optimum (J stops decreasing)
        # and the dynamics amplify rounding-order differences of the gradient (autograd's vs the analytic one):
        # 1e-16 at step 50, ~1e-10 (median) and up to ~1e-5 (a few elements) at step 70.
        assert diff.median() < 1e-9 and torch.quantile(diff, 0.9) < 1e-6 and diff.max() < 1e-3


@pytest.mark.parametrize("backend", _fit_backends())
def test_adan_n_el_and_nan(backend):
    n = 32
    M1, V, M3 = _moments(n, seed=9)
    M1[3] = math.nan
    got = gms_fit(M1, V, M3, method="adan", iters=20, n_el=1000, backend=backend)
    want = R.adan_fit_ref(M1, V, M3, iters=20, n_el=1000)
    assert torch.isnan(got.mu1[3]) and torch.isfinite(got.mu1[torch.arange(n) != 3]).all()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, equal_nan=True)


# ----------------------------------------------------------------------------------------------------------
# fused step


def _step_inputs(shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    e1 = torch.randn(shape, generator=g, dtype=torch.float64) * 0.5
    e2 = e1 ** 2 + torch.rand(shape, generator=g, dtype=torch.float64)
    e3 = torch.randn(shape, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (x, e1, e2, e3)]


COEF = GMSCoeffs.from_alphas_cumprod(0.5, 0.7)


@needs_cpu
@pytest.mark.parametrize("method", ["closed", "adan", "gaussian"])
@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_step_cpu_matches_reference(method, per_image, dtype):
    xs = _step_inputs((3, 2, 5, 7), seed=11, dtype=dtype)
    kw = dict(method=method, per_image=per_image, seed=1234, offset=5, return_params=True, iters=30,
              var_clip=0.05 if method == "gaussian" else None)
    got = gms_step(*xs, COEF, backend="cpu", **kw)
    want = gms_step(*xs, COEF, backend="reference", **kw)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    if method == "adan":
        tol = dict(rtol=0, atol=1e-7) if dtype == torch.float64 else dict(rtol=0, atol=5e-2)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, **tol)


@needs_cpu
def test_step_determinism_and_component_per_image():
    xs = _step_inputs((6, 3, 4, 4), seed=2)
    a = gms_step(*xs, COEF, seed=7, offset=3, backend="cpu", return_params=True)
    b = gms_step(*xs, COEF, seed=7, offset=3, backend="cpu", return_params=True)
    c = gms_step(*xs, COEF, seed=7, offset=4, backend="cpu", return_params=True)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    torch.manual_seed(0)
    d = gms_step(*xs, COEF, backend="cpu")
    torch.manual_seed(0)
    e = gms_step(*xs, COEF, backend="cpu")
    assert torch.equal(d, e)
    # recover the component of every element from the noise stream: one component per image
    idx = torch.arange(a.x.numel()).reshape(a.x.shape)
    z = RNG.philox_normal_ref(idx, 7, 3, R.TAG_NOISE)
    base = a.x - torch.sqrt(a.var) * z
    is1 = (base - a.mu1).abs() < 1e-9
    is2 = (base - a.mu2).abs() < 1e-9
    assert bool((is1 | is2).all())
    per_img = is1.reshape(6, -1)
    assert bool((per_img.all(1) | (~per_img).all(1)).all())
    # NaN stays in its element
    xs[0][0, 0, 0, 0] = math.nan
    f = gms_step(*xs, COEF, seed=7, backend="cpu")
    assert torch.isnan(f[0, 0, 0, 0]) and torch.isfinite(f.flatten()[1:]).all()


@needs_cpu
@pytest.mark.parametrize("method", ["closed", "adan"])
def test_step_samples_have_the_fitted_moments(method):
    """Many elements sharing one set of moments: the sample's first three moments match the fitted mixture."""
    n = 200_000
    x = torch.full((n,), 0.4, dtype=torch.float64)
    e1 = torch.full((n,), -0.3, dtype=torch.float64)
    e2 = torch.full((n,), 0.6, dtype=torch.float64)
    e3 = torch.full((n,), -1.5, dtype=torch.float64)
    out = gms_step(x, e1, e2, e3, COEF, method=method, per_image=False, seed=99, backend="cpu", return_params=True,
                   iters=70)
    mu1, mu2, v = out.mu1[0], out.mu2[0], out.var[0]
    if method == "closed":
        assert abs(mu1 - mu2) > 0.05  # a genuinely two-component law
    raw = [W * (mu1 ** k) + (1 - W) * (mu2 ** k) for k in (1,)]
    m1 = raw[0]
    m2 = W * (mu1 ** 2 + v) + (1 - W) * (mu2 ** 2 + v)
    m3 = W * (mu1 ** 3 + 3 * mu1 * v) + (1 - W) * (mu2 ** 3 + 3 * mu2 * v)
    s = out.x
    for k, want in ((1, m1), (2, m2), (3, m3)):
        p = s ** k
        se = p.std() / math.sqrt(n)
        assert abs(p.mean() - want) < 5 * se, (k, p.mean().item(), want.item(), se.item())
    if method == "closed":  # the closed form matches the moments of the step exactly when feasible
        M1, V, M3 = R.step_moments_ref(x[:1], e1[:1], e2[:1], e3[:1], *COEF)
        mm1, mv, mm3 = _mix_moments(mu1, mu2, v)
        if v > 0.1 * V[0]:
            assert mm1.item() == pytest.approx(M1.item(), abs=1e-12) and mm3.item() == pytest.approx(M3.item(), abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# registration: opcheck, compile, autograd, bad inputs


@needs_cpu
def test_opcheck():
    M1, V, M3 = _moments(40, seed=4, shape=(2, 4, 5))
    for method in (0, 1):
        torch.library.opcheck(torch.ops.gmmkernels.gms_fit.default, (M1, V, M3, W, method, 5, 0.06, 0.1, 0))
    xs = _step_inputs((2, 3, 4))
    for wp in (True, False):
        torch.library.opcheck(torch.ops.gmmkernels.gms_step.default,
                              (*xs, *COEF, W, 0, 10, 0.06, 0.1, 0, True, math.inf, 5, 1, wp))


@needs_cpu
def test_compile_fullgraph():
    M1, V, M3 = _moments(48, seed=6, shape=(4, 12))

    def f(a, b, c):
        r = gms_fit(a, b, c, method="closed", backend="cpu")
        q = gms_fit(a, b, c, method="adan", iters=10, backend="cpu")
        return r.mu1 + r.mu2 + r.var, q.var

    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(M1, V, M3)
    want = f(M1, V, M3)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@needs_cpu
def test_no_autograd():
    M1, V, M3 = _moments(8)
    M1.requires_grad_(True)
    out = gms_fit(M1, V, M3, backend="cpu")
    with pytest.raises(RuntimeError, match="sampling-time op"):
        out.mu1.sum().backward()


def test_bad_inputs():
    M1, V, M3 = _moments(8)
    with pytest.raises(ValueError, match="gms_fit: argument 'method'"):
        gms_fit(M1, V, M3, method="newton")
    with pytest.raises(ValueError, match="gms_fit: argument 'weight'"):
        gms_fit(M1, V, M3, weight=1.0)
    with pytest.raises(ValueError, match="gms_fit: argument 'var_floor'"):
        gms_fit(M1, V, M3, var_floor=-0.1)
    with pytest.raises(ValueError, match="gms_fit: argument 'iters'"):
        gms_fit(M1, V, M3, method="adan", iters=-1)
    with pytest.raises(TypeError, match="gms_fit: argument 'var' has dtype"):
        gms_fit(M1, V.float(), M3)
    with pytest.raises(TypeError, match="gms_fit: argument 'third_moment' must be a torch.Tensor"):
        gms_fit(M1, V, 3.0)
    with pytest.raises(ValueError, match="do not broadcast"):
        gms_fit(M1, V[:3], M3)
    with pytest.raises(ValueError, match="gms_fit: argument 'backend'"):
        gms_fit(M1, V, M3, backend="gpu")
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        gms_fit(M1, V, M3, backend="cuda")
    xs = _step_inputs((2, 3))
    with pytest.raises(ValueError, match="gms_step: argument 'e2' has shape"):
        gms_step(xs[0], xs[1], xs[2][:1], xs[3], COEF)
    with pytest.raises(ValueError, match="gms_step: argument 'coeffs'"):
        gms_step(*xs, (1.0, 2.0))
    with pytest.raises(ValueError, match="gms_step: argument 'coeffs'"):
        gms_step(*xs, (0.0, 1.0, 0.5, 0.5, 0.1))
    with pytest.raises(ValueError, match="gms_step: argument 'offset'"):
        gms_step(*xs, COEF, offset=-1)
    with pytest.raises(TypeError, match="gms_step: argument 'seed'"):
        gms_step(*xs, COEF, seed=1.5)
    with pytest.raises(ValueError, match="gms_step: argument 'method'"):
        gms_step(*xs, COEF, method="exact")
    with pytest.raises(ValueError, match="backend='triton' is not available for gms_step"):
        gms_step(*xs, COEF, backend="triton")
    if HAS_CPU:
        with pytest.raises(RuntimeError, match="gms_fit: weight must be in"):
            torch.ops.gmmkernels.gms_fit(M1, V, M3, 1.5, 0, 70, 0.06, 0.1, 0)


# ----------------------------------------------------------------------------------------------------------
# CUDA (run on a GPU machine)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["closed", "adan"])
def test_cuda_fit_matches_reference(dtype, method):
    M1, V, M3 = _moments(50_000, seed=12, skew=0.8)
    want = R.fit_ref(M1, V, M3, method=method) if method == "adan" else R.closed_fit_ref(M1, V, M3)
    got = gms_fit(*(t.to("cuda", dtype) for t in (M1, V, M3)), method=method, backend="cuda")
    if method == "adan":
        _check_adan(got, want, dtype, 70)
    else:
        for a, b in zip(got, want):
            torch.testing.assert_close(a.cpu().double(), b, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["closed", "adan", "gaussian"])
@pytest.mark.parametrize("per_image", [True, False])
def test_cuda_step_matches_cpu(method, per_image):
    xs = _step_inputs((8, 3, 16, 16), seed=13)
    kw = dict(method=method, per_image=per_image, seed=42, offset=9, return_params=True)
    want = gms_step(*xs, COEF, backend="reference" if not HAS_CPU else "cpu", **kw)
    got = gms_step(*(t.cuda() for t in xs), COEF, backend="cuda", **kw)
    got2 = gms_step(*(t.cuda() for t in xs), COEF, backend="cuda", **kw)
    assert torch.equal(got.x, got2.x)
    if method == "adan":
        _check_adan(got[1:], want[1:], torch.float64, 70)
    else:
        for a, b in zip(got, want):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-9)


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["closed", "adan"])
def test_cuda_triton_fit(method):
    M1, V, M3 = _moments(10_000, seed=14)
    want = R.fit_ref(M1, V, M3, method=method)
    got = gms_fit(*(t.cuda().float() for t in (M1, V, M3)), method=method, backend="triton")
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu().double(), b, rtol=0, atol=5e-2 if method == "adan" else 1e-5)
