"""MGDM op layer (gmmkernels/ops/mgdm_step.py): mgdm_vi_step and mgdm_bridge on every backend against the float64
reference (the same counter-based normals), the in-place state update, opcheck of the native ops and bad inputs.
The sampler built on them is tested in python_tests/diffusion/test_mgdm.py."""
import pytest
import torch

import gmmkernels
from gmmkernels import _backend, mgdm_bridge, mgdm_vi_step
from gmmkernels.reference import mgdm_step as R
from gmmkernels.reference import mgdm_step as fref
from gmmkernels.reference.rng import philox_normal_ref

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_ops = pytest.mark.skipif(not _backend.has_kernel("mgdm_vi_step", "CPU"), reason="native mgdm ops not built")
BACKENDS = [(b, d) for d in DEVICES for b in gmmkernels._dispatch.available("mgdm_step", d)]


def _inputs(B, P, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    st = torch.randn(6, B, P, generator=g, dtype=torch.float64) * 0.1
    st[4:] = st[4:].abs()  # second moments are non-negative
    grad, eps, m = (torch.randn(B, P, generator=g, dtype=torch.float64) for _ in range(3))
    inv = torch.rand(B, generator=g, dtype=torch.float64) + 0.5
    return [t.to(device=device, dtype=dtype) for t in (st, grad, eps, m, inv)]


KW = dict(lr=0.03, beta1=0.9, beta2=0.999, adam_eps=1e-8, step=3, seed=0x1234_5678_9ABC, draw=17)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vi_step_matches_reference(backend, device, dtype):
    st, grad, eps, m, inv = _inputs(3, 1001, dtype, device)
    st64 = st.double().cpu().clone()
    v, e = mgdm_vi_step(st, grad, eps, m, inv, backend=backend, **KW)
    e_ref = R.stream_normals(grad.double().cpu(), KW["seed"], KW["draw"], R.TAG_VI)
    new, v_ref, _ = R.mgdm_vi_step_ref(st64, grad.double().cpu(), eps.double().cpu(), m.double().cpu(), inv.double().cpu(),
                                       KW["lr"], KW["beta1"], KW["beta2"], KW["adam_eps"], KW["step"], e_ref)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e.double().cpu(), e_ref, **tol)
    torch.testing.assert_close(v.double().cpu(), v_ref, **tol)
    torch.testing.assert_close(st.double().cpu(), new, **tol)  # the state is updated in place


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_bridge_matches_reference(backend, device, dtype):
    g = torch.Generator().manual_seed(1)
    u, w = (torch.randn(2, 3, 70, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for _ in range(2))
    out = mgdm_bridge(u, w, 0.7, -0.2, 0.5, seed=-5, draw=2, backend=backend)
    assert out.dtype == dtype and out.shape == u.shape
    z = R.stream_normals(u.double().cpu(), -5, 2, R.TAG_BRIDGE)
    want = 0.7 * u.double().cpu() - 0.2 * w.double().cpu() + 0.5 * z
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(out.double().cpu(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_state_is_updated_in_float32(device):
    st, grad, eps, m, inv = _inputs(2, 33, torch.float32, device, seed=3)
    st16 = st.bfloat16()
    ref = st16.float().clone()
    v, e = mgdm_vi_step(st16, grad.bfloat16(), eps.bfloat16(), m.bfloat16(), inv.bfloat16(), **KW)
    assert v.dtype == e.dtype == torch.bfloat16
    v32, _ = mgdm_vi_step(ref, grad.bfloat16().float(), eps.bfloat16().float(), m.bfloat16().float(),
                          inv.bfloat16().float(), **KW)
    torch.testing.assert_close(st16.float(), ref.bfloat16().float())
    torch.testing.assert_close(v.float(), v32.bfloat16().float())


@pytest.mark.skipif(not _backend.has_kernel("mgdm_vi_step", "CPU"), reason="native extension not built")
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    st, grad, eps, m, inv = _inputs(2, 40, torch.float64, device)
    torch.library.opcheck(torch.ops.gmmkernels.mgdm_vi_step.default,
                          (st, grad, eps, m, inv, 0.03, 0.9, 0.999, 1e-8, 3, 11, 2))
    torch.library.opcheck(torch.ops.gmmkernels.mgdm_bridge.default, (grad, eps, 0.3, 0.5, 0.2, 11, 2))


BAD = [
    (lambda a: (a[0][:5], *a[1:]), ValueError, "mgdm_vi_step: argument 'state' must have shape [6, B, P]"),
    (lambda a: (a[0], a[1][:, :3], *a[2:]), ValueError, "mgdm_vi_step: argument 'grad_v' must have shape [B, P] = [2, 5]"),
    (lambda a: (*a[:4], a[4][:1]), ValueError, "mgdm_vi_step: argument 'inv_sigma2' must have shape [B] = [2]"),
    (lambda a: (a[0], a[1].float(), *a[2:]), TypeError, "mgdm_vi_step: argument 'grad_v' has dtype torch.float32"),
    (lambda a: (a[0], a[1].long(), *a[2:]), TypeError, "mgdm_vi_step: argument 'grad_v' must be a floating-point"),
    (lambda a: (a[0].transpose(1, 2).contiguous().transpose(1, 2), *a[1:]), ValueError, "must be contiguous"),
]


@pytest.mark.parametrize("mutate,exc,pattern", BAD)
def test_vi_step_bad_inputs(mutate, exc, pattern):
    args = _inputs(2, 5, torch.float64, "cpu")
    args[0] = args[0][:, :, :5] if pattern == "must be contiguous" else args[0]
    with pytest.raises(exc, match=pattern.replace("[", r"\[").replace("]", r"\]")):
        mgdm_vi_step(*mutate(args), **KW)


@pytest.mark.parametrize("kw,exc,pattern", [
    (dict(lr=0.0), ValueError, "'lr' must be a finite number > 0"),
    (dict(lr=float("nan")), ValueError, "'lr' must be a finite number > 0"),
    (dict(beta1=1.0), ValueError, "'beta1' must be a finite number in"),
    (dict(step=0), ValueError, "'step' must be an int >= 1"),
    (dict(step=1.5), TypeError, "'step' must be an int >= 1"),
    (dict(draw=-1), ValueError, "'draw' must be an int in"),
    (dict(seed="7"), TypeError, "'seed' must be an int"),
])
def test_vi_step_bad_scalars(kw, exc, pattern):
    with pytest.raises(exc, match="mgdm_vi_step: argument " + pattern.replace("(", r"\(").replace("[", r"\[")):
        mgdm_vi_step(*_inputs(2, 5, torch.float64, "cpu"), **{**KW, **kw})


def test_bridge_bad_inputs():
    u = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="mgdm_bridge: argument 'w' must have the shape of 'u'"):
        mgdm_bridge(u, u[:2], 1.0, 0.0, 0.1, seed=0, draw=0)
    with pytest.raises(ValueError, match="mgdm_bridge: argument 'std' must be a finite number >= 0"):
        mgdm_bridge(u, u, 1.0, 0.0, -0.1, seed=0, draw=0)
    with pytest.raises(TypeError, match="mgdm_bridge: argument 'u' must be a torch.Tensor"):
        mgdm_bridge([0.0], u, 1.0, 0.0, 0.1, seed=0, draw=0)


def _state(B, P, dtype, device, g):
    st = torch.randn(6, B, P, generator=g, dtype=torch.float64)
    st[4:] = st[4:].abs()  # second moments are non-negative
    st[1] = st[1] * 0.1 - 1.0
    return st.to(device, dtype).contiguous()


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vi_step_native_matches_reference_formula(device, dtype):
    g = torch.Generator().manual_seed(0)
    B, P = 3, 257
    st = _state(B, P, dtype, device, g)
    gam, eps, m = (torch.randn(B, P, generator=g, dtype=torch.float64).to(device, dtype) for _ in range(3))
    inv = torch.rand(B, generator=g, dtype=torch.float64).to(device, dtype) + 0.5
    st0 = st.clone()
    v, e = torch.ops.gmmkernels.mgdm_vi_step(st, gam, eps, m, inv, 0.03, 0.9, 0.999, 1e-8, 4, 123, 7)
    want_st, want_v, _ = fref.mgdm_vi_step_ref(st0.double(), gam.double(), eps.double(), m.double(), inv.double(), 0.03, 0.9, 0.999,
                                               1e-8, 4, e.double())
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st.double(), want_st, **tol)
    torch.testing.assert_close(v.double(), want_v, **tol)
    assert abs(float(e.double().mean())) < 0.2 and abs(float(e.double().std()) - 1) < 0.1


def test_reference_gradient_is_the_official_loss():
    # one torch.optim.Adam step on L = -log_pot(D(v)) + 0.5 ||(v - m)/sigma||^2 - sum rho equals the fused formula
    torch.manual_seed(0)
    P = 11
    A = torch.randn(P, P, dtype=torch.float64)
    m = torch.randn(1, P, dtype=torch.float64)
    sig = 0.7
    mu = torch.randn(1, P, dtype=torch.float64, requires_grad=True)
    rho = (torch.randn(1, P, dtype=torch.float64) * 0.1).requires_grad_(True)
    eps = torch.randn(1, P, dtype=torch.float64)
    log_pot = lambda x: -0.5 * ((x @ A.T) ** 2).sum(-1)  # noqa: E731
    st = torch.stack([mu.detach(), rho.detach()] + [torch.zeros(1, P, dtype=torch.float64)] * 4)
    opt = torch.optim.Adam([mu, rho], lr=0.05)
    v = mu + rho.exp() * eps
    loss = -log_pot(v).sum() + 0.5 * (((v - m) / sig) ** 2).sum() - rho.sum()
    loss.backward()
    opt.step()
    vd = (st[0] + st[1].exp() * eps).requires_grad_(True)
    (gam,) = torch.autograd.grad(-log_pot(vd).sum(), vd)
    new, _, _ = fref.mgdm_vi_step_ref(st, gam, eps, m, torch.tensor([1 / sig**2], dtype=torch.float64), 0.05, 0.9, 0.999, 1e-8, 1,
                                      eps)
    torch.testing.assert_close(new[0], mu.detach())
    torch.testing.assert_close(new[1], rho.detach())


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
def test_bridge_op(device):
    u = torch.randn(4, 1000, dtype=torch.float64, device=device)
    w = torch.randn(4, 1000, dtype=torch.float64, device=device)
    out = torch.ops.gmmkernels.mgdm_bridge(u, w, 0.3, 0.6, 0.0, 1, 1)
    torch.testing.assert_close(out, 0.3 * u + 0.6 * w)
    z = (torch.ops.gmmkernels.mgdm_bridge(u, w, 0.0, 0.0, 2.0, 1, 2) / 2.0).flatten()
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    again = torch.ops.gmmkernels.mgdm_bridge(u, w, 0.0, 0.0, 2.0, 1, 2)
    assert torch.equal(again.flatten() / 2.0, z)
    other = torch.ops.gmmkernels.mgdm_bridge(u, w, 0.0, 0.0, 2.0, 1, 3)
    assert not torch.equal(other, again)


@needs_ops
@pytest.mark.parametrize("device", DEVICES)
def test_bridge_and_vi_noise_are_the_documented_stream(device):
    """The normals of both ops are the first Box-Muller normal of the Philox stream (seed, element index, draw,
    tag 4 / 5) of csrc/include/gmmkernels/rng.h, as reference.rng.philox_normal_ref computes it (float64; the CPU
    kernels use a vectorised log / cos, the GPU its own: agreement to a few ulp). 70001 elements: not a multiple of
    the CPU's 16-lane blocks, several threads' chunks."""
    n, seed, draw = 70001, 0x1234_5678_9ABC, 17
    u = torch.zeros(1, n, dtype=torch.float64, device=device)
    z = torch.ops.gmmkernels.mgdm_bridge(u, u, 0.0, 0.0, 1.0, seed, draw).flatten().cpu()
    idx = torch.arange(n, dtype=torch.int64)
    torch.testing.assert_close(z, philox_normal_ref(idx, seed, draw, 4), rtol=0, atol=1e-13)
    st = _state(1, n, torch.float64, device, torch.Generator().manual_seed(0))
    _, e = torch.ops.gmmkernels.mgdm_vi_step(st, u, u, u, torch.ones(1, dtype=torch.float64, device=device), 0.01, 0.9, 0.999,
                                             1e-8, 1, seed, draw)
    torch.testing.assert_close(e.flatten().cpu(), philox_normal_ref(idx, seed, draw, 5), rtol=0, atol=1e-13)
