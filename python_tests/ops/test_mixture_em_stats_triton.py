"""Triton backend of mixture_em_stats (gmmkernels.triton.mixture_em_stats): the one-pass E-step + statistics.

On CPU-only machines the kernel runs through the Triton interpreter (TRITON_INTERPRET=1, small shapes); on a GPU the
same tests run the compiled kernel, and the CUDA class adds realistic shapes, opcheck and torch.compile. Every output
is compared with the float64 reference ``mixture_em_stats_kernel_ref``.
"""
import json
import math
import os
import subprocess
import sys

from _triton_env import IDEV, INTERPRET, needs_kernels  # first: sets TRITON_INTERPRET before triton is imported

import pytest
import torch

pytest.importorskip("triton")

import gmmkernels  # noqa: E402
from gmmkernels import _dispatch  # noqa: E402
from gmmkernels.reference import mixture_em_stats as ref  # noqa: E402
from gmmkernels.triton import mixture_em_stats as tem  # noqa: E402

pytestmark = pytest.mark.triton
NAMES = ("sum_log_prob", "sum_r_log_r", "nk", "sx", "sxx", "resp")

# (B, N, K, D, shared x): one point; odd sizes; shared data; several splits; K = 64 (one full tile) and K = 16; D
# above the interpreter's BLOCK_D of 16 (the multi-chunk path); no rows; K above the tile of 64 (the K-tiles kernels:
# two tiles, the second partial; with shared data and several chunks; no rows)
CASES = [(1, 1, 1, 1, False), (2, 37, 5, 3, True), (1, 70, 17, 4, False), (3, 130, 33, 9, False),
         (1, 90, 64, 5, False), (2, 150, 7, 16, False), (1, 60, 16, 40, True), (2, 0, 3, 2, False),
         (1, 90, 100, 5, False), (2, 40, 70, 20, True), (2, 0, 70, 2, False)]
# the K-tiles kernels at small K: tiles of 16 components
KTILES16 = dict(BLOCK_N=16, BLOCK_K_MAX=16, SPLITS=2)


def _inputs(B, N, K, D, shared=False, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    x = torch.randn(1 if shared else B, N, D, **kw) * 1.5
    means = torch.randn(B, K, D, **kw)
    logc = torch.randn(B, K, **kw)
    prec = 0.5 + torch.rand(B, K, D, **kw)
    return [t.to(device) for t in (x, means, prec, logc)]


def _assert_close(got, want, N):
    """float32 sums of N terms against float64: relative to the size of each output."""
    for name, a, b in zip(NAMES, got, want):
        assert a.shape == b.shape, name
        if b.numel() == 0:
            continue
        scale = max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a.double().cpu(), b.cpu(), rtol=2e-5, atol=2e-6 * scale * math.sqrt(max(N, 1)),
                                   msg=lambda m: f"{name}: {m}")


@needs_kernels
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:4])) + ("-shared" if c[4] else ""))
@pytest.mark.parametrize("with_resp", [True, False])
def test_kernel_matches_reference(case, with_resp):
    B, N, K, D, shared = case
    args = _inputs(B, N, K, D, shared, device=IDEV)
    want = ref.mixture_em_stats_kernel_ref(*args, False)
    got = tem.mixture_em_stats_triton(*(t.float() for t in args), with_resp)
    assert all(t.dtype == torch.float32 for t in got)
    if with_resp:
        _assert_close(got, want, N)
    else:
        assert got[5].shape == (0,)
        _assert_close(got[:5], want[:5], N)


@needs_kernels
@pytest.mark.parametrize("config", [dict(BLOCK_N=16, BLOCK_D_MAX=16, SPLITS=1), dict(BLOCK_N=32, BLOCK_D_MAX=64,
                                                                                       SPLITS=3),
                                    dict(KTILES16, BLOCK_D_MAX=64), dict(KTILES16, BLOCK_D_MAX=16, SPLITS=1)],
                         ids=["one-split-multichunk", "three-splits-one-chunk", "ktiles-one-chunk",
                              "ktiles-one-split-multichunk"])
def test_kernel_block_configurations(config):
    """Other block sizes and split counts (one program per mixture; D in one chunk; K in three tiles of 16, the last
    partial) give the same sums."""
    B, N, K, D = 2, 101, 37, 20
    args = _inputs(B, N, K, D, seed=4, device=IDEV)
    want = ref.mixture_em_stats_kernel_ref(*args, False)
    _assert_close(tem._mixture_em_stats_fwd(*(t.float() for t in args), True, config=config), want, N)


# seeded random draws of (shape, block configuration, weight-0 component, responsibilities asked): the
# combinations that the fixed cases above do not cross (odd sizes around the tile and block edges x every kind of
# configuration x -inf weights)
RANDOM_SIZES = dict(B=[1, 2, 3], N=[0, 1, 15, 16, 17, 33, 63, 65, 129], K=[1, 2, 15, 16, 17, 31, 33, 63, 64, 65, 97],
                    D=[1, 2, 7, 16, 17, 33, 40])
RANDOM_CONFIGS = [None, KTILES16, dict(BLOCK_N=16, BLOCK_D_MAX=16, SPLITS=1), dict(BLOCK_N=32, BLOCK_D_MAX=64, SPLITS=3),
                  dict(KTILES16, BLOCK_D_MAX=16, SPLITS=3)]


@needs_kernels
@pytest.mark.parametrize("seed", list(range(20)) + [33, 34])  # 33, 34: K > 64 in the default tiles of 32
def test_kernel_random_shapes_and_configs(seed):
    import random

    rng = random.Random(seed)
    B, N, K, D = (rng.choice(RANDOM_SIZES[k]) for k in "BNKD")
    shared, config, with_resp = rng.random() < 0.3, rng.choice(RANDOM_CONFIGS), rng.random() < 0.5
    x, means, prec, logc = _inputs(B, N, K, D, shared, seed=100 + seed)
    if K > 1 and rng.random() < 0.3:
        logc[:, rng.randrange(K)] = -math.inf
    want = ref.mixture_em_stats_kernel_ref(x, means, prec, logc, False)
    got = tem._mixture_em_stats_fwd(*(t.float().to(IDEV) for t in (x, means, prec, logc)), with_resp, config=config)
    _assert_close(got if with_resp else got[:5], want if with_resp else want[:5], N)
    assert not any(bool(torch.isnan(t).any()) for t in got)


@needs_kernels
@pytest.mark.parametrize("K, config, shared", [(5, None, False), (40, KTILES16, True)], ids=["one-tile", "ktiles"])
def test_batches_past_the_grid_limit_launch_in_ranges(K, config, shared, monkeypatch):
    """More mixtures than CUDA allows in a grid's second / third dimension (65535; here lowered to 2) are launched in
    ranges of mixtures, each with its own slice of every input and output."""
    from gmmkernels.triton import _utils

    monkeypatch.setattr(_utils, "GRID_YZ_MAX", 2)
    B, N, D = 5, 30, 3
    args = _inputs(B, N, K, D, shared, seed=9, device=IDEV)
    want = ref.mixture_em_stats_kernel_ref(*args, False)
    _assert_close(tem._mixture_em_stats_fwd(*(t.float() for t in args), True, config=config), want, N)


@needs_kernels
@pytest.mark.parametrize("K, config", [(12, None), (40, KTILES16)], ids=["one-tile", "ktiles"])
def test_kernel_is_deterministic(K, config):
    """No atomics: two runs give the same bits."""
    args = [t.float() for t in _inputs(2, 200, K, 6, seed=2, device=IDEV)]
    a = tem._mixture_em_stats_fwd(*args, True, config=config)
    b = tem._mixture_em_stats_fwd(*args, True, config=config)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@needs_kernels
@pytest.mark.parametrize("K, zero, config", [(4, [1], None), (40, list(range(16)) + [35], KTILES16)],
                         ids=["one-tile", "ktiles-first-tile"])
def test_minus_inf_weight_and_far_points(K, zero, config):
    """Components of weight 0 (logc = -inf; in the K-tiles kernels the whole first tile, so that the running maximum
    starts at -inf after it) get r = 0 and no NaN; points far from every component keep finite responsibilities (the
    softmax is shifted by the row maximum, in the log p kernel found over the tiles)."""
    B, N, D = 1, 40, 3
    x, means, prec, logc = _inputs(B, N, K, D, seed=6)
    logc[0, zero] = float("-inf")
    x[0, :5] += 300.0
    args = [t.to(IDEV) for t in (x, means, prec, logc)]
    got = tem._mixture_em_stats_fwd(*(t.float() for t in args), True, config=config)
    want = ref.mixture_em_stats_kernel_ref(*args, False)
    assert all(bool(torch.isfinite(t).all()) for t in got)
    assert float(got[5][0, :, zero].abs().max()) == 0.0 and float(got[2][0, zero].abs().max()) == 0.0
    _assert_close(got, want, N)


@needs_kernels
@pytest.mark.parametrize("cov", ["diag", "spherical"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("K", [6, 70])
def test_public_op_backend_triton(cov, dtype, K):
    """gmmkernels.mixture_em_stats(..., backend="triton") against the reference backend, batch dimensions kept; K = 70
    takes the K-tiles kernels."""
    B, N, D = 2, 50, 4
    g = torch.Generator().manual_seed(7)
    x = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    logits = torch.randn(B, K, generator=g, dtype=torch.float64)
    means = torch.randn(B, K, D, generator=g, dtype=torch.float64)
    scale = (0.5 + torch.rand(B, K, D, generator=g, dtype=torch.float64)) if cov == "diag" else \
        (0.5 + torch.rand(B, K, generator=g, dtype=torch.float64))
    want = gmmkernels.mixture_em_stats(x, logits, means, scale, cov, with_resp=True, backend="reference")
    got = gmmkernels.mixture_em_stats(*(t.to(IDEV, dtype) for t in (x, logits, means, scale)), cov, with_resp=True,
                                      backend="triton")
    assert all(a.dtype == dtype and a.shape == b.shape for a, b in zip(got, want))
    if dtype == torch.float32:
        _assert_close(got, want, N)
    else:  # the inputs themselves were rounded to bfloat16: compare with the reference of the rounded inputs
        want = gmmkernels.mixture_em_stats(*(t.to(dtype).double() for t in (x, logits, means, scale)), cov,
                                           with_resp=True, backend="reference")
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double().cpu(), b, rtol=2e-2, atol=2e-2 * max(1.0, float(b.abs().max())))


@needs_kernels
@pytest.mark.parametrize("cov", ["diag", "spherical"])
@pytest.mark.parametrize("fit", ["fit_em", "fit_vb"])
def test_fits_with_backend_triton_run_the_triton_pass(fit, cov, monkeypatch):
    """fit_em / fit_vb(backend="triton") run every iteration's pass on the Triton kernel and end where the float64
    reference fit from the same start ends (float32 rounding apart)."""
    g = torch.Generator().manual_seed(3)
    B, N, K, D = 2, 120, 3, 2
    x = torch.randn(B, N, D, generator=g, dtype=torch.float64) + 4.0 * torch.randint(3, (B, N, 1), generator=g)
    start = dict(means_init=x[:, :K].clone(), weights_init=torch.full((B, K), 1.0 / K, dtype=torch.float64),
                 precisions_init=torch.ones((B, K, D) if cov == "diag" else (B, K), dtype=torch.float64))
    if fit == "fit_vb":  # VB has no parameter overrides: the same initial responsibilities in both dtypes
        start = dict(init=torch.softmax(torch.randn(B, N, K, generator=g, dtype=torch.float64), -1))
    kw = dict(max_iter=4, tol=0.0)
    calls = []
    fwd = tem._mixture_em_stats_fwd
    monkeypatch.setattr(tem, "_mixture_em_stats_fwd", lambda *a, **k: calls.append(1) or fwd(*a, **k))
    got = getattr(gmmkernels, fit)(x.float().to(IDEV), K, cov, backend="triton", **kw,
                                   **{k: v.float().to(IDEV) for k, v in start.items()})
    assert len(calls) >= kw["max_iter"]
    want = getattr(gmmkernels, fit)(x, K, cov, backend="reference", **kw, **start)
    torch.testing.assert_close(got.lower_bound.double().cpu(), want.lower_bound, rtol=1e-4, atol=1e-4)
    for name in ("logits", "means", "scale"):
        torch.testing.assert_close(getattr(got.mixture, name).double().cpu(), getattr(want.mixture, name), rtol=1e-3,
                                   atol=1e-3, msg=lambda m: f"{name}: {m}")
    with pytest.raises(ValueError, match="supports cov_type 'diag' and 'spherical'"):
        getattr(gmmkernels, fit)(x.float().to(IDEV), K, "full", backend="triton", **kw)
    with pytest.raises(TypeError, match="float32"):
        getattr(gmmkernels, fit)(x.to(IDEV), K, cov, backend="triton", **kw)


def test_dispatch_refuses_what_the_kernel_does_not_run():
    """Clear errors: full covariances, float64, the M-step; any K is taken; "auto" never picks the Triton kernel."""
    dev = torch.device(IDEV)
    with pytest.raises(ValueError, match="supports cov_type 'diag' and 'spherical'"):
        _dispatch.select("f", "mixture_em_stats", "triton", dev, torch.float32, cov_type="full", K=4, D=3)
    if INTERPRET or dev.type == "cuda":
        assert _dispatch.select("f", "mixture_em_stats", "triton", dev, torch.float32, cov_type="spherical",
                                D=3) == "triton"
    with pytest.raises(TypeError, match="float32"):
        _dispatch.select("f", "mixture_em_stats", "triton", dev, torch.float64, cov_type="diag", K=4, D=3)
    with pytest.raises(ValueError, match="not available for mixture_em_mstep"):
        _dispatch.select("f", "mixture_em_stats", "triton", dev, torch.float32, op="mixture_em_mstep",
                         cov_type="diag", K=4, D=3)
    assert _dispatch.select("f", "mixture_em_stats", "auto", dev, torch.float32, cov_type="diag", K=4,
                            D=3) != "triton"


@needs_kernels
def test_launcher_argument_errors():
    x, means, prec, logc = (t.float() for t in _inputs(1, 10, 3, 2, device=IDEV))
    with pytest.raises(TypeError, match="float32"):
        tem.mixture_em_stats_triton(x.double(), means, prec, logc)
    with pytest.raises(ValueError, match="shape mismatch"):
        tem.mixture_em_stats_triton(x[..., :1], means, prec, logc)
    with pytest.raises(ValueError, match=r"expected x \[B or 1, N, D\]"):
        tem.mixture_em_stats_triton(x[0], means, prec, logc)


@needs_kernels
def test_gradient_refused_message():
    """The triton_op refuses gradients with the op's own message."""
    x, means, prec, logc = (t.float().requires_grad_() for t in _inputs(1, 10, 3, 2, device=IDEV))
    out = tem.mixture_em_stats_triton(x, means, prec, logc)
    with pytest.raises(RuntimeError, match="mixture_em_stats_triton has no derivative: its outputs are the statistics"):
        out[0].backward()


_PTXAS_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from benchmarks.ptxas_report import resources
from triton.backends.nvidia.compiler import get_ptxas
from gmmkernels.triton.mixture_em_stats import _em_logp_kernel, _em_stats_kernel, _em_tile_stats_kernel, cuda_blocks
out = []
ptxas = get_ptxas(90).path
for K, D in {cases!r}:
    c = cuda_blocks(K, D)
    consts = dict(WITH_RESP=True, ONE_CHUNK=D <= c["BLOCK_D"], BLOCK_N=c["BLOCK_N"], BLOCK_K=c["BLOCK_K"],
                  BLOCK_D=c["BLOCK_D"])
    if K <= c["BLOCK_K"]:
        out.append([K, D, "one tile", *resources(_em_stats_kernel, 90, consts, c["num_warps"], ptxas)])
    else:
        out.append([K, D, "log p", *resources(_em_logp_kernel, 90, dict(BLOCK_N=c["LOGP_BLOCK_N"],
                                                                          BLOCK_K=c["BLOCK_K"]), c["LOGP_WARPS"], ptxas)])
        out.append([K, D, "statistics", *resources(_em_tile_stats_kernel, 90, consts, c["num_warps"], ptxas)])
print(json.dumps(out))
"""


def test_gpu_block_sizes_compile_for_sm90_without_spills():
    """The CUDA configuration of every K and D class compiles for sm_90a (Triton's compiler and its bundled ptxas, no
    GPU needed) and ptxas reports no register spills; K above 64 takes the two K-tiles kernels (D in one chunk up to
    128, then chunks; K = 1024, D = 128: the Flash-GMM benchmark shape)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cases = [(5, 3), (16, 32), (32, 16), (20, 100), (64, 16), (64, 100), (100, 3), (200, 40), (1024, 128),
             (300, 200)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        if not os.path.exists(get_ptxas(90).path):
            pytest.skip("this triton build ships no ptxas")
    except ImportError:
        pytest.skip("this triton build has no NVIDIA backend")
    res = subprocess.run([sys.executable, "-c", _PTXAS_SCRIPT.format(root=root, cases=cases)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for K, D, kernel, regs, spill in json.loads(res.stdout.strip().splitlines()[-1]):
        assert 0 < regs <= 255 and spill == 0, (K, D, kernel, regs, spill)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRET, reason="compiled Triton needs a CUDA device")
class TestCuda:
    @pytest.mark.parametrize("shape", [(1, 100_000, 32, 16), (4, 20_000, 64, 100), (2, 10_000, 300, 48)],
                             ids=["headline", "batched-bigD", "ktiles"])
    def test_realistic_shapes(self, shape):
        B, N, K, D = shape
        args = _inputs(B, N, K, D, seed=11, device="cuda")
        want = ref.mixture_em_stats_kernel_ref(*args, False)
        _assert_close(tem.mixture_em_stats_triton(*(t.float() for t in args), True), want, N)

    def test_opcheck(self):
        args = [t.float() for t in _inputs(2, 300, 10, 7, device="cuda")]
        torch.library.opcheck(torch.ops.gmmkernels.mixture_em_stats_triton.default, (*args, True))

    def test_compile_fullgraph(self):
        args = [t.float() for t in _inputs(2, 300, 10, 7, device="cuda")]
        fn = torch.compile(lambda *a: tem.mixture_em_stats_triton(*a, False), fullgraph=True)
        want = tem.mixture_em_stats_triton(*args, False)
        for a, b in zip(fn(*args), want):
            torch.testing.assert_close(a, b)
