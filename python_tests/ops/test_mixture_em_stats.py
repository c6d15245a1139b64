"""mixture_em_stats (gmmkernels/ops/mixture_em_stats.py): the native kernels against the float64 reference (odd
shapes, several chunks, padding components, shared data, -inf weights, far-away means in float32), determinism
across thread counts, the public op per backend and dtype, opcheck, torch.compile, the refused gradient, and bad
inputs."""
import math
import platform

import pytest
import torch

import gmmkernels
from gmmkernels import _backend, mixture_em_stats
from gmmkernels.reference import mixture_em_stats as ref
from gmmkernels.reference.mixture_stats import mixture_stats_ref

from _cases import make_mixture

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
COVS = ["diag", "spherical", "full"]


def _native(device):
    if not _backend.has_kernel("mixture_em_stats", "CUDA" if device == "cuda" else "CPU"):
        pytest.skip("no native mixture_em_stats kernel")


def _kernel_inputs(B, N, K, D, full, shared_x=False, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    x = torch.randn(1 if shared_x else B, N, D, **kw) * 1.5
    means = spread * torch.randn(B, K, D, **kw)
    logc = torch.randn(B, K, **kw)
    if full:  # a well-conditioned lower factor with random upper entries (they must be ignored)
        prec = 0.3 * torch.randn(B, K, D, D, **kw) / math.sqrt(max(D, 1))
        prec = prec + torch.diag_embed(0.5 + torch.rand(B, K, D, **kw))
    else:
        prec = 0.5 + torch.rand(B, K, D, **kw)
    return x, means, prec, logc


def _check(got, want, dtype, N, what=("sum_log_prob", "sum_r_log_r", "nk", "sx", "sxx", "resp"), D=16):
    for name, a, b in zip(what, got, want):
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        if dtype == torch.float64:
            tol = dict(rtol=1e-10, atol=1e-11 * scale)
        else:  # float32 inputs: compare relative to the size of the sums (N terms of size ~ scale / N); the rounding
            # of a logit grows with its D terms
            grow = max(1.0, D / 16)
            tol = dict(rtol=2e-5 * grow, atol=2e-6 * grow * scale * math.sqrt(max(N, 1)))
        torch.testing.assert_close(a.double().cpu(), b, **tol, msg=lambda m: f"{name}: {m}")


# B, N, K, D: one point; empty data; K not a multiple of the lanes; several chunks (N > 64 * 256 / 64 rows); a larger
# mixture; a row of x that fills one or two vectors exactly (D = 4, 8, 16; where D equals the lanes, the rows-in-lanes
# path builds the full features by rotations: float64 D = 4 and float32 D = 8 with AVX2); K a whole number of vectors
# (8, 32). The CPU kernel takes its rows-in-lanes path for K <= 32 (float32) / K <= 8 (float64), its component-lanes
# path above, and computes the rows-in-lanes path's logits two ways (K a multiple of the lanes or not): all are covered
# in both dtypes
SHAPES = [(1, 1, 1, 1), (2, 0, 3, 2), (2, 37, 5, 3), (1, 70, 17, 4), (3, 130, 33, 9), (1, 5000, 16, 8),
          (2, 20000, 3, 2), (1, 300, 40, 1), (1, 200, 130, 16), (2, 150, 7, 16), (1, 90, 6, 8),
          (1, 333, 8, 5), (1, 100, 32, 3), (2, 257, 7, 4)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernel_matches_reference(device, full, dtype, shape):
    _native(device)
    B, N, K, D = shape
    args = _kernel_inputs(B, N, K, D, full, shared_x=(B > 1 and N % 2 == 1))
    want = ref.mixture_em_stats_kernel_ref(*args, full)
    got = torch.ops.gmmkernels.mixture_em_stats(*(t.to(device, dtype) for t in args), full, True)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want]
    assert all(t.dtype == dtype for t in got)
    _check(got, want, dtype, N)
    # without the responsibilities: the same statistics, bit for bit, and an empty sixth output
    got2 = torch.ops.gmmkernels.mixture_em_stats(*(t.to(device, dtype) for t in args), full, False)
    assert got2[5].shape == (0,)
    for a, b in zip(got[:5], got2[:5]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
def test_kernel_zero_weight_components_and_far_means(device, full):
    """A component of weight 0 (logc = -inf) gets r = 0 and zero statistics; means far from the data (|mu| / sigma
    ~ 1e3) keep float32 accurate to the size of its rounding of the inputs."""
    _native(device)
    x, means, prec, logc = _kernel_inputs(2, 300, 20, 5, full, seed=3)
    logc[:, 3] = -math.inf
    want = ref.mixture_em_stats_kernel_ref(x, means, prec, logc, full)
    got = torch.ops.gmmkernels.mixture_em_stats(x.to(device), means.to(device), prec.to(device), logc.to(device), full, True)
    _check(got, want, torch.float64, 300)
    assert float(got[2][:, 3].abs().max()) == 0 and float(got[5][..., 3].abs().max()) == 0
    # far means: x and means shifted by 1e3 sigma together (same logits), float32
    off = 1e3
    a32 = [(x + off).float(), (means + off).float(), prec.float(), logc.float()]
    want = ref.mixture_em_stats_kernel_ref(*(t.double() for t in a32), full)  # the inputs' rounding left out
    got = torch.ops.gmmkernels.mixture_em_stats(*(t.to(device) for t in a32), full, False)
    # the sum of log p over 300 points: error ~ eps32 |W mu| |y| per term
    torch.testing.assert_close(got[0].double().cpu(), want[0], rtol=0, atol=300 * 2e-7 * off * 20)
    torch.testing.assert_close(got[2].double().cpu(), want[2], rtol=0, atol=0.05)


# both CPU paths in both dtypes: rows in the lanes (K <= 8 float64, K <= 32 float32) and components in the lanes
@pytest.mark.parametrize("dtype,K", [(torch.float64, 5), (torch.float64, 40), (torch.float32, 20),
                                     (torch.float32, 40)], ids=["f64-rows", "f64-tile", "f32-rows", "f32-tile"])
@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
def test_cpu_kernel_zero_weights_and_nan(dtype, K, full):
    """The native CPU kernel as the block programs below: a weight-0 component gets r = 0 and zero statistics, a NaN in
    one row makes that data set's sum of log p NaN and that row's r NaN while the other rows keep theirs, and a mixture
    whose weights are all 0 gives log p = -inf (the reference: r NaN, sum r log r NaN)."""
    _native("cpu")
    x, means, prec, logc = _kernel_inputs(3, 150, K, 5, full, seed=3)
    logc[:, 3] = -math.inf
    logc[2] = -math.inf
    x[1, 7, 2] = math.nan
    want = ref.mixture_em_stats_kernel_ref(x, means, prec, logc, full)
    got = torch.ops.gmmkernels.mixture_em_stats(*(t.to(dtype) for t in (x, means, prec, logc)), full, True)
    others = torch.arange(150) != 7
    assert float(got[2][0, 3]) == 0 and float(got[5][0, :, 3].abs().max()) == 0
    assert float(got[5][1, others, 3].abs().max()) == 0
    assert got[0][1].isnan() and bool(got[5][1, 7].isnan().all())
    assert got[0][2] == -math.inf and want[0][2] == -math.inf and want[0][1].isnan()
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(got[5][1, others].double(), want[5][1, others], **tol)
    _check([got[i][0] for i in range(6)], [want[i][0] for i in range(6)], dtype, 150)


# The CUDA kernels' block programs run on CPU threads (csrc/simt/mixture_em_stats.cpp): the one-pass program (K <= 32)
# and the two-pass programs (K > 32) against the float64 reference, on machines without a GPU. Shapes: one point;
# empty data; odd sizes; several splits of the rows (N > 256); B > 1 with shared data (odd N); K = 32 and 33 around
# the switch; two tiles of features (diag D > 128); 130 components (5 tiles) at the largest full D.
SIMT_SHAPES = [(1, 1, 1, 1), (2, 0, 3, 2), (2, 37, 5, 3), (1, 70, 17, 4), (3, 131, 33, 9), (1, 1000, 16, 8),
               (2, 600, 3, 2), (1, 300, 40, 1), (1, 100, 32, 3), (2, 45, 32, 16), (1, 64, 130, 16)]
SIMT_DIAG_ONLY = [(1, 70, 5, 130), (2, 45, 36, 140)]  # the full kernel takes D <= 16 (test_simt_kernel_limits)


def _simt():
    if not _backend.has_kernel("_simt_mixture_em_stats", "CPU"):
        pytest.skip("the extension has no CPU run of the CUDA kernels")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("full,shape", [(f, s) for f in (False, True) for s in SIMT_SHAPES] +
                         [(False, s) for s in SIMT_DIAG_ONLY],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else ("full" if v else "diag"))
def test_simt_kernels_match_reference(full, dtype, shape):
    _simt()
    B, N, K, D = shape
    args = _kernel_inputs(B, N, K, D, full, shared_x=(B > 1 and N % 2 == 1))
    want = ref.mixture_em_stats_kernel_ref(*args, full)
    got = torch.ops.gmmkernels._simt_mixture_em_stats(*(t.to(dtype) for t in args), full, True)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want]
    _check(got, want, dtype, N, D=D)
    got2 = torch.ops.gmmkernels._simt_mixture_em_stats(*(t.to(dtype) for t in args), full, False)
    assert got2[5].shape == (0,)
    for a, b in zip(got[:5], got2[:5]):  # the statistics do not depend on whether resp is written
        assert torch.equal(a, b)


@pytest.mark.parametrize("K", [20, 40], ids=["one-pass", "two-pass"])
@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
def test_simt_kernels_zero_weights_and_nan(K, full):
    """A component of weight 0 (logc = -inf) gets r = 0 and zero statistics; a NaN in one row makes that row's log p
    NaN and leaves the other rows' responsibilities as they are (as in the reference); a mixture whose weights are
    all 0 gives log p = -inf."""
    _simt()
    x, means, prec, logc = _kernel_inputs(3, 150, K, 5, full, seed=3)
    logc[:, 3] = -math.inf
    logc[2] = -math.inf
    x[1, 7, 2] = math.nan
    want = ref.mixture_em_stats_kernel_ref(x, means, prec, logc, full)
    got = torch.ops.gmmkernels._simt_mixture_em_stats(x, means, prec, logc, full, True)
    others = torch.arange(150) != 7
    assert float(got[2][0, 3]) == 0 and float(got[5][0, :, 3].abs().max()) == 0
    assert float(got[5][1, others, 3].abs().max()) == 0
    assert got[0][1].isnan() and bool(got[5][1, 7].isnan().all())
    assert got[0][2] == -math.inf and want[0][2] == -math.inf and want[0][1].isnan()
    torch.testing.assert_close(got[5][1, others], want[5][1, others], rtol=1e-10, atol=1e-12)
    _check([got[i][0] for i in range(6)], [want[i][0] for i in range(6)], torch.float64, 150)


@pytest.mark.parametrize("K", [20, 40], ids=["one-pass", "two-pass"])
@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
def test_simt_kernels_logits_far_apart_float32(K, full):
    """float32 with the first four components' logits 150 below the rest: exp(150) overflows float32, so the log-sum-
    exp must shift by the row's largest logit (in the one-pass program: across all groups of components, not the
    thread's own), and those components get r = 0 (or a subnormal)."""
    _simt()
    x, means, prec, logc = _kernel_inputs(2, 200, K, 4, full, seed=6)
    logc[:, :4] -= 150.0
    want = ref.mixture_em_stats_kernel_ref(x, means, prec, logc, full)
    got = torch.ops.gmmkernels._simt_mixture_em_stats(x.float(), means.float(), prec.float(), logc.float(), full, True)
    assert all(bool(t.isfinite().all()) for t in got)
    _check(got, want, torch.float32, 200)


def test_simt_kernel_limits():
    """The CPU run checks what the CUDA host code checks (D limits of the fused kernel, devices, shapes)."""
    _simt()
    x, means, prec, logc = _kernel_inputs(1, 10, 3, 17, True)
    with pytest.raises(RuntimeError, match="D=17 exceeds the 16 dimensions"):
        torch.ops.gmmkernels._simt_mixture_em_stats(x, means, prec, logc, True, False)
    x, means, prec, logc = _kernel_inputs(1, 10, 3, 257, False)
    with pytest.raises(RuntimeError, match="D=257 exceeds the 256 dimensions"):
        torch.ops.gmmkernels._simt_mixture_em_stats(x, means, prec, logc, False, False)
    with pytest.raises(RuntimeError, match="argument 'logc' must have shape"):
        torch.ops.gmmkernels._simt_mixture_em_stats(x, means, prec, logc[:, :2], False, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("user_ftz", [False, True], ids=["user-keeps-subnormals", "user-flushes"])
def test_cpu_kernel_flushes_subnormals_and_restores_the_thread(dtype, user_ftz):
    """On x86 the CPU pass runs with flush-to-zero / denormals-are-zero (docs/kernels.md): a responsibility below the
    smallest normal number comes out 0 (16 equal components and a 17th whose logit is 86.9 (float32) / 708 (float64)
    lower: r = e^-gap / 16 is subnormal); elsewhere it is kept. Everywhere the rest matches the reference and the
    calling thread's own setting is back afterwards. K = 17 takes the rows-in-lanes path in float32 and the
    component-lanes path in float64."""
    _native("cpu")
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    N, K, gap = 300, 17, (86.9 if dtype == torch.float32 else 708.0)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, N, 2, dtype=torch.float64, generator=g)
    means, prec = torch.zeros(1, K, 2, dtype=torch.float64), torch.ones(1, K, 2, dtype=torch.float64)
    logc = torch.zeros(1, K, dtype=torch.float64)
    logc[0, 16] = -gap
    want = ref.mixture_em_stats_kernel_ref(x, means, prec, logc, False)
    tiny = torch.finfo(dtype).tiny
    assert 0 < float(want[5][..., 16].max()) < tiny  # the reference's r of the 17th component: subnormal in dtype
    subnormal = torch.tensor([tiny / 4], dtype=dtype)
    if not torch.set_flush_denormal(user_ftz) and user_ftz:
        pytest.skip("torch cannot set a flush-to-zero mode on this CPU")
    try:
        got = torch.ops.gmmkernels.mixture_em_stats(*(t.to(dtype) for t in (x, means, prec, logc)), False, True)
        kept = float((subnormal * torch.ones(1, dtype=dtype))[0])  # a torch op on this thread after the pass
    finally:
        torch.set_flush_denormal(False)
    assert kept == (0.0 if user_ftz else tiny / 4)
    if x86:
        assert float(got[5][..., 16].abs().max()) == 0 and float(got[2][0, 16]) == 0
    _check(got, want, dtype, N)


@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
def test_kernel_deterministic_across_threads(full):
    _native("cpu")
    args = [t.float() for t in _kernel_inputs(2, 9000, 19, 6, full, seed=5)]
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = torch.ops.gmmkernels.mixture_em_stats(*args, full, False)
        torch.set_num_threads(max(2, n))
        b = torch.ops.gmmkernels.mixture_em_stats(*args, full, False)
    finally:
        torch.set_num_threads(n)
    for u, v in zip(a[:5], b[:5]):
        assert torch.equal(u, v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["f32", "f64", "bf16"])
def test_public_op_matches_reference(device, cov, backend, dtype):
    if backend == "auto":
        _native(device)
    x, logits, means, scale = make_mixture(cov, (2,), N=50, K=6, D=3, seed=1, device=device)
    want = ref.mixture_em_stats_ref(*(t.cpu() for t in (x, logits, means, scale)), cov)
    # the responsibilities and log p agree with mixture_stats' reference
    ms = mixture_stats_ref(x.cpu(), logits.cpu(), means.cpu(), scale.cpu(), cov)
    torch.testing.assert_close(want.sum_log_prob, ms.log_prob.sum(-1))
    torch.testing.assert_close(want.responsibilities, ms.responsibilities)
    got = mixture_em_stats(*(t.to(dtype) for t in (x, logits, means, scale)), cov, with_resp=True, backend=backend)
    assert got.nk.shape == (2, 6) and got.sxx.shape == ((2, 6, 3, 3) if cov == "full" else (2, 6, 3))
    assert all(t.dtype == dtype for t in got)
    tol = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 0.1}[dtype]
    for name, a, b in zip(got._fields, got, want):
        torch.testing.assert_close(a.double().cpu(), b, rtol=tol, atol=tol * max(1.0, float(b.abs().max())),
                                   msg=lambda m: f"{name}: {m}")
    assert mixture_em_stats(x, logits, means, scale, cov, backend=backend).responsibilities is None


@pytest.mark.parametrize("device", DEVICES)
def test_public_op_broadcasts_and_shares_data(device):
    _native(device)
    x, logits, means, scale = make_mixture("diag", (), N=40, K=4, D=2, seed=2, device=device)
    means3 = torch.stack([means, means + 1, means - 1])  # three mixtures, one data set
    got = mixture_em_stats(x, logits, means3, scale, "diag")
    for i in range(3):
        one = mixture_em_stats(x, logits, means3[i], scale, "diag")
        for a, b in zip(got[:5], one[:5]):
            torch.testing.assert_close(a[i], b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov", COVS)
def test_sum_log_prob_gradient_of_the_reference_backend(device, cov):
    """The reference backend is differentiable: its gradient of sum log p equals the fused mixture_stats VJP."""
    x, logits, means, scale = make_mixture(cov, (), N=30, K=3, D=2, seed=4, device=device)
    a = [t.clone().requires_grad_() for t in (logits, means, scale)]
    b = [t.clone().requires_grad_() for t in (logits, means, scale)]
    g1 = torch.autograd.grad(mixture_em_stats(x, *a, cov, backend="reference").sum_log_prob, a)
    g2 = torch.autograd.grad(gmmkernels.mixture_log_prob(x, *b, cov).sum(), b)
    for u, v in zip(g1, g2):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("device", DEVICES)
def test_native_op_refuses_gradients(device):
    _native(device)
    x, logits, means, scale = make_mixture("diag", (), N=10, K=3, D=2, seed=0, device=device)
    means.requires_grad_()
    out = mixture_em_stats(x, logits, means, scale, "diag")
    with pytest.raises(RuntimeError, match="mixture_em_stats has no derivative"):
        out.sum_log_prob.backward()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("full", [False, True], ids=["diag", "full"])
@pytest.mark.parametrize("with_resp", [False, True])
def test_opcheck(device, full, with_resp):
    _native(device)
    args = [t.to(device) for t in _kernel_inputs(2, 9, 4, 3, full)]
    torch.library.opcheck(torch.ops.gmmkernels.mixture_em_stats.default, (*args, full, with_resp))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    _native(device)
    x, logits, means, scale = make_mixture("full", (), N=20, K=3, D=2, seed=6, device=device)

    def f(x, logits, means, scale):
        st = mixture_em_stats(x, logits, means, scale, "full")
        return st.sum_log_prob, st.nk, st.sxx

    eager = f(x, logits, means, scale)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(x, logits, means, scale)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)


def test_bad_inputs():
    x, logits, means, scale = make_mixture("diag", (), N=10, K=3, D=2, seed=0)
    with pytest.raises(ValueError, match="mixture_em_stats: argument 'cov_type'"):
        mixture_em_stats(x, logits, means, scale, "tied")
    with pytest.raises(ValueError, match="mixture_em_stats: argument 'means' has D=2 but 'x' has D=3"):
        mixture_em_stats(torch.randn(10, 3, dtype=torch.float64), logits, means, scale)
    with pytest.raises(TypeError, match="mixture_em_stats: argument 'with_resp' must be a bool"):
        mixture_em_stats(x, logits, means, scale, with_resp="yes")
    with pytest.raises(ValueError, match="mixture_em_stats: argument 'scale' must be positive"):
        mixture_em_stats(x, logits, means, -scale)
    with pytest.raises(ValueError, match="mixture_em_stats: argument 'backend'"):
        mixture_em_stats(x, logits, means, scale, backend="tritn")
    with pytest.raises(TypeError, match="mixture_em_stats: backend='triton' computes in float32"):
        mixture_em_stats(x, logits, means, scale, backend="triton")
    if _backend.has_kernel("mixture_em_stats", "CPU"):
        op = torch.ops.gmmkernels.mixture_em_stats
        x3, m3, p3, c2 = _kernel_inputs(2, 5, 3, 2, False)
        with pytest.raises(RuntimeError, match="mixture_em_stats: argument 'x' must have shape"):
            op(x3[0], m3, p3, c2, False, False)
        with pytest.raises(RuntimeError, match="mixture_em_stats: argument 'prec' has dtype"):
            op(x3, m3, p3.float(), c2, False, False)
        with pytest.raises(RuntimeError, match=r"mixture_em_stats: argument 'prec' \(full=true\)"):
            op(x3, m3, p3, c2, True, False)
        with pytest.raises(RuntimeError, match="mixture_em_stats: argument 'logc' must have shape"):
            op(x3, m3, p3, c2[:, :2], False, False)


# ----------------------------------------------------------------------------------------------------------
# mixture_em_mstep: EM's M-step and the next pass's kernel parameters

MSTEP_FIELDS = ("logits", "means", "scale", "prec", "logc")


def _mstep_native(device):
    if not _backend.has_kernel("mixture_em_mstep", "CUDA" if device == "cuda" else "CPU"):
        pytest.skip("no native mixture_em_mstep kernel")


def _stats(B, N, K, D, full, dtype, seed=0, batch=None):
    """The statistics of random data under random responsibilities (a component may get almost no weight)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, dtype=torch.float64, generator=g) * 2 + 0.5
    r = torch.rand(B, N, K, dtype=torch.float64, generator=g) ** 3
    r = r / r.sum(-1, keepdim=True)
    nk, sx, sxx = ref.mixture_suffstats_ref(x, r, full)
    out = [t.to(dtype) for t in (nk, sx, sxx)]
    return [t.reshape(*batch, *t.shape[1:]) for t in out] if batch else out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 50, 1, 1), (2, 300, 5, 3), (3, 400, 17, 8), (1, 2000, 40, 16)],
                         ids=lambda s: "x".join(map(str, s)))
def test_mstep_matches_reference(device, cov, dtype, shape):
    """The native M-step equals the float64 reference computed from the same (rounded) statistics."""
    _mstep_native(device)
    B, N, K, D = shape
    full = cov == "full"
    stats = _stats(B, N, K, D, full, dtype, seed=K)
    got = gmmkernels.mixture_em_mstep(*(t.to(device) for t in stats), cov, reg_covar=1e-6, backend=device)
    want = ref.mixture_em_mstep_ref(*(t.double() for t in stats), cov, 1e-6)
    assert got.ok.dtype == torch.bool and got.ok.shape == (B, K)
    assert bool(got.ok.all()) and bool(want.ok.all())
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
    for name in MSTEP_FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == dtype and a.shape == b.shape, name
        torch.testing.assert_close(a.double().cpu(), b, **tol, msg=lambda m: f"{name}: {m}")
    if full:  # exact zeros above the diagonal of the factor and of its inverse
        assert bool((got.scale.triu(1) == 0).all()) and bool((got.prec.triu(1) == 0).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov", COVS)
def test_mstep_public_op_batch_and_half(device, cov):
    """Leading dimensions of any rank, and float16 computed in float32 and cast back."""
    _mstep_native(device)
    full = cov == "full"
    stats = _stats(6, 80, 4, 3, full, torch.float32, seed=3, batch=(2, 3))
    want = gmmkernels.mixture_em_mstep(*stats, cov, backend="reference")
    got = gmmkernels.mixture_em_mstep(*(t.to(device) for t in stats), cov)
    assert got.logits.shape == (2, 3, 4) and got.means.shape == (2, 3, 4, 3)
    for name in MSTEP_FIELDS:
        torch.testing.assert_close(getattr(got, name).cpu(), getattr(want, name), rtol=2e-4, atol=2e-5)
    half = gmmkernels.mixture_em_mstep(*(t.to(device).half() for t in stats), cov)
    assert half.logc.dtype == torch.float16 and half.ok.dtype == torch.bool


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_mstep_flags_degenerate_components(device, backend):
    """ok is False exactly where the covariance is not positive (definite): a component without points when
    reg_covar = 0, and, in float32 with full covariances, one that is singular before the regularisation."""
    if backend == "native":
        _mstep_native(device)
    b = device if backend == "native" else "reference"
    for cov in COVS:
        full = cov == "full"
        for dtype in (torch.float32, torch.float64):
            nk, sx, sxx = (t.to(device) for t in _stats(1, 200, 3, 2, full, dtype, seed=1))
            # component 1 has lost its points: covariance exactly 0 before the regularisation
            nk[0, 1], sx[0, 1], sxx[0, 1] = 0.0, 0.0, 0.0
            out = gmmkernels.mixture_em_mstep(nk, sx, sxx, cov, reg_covar=0.0, backend=b)
            assert out.ok.tolist() == [[True, False, True]], (cov, dtype)
            out = gmmkernels.mixture_em_mstep(nk, sx, sxx, cov, reg_covar=1e-3, backend=b)
            # float32 full: singular before the regularisation -> the fitting loop's host path projects it
            assert out.ok.tolist() == [[True, not (full and dtype == torch.float32), True]], (cov, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_fit_em_native_mstep_equals_host_mstep(device, cov, dtype, monkeypatch):
    """fit_em with the native M-step ends where the host path of torch ops ends (rounding apart)."""
    _mstep_native(device)
    import gmmkernels.fit.em as em

    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(300, 3, generator=g) + 4 * torch.randn(3, generator=g) for _ in range(4)])
    x = x.to(device=device, dtype=dtype).expand(2, -1, -1).contiguous()
    kw = dict(max_iter=15, tol=0.0, init="random", generator=torch.Generator().manual_seed(1))
    assert em.mstep_backend("auto", x.device, dtype, cov, 3) == device
    native = gmmkernels.fit_em(x, 4, cov, **kw)
    monkeypatch.setattr(em, "mstep_backend", lambda *a: None)
    kw["generator"] = torch.Generator().manual_seed(1)
    host = gmmkernels.fit_em(x, 4, cov, **kw)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-4)
    torch.testing.assert_close(native.lower_bound, host.lower_bound, **tol)
    for a, b in zip((native.mixture.logits, native.mixture.means, native.mixture.scale),
                    (host.mixture.logits, host.mixture.means, host.mixture.scale)):
        torch.testing.assert_close(a, b, **tol)


def test_fit_em_m_step_falls_back_to_host_path():
    """fit_em's M-step takes the native op's results where every component is ok, and the host path (projection
    onto the PSD cone in float32, or the error naming the fix) where one is flagged."""
    _mstep_native("cpu")
    from gmmkernels.fit import em
    from gmmkernels.fit._common import covariances
    from gmmkernels.fit._data import Stats

    nk, sx, sxx = _stats(1, 200, 3, 2, True, torch.float32, seed=1)
    lg, mu, sc, kp = em.m_step("fit_em", Stats(None, None, nk, sx, sxx), "full", 1e-3, "cpu")
    assert kp is not None  # native: the next pass's kernel parameters come with it
    nk[0, 1], sx[0, 1], sxx[0, 1] = 0.0, 0.0, 0.0  # a component without points: singular before reg_covar
    lg, mu, sc, kp = em.m_step("fit_em", Stats(None, None, nk, sx, sxx), "full", 1e-3, "cpu")
    assert kp is None  # the host path
    n, m, c = covariances(nk, sx, sxx, "full", 1e-3)
    torch.testing.assert_close(sc, torch.linalg.cholesky(c))
    torch.testing.assert_close(mu, m)
    with pytest.raises(ValueError, match="fit_em: fitting failed because some components have ill-defined"):
        em.m_step("fit_em", Stats(None, None, nk.double(), sx.double(), sxx.double()), "full", 0.0, "cpu")
    with pytest.raises(ValueError, match="fit_em: fitting failed because some components have non-positive"):
        em.m_step("fit_em", Stats(None, None, nk.double(), sx.double(), sxx.double().diagonal(0, -2, -1)), "diag",
                  0.0, "cpu")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov_kind", [0, 1, 2], ids=COVS)
def test_mstep_opcheck(device, cov_kind):
    _mstep_native(device)
    stats = [t.to(device) for t in _stats(2, 60, 3, 2, cov_kind == 2, torch.float64, seed=4)]
    torch.library.opcheck(torch.ops.gmmkernels.mixture_em_mstep.default, (*stats, cov_kind, 1e-6))


@pytest.mark.parametrize("device", DEVICES)
def test_mstep_torch_compile_fullgraph(device):
    _mstep_native(device)
    stats = [t.to(device) for t in _stats(2, 60, 3, 2, True, torch.float64, seed=4)]

    def f(nk, sx, sxx):
        p = gmmkernels.mixture_em_mstep(nk, sx, sxx, "full")
        return p.logc, p.prec

    eager = f(*stats)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(*stats)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)


def test_mstep_native_op_refuses_gradients():
    _mstep_native("cpu")
    nk, sx, sxx = _stats(1, 40, 2, 2, False, torch.float64)
    sx.requires_grad_()
    out = gmmkernels.mixture_em_mstep(nk, sx, sxx, "diag", backend="cpu")
    with pytest.raises(RuntimeError, match="mixture_em_mstep has no derivative"):
        out.logc.sum().backward()


def test_mstep_bad_inputs():
    nk, sx, sxx = _stats(2, 40, 3, 2, False, torch.float64)
    f = gmmkernels.mixture_em_mstep
    with pytest.raises(ValueError, match="mixture_em_mstep: argument 'cov_type'"):
        f(nk, sx, sxx, "tied")
    with pytest.raises(ValueError, match=r"mixture_em_mstep: argument 'sxx' must have shape \[\.\.\., K, D, D\]"):
        f(nk, sx, sxx, "full")
    with pytest.raises(ValueError, match="mixture_em_mstep: argument 'sx' must have shape"):
        f(nk, sx[:, :2], sxx)
    with pytest.raises(TypeError, match="mixture_em_mstep: argument 'sx' has dtype"):
        f(nk, sx.float(), sxx)
    with pytest.raises(ValueError, match="mixture_em_mstep: argument 'reg_covar' must be a finite number >= 0"):
        f(nk, sx, sxx, reg_covar=-1.0)
    with pytest.raises(ValueError, match="mixture_em_mstep: argument 'nk' contains NaN"):
        f(nk * float("nan"), sx, sxx)
    with pytest.raises(ValueError, match="mixture_em_mstep: argument 'backend'"):
        f(nk, sx, sxx, backend="tritn")
    with pytest.raises(ValueError, match="mixture_em_mstep: backend='triton' is not available for mixture_em_mstep"):
        f(nk, sx, sxx, backend="triton")
    if _backend.has_kernel("mixture_em_mstep", "CPU"):
        op = torch.ops.gmmkernels.mixture_em_mstep
        with pytest.raises(RuntimeError, match="mixture_em_mstep: argument 'cov_kind' must be 0"):
            op(nk, sx, sxx, 3, 1e-6)
        with pytest.raises(RuntimeError, match="mixture_em_mstep: argument 'reg_covar' must be a finite"):
            op(nk, sx, sxx, 0, float("inf"))
        with pytest.raises(RuntimeError, match=r"mixture_em_mstep: argument 'sxx' \(full\) must have shape"):
            op(nk, sx, sxx, 2, 1e-6)
        with pytest.raises(RuntimeError, match="mixture_em_mstep: argument 'sx' has dtype"):
            op(nk, sx.float(), sxx, 0, 1e-6)
        with pytest.raises(RuntimeError, match=r"mixture_em_mstep: argument 'nk' must have shape \[B, K\]"):
            op(nk[0], sx, sxx, 0, 1e-6)


# ----------------------------------------------------------------------------------------------------------
# mixture_em_iterate: fit_em's iterations in one native call


def _iterate_native(device):
    if not _backend.has_kernel("mixture_em_iterate", "CUDA" if device == "cuda" else "CPU"):
        pytest.skip("no native mixture_em_iterate kernel")


def _python_loop(monkeypatch):
    """fit_em without the native loop: the same native pass and M-step, called from Python once per iteration."""
    from gmmkernels.fit import em

    monkeypatch.setattr(em, "em_iterate_kernel", lambda *a: (None,) * 6 + (0, 0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_iterate_equals_python_loop_bitwise(device, cov, dtype, monkeypatch):
    """The native loop runs the operations of fit_em's Python loop in the same order: the fits agree bit for bit,
    including three mixtures of one batch that converge at different iterations (the loop stops at the first, the
    Python loop goes on with it kept)."""
    _iterate_native(device)
    g = torch.Generator().manual_seed(7)
    x = torch.cat([torch.randn(250, 3, generator=g) + 3 * torch.randn(3, generator=g) for _ in range(4)])
    x = torch.stack([x, 1.5 * x.flip(0), x + 0.1 * torch.randn(x.shape, generator=g)]).to(device=device, dtype=dtype)
    kw = dict(max_iter=60, tol=1e-4, init="random")
    native = gmmkernels.fit_em(x, 4, cov, generator=torch.Generator().manual_seed(1), **kw)
    _python_loop(monkeypatch)
    python = gmmkernels.fit_em(x, 4, cov, generator=torch.Generator().manual_seed(1), **kw)
    assert len(set(native.n_iter.tolist())) > 1  # the mixtures stop at different iterations
    for a, b in zip((native.lower_bound, native.n_iter, native.converged, native.mixture.logits,
                     native.mixture.means, native.mixture.scale),
                    (python.lower_bound, python.n_iter, python.converged, python.mixture.logits,
                     python.mixture.means, python.mixture.scale)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_iterate_stops_where_python_must_take_over(device):
    """counts = (iterations kept, why): max_iter reached (0), a mixture converged (1, that iteration kept), the M-step
    flagged a component (2, that iteration not kept: the state comes back unchanged)."""
    _iterate_native(device)
    from gmmkernels.fit._data import kernel_params
    from gmmkernels.ops.mixture_em_stats import em_iterate_kernel

    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 400, 2, generator=g).to(device)
    logits = torch.log(torch.tensor([[0.5, 0.5]], device=device))
    means = torch.tensor([[[-1.0, 0.0], [1.0, 0.0]]], device=device)
    scale = torch.eye(2, device=device).expand(1, 2, 2, 2).contiguous()
    lower = torch.full((1,), float("-inf"), device=device)
    kp = kernel_params(logits, means, scale, "full")
    out = em_iterate_kernel(x, logits, means, scale, kp, lower, "full", 1e-6, 0.0, 5, 400)
    assert out[-2:] == (5, 0) and not bool(out[5].any())
    out = em_iterate_kernel(x, logits, means, scale, kp, lower, "full", 1e-6, 1e9, 5, 400)
    assert out[-2:] == (2, 1) and bool(out[5].all())  # iteration 1 changes the bound from -inf, iteration 2 < 1e9
    # component 1 gets weight 0 (logit -inf): no points, a zero covariance, flagged in float32
    logits0 = torch.tensor([[0.0, float("-inf")]], device=device)
    out = em_iterate_kernel(x, logits0, means, scale, kernel_params(logits0, means, scale, "full"), lower, "full",
                            1e-6, 0.0, 5, 400)
    assert out[-2:] == (0, 2)
    for a, b in zip(out[:3], (logits0, means, scale)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cov_kind", [0, 1, 2], ids=COVS)
def test_iterate_opcheck(device, cov_kind):
    _iterate_native(device)
    from gmmkernels.fit._data import kernel_params

    cov = COVS[cov_kind]
    x, logits, means, scale = make_mixture(cov, (2,), N=30, K=3, D=2, seed=1, device=device)
    x = x.expand(2, 30, 2).contiguous()
    prec, logc = kernel_params(logits, means, scale, cov)
    lower = torch.full((2,), float("-inf"), dtype=x.dtype, device=device)
    torch.library.opcheck(torch.ops.gmmkernels.mixture_em_iterate.default,
                          (x, logits, means, scale, prec, logc, lower, cov_kind, 1e-6, 0.0, 3, 30.0))


def test_iterate_bad_inputs():
    _iterate_native("cpu")
    from gmmkernels.fit._data import kernel_params

    x, logits, means, scale = make_mixture("diag", (1,), N=10, K=3, D=2, seed=0)
    prec, logc = kernel_params(logits, means, scale, "diag")
    lower = torch.zeros(1, dtype=x.dtype)
    op = torch.ops.gmmkernels.mixture_em_iterate
    args = [x, logits, means, scale, prec, logc, lower, 0, 1e-6, 0.0, 3, 10.0]

    def call(**kw):
        names = ["x", "logits", "means", "scale", "prec", "logc", "lower", "cov_kind", "reg_covar", "tol", "max_iter",
                 "n"]
        a = list(args)
        for k, v in kw.items():
            a[names.index(k)] = v
        return op(*a)

    with pytest.raises(RuntimeError, match="mixture_em_iterate: argument 'max_iter' must be >= 0"):
        call(max_iter=-1)
    with pytest.raises(RuntimeError, match="mixture_em_iterate: 'tol' must be >= 0 and 'n' > 0"):
        call(n=0.0)
    for bad in (-1e-6, float("nan"), float("inf")):  # checked before the first iteration, even with max_iter = 0
        with pytest.raises(RuntimeError, match="mixture_em_iterate: argument 'reg_covar' must be a finite number"):
            call(reg_covar=bad, max_iter=0)
    with pytest.raises(RuntimeError, match="mixture_em_iterate: argument 'lower' must be"):
        call(lower=torch.zeros(2, dtype=x.dtype))
    with pytest.raises(RuntimeError, match="mixture_em_iterate: argument 'scale' must be"):
        call(scale=scale[..., :1])
    with pytest.raises(RuntimeError, match="mixture_em_iterate: argument 'cov_kind'"):
        call(cov_kind=5)
    with pytest.raises(RuntimeError, match="mixture_em_stats: argument 'prec' has dtype"):
        call(prec=prec.float())
