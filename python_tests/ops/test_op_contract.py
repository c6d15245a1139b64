"""The precision and derivative contract of the mixture ops and the adapter chain (docs/kernels.md (Contract)):
second derivatives through every fused backend (gradgradcheck, a Laplacian of log p), torch.func transforms, the
Triton "ieee" mode at points far from every component, half inputs on the reference backends, and opcheck /
torch.compile of the backward ops with the strides the forward hands them."""
import math

import pytest
import torch

import gmmkernels
from gmmkernels import _backend, available_adapter_backends, available_backends, lowrank_adapter, mixture_suffstats
from gmmkernels.ops.mixture_stats import _kernel_params
from gmmkernels.reference import lowrank_adapter as lref
from gmmkernels.reference import mixture_stats as ref
from gmmkernels.reference import mixture_suffstats as sref

from _cases import make_mixture
from _tolerances import FACTOR, err, gemm_logit_bound

COVS = ["diag", "spherical", "full"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HAS_C = _backend.HAS_C


def _mixture_backends(device, cov, dtype=torch.float64):
    """Backends that run cov in dtype on device (Triton: diag/spherical, float32 only)."""
    return [b for b in available_backends(device)
            if not (b == "triton" and (cov == "full" or dtype == torch.float64))]


def _stats_fn(cov, backend):
    def f(x, logits, means, scale):
        st = gmmkernels.mixture_stats(x, logits, means, torch.tril(scale) if cov == "full" else scale, cov,
                                      backend=backend, with_resp=True)
        return st.log_prob, st.score, st.responsibilities
    return f


# ---------------------------------------------------------------------------------------------
# second derivatives


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov", COVS)
def test_gradgradcheck_mixture_stats(device, cov):
    """Second derivatives of log p, score and responsibilities w.r.t. x, logits, means and scale (float64)."""
    args = [t.requires_grad_() for t in make_mixture(cov, (), 3, 2, 2, seed=21, device=device)]
    for backend in _mixture_backends(device, cov):
        assert torch.autograd.gradgradcheck(_stats_fn(cov, backend), args, eps=1e-6, atol=1e-5), backend


def _laplacian(backend, x, logits, means, scale, cov):
    """sum_n tr d^2 log p(x_n) / dx_n^2, one Hessian row per coordinate through torch.autograd.grad."""
    x = x.detach().requires_grad_()
    lp = gmmkernels.mixture_log_prob(x, logits, means, scale, cov, backend=backend)
    (g,) = torch.autograd.grad(lp.sum(), x, create_graph=True)
    return sum(torch.autograd.grad(g[..., d].sum(), x, retain_graph=True)[0][..., d] for d in range(x.shape[-1]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_laplacian_of_log_prob(device, cov, dtype):
    """The Laplacian of log p (score matching, Hutchinson traces) on every backend against the float64 reference,
    itself checked against the trace of torch.func.hessian of the reference."""
    args64 = make_mixture(cov, (2,), 5, 3, 3, seed=22)
    want = _laplacian("reference", *args64, cov)
    x = args64[0]
    hess = torch.func.hessian(lambda x: ref.mixture_log_prob_ref(x, *args64[1:], cov).sum())(x)
    torch.testing.assert_close(want, hess.reshape(x.numel(), x.numel()).diagonal().reshape(x.shape).sum(-1))
    for backend in _mixture_backends(device, cov, dtype):
        got = _laplacian(backend, *(t.to(device=device, dtype=dtype) for t in args64), cov)
        tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.double().cpu(), want, **tol, msg=backend)


def test_torch_func_transforms():
    """Under torch.func "auto" runs the reference; naming a fused backend raises, naming the function."""
    x, logits, means, scale = make_mixture("diag", (), 4, 3, 2, seed=23)
    h = torch.func.hessian(lambda x: gmmkernels.mixture_log_prob(x, logits, means, scale).sum())(x)
    want = torch.func.hessian(lambda x: ref.mixture_log_prob_ref(x, logits, means, scale).sum())(x)
    torch.testing.assert_close(h, want)
    for b in available_backends("cpu"):
        if b == "reference":
            continue
        with pytest.raises(ValueError, match="mixture_log_prob: .*torch.func transforms"):
            torch.func.grad(lambda x: gmmkernels.mixture_log_prob(x, logits, means, scale, backend=b).sum())(x)


def _adapter_case(seed, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(3, 4, generator=g, dtype=torch.float64)
    u = 0.5 * torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    s = torch.randn(2, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (r, u, s)]


@pytest.mark.parametrize("device", DEVICES)
def test_gradgradcheck_lowrank_adapter(device):
    args = _adapter_case(24, device=device)
    for b in available_adapter_backends(device):
        if b == "triton":
            continue  # float32 only: checked against the float64 reference below
        assert torch.autograd.gradgradcheck(lambda r, u, s: lowrank_adapter(r, u, s, backend=b), args), b


def _hvp(fn, args, v, w):
    out = fn(*args)
    g = torch.autograd.grad((out * w.to(out)).sum(), args, create_graph=True)
    return torch.autograd.grad(sum((gi * vi.to(gi)).sum() for gi, vi in zip(g, v)), args)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_second_derivatives_lowrank_adapter(device):
    """Every backend (Triton included) in float32: Hessian-vector products against the float64 reference."""
    args64 = _adapter_case(25)
    g = torch.Generator().manual_seed(26)
    v = [torch.randn(a.shape, generator=g, dtype=torch.float64) for a in args64]
    w = torch.randn(args64[0].shape, generator=g, dtype=torch.float64)
    want = _hvp(lref.lowrank_adapter_ref, args64, v, w)
    for b in available_adapter_backends(device):
        got = _hvp(lambda r, u, s: lowrank_adapter(r, u, s, backend=b), _adapter_case(25, torch.float32, device), v, w)
        for a, e in zip(got, want):
            assert err(a, e) < 1e-5, b


@pytest.mark.parametrize("device", DEVICES)
def test_float32_second_derivatives_triton_mixture(device):
    """The Triton op's own backward is differentiable (its derivative: the float32 reference of the backward)."""
    if "triton" not in available_backends(device):
        pytest.skip("no Triton backend")
    args64 = make_mixture("diag", (), 6, 3, 4, seed=27)
    g = torch.Generator().manual_seed(28)
    v = [torch.randn(a.shape, generator=g, dtype=torch.float64) for a in args64]
    w = torch.randn(6, generator=g, dtype=torch.float64)

    def lp(backend):
        return lambda *a: gmmkernels.mixture_log_prob(*a, backend=backend)

    want = _hvp(lp("reference"), [a.clone().requires_grad_() for a in args64], v, w)
    got = _hvp(lp("triton"), [a.to(device, torch.float32).requires_grad_() for a in args64], v, w)
    for a, e in zip(got, want):
        assert err(a, e) < 1e-5


@pytest.mark.skipif(not HAS_C, reason="native extension not built")
@pytest.mark.parametrize("full", [False, True])
def test_suffstats_derivatives(full):
    """mixture_suffstats is differentiable w.r.t. x and resp on every backend, to second order."""
    g = torch.Generator().manual_seed(29)
    x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.rand(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for b in ("cpu", "reference"):
        out = mixture_suffstats(x, r, full, backend=b)
        assert all(o.requires_grad for o in out), b
        assert torch.autograd.gradgradcheck(lambda x, r: mixture_suffstats(x, r, full, backend=b), (x, r)), b
    w = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in sref.mixture_suffstats_ref(x, r, full)]
    want = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(sref.mixture_suffstats_ref(x, r, full), w)), (x, r))
    got = torch.autograd.grad(sum((o * wi).sum() for o, wi in zip(mixture_suffstats(x, r, full, backend="cpu"), w)),
                              (x, r))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


# ---------------------------------------------------------------------------------------------
# the Triton precision modes


def _far_case(offset, sigma, seed=30, N=12, K=3, D=5, shift=0.0):
    """Points `offset` standard deviations from component 0 (and farther from the others), the whole mixture
    `shift` standard deviations from the origin (where the GEMM form cancels: its error grows like |x||mu|/sigma^2),
    float64."""
    g = torch.Generator().manual_seed(seed)
    means = 3 * sigma * torch.randn(K, D, generator=g, dtype=torch.float64) + shift * sigma
    scale = sigma * torch.exp(0.2 * torch.randn(K, D, generator=g, dtype=torch.float64))
    d = torch.randn(N, D, generator=g, dtype=torch.float64)
    x = means[0] + offset * sigma * d / d.norm(dim=-1, keepdim=True) + sigma * torch.randn(N, D, generator=g,
                                                                                         dtype=torch.float64)
    logits = torch.randn(K, generator=g, dtype=torch.float64)
    return [t.float().double() for t in (x, logits, means, scale)]


def _f32(args):
    return [a.float() for a in args]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("offset,sigma,shift", [(1e2, 1.0, 0.0), (1e3, 1.0, 0.0), (1e4, 1.0, 0.0), (3.0, 1e-3, 0.0),
                                                (1e3, 1e-3, 0.0), (10.0, 1e2, 0.0), (3.0, 1.0, 1e2), (3.0, 1.0, 1e3),
                                                (10.0, 1.0, 1e4), (3.0, 1e-3, 1e3)])
def test_triton_ieee_is_exact_fp32_far_from_the_components(device, offset, sigma, shift):
    """precision="ieee" computes (x - mu)^2 by direct differences: as accurate as the CPU fp32 kernel at 1e2..1e4
    standard deviations from the components or from the origin, and at small sigma (values, responsibilities and
    the gradient of the logits)."""
    if "triton" not in available_backends(device):
        pytest.skip("no Triton backend")
    args64 = _far_case(offset, sigma, shift=shift)
    want = ref.mixture_stats_ref(*args64, "diag")
    eager = ref.mixture_stats_ref(*_f32(args64), "diag")
    args = [a.to(device).requires_grad_() for a in _f32(args64)]
    got = gmmkernels.mixture_stats(*args, "diag", backend="triton", with_resp=True)
    for name, o, w, e in zip(("log_prob", "score", "responsibilities"), got, want, eager):
        assert err(o, w) <= FACTOR * err(e, w) + 1e-6, name
    # d log p / d logits = r - softmax(logits): 0 where one component takes every point, O(1) if log p is wrong
    (gl,) = torch.autograd.grad(got.log_prob.sum(), args[1])
    a64 = [a.clone().requires_grad_() for a in args64]
    (wl,) = torch.autograd.grad(ref.mixture_log_prob_ref(*a64, "diag").sum(), a64[1])
    assert (gl.double().cpu() - wl).abs().max() <= 1e-4 * max(1.0, float(wl.abs().max()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32-gemm", "tf32", "bf16"])
def test_triton_gemm_modes_stay_within_their_bound(device, precision):
    """The GEMM-form modes: |log p - log p_ref| within the documented bound (docs/kernels.md (Contract))."""
    if "triton" not in available_backends(device):
        pytest.skip("no Triton backend")
    if precision != "fp32-gemm" and device == "cpu":
        pytest.skip("the interpreter does not round tf32 / bf16 operands as tensor cores do")
    for offset, shift in ((3.0, 0.0), (1e2, 0.0), (3.0, 1e3)):
        args64 = _far_case(offset, 1.0, shift=shift)
        want = ref.mixture_log_prob_ref(*args64, "diag")
        got = gmmkernels.mixture_log_prob(*(a.to(device) for a in _f32(args64)), "diag", backend="triton",
                                          precision=precision)
        x, _, means, scale = args64
        bound = gemm_logit_bound(precision, x[None], means[None], 1.0 / scale[None])[0].amax(-1)
        assert ((got.double().cpu() - want).abs() <= bound + 1e-5 * want.abs() + 1e-5).all(), offset


def test_fp32_gemm_is_a_triton_mode_only():
    args = _f32(_far_case(3.0, 1.0))
    for b in available_backends("cpu"):
        if b == "triton":
            continue
        with pytest.raises(ValueError, match="mixture_log_prob: .*'fp32-gemm' is a GEMM-form mode"):
            gmmkernels.mixture_log_prob(*args, backend=b, precision="fp32-gemm")


# ---------------------------------------------------------------------------------------------
# half inputs compute in float32 on every backend


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cov", COVS)
def test_half_inputs_compute_in_float32_on_every_backend(dtype, cov):
    """Every backend, the reference included, computes half inputs in float32 and returns the input dtype: equal to
    the float32 result rounded once (the reference used to compute in half: score [nan, inf], full raised)."""
    args = [t.to(dtype) for t in make_mixture(cov, (), 16, 4, 3, seed=31, scale_lo=0.05)]
    for b in _mixture_backends("cpu", cov, torch.float32):
        st = gmmkernels.mixture_stats(*args, cov, backend=b, with_resp=True)
        st32 = gmmkernels.mixture_stats(*(a.float() for a in args), cov, backend=b, with_resp=True)
        for o, o32 in zip(st, st32):
            assert o.dtype == dtype and torch.isfinite(o).all(), b
            assert torch.equal(o, o32.to(dtype)), b
    r, u, s = (t.detach() for t in _adapter_case(32, dtype))
    for b in available_adapter_backends("cpu"):
        out = lowrank_adapter(r, u, s, backend=b)
        assert out.dtype == dtype and torch.equal(out, lowrank_adapter(r.float(), u.float(), s.float(),
                                                                       backend=b).to(dtype)), b


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_mixture_dispatch_reference(dtype):
    g = torch.Generator().manual_seed(33)
    x0 = torch.randn(6, 3, generator=g).to(dtype)
    centers = (4 * torch.randn(4, 3, generator=g)).to(dtype)
    eps = torch.randn(6, 3, generator=g).to(dtype)
    out = gmmkernels.mixture_dispatch(x0, centers, 0.75, 0.5, eps, backend="reference")  # exact in every dtype
    out32 = gmmkernels.mixture_dispatch(x0.float(), centers.float(), 0.75, 0.5, eps.float(), backend="reference")
    assert out[0].dtype == dtype and torch.equal(out[0], out32[0].to(dtype))
    assert torch.equal(out[1], out32[1])


# ---------------------------------------------------------------------------------------------
# opcheck and torch.compile of the backward ops


def _backward_args(cov, requires_grad):
    """Arguments of mixture_stats_backward as the forward hands them: prec of a full covariance is column-major
    (out of solve_triangular); the cotangents are non-contiguous views."""
    x, logits, means, scale = make_mixture(cov, (2,), 6, 3, 4, seed=34)
    prec, logc = _kernel_params(logits, scale, cov, 3, 4)
    if cov == "full":
        assert not prec.is_contiguous()
    lp, sc, rs = ref.mixture_stats_kernel_ref(x, means, prec, logc, cov == "full")
    g = torch.randn(6, 2, dtype=torch.float64).t()
    G = torch.randn(2, 4, 6, dtype=torch.float64).transpose(1, 2)
    H = torch.randn(2, 3, 6, dtype=torch.float64).transpose(1, 2)
    ts = [x, means, prec, logc]
    if requires_grad:
        ts = [t.detach().requires_grad_() for t in ts]
    return [g, G, H, *ts, lp.detach()]


@pytest.mark.skipif(not HAS_C, reason="native extension not built")
@pytest.mark.parametrize("cov", ["diag", "full"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_backward_op_non_contiguous(cov, requires_grad):
    g, G, H, x, means, prec, logc, lp = _backward_args(cov, requires_grad)
    op = torch.ops.gmmkernels.mixture_stats_backward.default
    full = cov == "full"
    torch.library.opcheck(op, (g, G, H, x, means, prec, logc, lp, full))
    torch.library.opcheck(op, (g.contiguous(), None, None, x, means, prec, logc, lp, full))
    want = ref.mixture_stats_backward_ref(g, G, H, x, means, prec, logc, full)
    for a, e in zip(op(g.contiguous(), G.contiguous(), H.contiguous(), x, means, prec, logc, lp, full), want):
        assert a.is_contiguous()
        torch.testing.assert_close(a, e)


@pytest.mark.skipif(not HAS_C, reason="native extension not built")
def test_opcheck_lowrank_adapter_backward_non_contiguous():
    r, u, s = (t.detach() for t in _adapter_case(35))
    go = torch.randn(4, 3, dtype=torch.float64).t()
    torch.library.opcheck(torch.ops.gmmkernels.lowrank_adapter_backward.default, (go.contiguous(), r, u, s))
    ut = u.transpose(1, 2).contiguous().transpose(1, 2)
    torch.library.opcheck(torch.ops.gmmkernels.lowrank_adapter_backward.default, (go.contiguous(), r, ut, s))


_ARGS = ["x", "logits", "means", "scale"]


@pytest.mark.skipif(not HAS_C, reason="native extension not built")
@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("arg", _ARGS)
def test_compiled_forward_backward(cov, arg):
    """torch.compile(fullgraph=True) of forward + backward, with a gradient for each differentiable argument."""
    args = make_mixture(cov, (), 8, 3, 3, dtype=torch.float32, seed=36)
    i = _ARGS.index(arg)

    def f(*a):
        st = gmmkernels.mixture_stats(*a, cov, backend="cpu", with_resp=True)
        return st.log_prob.sum() + (st.score ** 2).sum() + (st.responsibilities ** 2).sum()

    def grad(fn):
        a = [t.clone().requires_grad_(j == i) for j, t in enumerate(args)]
        return torch.autograd.grad(fn(*a), a[i])[0]

    want = grad(f)
    torch._dynamo.reset()  # every case compiles the same code object: start from an empty cache
    got = grad(torch.compile(f, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(got, want)
    if cov == "full" and arg == "scale":  # the stride case; inductor on CPU needs a C++ compiler and time
        torch._dynamo.reset()
        torch.testing.assert_close(grad(torch.compile(f, fullgraph=True, backend="inductor")), want)
