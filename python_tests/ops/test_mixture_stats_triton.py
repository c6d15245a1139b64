"""Triton backend of the fused diagonal mixture statistics (gmmkernels.triton.mixture_stats).

On CPU-only machines the kernels run through the Triton interpreter (TRITON_INTERPRET=1, tiny shapes, float32);
the CUDA class runs the compiled kernels at realistic shapes, under torch.compile and torch.library.opcheck.
Every output and gradient is compared with the float64 reference ``mixture_stats_kernel_ref``.
"""
from _triton_env import IDEV, INTERPRET, needs_kernels  # first: sets TRITON_INTERPRET before triton is imported

import pytest
import torch

pytest.importorskip("triton")

from gmmkernels.reference.mixture_stats import mixture_stats_kernel_ref  # noqa: E402
from gmmkernels.triton import mixture_stats as ms  # noqa: E402

pytestmark = pytest.mark.triton

# (B, N, K, D): odd sizes, one/several component tiles, one/several D chunks (interpreter BLOCK_D cap is 32)
CASES = [(1, 7, 1, 1), (2, 20, 5, 3), (1, 33, 16, 17), (2, 19, 5, 40), (1, 12, 16, 2)]


def _make(B, N, K, D, device="cpu", dtype=torch.float32, sigma=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(B, K, D, generator=g)
    w = torch.exp(0.3 * torch.randn(B, K, D, generator=g)) / sigma
    logc = torch.randn(B, K, generator=g)
    idx = torch.randint(0, K, (B, N), generator=g)
    # points near the components (so several responsibilities are non-trivial) plus unit noise
    x = torch.gather(mu, 1, idx.unsqueeze(-1).expand(B, N, D)) + sigma * torch.randn(B, N, D, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (x, mu, w, logc)]


def _cotangents(B, N, K, D, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    return [t.to(device) for t in (torch.randn(B, N, generator=g), torch.randn(B, N, D, generator=g),
                                   torch.randn(B, N, K, generator=g))]


def _ref(inputs, cot=None, use=(True, True, True)):
    """float64 reference outputs and (if cot) the gradients of sum(cot_i * out_i) over the used outputs."""
    dev = inputs[0].device
    args = [t.detach().double().requires_grad_(cot is not None) for t in inputs]
    out = mixture_stats_kernel_ref(*args, full=False)
    if cot is None:
        return [o.detach() for o in out], None
    loss = sum((o * c.to(dev, torch.float64)).sum() for o, c, u in zip(out, cot, use) if u)
    return [o.detach() for o in out], torch.autograd.grad(loss, args)


def _err(out, ref):
    """max |out - ref| relative to max(1, max |ref|)."""
    if ref.numel() == 0:
        return 0.0
    out = out.detach().to(ref.device, torch.float64)
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1.0)).item()


# ------------------------------------------------------------------------------------------------------------
# interpreter / launcher tests (also run on CUDA when TRITON_INTERPRET is unset)


@needs_kernels
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("with_score,with_resp", [(True, True), (False, False), (True, False), (False, True)])
def test_forward_matches_reference(case, with_score, with_resp):
    B, N, K, D = case
    inputs = _make(B, N, K, D, IDEV)
    logp, score, resp = ms._mixture_stats_fwd(*inputs, with_score, with_resp, "ieee")
    (rl, rs, rr), _ = _ref(inputs)
    assert logp.shape == (B, N) and logp.dtype == torch.float32
    assert _err(logp, rl) < 1e-5
    if with_score:
        assert score.shape == (B, N, D) and _err(score, rs) < 1e-5
    else:
        assert score.shape == (0,)
    if with_resp:
        assert resp.shape == (B, N, K) and _err(resp, rr) < 1e-5
    else:
        assert resp.shape == (0,)


@needs_kernels
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_grads_match_reference(case):
    """Autograd through the registered triton_op (forward + backward triton_ops), all three outputs used."""
    B, N, K, D = case
    inputs = [t.requires_grad_() for t in _make(B, N, K, D, IDEV)]
    cot = _cotangents(B, N, K, D, IDEV)
    out = ms.mixture_stats_triton(*inputs, True, True, "ieee")
    loss = sum((o * c).sum() for o, c in zip(out, cot))
    grads = torch.autograd.grad(loss, inputs)
    _, rgrads = _ref(inputs, cot)
    for name, gt, gr in zip(("x", "means", "prec", "logc"), grads, rgrads):
        assert gt.shape == gr.shape
        assert _err(gt, gr) < 5e-5, name


@needs_kernels
@pytest.mark.parametrize("use", [(True, False, False), (True, True, False), (False, False, True), (False, True, True)])
def test_backward_launcher_output_subsets(use):
    """The VJP with grad_logp / grad_score / grad_resp absent."""
    B, N, K, D = 2, 19, 5, 40
    inputs = _make(B, N, K, D, IDEV, seed=3)
    g, G, H = _cotangents(B, N, K, D, IDEV)
    logp, _, _ = ms._mixture_stats_fwd(*inputs, False, False, "ieee")
    gt = ms._mixture_stats_bwd(g if use[0] else None, G if use[1] else None, H if use[2] else None,
                               *inputs, logp, "ieee")
    _, gr = _ref(inputs, [g, G, H], use)
    for name, a, b in zip(("x", "means", "prec", "logc"), gt, gr):
        assert _err(a, b) < 5e-5, name


@needs_kernels
@pytest.mark.parametrize("use", [(True, True, True), (True, False, False)], ids=["all-outputs", "logp-only"])
def test_batches_past_the_grid_limit_launch_in_ranges(use, monkeypatch):
    """More mixtures than CUDA allows in a grid's second dimension (65535; here lowered to 2): the forward and the
    VJP launch once per range of mixtures, with the slices of every input, output and cotangent."""
    from gmmkernels.triton import _utils

    monkeypatch.setattr(_utils, "GRID_YZ_MAX", 2)
    B, N, K, D = 5, 9, 3, 4
    inputs = _make(B, N, K, D, IDEV, seed=5)
    g, G, H = _cotangents(B, N, K, D, IDEV)
    out = ms._mixture_stats_fwd(*inputs, use[1], use[2], "ieee")
    gt = ms._mixture_stats_bwd(g, G if use[1] else None, H if use[2] else None, *inputs, out[0], "ieee")
    ref_out, gr = _ref(inputs, [g, G, H], use)
    for o, r, u in zip(out, ref_out, use):
        assert o.numel() == 0 if not u else _err(o, r) < 1e-5
    for name, a, b in zip(("x", "means", "prec", "logc"), gt, gr):
        assert _err(a, b) < 5e-5, name


@needs_kernels
def test_multi_chunk_path_forced():
    """A small BLOCK_D cap forces the large-D path (score read-modify-write, D loops) at a tiny D."""
    B, N, K, D = 1, 21, 6, 37
    inputs = _make(B, N, K, D, IDEV, seed=5)
    cfg = dict(BLOCK_N=16, BLOCK_K=16, BLOCK_D_MAX=16)
    logp, score, resp = ms._mixture_stats_fwd(*inputs, True, True, "ieee", config=cfg)
    g, G, H = _cotangents(B, N, K, D, IDEV)
    grads = ms._mixture_stats_bwd(g, G, H, *inputs, logp, "ieee", config=cfg)
    ref, rgrads = _ref(inputs, [g, G, H])
    for a, b in zip((logp, score, resp), ref):
        assert _err(a, b) < 1e-5
    for a, b in zip(grads, rgrads):
        assert _err(a, b) < 5e-5


# Tolerances per precision mode at sigma = 1, |mu| ~ 1 (module docstring). The interpreter computes "tf32" in
# fp32, so it only meets the tf32 budget there trivially; on CUDA the budget is real.
PREC_TOL = {"ieee": (1e-5, 5e-5), "tf32": (2e-2, 5e-2), "bf16": (1.5e-1, 3e-1)}


@needs_kernels
@pytest.mark.parametrize("precision", ["ieee", "tf32", "bf16"])
def test_precision_modes(precision):
    B, N, K, D = 1, 24, 5, 17
    inputs = [t.requires_grad_() for t in _make(B, N, K, D, IDEV, seed=7)]
    cot = _cotangents(B, N, K, D, IDEV)
    out = ms.mixture_stats_triton(*inputs, True, True, precision)
    grads = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out, cot)), inputs)
    ref, rgrads = _ref(inputs, cot)
    ftol, gtol = PREC_TOL[precision]
    for a, b in zip(out, ref):
        assert _err(a.detach(), b) < ftol
    for a, b in zip(grads, rgrads):
        assert _err(a, b) < gtol


@needs_kernels
def test_half_inputs_return_input_dtype():
    inputs = _make(1, 10, 3, 5, IDEV, dtype=torch.float16, seed=2)
    logp, score, resp = ms.mixture_stats_triton(*inputs, True, True, "ieee")
    assert logp.dtype == score.dtype == resp.dtype == torch.float16
    ref, _ = _ref(inputs)
    for a, b in zip((logp, score, resp), ref):
        assert _err(a, b) < 5e-3


@needs_kernels
def test_nan_row_is_isolated():
    B, N, K, D = 2, 20, 5, 3
    x, mu, w, logc = _make(B, N, K, D, IDEV, seed=4)
    x[1, 7, 1] = float("nan")
    inputs = [x.requires_grad_(), mu, w, logc]
    logp, score, resp = ms.mixture_stats_triton(*inputs, True, True, "ieee")
    assert torch.isnan(logp[1, 7]) and torch.isnan(score[1, 7]).all() and torch.isnan(resp[1, 7]).all()
    keep = torch.ones(B, N, dtype=torch.bool)
    keep[1, 7] = False
    ref, _ = _ref([t.detach() for t in inputs])
    assert torch.isfinite(logp.detach()[keep]).all()
    assert _err(logp.detach()[keep], ref[0][keep]) < 1e-5
    assert _err(score.detach()[keep], ref[1][keep]) < 1e-5
    assert _err(resp.detach()[keep], ref[2][keep]) < 1e-5
    (gx,) = torch.autograd.grad((logp + score.sum(-1)).sum(), [x])
    assert torch.isfinite(gx[keep]).all()


@needs_kernels
def test_far_points_are_finite():
    """Points hundreds of standard deviations from every component: every exp underflows, the LSE must not."""
    B, N, K, D = 1, 16, 5, 3
    x, mu, w, logc = _make(B, N, K, D, IDEV, seed=6)
    x = x + 300.0
    inputs = [x.requires_grad_(), mu, w, logc]
    logp, score, resp = ms.mixture_stats_triton(*inputs, True, True, "ieee")
    ref, _ = _ref([t.detach() for t in inputs])
    for t in (logp, score, resp):
        assert torch.isfinite(t).all()
    # |logit| ~ 1e5: fp32 GEMM form keeps ~1e-6 relative accuracy of the log density
    assert ((logp.detach().double() - ref[0]).abs() / ref[0].abs()).max() < 1e-5
    assert _err(resp.detach(), ref[2]) < 1e-2
    assert ((score.detach().double() - ref[1]).abs() / ref[1].abs().max()).max() < 1e-3
    (gx,) = torch.autograd.grad(logp.sum(), [x])
    assert torch.isfinite(gx).all()


@needs_kernels
def test_minus_inf_component_weight():
    B, N, K, D = 1, 9, 4, 3
    x, mu, w, logc = _make(B, N, K, D, IDEV, seed=8)
    logc[0, 2] = float("-inf")
    logp, score, resp = ms._mixture_stats_fwd(x, mu, w, logc, True, True, "ieee")
    ref, _ = _ref([x, mu, w, logc])
    assert (resp[0, :, 2] == 0).all()
    for a, b in zip((logp, score, resp), ref):
        assert _err(a, b) < 1e-5


@needs_kernels
def test_empty_rows():
    B, K, D = 2, 5, 3
    inputs = [t.requires_grad_() for t in _make(B, 0, K, D, IDEV)]
    logp, score, resp = ms.mixture_stats_triton(*inputs, True, True, "ieee")
    assert logp.shape == (B, 0) and score.shape == (B, 0, D) and resp.shape == (B, 0, K)
    grads = torch.autograd.grad(logp.sum() + score.sum() + resp.sum(), inputs)
    for gr, t in zip(grads, inputs):
        assert gr.shape == t.shape and (gr == 0).all()


@needs_kernels
def test_argument_errors():
    x, mu, w, logc = _make(1, 4, 2, 3, IDEV)
    with pytest.raises(TypeError, match="float64"):
        ms._mixture_stats_fwd(x.double(), mu.double(), w.double(), logc.double(), True, False, "ieee")
    with pytest.raises(ValueError, match="shape"):
        ms._mixture_stats_fwd(x, mu[:, :, :2], w, logc, True, False, "ieee")
    with pytest.raises(ValueError, match="precision"):
        ms._mixture_stats_fwd(x, mu, w, logc, True, False, "fp8")


# ------------------------------------------------------------------------------------------------------------
# CUDA: compiled kernels, realistic shapes, torch.compile, opcheck


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="needs CUDA and compiled Triton kernels")
class TestCuda:
    @pytest.mark.parametrize("shape", [(1, 65536, 64, 32), (1, 4096, 16, 3072), (3, 1000, 40, 100)],
                             ids=lambda s: "x".join(map(str, s)))
    def test_big_shapes_forward_and_grads(self, shape):
        B, N, K, D = shape
        sigma = 1.0
        inputs = [t.requires_grad_() for t in _make(B, N, K, D, "cuda", sigma=sigma, seed=11)]
        cot = _cotangents(B, N, K, D, "cuda")
        out = ms.mixture_stats_triton(*inputs, True, True, "ieee")
        grads = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out, cot)), inputs)
        ref, rgrads = _ref([t.detach() for t in inputs], cot)
        # GEMM-form cancellation grows with |x||mu| sigma^-2 sqrt(D) (module docstring)
        ftol = 2e-5 * max(1.0, D ** 0.5)
        for a, b in zip(out, ref):
            assert _err(a.detach(), b) < ftol
        for name, a, b in zip(("x", "means", "prec", "logc"), grads, rgrads):
            assert _err(a, b) < 4 * ftol, name

    @pytest.mark.parametrize("precision", ["tf32", "bf16"])
    def test_tensor_core_modes(self, precision):
        B, N, K, D = 2, 3000, 37, 64
        inputs = _make(B, N, K, D, "cuda", seed=12)
        out = ms.mixture_stats_triton(*inputs, True, True, precision)
        ref, _ = _ref(inputs)
        tol = {"tf32": 5e-2, "bf16": 5e-1}[precision]
        assert _err(out[0], ref[0]) < tol
        assert _err(out[1], ref[1]) < tol

    def test_compile_fullgraph(self):
        B, N, K, D = 2, 777, 13, 24
        inputs = [t.requires_grad_() for t in _make(B, N, K, D, "cuda", seed=13)]

        def f(x, mu, w, logc):
            logp, score, resp = torch.ops.gmmkernels.mixture_stats_triton(x, mu, w, logc, True, True, "ieee")
            return logp.sum() + (score * score).sum() + resp[..., 0].sum()

        cf = torch.compile(f, fullgraph=True)
        le = f(*inputs)
        ge = torch.autograd.grad(le, inputs)
        lc = cf(*inputs)
        gc = torch.autograd.grad(lc, inputs)
        # inductor fuses the torch pre/epilogue of the ops differently from eager: reduction orders differ
        assert _err(lc, le.double()) < 1e-5
        for a, b in zip(gc, ge):
            assert _err(a, b.double()) < 1e-4

    @pytest.mark.parametrize("requires_grad", [True, False])
    def test_opcheck(self, requires_grad):
        B, N, K, D = 2, 50, 7, 9
        inputs = [t.requires_grad_(requires_grad) for t in _make(B, N, K, D, "cuda", seed=14)]
        torch.library.opcheck(torch.ops.gmmkernels.mixture_stats_triton.default, (*inputs, True, True, "ieee"))
        torch.library.opcheck(torch.ops.gmmkernels.mixture_stats_triton.default, (*inputs, False, False, "ieee"))
        x, mu, w, logc = [t.detach() for t in inputs]
        logp, score, resp = ms._mixture_stats_fwd(x, mu, w, logc, True, True, "ieee")
        g, G, H = _cotangents(B, N, K, D, "cuda")
        torch.library.opcheck(torch.ops.gmmkernels.mixture_stats_triton_backward.default,
                              (g, G, H, x, mu, w, logc, logp, "ieee"))
        torch.library.opcheck(torch.ops.gmmkernels.mixture_stats_triton_backward.default,
                              (g, None, None, x, mu, w, logc, logp, "ieee"))
