"""SMD low-rank adapter op: every backend against the float64 materialised reference (values and gradients), the
whole hypernet adapter against the official materialised form, opcheck, gradcheck, torch.compile, odd shapes and
bad inputs."""
import math
import re

import pytest
import torch

import gmmkernels  # noqa: F401
from gmmkernels import _backend
from gmmkernels.reference import lowrank_adapter as ref
from gmmkernels import available_adapter_backends, hypernet_adapter, lowrank_adapter

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKEND_DEVICE = [(b, d) for d in DEVICES for b in available_adapter_backends(d) if b != "reference"]
HAS_OP = _backend.HAS_C and hasattr(torch.ops.gmmkernels, "lowrank_adapter")

# (leading shape, L, d); d = 257 takes the generic (non-register) CUDA path; the interpreter gets the small ones
CASES = [((1,), 1, 1), ((0,), 2, 3), ((7,), 2, 5), ((5,), 0, 4), ((2, 3), 2, 8), ((33,), 3, 100), ((40,), 2, 33),
         ((9,), 4, 257), ((300,), 2, 64)]
SMALL = CASES[:5]


def make_case(lead, L, d, seed=0, dtype=torch.float64, device="cpu", s_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(*lead, d, generator=g, dtype=torch.float64)
    u = torch.randn(*lead, L, d, generator=g, dtype=torch.float64) / math.sqrt(max(d, 1))
    s = s_scale * torch.randn(L, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (r, u, s)]


def _skip(backend, device, dtype, case):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("the Triton backend computes in float32")
    if backend == "triton" and device == "cpu" and case not in SMALL:
        pytest.skip("interpreter: small shapes only")


def _tol(dtype, d, L):
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-10)
    return dict(rtol=2e-5, atol=2e-5 * max(1.0, math.sqrt(d)) * max(1, L))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(backend, device, dtype, case):
    _skip(backend, device, dtype, case)
    lead, L, d = case
    args64 = make_case(lead, L, d, seed=L * 10 + d)
    out = lowrank_adapter(*(a.to(device=device, dtype=dtype) for a in args64), backend=backend)
    want = ref.lowrank_adapter_ref(*args64)
    assert out.shape == want.shape and out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), want, **_tol(dtype, d, L))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", [c for c in CASES if c[0][0] > 0], ids=str)
def test_gradients_match_materialised_reference(backend, device, dtype, case):
    _skip(backend, device, dtype, case)
    lead, L, d = case
    args64 = make_case(lead, L, d, seed=3 + L + d)
    w = torch.randn(*lead, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    a_ref = [a.clone().requires_grad_() for a in args64]
    g_ref = torch.autograd.grad((ref.lowrank_adapter_ref(*a_ref) * w).sum(), a_ref, allow_unused=True)
    a = [t.to(device=device, dtype=dtype).requires_grad_() for t in args64]
    g_out = torch.autograd.grad((lowrank_adapter(*a, backend=backend) * w.to(a[0])).sum(), a, allow_unused=True)
    t = _tol(dtype, d, L) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4 * max(1.0, math.sqrt(math.prod(lead) * d)))
    for name, go, gr in zip("rus", g_out, g_ref):
        go = torch.zeros_like(a[0 if name == "r" else 1 if name == "u" else 2]) if go is None else go
        gr = torch.zeros_like(args64["rus".index(name)]) if gr is None else gr
        torch.testing.assert_close(go.double().cpu(), gr, **t, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_softplus_threshold_and_large_s(backend, device):
    # s > 20: softplus(s) = s and its derivative is 1 (torch's threshold); s very negative: c ~ 0 (pure rank one)
    r, u, _ = make_case((6,), 3, 4, seed=11, dtype=torch.float32, device=device)
    s = torch.tensor([25.0, -30.0, 0.3], device=device, requires_grad=True)
    s_ref = s.detach().double().cpu().requires_grad_()
    out = lowrank_adapter(r, u, s, backend=backend)
    want = ref.lowrank_adapter_ref(r.double().cpu(), u.double().cpu(), s_ref)
    torch.testing.assert_close(out.double().cpu(), want, rtol=1e-4, atol=1e-3)
    (gs,) = torch.autograd.grad(out.sum(), s)
    (gs_ref,) = torch.autograd.grad(want.sum(), s_ref)
    torch.testing.assert_close(gs.double().cpu(), gs_ref, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# the whole adapter against the official (materialised) form


def _adapter_params(C=6, dz=10, L=2, seed=21, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: (torch.randn(*s, generator=g, dtype=torch.float64) / math.sqrt(s[-1])).to(device=device, dtype=dtype)  # noqa: E731
    return [mk(dz, C), mk(dz), mk(L, dz, dz), mk(L, dz), torch.randn(L, generator=g, dtype=torch.float64).to(device=device, dtype=dtype),
            mk(C, dz), mk(C)]


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE + [("reference", "cpu")])
@pytest.mark.parametrize("spatial", [(3, 4), (), (5,)], ids=str)
def test_hypernet_adapter_matches_official_form(backend, device, spatial):
    dtype = torch.float32 if backend == "triton" else torch.float64
    g = torch.Generator().manual_seed(2)
    h = torch.randn(2, 6, *spatial, generator=g, dtype=torch.float64)
    z = torch.randn(2, 10, *spatial, generator=g, dtype=torch.float64)
    params = _adapter_params()
    if len(spatial) == 2:
        a_ref = [t.clone().requires_grad_() for t in (h, z, *params)]
        want = ref.hypernet_adapter_ref(*a_ref)
    else:  # the reference is written for [B, C, H, W]; view other ranks as H x W maps
        hv = h.reshape(2, 6, -1, 1)
        zv = z.reshape(2, 10, -1, 1)
        a_ref = [t.clone().requires_grad_() for t in (hv, zv, *params)]
        want = ref.hypernet_adapter_ref(*a_ref)
    a = [t.detach().to(device=device, dtype=dtype).requires_grad_() for t in (h, z, *params)]
    out = hypernet_adapter(*a, backend=backend)
    assert out.shape == h.shape
    t = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.double().cpu().reshape(want.shape), want, **t)
    wgt = torch.randn(want.shape, dtype=torch.float64, generator=g)
    g_ref = torch.autograd.grad((want * wgt).sum(), a_ref)
    g_out = torch.autograd.grad((out * wgt.reshape(out.shape).to(out)).sum(), a)
    t = dict(rtol=1e-8, atol=1e-8) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-3)
    for i, (go, gr) in enumerate(zip(g_out, g_ref)):
        torch.testing.assert_close(go.double().cpu().reshape(gr.shape), gr, **t, msg=lambda m: f"grad of input {i}: {m}")


# ---------------------------------------------------------------------------------------------
# odd inputs


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
def test_non_contiguous_inputs(backend, device):
    r, u, s = make_case((12,), 2, 8, seed=4, dtype=torch.float32, device=device)
    rt = r.t().contiguous().t()
    ut = u.transpose(0, 2).contiguous().transpose(0, 2)
    torch.testing.assert_close(lowrank_adapter(rt[::2], ut[::2], s, backend=backend),
                               lowrank_adapter(r[::2].contiguous(), u[::2].contiguous(), s, backend=backend))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICE)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(backend, device, dtype):
    r, u, s = make_case((10,), 2, 16, seed=6, dtype=dtype, device=device)
    out = lowrank_adapter(r, u, s, backend=backend)
    assert out.dtype == dtype
    want = ref.lowrank_adapter_ref(r.double().cpu(), u.double().cpu(), s.double().cpu())
    torch.testing.assert_close(out.double().cpu(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend,device", [(b, d) for b, d in BACKEND_DEVICE if b in ("cpu", "cuda")])
def test_deterministic(backend, device):
    r, u, s = make_case((257,), 2, 100, seed=7, dtype=torch.float32, device=device)
    a = [t.requires_grad_() for t in (r, u, s)]
    out1 = lowrank_adapter(*a, backend=backend)
    g1 = torch.autograd.grad(out1.square().sum(), a)
    out2 = lowrank_adapter(*a, backend=backend)
    g2 = torch.autograd.grad(out2.square().sum(), a)
    assert torch.equal(out1, out2) and all(torch.equal(x, y) for x, y in zip(g1, g2))


def test_nan_row_does_not_poison_others():
    r, u, s = make_case((5,), 2, 6, seed=8, dtype=torch.float32)
    r[2, 3] = float("nan")
    for backend in [b for b in available_adapter_backends("cpu") if b != "reference"]:
        out = lowrank_adapter(r, u, s, backend=backend)
        assert torch.isnan(out[2]).all() and torch.isfinite(out[[0, 1, 3, 4]]).all()


# ---------------------------------------------------------------------------------------------
# torch.library integration


@pytest.mark.skipif(not HAS_OP, reason="native extension not built")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", [((6,), 2, 5), ((3,), 0, 4), ((40,), 3, 33)], ids=str)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, case, requires_grad):
    lead, L, d = case
    args = make_case(lead, L, d, seed=9, device=device)
    if requires_grad:
        args = [a.requires_grad_() for a in args]
    torch.library.opcheck(torch.ops.gmmkernels.lowrank_adapter.default, tuple(args))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (fake tracing of interpreted kernels)")
def test_opcheck_triton():
    pytest.importorskip("triton")
    from gmmkernels.triton.lowrank_adapter import _lowrank_adapter_triton_op  # noqa: F401

    args = [a.requires_grad_() for a in make_case((40,), 2, 33, seed=9, device="cuda", dtype=torch.float32)]
    torch.library.opcheck(torch.ops.gmmkernels.lowrank_adapter_triton.default, tuple(args),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.skipif(not HAS_OP, reason="native extension not built")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", [((4,), 2, 3), ((3,), 3, 40)], ids=str)
def test_gradcheck(device, case):
    lead, L, d = case
    args = [a.requires_grad_() for a in make_case(lead, L, d, seed=10, device=device)]
    backend = "cpu" if device == "cpu" else "cuda"
    assert torch.autograd.gradcheck(lambda r, u, s: lowrank_adapter(r, u, s, backend=backend), args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,device", [(b, d) for b, d in BACKEND_DEVICE if not (b == "triton" and d == "cpu")])
def test_torch_compile_fullgraph(backend, device):
    r, u, s = make_case((2, 8), 2, 16, seed=12, dtype=torch.float32, device=device)
    r.requires_grad_()
    s.requires_grad_()

    def f(r, u, s):
        return lowrank_adapter(r, u, s, backend=backend).square().sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    torch.testing.assert_close(cf(r, u, s), f(r, u, s))
    g = torch.autograd.grad(f(r, u, s), (r, s))
    g_c = torch.autograd.grad(cf(r, u, s), (r, s))
    for a, b in zip(g, g_c):
        torch.testing.assert_close(b, a)


# ---------------------------------------------------------------------------------------------
# bad inputs


def _good():
    return make_case((4,), 2, 3, seed=15)


@pytest.mark.parametrize(
    "mutate,exc,pattern",
    [
        (lambda a: (a[0], a[1][..., :2], a[2]), ValueError, "'u' must have shape [..., L, d]"),
        (lambda a: (a[0], a[1][:3], a[2]), ValueError, "'u' must have shape [..., L, d]"),
        (lambda a: (a[0], a[1], a[2][:1]), ValueError, "'s' must have shape [L=2]"),
        (lambda a: (a[0], a[1], a[2][None]), ValueError, "'s' must have shape [L=2]"),
        (lambda a: (a[0].float(), a[1], a[2]), TypeError, "'u' has dtype torch.float64 but 'r' has torch.float32"),
        (lambda a: (a[0].long(), a[1], a[2]), TypeError, "'r' must be a floating-point"),
        (lambda a: (a[0], a[1].to("meta"), a[2]), ValueError, "'u' is on meta"),
        (lambda a: ([1.0], a[1], a[2]), TypeError, "'r' must be a torch.Tensor"),
        (lambda a: (a[0][0, 0], a[1], a[2]), ValueError, "'r' must have shape [..., d]"),
    ],
)
def test_bad_inputs(mutate, exc, pattern):
    with pytest.raises(exc, match=f"lowrank_adapter: .*{re.escape(pattern)}"):
        lowrank_adapter(*mutate(_good()))


def test_bad_options():
    with pytest.raises(ValueError, match="lowrank_adapter: argument 'backend' must be one of"):
        lowrank_adapter(*_good(), backend="fast")
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        lowrank_adapter(*_good(), backend="cuda")
    if "triton" in available_adapter_backends("cpu"):
        with pytest.raises(TypeError, match="backend='triton' computes in float32"):
            lowrank_adapter(*_good(), backend="triton")


@pytest.mark.skipif(not HAS_OP, reason="native extension not built")
def test_native_op_checks():
    r, u, s = _good()
    with pytest.raises(RuntimeError, match=r"lowrank_adapter: argument 'u' must have shape \[P=4, L, d=3\]"):
        torch.ops.gmmkernels.lowrank_adapter(r, u[..., :2].contiguous(), s)
    with pytest.raises(RuntimeError, match="lowrank_adapter: argument 's' has dtype Float but 'r' has dtype Double"):
        torch.ops.gmmkernels.lowrank_adapter(r, u, s.float())
    with pytest.raises(RuntimeError, match=r"lowrank_adapter: argument 'grad_out' must have shape \[P=4, d=3\]"):
        torch.ops.gmmkernels.lowrank_adapter_backward(r[:2], r, u, s)
    with pytest.raises(RuntimeError, match="lowrank_adapter: argument 'r' must be float32 or float64"):
        torch.ops.gmmkernels.lowrank_adapter(r.half(), u.half(), s.half())
