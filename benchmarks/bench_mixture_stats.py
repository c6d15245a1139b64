"""Benchmark of gmmkernels.mixture_stats (log p + score of a Gaussian mixture; forward and forward+backward).

Modes
  fwd      log p [N] and score [N, D] of a K-component mixture in D dimensions (diag / spherical / full).
  fwd+bwd  the same forward, then the gradients of  L = <g_lp, log p> + <g_s, score>  with respect to
           x, logits, means and scale (the backward goes through the score, i.e. Hessian-vector products).
The upstream gradients g_lp, g_s are random on the first M rows (the rows the float64 check looks at) and
zero on the others, so the float64 reference of the parameter gradients only needs those M rows; timings do
not depend on the values.

Run: python benchmarks/bench_mixture_stats.py [--quick] [--device cpu|cuda] [--providers ...] [--cov diag,full]
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import _harness as H

OP = "mixture_stats"
LOG_2PI = math.log(2.0 * math.pi)
COVS = ("diag", "spherical", "full")
INPUT_NAMES = ("x", "logits", "means", "scale")

# float64 check: tolerances per accuracy class (max |d log p| <= atol + rtol*max|log p|; relative L2 errors)
TOLERANCES = {
    "ieee": {"logp_atol": 2e-3, "logp_rtol": 2e-5, "score_rel": 2e-3, "grad_rel": 5e-3},
    "tf32": {"logp_atol": 5e-2, "logp_rtol": 1e-3, "score_rel": 3e-2, "grad_rel": 1e-1},
    "bf16": {"logp_atol": 5e-1, "logp_rtol": 1e-2, "score_rel": 1.5e-1, "grad_rel": 3e-1},
}


# ----------------------------------------------------------------------------------------------
# baselines written out in PyTorch


def eager_mixture_stats(x, logits, means, scale, cov: str):
    """log p [N] and score [N, D] by the materialising formula: every N x K x D difference is formed.

    This is the "torch-eager" baseline (what one writes by hand): the score is the closed form
    sum_k r_k * (-Sigma_k^-1 (x - mu_k)), so one backward through it is first order autograd.
    """
    D = x.shape[-1]
    logw = torch.log_softmax(logits, dim=-1)
    delta = x[:, None, :] - means[None, :, :]  # [N, K, D]
    if cov == "full":
        eye = torch.eye(D, dtype=x.dtype, device=x.device).expand_as(scale)
        P = torch.linalg.solve_triangular(scale, eye, upper=False)  # L^-1, [K, D, D]
        z = torch.einsum("kij,nkj->nki", P, delta)
        logdet = torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
    elif cov == "spherical":
        prec = scale.reciprocal()[:, None]  # [K, 1]
        z = delta * prec
        logdet = D * torch.log(scale)
    else:
        prec = scale.reciprocal()  # [K, D]
        z = delta * prec
        logdet = torch.log(scale).sum(-1)
    logit = (logw - logdet - 0.5 * D * LOG_2PI) - 0.5 * (z * z).sum(-1)  # [N, K]
    logp = torch.logsumexp(logit, dim=-1)
    r = torch.exp(logit - logp[:, None])
    rz = r[:, :, None] * z
    if cov == "full":
        score = -torch.einsum("nkj,kji->ni", rz, P)
    else:
        score = -(rz * prec).sum(1)
    return logp, score


def gemm_mixture_stats(x, logits, means, scale, cov: str):
    """log p and score by the expanded (GEMM) form, sklearn / PyCave style: N x K only, never N x K x D.

    logit = x (M/S^2)^T - 1/2 x^2 (1/S^2)^T + c,   score = R (M/S^2) - x * (R (1/S^2)).  diag / spherical.
    """
    if cov == "full":
        raise H.Unsupported("torch-gemm implements diag and spherical covariances")
    D = x.shape[-1]
    logw = torch.log_softmax(logits, dim=-1)
    if cov == "spherical":
        iv = scale.pow(-2)[:, None].expand_as(means)
        logdet = D * torch.log(scale)
    else:
        iv = scale.pow(-2)
        logdet = torch.log(scale).sum(-1)
    a = means * iv  # [K, D]
    c = logw - logdet - 0.5 * D * LOG_2PI - 0.5 * (means * a).sum(-1)
    logit = x @ a.T - 0.5 * (x * x) @ iv.T + c
    logp = torch.logsumexp(logit, dim=-1)
    r = torch.exp(logit - logp[:, None])
    score = r @ a - x * (r @ iv)
    return logp, score


def distributions_log_prob(x, logits, means, scale, cov: str):
    from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal

    if cov == "full":
        comp = MultivariateNormal(means, scale_tril=scale, validate_args=False)
    else:
        s = scale[:, None].expand_as(means) if cov == "spherical" else scale
        comp = Independent(Normal(means, s, validate_args=False), 1, validate_args=False)
    mix = MixtureSameFamily(Categorical(logits=logits, validate_args=False), comp, validate_args=False)
    return mix.log_prob(x)


def keops_log_prob(x, logits, means, scale, cov: str):
    from pykeops.torch import LazyTensor

    D = x.shape[-1]
    logw = torch.log_softmax(logits, dim=-1)
    if cov == "full":
        eye = torch.eye(D, dtype=x.dtype, device=x.device).expand_as(scale)
        P = torch.linalg.solve_triangular(scale, eye, upper=False)
        w = (P.transpose(-1, -2) @ P).reshape(scale.shape[0], D * D)  # Sigma^-1, flattened
        logdet = torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
    elif cov == "spherical":
        w = scale.pow(-2)[:, None]
        logdet = D * torch.log(scale)
    else:
        w = scale.pow(-2)
        logdet = torch.log(scale).sum(-1)
    c = logw - logdet - 0.5 * D * LOG_2PI
    x_i = LazyTensor(x[:, None, :].contiguous())
    m_j = LazyTensor(means[None, :, :].contiguous())
    w_j = LazyTensor(w[None, :, :].contiguous())
    c_j = LazyTensor(c[None, :, None].contiguous())
    return (c_j - 0.5 * x_i.weightedsqdist(m_j, w_j)).logsumexp(dim=1).reshape(-1)


def _autograd_score(log_prob_fn):
    """(log p, score) with the score by autograd; differentiable again when the inputs require grad."""

    def f(x, logits, means, scale, cov):
        train = x.requires_grad
        with torch.enable_grad():
            xg = x if train else x.detach().requires_grad_(True)
            lp = log_prob_fn(xg, logits, means, scale, cov)
            (score,) = torch.autograd.grad(lp.sum(), xg, create_graph=train)
        return (lp if train else lp.detach()), score

    return f


# ----------------------------------------------------------------------------------------------
# providers


def _wrap(case: H.Case, inputs: dict, stats_fn):
    """fn() for a mode from stats_fn(x, logits, means, scale) -> (log p, score)."""
    leaves = [inputs[k] for k in INPUT_NAMES]
    if case.mode == "fwd":

        def fn():
            with torch.no_grad():
                lp, sc = stats_fn(*leaves)
            return {"log_prob": lp, "score": sc}

        return fn
    g_lp, g_s = inputs["g_lp"], inputs["g_s"]

    def fn():
        lp, sc = stats_fn(*leaves)
        loss = (lp * g_lp).sum() + (sc * g_s).sum()
        grads = torch.autograd.grad(loss, leaves)
        out = {"log_prob": lp.detach(), "score": sc.detach()}
        out.update({f"grad_{k}": g for k, g in zip(INPUT_NAMES, grads)})
        return out

    return fn


def _gmm_provider(backend: str, precision: str):
    def setup(case, inputs):
        import gmmkernels

        cov = case.params["cov"]

        def stats(x, logits, means, scale):
            o = gmmkernels.mixture_stats(x, logits, means, scale, cov, backend=backend, precision=precision,
                                         with_score=True)
            return o.log_prob, o.score

        return _wrap(case, inputs, stats)

    def available(device):
        try:
            import gmmkernels
        except Exception as e:
            return f"gmmkernels does not import: {e}"
        if not hasattr(gmmkernels, "available_backends"):
            return "gmmkernels.available_backends missing"
        if backend == "triton" and device != "cuda":
            return "Triton kernels are timed on CUDA only (on CPU they would run in the interpreter)"
        backs = gmmkernels.available_backends(device)
        if backend not in backs:
            return f"backend {backend!r} not in available_backends({device!r}) = {backs}"
        return None

    return setup, available


def _eager_setup(case, inputs):
    cov = case.params["cov"]
    return _wrap(case, inputs, lambda x, l, m, s: eager_mixture_stats(x, l, m, s, cov))


def _gemm_setup(case, inputs):
    cov = case.params["cov"]
    if cov == "full":
        raise H.Unsupported("torch-gemm implements diag and spherical covariances")
    return _wrap(case, inputs, lambda x, l, m, s: gemm_mixture_stats(x, l, m, s, cov))


COMPILE_MODE = {"mode": None}


def _compile_setup(case, inputs):
    import torch._dynamo

    torch._dynamo.reset()  # a fresh cache per case: shapes and grad mode change between cases
    cov = case.params["cov"]
    kw = {"dynamic": False}
    if COMPILE_MODE["mode"]:
        kw["mode"] = COMPILE_MODE["mode"]
    compiled = torch.compile(eager_mixture_stats, **kw)
    return _wrap(case, inputs, lambda x, l, m, s: compiled(x, l, m, s, cov))


def _dist_setup(case, inputs):
    cov = case.params["cov"]
    f = _autograd_score(distributions_log_prob)
    return _wrap(case, inputs, lambda x, l, m, s: f(x, l, m, s, cov))


def _keops_available(device):
    try:
        import pykeops  # noqa: F401
        from pykeops.torch import LazyTensor  # noqa: F401
    except Exception as e:
        return f"pykeops not importable ({type(e).__name__}: {e})"
    if device == "cuda":
        try:
            import pykeops.config as cfg

            if not getattr(cfg, "gpu_available", True):
                return "pykeops found no usable CUDA (pykeops.config.gpu_available is False)"
        except Exception:
            pass
    return None


def _keops_setup(case, inputs):
    if case.dtype not in ("float32", "float64"):
        raise H.Unsupported(f"KeOps supports float32/float64 LazyTensors, not {case.dtype}")
    cov = case.params["cov"]
    f = _autograd_score(keops_log_prob)
    return _wrap(case, inputs, lambda x, l, m, s: f(x, l, m, s, cov))


REGISTRY = H.ProviderRegistry()
for _b in ("cpu", "cuda"):
    _s, _a = _gmm_provider(_b, "ieee")
    REGISTRY.register(H.Provider(f"gmmkernels-{_b}", _s, _a, "ieee", devices=(_b,),
                                 description=f"gmmkernels.mixture_stats(backend={_b!r}): fused native kernel"))
for _p in ("ieee", "tf32", "bf16"):
    _s, _a = _gmm_provider("triton", _p)
    REGISTRY.register(H.Provider(f"gmmkernels-triton-{_p}", _s, _a, _p, devices=("cuda",),
                                 description=f"gmmkernels.mixture_stats(backend='triton', precision={_p!r})"))
_s, _a = _gmm_provider("reference", "ieee")
REGISTRY.register(H.Provider("gmmkernels-reference", _s, _a, "ieee", default=False,
                             nkd_temporaries={"fwd": 5, "fwd+bwd": 10},
                             description="gmmkernels.mixture_stats(backend='reference'): materialising reference"))
REGISTRY.register(H.Provider("torch-eager", _eager_setup, precision="ieee", nkd_temporaries={"fwd": 4, "fwd+bwd": 9},
                             description="materialising N x K x D formula, closed-form score (eager_mixture_stats)"))
REGISTRY.register(H.Provider("torch-gemm", _gemm_setup, precision="ieee", nkd_temporaries={},
                             description="expanded GEMM form (sklearn/PyCave), N x K only; diag/spherical"))
REGISTRY.register(H.Provider("torch-compile", _compile_setup, precision="ieee",
                             nkd_temporaries={"fwd": 2, "fwd+bwd": 6},
                             description="torch.compile(eager_mixture_stats); first_call_ms includes compilation"))
REGISTRY.register(H.Provider("torch-distributions", _dist_setup, precision="ieee",
                             nkd_temporaries={"fwd": 5, "fwd+bwd": 14},
                             description="MixtureSameFamily(Categorical, Independent(Normal) | MultivariateNormal), "
                                         "score by autograd"))
REGISTRY.register(H.Provider("keops", _keops_setup, _keops_available, precision="ieee",
                             description="pykeops LazyTensor weightedsqdist + logsumexp, score by autograd"))


# ----------------------------------------------------------------------------------------------
# inputs, reference, checks, counts


def check_rows(case: H.Case) -> int:
    """Rows of x the float64 reference evaluates (the first M)."""
    p = case.params
    N, K, D = p["N"], p["K"], p["D"]
    per_row = K * D * (D if p["cov"] == "full" else 1)
    return int(min(N, max(64, (1 << 23) // max(1, per_row))))


def make_inputs(case: H.Case) -> dict:
    p = case.params
    N, K, D, cov = p["N"], p["K"], p["D"], p["cov"]
    dev, dt = case.device, case.torch_dtype
    g = torch.Generator(device="cpu").manual_seed(1234 + N + 7 * K + 13 * D)

    def rn(*shape):
        return torch.randn(*shape, generator=g).to(dev)

    def ru(*shape):
        return torch.rand(*shape, generator=g).to(dev)

    means = rn(K, D)
    logits = 0.5 * rn(K)
    if cov == "diag":
        scale = 0.5 + ru(K, D)
    elif cov == "spherical":
        scale = 0.5 + ru(K)
    else:
        scale = torch.diag_embed(0.5 + ru(K, D)) + torch.tril(rn(K, D, D), -1) * (0.3 / math.sqrt(D))
    # points near the components (chunks, so x stays the only N x D temporary of note)
    idx = torch.randint(0, K, (N,), generator=g).to(dev)
    x = torch.empty(N, D, device=dev)
    step = 1 << 18
    for i in range(0, N, step):
        j = min(N, i + step)
        x[i:j] = means[idx[i:j]] + torch.randn(j - i, D, generator=g).to(dev)
    inputs = {"x": x, "logits": logits, "means": means, "scale": scale}
    inputs = {k: v.to(dt).contiguous() for k, v in inputs.items()}
    if case.mode != "fwd":
        M = check_rows(case)
        g_lp = torch.zeros(N, device=dev, dtype=dt)
        g_s = torch.zeros(N, D, device=dev, dtype=dt)
        g_lp[:M] = rn(M).to(dt)
        g_s[:M] = rn(M, D).to(dt)
        for k in INPUT_NAMES:
            inputs[k].requires_grad_(True)
        inputs["g_lp"], inputs["g_s"] = g_lp, g_s
    return inputs


def reference(case: H.Case, inputs: dict) -> dict:
    """float64 log p, score (and gradients) on the first M rows, by gmmkernels.reference (materialising)."""
    from gmmkernels.reference.mixture_stats import mixture_stats_ref

    cov = case.params["cov"]
    M = check_rows(case)
    x = inputs["x"].detach()[:M].double()
    params = [inputs[k].detach().double() for k in ("logits", "means", "scale")]
    if case.mode == "fwd":
        with torch.no_grad():
            o = mixture_stats_ref(x, *params, cov)
        return {"log_prob": o.log_prob, "score": o.score}
    leaves = [x.requires_grad_(True)] + [t.requires_grad_(True) for t in params]
    o = mixture_stats_ref(*leaves, cov)
    loss = (o.log_prob * inputs["g_lp"][:M].double()).sum() + (o.score * inputs["g_s"][:M].double()).sum()
    grads = torch.autograd.grad(loss, leaves)
    out = {"log_prob": o.log_prob.detach(), "score": o.score.detach()}
    out.update({f"grad_{k}": gr for k, gr in zip(INPUT_NAMES, grads)})
    return out


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    den = torch.linalg.vector_norm(b).item()
    num = torch.linalg.vector_norm(a - b).item()
    return num / den if den > 0 else num


def accuracy_class(case: H.Case, precision: str) -> str:
    if case.dtype in ("bfloat16", "float16"):
        return "bf16"
    return precision


def compare(case: H.Case, out: dict, expected: dict, precision: str):
    M = expected["log_prob"].shape[0]
    tol = TOLERANCES[accuracy_class(case, precision)]
    errs: dict = {}
    lp = out["log_prob"].detach()[:M].double()
    errs["logp_max_abs"] = (lp - expected["log_prob"]).abs().max().item()
    errs["score_rel_l2"] = _rel_l2(out["score"].detach()[:M], expected["score"])
    ok = errs["logp_max_abs"] <= tol["logp_atol"] + tol["logp_rtol"] * expected["log_prob"].abs().max().item()
    ok &= errs["score_rel_l2"] <= tol["score_rel"]
    for k in INPUT_NAMES:
        key = f"grad_{k}"
        if key not in expected:
            continue
        got = out[key].detach()
        got = got[:M] if k == "x" else got
        ref = expected[key]
        if k == "scale" and case.params["cov"] == "full":  # only the lower triangle is a parameter
            got, ref = torch.tril(got), torch.tril(ref)
        errs[f"{key}_rel_l2"] = _rel_l2(got, ref)
        ok &= errs[f"{key}_rel_l2"] <= tol["grad_rel"]
    errs["checked_rows"] = M
    errs["tolerances"] = tol
    return errs, bool(ok)


def counts(case: H.Case) -> H.Counts:
    """Useful work of one call (the conventions of docs/kernels.md (mixture_stats); fp32-sized I/O).

    FLOP fwd: diag 8NKD (logits GEMM, inner 2D, + score GEMM, output 2D); spherical 4NKD; full 4NKD^2.
    fwd+bwd: 3x the forward (backward = 2x forward, the GEMM convention). Bytes: read x, write log p and
    score, read the parameters once; the backward adds reading x, g_lp, g_s and writing grad x + parameter grads.
    Exponentials: N*K per forward pass (2 passes for fwd+bwd).
    """
    p = case.params
    N, K, D, cov = p["N"], p["K"], p["D"], p["cov"]
    es = max(2, torch.empty((), dtype=case.torch_dtype).element_size())
    flops = {"diag": 8 * N * K * D, "spherical": 4 * N * K * D, "full": 4 * N * K * D * D}[cov]
    n_params = K + K * D + {"diag": K * D, "spherical": K, "full": K * D * D}[cov]
    nbytes = es * (2 * N * D + N + n_params)
    exps = N * K
    if case.mode != "fwd":
        flops *= 3
        nbytes += es * (3 * N * D + 2 * N + 2 * n_params)
        exps *= 2
    return H.Counts(float(flops), float(nbytes), float(exps))


SPEC = H.OpSpec(make_inputs=make_inputs, reference=reference, compare=compare, counts=counts,
                nkd_elements=lambda c: c.params["N"] * c.params["K"] * c.params["D"])


# ----------------------------------------------------------------------------------------------
# workloads (docs/kernels.md (mixture_stats): cost model and benchmark workloads)


def _cases(device: str, quick: bool, covs, dtypes) -> list[H.Case]:
    C = []

    def add(name, N, K, D, cov, modes=("fwd", "fwd+bwd"), providers=None):
        if cov not in covs:
            return
        for dt in dtypes:
            for m in modes:
                C.append(H.Case(OP, {"N": N, "K": K, "D": D, "cov": cov}, dt, m, device, name, providers))

    if quick:
        # tiny: every cov, both modes (CI smoke run: checks that every provider still runs and is correct)
        for cov in COVS:
            add("quick", 512, 8, 4, cov)
        return C
    if device == "cpu":
        add("headline", 65536, 64, 32, "diag")
        add("headline", 65536, 64, 32, "spherical", ("fwd",))
        add("A1-toy", 65536, 64, 2, "diag")
        add("A1-toy", 65536, 64, 2, "full", ("fwd",))
        add("full-D16", 8192, 16, 16, "full")
        add("A3-CIFAR-small", 256, 10, 3072, "diag", ("fwd",))
        return C
    # CUDA: in priority order (the time budget cuts from the end). JIT providers (torch-compile: tens of seconds
    # per graph; keops: NVRTC per formula) only where they say something: forward, a few shapes.
    jit_ok = None
    no_jit = _except("torch-compile", "keops")
    add("headline", 65536, 64, 32, "diag", ("fwd",), jit_ok)
    add("headline", 65536, 64, 32, "diag", ("fwd+bwd",), no_jit)
    add("A1-toy-K64", 1_000_000, 64, 2, "diag", ("fwd",), jit_ok)
    add("A1-toy-K64", 1_000_000, 64, 2, "diag", ("fwd+bwd",), _except("torch-compile"))
    add("A1-toy-K64", 1_000_000, 64, 2, "spherical", ("fwd",), no_jit)
    add("A1-toy-K64", 1_000_000, 64, 2, "full", ("fwd", "fwd+bwd"), no_jit)
    add("A1-toy-K1024", 1_000_000, 1024, 2, "diag", ("fwd",), _except("torch-compile"))
    add("A1-toy-K1024", 1_000_000, 1024, 2, "diag", ("fwd+bwd",), no_jit)
    add("A2-mid-D", 1_000_000, 256, 64, "diag", ("fwd", "fwd+bwd"), no_jit)
    add("A2-mid-D", 1_000_000, 256, 64, "full", ("fwd",), no_jit)
    add("A3-CIFAR", 4096, 100, 3072, "diag", ("fwd",), _except("keops"))
    add("A3-CIFAR", 4096, 100, 3072, "diag", ("fwd+bwd",), no_jit)
    add("A3-CIFAR", 4096, 100, 3072, "spherical", ("fwd",), no_jit)
    add("A5-SD-latent", 64, 256, 16384, "diag", ("fwd",), no_jit)
    add("A5-SD-latent", 4096, 256, 16384, "diag", ("fwd",), no_jit)
    return C


def _except(*names):
    return [n for n in REGISTRY.names() if n not in names]


def add_arguments(ap):
    ap.add_argument("--cov", default=",".join(COVS), help="comma-separated subset of diag,spherical,full")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode for torch-compile (default: torch's default; e.g. max-autotune)")


def meta_extra(args) -> dict:
    try:
        from importlib.metadata import version

        keops = version("pykeops")  # without importing it (the import probes compilers and CUDA)
    except Exception as e:
        keops = f"not installed ({type(e).__name__})"
    return {"validation": False, "pykeops": keops, "compile_mode": getattr(args, "compile_mode", None),
            "providers": {n: REGISTRY[n].description for n in REGISTRY.names()}}


def run(args) -> list[dict]:
    """Entry point used by run_all.py: args from _harness.common_parser (+ add_arguments); returns result rows."""
    try:
        import gmmkernels

        gmmkernels.set_validation(False)  # value checks cost device syncs; the bench feeds valid inputs
    except Exception:
        gmmkernels = None
    try:
        return _run(args)
    finally:
        if gmmkernels is not None:
            gmmkernels.set_validation(True)


def _run(args) -> list[dict]:
    COMPILE_MODE["mode"] = getattr(args, "compile_mode", None)
    covs = [c.strip() for c in (getattr(args, "cov", None) or ",".join(COVS)).split(",") if c.strip()]
    cases = H.filter_cases(_cases(args.device, args.quick, covs, args.dtype_list), args)
    wanted = args.provider_list
    if wanted is None and args.quick:
        # CI smoke: no JIT providers (their first calls compile C++ for tens of seconds); ask with --providers
        wanted = [p.name for p in REGISTRY.select(args.device, None) if p.name not in ("keops", "torch-compile")]
    providers = REGISTRY.select(args.device, wanted)
    budget = args.budget_s
    return H.run_cases(SPEC, cases, providers, min_run_time=args.min_run_time, threads=args.threads,
                       budget_s=budget)


if __name__ == "__main__":
    import benchmarks.bench_mixture_stats as _self  # one module object for run_all and direct runs

    sys.exit(H.main_for(_self))
