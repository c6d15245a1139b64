"""Bad inputs to every public function, table-driven: wrong types, dtypes, ranks, shapes, devices (meta), non-finite
and out-of-range values must raise ValueError / TypeError whose message names the function and the argument
(docs/architecture.md (A call, from the top)); degenerate but legal inputs (constant data, duplicated points, K = N)
must give a result.

Each table row is (function, good arguments, the arguments replaced, expected exception, names in the message).
The good arguments alone must run: ``test_good_arguments_run`` checks that, so that every row fails for the reason
it names and not because of another argument.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Dict, NamedTuple, Tuple

import pytest
import torch

import gmmkernels as G
from gmmkernels import GaussianMixture, GibbsPrior, _backend
from gmmkernels.diffusion import MixtureOracle, TrainConfig, Trainer, samplers as S
from gmmkernels.diffusion.data import gmm2d
from gmmkernels.diffusion.methods import gms as GMS
from gmmkernels.diffusion.models import MLPEps
from gmmkernels.diffusion.schedules import DiscreteSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

F64, F32 = torch.float64, torch.float32
NAN, INF = float("nan"), float("inf")
META = "meta"


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, dtype=F64, seed=0):
    return torch.randn(*shape, generator=_g(seed), dtype=dtype)


def _pos(*shape, dtype=F64, seed=0):
    return torch.rand(*shape, generator=_g(seed), dtype=dtype) + 0.5


def _with(t, value, index=0):
    """A copy of ``t`` with one entry (flat ``index``) set to ``value``."""
    t = t.clone()
    t.view(-1)[index] = value
    return t


def _meta(t):
    return t.to(META)


class Fn(NamedTuple):
    name: str                       # the function's name, which the message must start with
    call: Callable                  # call(**kwargs)
    good: Callable[[], Dict]        # fresh good keyword arguments
    variant: str = ""               # tells apart the test ids of two sets of good arguments of one function


# ----------------------------------------------------------------------------------------------------------
# the functions and their good arguments

def _mixture_args(cov_type="diag"):
    K, D = 3, 2
    scale = {"diag": _pos(K, D), "spherical": _pos(K), "full": torch.linalg.cholesky(
        torch.eye(D, dtype=F64) + 0.1 * torch.ones(D, D, dtype=F64)).expand(K, D, D).clone()}[cov_type]
    return dict(x=_randn(6, D), logits=_randn(K, seed=1), means=_randn(K, D, seed=2), scale=scale, cov_type=cov_type)


MIXTURE_FNS = [Fn(n, getattr(G, n), _mixture_args)
               for n in ("mixture_log_prob", "mixture_score", "mixture_responsibilities", "mixture_stats")]
MIX_FULL = Fn("mixture_log_prob", G.mixture_log_prob, lambda: _mixture_args("full"), "full")
MIX_STATS = MIXTURE_FNS[3]

GMS_FIT = Fn("gms_fit", G.gms_fit, lambda: dict(mean=_randn(4, 3), var=_pos(4, 3), third_moment=_randn(4, 3, seed=1)))
GMS_STEP = Fn("gms_step", G.gms_step, lambda: dict(
    x_t=_randn(2, 3), e1=_randn(2, 3, seed=1), e2=_pos(2, 3), e3=_randn(2, 3, seed=2),
    coeffs=G.GMSCoeffs.from_alphas_cumprod(0.5, 0.8), seed=0))
DISPATCH = Fn("mixture_dispatch", G.mixture_dispatch, lambda: dict(
    x0=_randn(5, 3), centers=_randn(2, 3, seed=1), a=0.5, sigma=0.3, eps=_randn(5, 3, seed=2)))
NEAREST = Fn("nearest_center", G.nearest_center, lambda: dict(x0=_randn(5, 3), centers=_randn(2, 3, seed=1)))
LOWRANK = Fn("lowrank_adapter", G.lowrank_adapter, lambda: dict(r=_randn(4, 3), u=_randn(4, 2, 3, seed=1),
                                                                 s=_randn(2, seed=2)))
HYPERNET = Fn("hypernet_adapter", G.hypernet_adapter, lambda: dict(
    h=_randn(2, 4, 3, 3), z=_randn(2, 5, 3, 3, seed=1), w_in=_randn(5, 4, seed=2), b_in=_randn(5, seed=3),
    p=_randn(2, 5, 5, seed=4), q=_randn(2, 5, seed=5), s=_randn(2, seed=6), w_out=_randn(4, 5, seed=7),
    b_out=_randn(4, seed=8)))
SUFFSTATS = Fn("mixture_suffstats", G.mixture_suffstats, lambda: dict(x=_randn(6, 2), resp=torch.softmax(
    _randn(6, 3, seed=1), -1)))
GIBBS_SWEEP = Fn("gibbs_sweep", G.gibbs_sweep, lambda: dict(
    x=_randn(20, 2), logw=torch.full((3, 2), -math.log(2), dtype=F64), means=_randn(3, 2, 2, seed=1),
    var=_pos(3, 2, 2), prior=GibbsPrior(), seed=0, step=0))
MGDM_VI = Fn("mgdm_vi_step", G.mgdm_vi_step, lambda: dict(
    state=torch.cat([_randn(2, 2, 3), torch.zeros(4, 2, 3, dtype=F64)]), grad_v=_randn(2, 3, seed=1),
    eps=_randn(2, 3, seed=2), m=_randn(2, 3, seed=3), inv_sigma2=_pos(2), lr=0.01, step=1, seed=0, draw=0))
MGDM_BRIDGE = Fn("mgdm_bridge", G.mgdm_bridge, lambda: dict(u=_randn(2, 3), w=_randn(2, 3, seed=1), cu=1.0, cw=0.5,
                                                            std=0.1, seed=0, draw=0))

_DATA = lambda: _randn(20, 2)  # noqa: E731
FIT_EM = Fn("fit_em", G.fit_em, lambda: dict(x=_DATA(), n_components=2, max_iter=3, generator=_g()))
FIT_EM_INIT = Fn("fit_em", G.fit_em, lambda: dict(
    x=_DATA(), n_components=2, max_iter=3, generator=_g(), weights_init=torch.tensor([0.5, 0.5], dtype=F64),
    means_init=_randn(2, 2, seed=1), precisions_init=_pos(2, 2)), "init")
FIT_EM_FULL_INIT = Fn("fit_em", G.fit_em, lambda: dict(
    x=_DATA(), n_components=2, cov_type="full", max_iter=3, generator=_g(), weights_init=torch.tensor(
        [0.5, 0.5], dtype=F64), means_init=_randn(2, 2, seed=1), precisions_init=torch.eye(2, dtype=F64).repeat(2, 1, 1)),
    "full-init")
FIT_EM_SPH_INIT = Fn("fit_em", G.fit_em, lambda: dict(x=_DATA(), n_components=2, cov_type="spherical", max_iter=3,
                                                      generator=_g(), precisions_init=_pos(2)), "spherical-init")
FIT_VB = Fn("fit_vb", G.fit_vb, lambda: dict(x=_DATA(), n_components=2, max_iter=3, generator=_g()))
FIT_VB_SPH = Fn("fit_vb", G.fit_vb, lambda: dict(x=_DATA(), n_components=2, cov_type="spherical", max_iter=3,
                                                 generator=_g()), "spherical")
FIT_VB_PRIORS = Fn("fit_vb", G.fit_vb, lambda: dict(x=_DATA(), n_components=2, max_iter=3, generator=_g(),
                                                    mean_prior=_randn(2, seed=1), covariance_prior=_pos(2)), "priors")
FIT_VB_FULL_PRIORS = Fn("fit_vb", G.fit_vb, lambda: dict(x=_DATA(), n_components=2, cov_type="full", max_iter=3,
                                                         generator=_g(), covariance_prior=torch.eye(2, dtype=F64)),
                        "full-priors")
_CHUNKS = lambda: [_randn(10, 2), _randn(10, 2, seed=1)]  # noqa: E731
FIT_EM_CHUNKED = Fn("fit_em_chunked", G.fit_em_chunked, lambda: dict(chunks=_CHUNKS(), n_components=2, max_iter=3,
                                                                      generator=_g()))
FIT_VB_CHUNKED = Fn("fit_vb_chunked", G.fit_vb_chunked, lambda: dict(chunks=_CHUNKS(), n_components=2, max_iter=3,
                                                                      generator=_g()))
EM_STATS = Fn("mixture_em_stats", G.mixture_em_stats, _mixture_args)
EM_MSTEP = Fn("mixture_em_mstep", G.mixture_em_mstep, lambda: dict(nk=_pos(3) * 10, sx=_randn(3, 2), sxx=_pos(3, 2) * 20))
GIBBS = Fn("gibbs", G.gibbs, lambda: dict(x=_DATA(), n_components=2, n_sweeps=2))
GIBBS_C = Fn("gibbs", G.gibbs, lambda: dict(x=_DATA(), n_components=2, n_chains=3, n_sweeps=2, init=(
    torch.full((3, 2), -math.log(2), dtype=F64), _randn(3, 2, 2, seed=1), _pos(3, 2, 2))), "init")
KMEANS = Fn("kmeans", G.kmeans, lambda: dict(x=_DATA(), k=2, iters=3))
KPP = Fn("kmeans_plusplus", G.kmeans_plusplus, lambda: dict(x=_DATA(), n_components=2, generator=_g()))

_SCHED = DiscreteSchedule.linear(100)
_ORACLE = MixtureOracle(gmm2d(), _SCHED)


def _sample_args(**kw):
    return dict(model=_ORACLE, schedule=_SCHED, shape=(4, 2), K=3, generator=_g(), **kw)


SAMPLE = Fn("sample", S.sample, lambda: _sample_args(method="ddpm"))
SAMPLE_DDIM = Fn("sample", S.sample, lambda: _sample_args(method="ddim"), "ddim")
SAMPLE_ADPM = Fn("sample", S.sample, lambda: _sample_args(method="analytic_dpm", gamma=torch.full((3,), 0.5)),
                 "analytic_dpm")
DDPM = Fn("ddpm", S.ddpm, lambda: _sample_args())
DDIM = Fn("ddim", S.ddim, lambda: _sample_args())
EST_GAMMA = Fn("estimate_gamma", S.estimate_gamma, lambda: dict(model=_ORACLE, schedule=_SCHED, x0=_randn(8, 2).float(),
                                                                times=torch.tensor([50.0, 10.0])))
COUNTER_NOISE = Fn("counter_noise", S.counter_noise, lambda: dict(seed=0))
GMS_SAMPLE = Fn("gms_sample", GMS.gms_sample, lambda: dict(model=_ORACLE, schedule=_SCHED, shape=(4, 2), K=3,
                                                           generator=_g(), fit="closed"))
ABLATION = Fn("ablation_sample", GMS.ablation_sample, lambda: dict(model=_ORACLE, schedule=_SCHED, shape=(4, 2), K=3,
                                                                   variant="sn_fused", generator=_g()))
RUN_SAMPLER = Fn("run_sampler", GMS.run_sampler, lambda: dict(name="ddpm", model=_ORACLE, schedule=_SCHED,
                                                              shape=(4, 2), K=3))
TRAIN_CONFIG = Fn("TrainConfig", lambda **kw: TrainConfig(**kw).validate(), lambda: {})
TRAINER = Fn("Trainer", Trainer, lambda: dict(model=MLPEps(2, hidden=8, depth=1), schedule=_SCHED, data=_randn(10, 2),
                                               config=TrainConfig(steps=1, progress=False)))

ALL_FNS = (MIXTURE_FNS + [MIX_FULL, GMS_FIT, GMS_STEP, DISPATCH, NEAREST, LOWRANK, HYPERNET, SUFFSTATS, GIBBS_SWEEP,
                          MGDM_VI, MGDM_BRIDGE, FIT_EM, FIT_EM_INIT, FIT_EM_FULL_INIT, FIT_EM_SPH_INIT, FIT_VB,
                          FIT_VB_SPH, FIT_VB_PRIORS, FIT_VB_FULL_PRIORS, FIT_EM_CHUNKED, FIT_VB_CHUNKED, EM_STATS,
                          EM_MSTEP, GIBBS,
                          GIBBS_C, KMEANS, KPP, SAMPLE, SAMPLE_DDIM, SAMPLE_ADPM, DDPM, DDIM, EST_GAMMA, COUNTER_NOISE,
                          GMS_SAMPLE, ABLATION, RUN_SAMPLER, TRAIN_CONFIG, TRAINER])


# ----------------------------------------------------------------------------------------------------------
# the table

CASES = []


def bad(fn: Fn, label: str, exc, names, gap: str = "", **replace):
    """One row: ``fn`` with the good arguments except ``replace`` raises ``exc`` naming ``fn.name`` and one of
    ``names`` (a str or a tuple). ``gap``: a known missing check in a module this test does not own (strict xfail,
    so the row fails loudly once the check exists and the mark must go)."""
    names = (names,) if isinstance(names, str) else tuple(names)
    marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
    name = f"{fn.name}[{fn.variant}]" if fn.variant else fn.name
    CASES.append(pytest.param(fn, replace, exc, names, id=f"{name}-{label}", marks=marks))


def tensor_rows(fn: Fn, arg: str, *, rank=None, shape=None, nan=False, inf=False, neg=False, zero=False,
                others=(), meta=True, dtype=True):
    """The usual rows for a tensor argument: a list instead of a tensor, an integer dtype, another floating dtype than
    its partners, the meta device next to CPU partners, a wrong rank / shape, and the value checks asked for."""
    good = fn.good()[arg]
    bad(fn, f"{arg}-list", TypeError, arg, **{arg: good.tolist()})
    bad(fn, f"{arg}-int64", TypeError, arg, **{arg: good.long()})
    if dtype:
        bad(fn, f"{arg}-float32", TypeError, (arg,) + tuple(others), **{arg: good.float()})
    if meta:
        bad(fn, f"{arg}-meta", ValueError, (arg,) + tuple(others), **{arg: _meta(good)})
    if rank is not None:
        bad(fn, f"{arg}-rank", ValueError, arg, **{arg: rank(good)})
    if shape is not None:
        bad(fn, f"{arg}-shape", ValueError, (arg,) + tuple(others), **{arg: shape(good)})
    if nan:
        bad(fn, f"{arg}-nan", ValueError, arg, **{arg: _with(good, NAN)})
    if inf:
        bad(fn, f"{arg}-inf", ValueError, arg, **{arg: _with(good, INF)})
    if neg:
        bad(fn, f"{arg}-negative", ValueError, arg, **{arg: -good})
    if zero:
        bad(fn, f"{arg}-zero", ValueError, arg, **{arg: torch.zeros_like(good)})


def int_rows(fn: Fn, arg: str, *, low=None, high=None, floats=True):
    """Rows of an int argument: below ``low``, above ``high``, a float, a bool, a string."""
    if low is not None:
        bad(fn, f"{arg}-below", ValueError, arg, **{arg: low})
    if high is not None:
        bad(fn, f"{arg}-above", ValueError, arg, **{arg: high})
    if floats:
        bad(fn, f"{arg}-float", TypeError, arg, **{arg: 1.5})
    bad(fn, f"{arg}-bool", TypeError, arg, **{arg: True})
    bad(fn, f"{arg}-str", TypeError, arg, **{arg: "2"})


def number_rows(fn: Fn, arg: str, *, low=None, high=None, nan=True, inf=True, gap=""):
    """Rows of a real argument: out of range, NaN, infinite, a string."""
    if low is not None:
        bad(fn, f"{arg}-below", ValueError, arg, gap=gap, **{arg: low})
    if high is not None:
        bad(fn, f"{arg}-above", ValueError, arg, gap=gap, **{arg: high})
    if nan:
        bad(fn, f"{arg}-nan", ValueError, arg, gap=gap, **{arg: NAN})
    if inf:
        bad(fn, f"{arg}-inf", ValueError, arg, gap=gap, **{arg: INF})
    bad(fn, f"{arg}-str", TypeError, arg, gap=gap, **{arg: "0.5"})


def choice_rows(fn: Fn, arg: str, bogus="bogus"):
    bad(fn, f"{arg}-unknown", ValueError, arg, **{arg: bogus})
    bad(fn, f"{arg}-int", ValueError, arg, **{arg: 3})


# -- the fused mixture ops
for f in MIXTURE_FNS:
    tensor_rows(f, "x", rank=lambda t: t[0], shape=lambda t: t[:, :1], others=("logits", "means"))
    tensor_rows(f, "logits", shape=lambda t: t[:2], nan=True, others=("x",))
    bad(f, "logits-posinf", ValueError, "logits", logits=_with(_randn(3, seed=1), INF))
    bad(f, "logits-all-neginf", ValueError, "logits", logits=torch.full((3,), -INF, dtype=F64))
    tensor_rows(f, "means", rank=lambda t: t[0], shape=lambda t: t[:0], others=("x",))
    tensor_rows(f, "scale", shape=lambda t: t[:, :1], nan=True, inf=True, neg=True, zero=True, others=("x",))
    bad(f, "batch-mismatch", ValueError, "logits", x=_randn(2, 6, 2), logits=_randn(3, 3))
    choice_rows(f, "cov_type")
    choice_rows(f, "backend")
    bad(f, "precision-unknown", ValueError, "precision", precision="fp8")
bad(MIX_FULL, "scale-upper-triangular", ValueError, "scale", scale=torch.eye(2, dtype=F64).expand(3, 2, 2) + torch.triu(
    torch.ones(2, 2, dtype=F64), 1))
bad(MIX_FULL, "scale-zero-diagonal", ValueError, "scale", scale=torch.zeros(3, 2, 2, dtype=F64))
bad(MIX_STATS, "with_score-int", TypeError, "with_score", with_score=2)
bad(MIX_STATS, "with_resp-str", TypeError, "with_resp", with_resp="yes")

# -- GMS
tensor_rows(GMS_FIT, "mean", shape=lambda t: t[:, :2], others=("var", "third_moment"))
tensor_rows(GMS_FIT, "var", others=("mean",))
tensor_rows(GMS_FIT, "third_moment", others=("mean",))
number_rows(GMS_FIT, "weight", low=0.0, high=1.0)
choice_rows(GMS_FIT, "method")
int_rows(GMS_FIT, "iters", low=-1)
number_rows(GMS_FIT, "lr", low=0.0)
number_rows(GMS_FIT, "var_floor", low=-0.1, high=1.5)
int_rows(GMS_FIT, "n_el", low=0)
choice_rows(GMS_FIT, "backend")
tensor_rows(GMS_STEP, "x_t", others=("e1",))
for a in ("e1", "e2", "e3"):
    tensor_rows(GMS_STEP, a, shape=lambda t: t[:, :2], others=("x_t",))
bad(GMS_STEP, "coeffs-short", ValueError, "coeffs", coeffs=(1.0, 0.5))
bad(GMS_STEP, "coeffs-nan", ValueError, "coeffs", coeffs=(NAN, 0.5, 0.1, 0.1, 0.1))
bad(GMS_STEP, "coeffs-a_t-zero", ValueError, "coeffs", coeffs=(0.0, 0.5, 0.1, 0.1, 0.1))
choice_rows(GMS_STEP, "method")
number_rows(GMS_STEP, "weight", low=0.0, high=1.0)
int_rows(GMS_STEP, "offset", low=-1, high=1 << 32)
bad(GMS_STEP, "seed-float", TypeError, "seed", seed=1.5)
bad(GMS_STEP, "seed-str", TypeError, "seed", seed="1")
bad(GMS_STEP, "per_image-int", TypeError, "per_image", per_image=2)
bad(GMS_STEP, "return_params-str", TypeError, "return_params", return_params="yes")
number_rows(GMS_STEP, "var_clip", low=-1.0, inf=False)
bad(GMS_STEP, "generator-str", TypeError, "generator", seed=None, generator="cpu")
choice_rows(GMS_STEP, "backend")

# -- mixture_dispatch / nearest_center
tensor_rows(DISPATCH, "x0", rank=lambda t: t[:, 0], others=("centers",))
tensor_rows(DISPATCH, "centers", rank=lambda t: t[0], shape=lambda t: t[:, :2], others=("x0",))
bad(DISPATCH, "centers-empty", ValueError, "centers", centers=torch.zeros(0, 3, dtype=F64))
tensor_rows(DISPATCH, "eps", shape=lambda t: t[:, :2], others=("x0",))
for a in ("a", "sigma"):
    bad(DISPATCH, f"{a}-str", TypeError, a, **{a: "0.5"})
    bad(DISPATCH, f"{a}-bool", TypeError, a, **{a: True})
    bad(DISPATCH, f"{a}-shape", ValueError, a, **{a: torch.ones(3, dtype=F64)})
    bad(DISPATCH, f"{a}-int-tensor", TypeError, a, **{a: torch.ones(5, dtype=torch.int64)})
    bad(DISPATCH, f"{a}-meta", ValueError, a, **{a: torch.ones(5, dtype=F64, device=META)})
choice_rows(DISPATCH, "backend")
tensor_rows(NEAREST, "x0", rank=lambda t: t[:, 0], others=("centers",))
tensor_rows(NEAREST, "centers", shape=lambda t: t[:, :2], others=("x0",))
choice_rows(NEAREST, "backend")

# -- the SMD adapter
tensor_rows(LOWRANK, "r", rank=lambda t: t[0, 0], others=("u",))
tensor_rows(LOWRANK, "u", shape=lambda t: t[:, :, :2], others=("r",))
tensor_rows(LOWRANK, "s", shape=lambda t: t[:1], others=("r",))
choice_rows(LOWRANK, "backend")
_HN_SHAPES = {"h": lambda t: t[:, :, :2], "z": lambda t: t[:1], "w_in": lambda t: t[:, :3], "b_in": lambda t: t[:4],
              "p": lambda t: t[:, :, :4], "q": lambda t: t[:, :4], "s": lambda t: t[:1], "w_out": lambda t: t[:3],
              "b_out": lambda t: t[:3]}
for a, sh in _HN_SHAPES.items():
    tensor_rows(HYPERNET, a, shape=sh, others=("h", "z", "w_in", "p", "q"))
bad(HYPERNET, "h-rank", ValueError, "h", h=_randn(2))
bad(HYPERNET, "z-rank", ValueError, "z", z=_randn(2, 5, 3))
bad(HYPERNET, "p-rank", ValueError, "p", p=_randn(2, 25))
choice_rows(HYPERNET, "backend")

# -- mixture_suffstats
tensor_rows(SUFFSTATS, "x", rank=lambda t: t[0], shape=lambda t: t[:5], dtype=False, others=("resp",))
tensor_rows(SUFFSTATS, "resp", rank=lambda t: t[0], shape=lambda t: t[:5], dtype=False, others=("x",))
bad(SUFFSTATS, "batch-mismatch", ValueError, ("x", "resp"), x=_randn(2, 6, 2), resp=torch.ones(3, 6, 3, dtype=F64))
bad(SUFFSTATS, "full-int", TypeError, "full", full=2)
choice_rows(SUFFSTATS, "backend")

# -- gibbs_sweep
tensor_rows(GIBBS_SWEEP, "x", rank=lambda t: t[0], nan=True, inf=True, others=("logw",))
bad(GIBBS_SWEEP, "x-rank4", ValueError, "x", x=_randn(1, 3, 20, 2))
bad(GIBBS_SWEEP, "x-float16", TypeError, ("x", "logw"), x=_randn(20, 2).half())
bad(GIBBS_SWEEP, "x-chains", ValueError, "x", x=_randn(2, 20, 2))
bad(GIBBS_SWEEP, "x-dims", ValueError, ("x", "means"), x=_randn(20, 3))
tensor_rows(GIBBS_SWEEP, "logw", rank=lambda t: t[0], nan=True, others=("x",))
bad(GIBBS_SWEEP, "logw-posinf", ValueError, "logw", logw=_with(torch.zeros(3, 2, dtype=F64), INF))
bad(GIBBS_SWEEP, "logw-all-neginf", ValueError, "logw", logw=torch.tensor([[0.0, 0.0], [-INF, -INF], [0.0, 0.0]],
                                                                          dtype=F64))
tensor_rows(GIBBS_SWEEP, "means", shape=lambda t: t[:, :, :1], nan=True, others=("x",))
tensor_rows(GIBBS_SWEEP, "var", shape=lambda t: t[:2], nan=True, inf=True, neg=True, zero=True, others=("x",))
bad(GIBBS_SWEEP, "prior-tuple", TypeError, "prior", prior=(1.0, 0.01, 1.0, 1.0, None))
for a in ("alpha", "kappa0", "a0", "b0"):
    bad(GIBBS_SWEEP, f"prior-{a}-zero", ValueError, f"prior.{a}", prior=GibbsPrior(**{a: 0.0}))
    bad(GIBBS_SWEEP, f"prior-{a}-nan", ValueError, f"prior.{a}", prior=GibbsPrior(**{a: NAN}))
    bad(GIBBS_SWEEP, f"prior-{a}-str", TypeError, f"prior.{a}", prior=GibbsPrior(**{a: "1"}))
bad(GIBBS_SWEEP, "prior-m0-size", ValueError, "prior.m0", prior=GibbsPrior(m0=torch.zeros(3)))
bad(GIBBS_SWEEP, "prior-m0-nan", ValueError, "prior.m0", prior=GibbsPrior(m0=torch.tensor([0.0, NAN])))
bad(GIBBS_SWEEP, "prior-m0-str", TypeError, "prior.m0", prior=GibbsPrior(m0="0"))
int_rows(GIBBS_SWEEP, "seed", high=1 << 64)
int_rows(GIBBS_SWEEP, "step", low=-1, high=1 << 32)
int_rows(GIBBS_SWEEP, "chain0", low=-1, high=1 << 63)
choice_rows(GIBBS_SWEEP, "backend")

# -- MGDM
tensor_rows(MGDM_VI, "state", rank=lambda t: t[0], shape=lambda t: t[:5], others=("grad_v",))
bad(MGDM_VI, "state-noncontiguous", ValueError, "state", state=torch.zeros(6, 3, 2, dtype=F64).transpose(1, 2))
for a in ("grad_v", "eps", "m"):
    tensor_rows(MGDM_VI, a, shape=lambda t: t[:, :2], others=("state",))
tensor_rows(MGDM_VI, "inv_sigma2", shape=lambda t: t[:1], others=("state",))
bad(MGDM_VI, "inv_sigma2-negative", ValueError, "inv_sigma2", inv_sigma2=-_pos(2))
number_rows(MGDM_VI, "lr", low=0.0)
number_rows(MGDM_VI, "beta1", low=-0.1, high=1.0)
number_rows(MGDM_VI, "beta2", low=-0.1, high=1.0)
number_rows(MGDM_VI, "adam_eps", low=0.0)
int_rows(MGDM_VI, "step", low=0)
int_rows(MGDM_VI, "seed", high=1 << 64)
int_rows(MGDM_VI, "draw", low=-1, high=1 << 32)
choice_rows(MGDM_VI, "backend")
tensor_rows(MGDM_BRIDGE, "u", others=("w",))
tensor_rows(MGDM_BRIDGE, "w", shape=lambda t: t[:, :2], others=("u",))
number_rows(MGDM_BRIDGE, "cu")
number_rows(MGDM_BRIDGE, "cw")
number_rows(MGDM_BRIDGE, "std", low=-1.0)
int_rows(MGDM_BRIDGE, "seed", high=1 << 64)
int_rows(MGDM_BRIDGE, "draw", low=-1, high=1 << 32)
choice_rows(MGDM_BRIDGE, "backend")


# -- fitting: what EM and VB share
def _fit_rows(fn: Fn):
    tensor_rows(fn, "x", rank=lambda t: t[0], nan=True, inf=True, dtype=False, meta=False)
    bad(fn, "x-complex", TypeError, "x", x=_DATA().to(torch.complex128))
    bad(fn, "x-no-dims", ValueError, "x", x=torch.zeros(20, 0, dtype=F64))
    bad(fn, "x-meta-only", ValueError, "x", x=_meta(_DATA()))
    int_rows(fn, "n_components", low=0, high=21)
    choice_rows(fn, "cov_type")
    int_rows(fn, "max_iter", low=0)
    number_rows(fn, "tol", low=-1.0)
    number_rows(fn, "reg_covar", low=-1e-6)
    bad(fn, "init-unknown", ValueError, "init", init="bogus")
    bad(fn, "init-int", TypeError, "init", init=3)
    bad(fn, "init-resp-shape", ValueError, "init", init=torch.full((20, 3), 1 / 3, dtype=F64))
    bad(fn, "init-resp-nan", ValueError, "init", init=_with(torch.full((20, 2), 0.5, dtype=F64), NAN))
    bad(fn, "init-resp-negative", ValueError, "init", init=_with(torch.full((20, 2), 0.5, dtype=F64), -0.5))
    bad(fn, "init-resp-int", TypeError, "init", init=torch.ones(20, 2, dtype=torch.int64))
    bad(fn, "init-resp-meta", ValueError, ("init", "x"), init=torch.full((20, 2), 0.5, dtype=F64, device=META))
    bad(fn, "generator-str", TypeError, "generator", generator="cpu")
    choice_rows(fn, "backend")


for f in (FIT_EM, FIT_VB):
    _fit_rows(f)
for f in (FIT_EM_INIT, FIT_EM_FULL_INIT):  # the initial parameters, scikit-learn's weights_init / means_init / ...
    tensor_rows(f, "weights_init", shape=lambda t: t[:1], nan=True, neg=True, others=("x",), dtype=False)
    tensor_rows(f, "means_init", shape=lambda t: t[:, :1], nan=True, inf=True, others=("x",), dtype=False)
bad(FIT_EM_INIT, "weights_init-sum", ValueError, "weights_init", weights_init=torch.tensor([0.2, 0.3], dtype=F64))
bad(FIT_EM_INIT, "weights_init-rank", ValueError, "weights_init", weights_init=torch.full((2, 2), 0.5, dtype=F64))
tensor_rows(FIT_EM_INIT, "precisions_init", shape=lambda t: t[:, :1], nan=True, neg=True, zero=True, others=("x",),
            dtype=False)
tensor_rows(FIT_EM_FULL_INIT, "precisions_init", shape=lambda t: t[:, :1], nan=True, others=("x",), dtype=False)
bad(FIT_EM_FULL_INIT, "precisions_init-not-pd", ValueError, "precisions_init",
    precisions_init=-torch.eye(2, dtype=F64).expand(2, 2, 2))
bad(FIT_EM_FULL_INIT, "precisions_init-asymmetric", ValueError, "precisions_init",
    precisions_init=torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=F64).expand(2, 2, 2))
tensor_rows(FIT_EM_SPH_INIT, "precisions_init", shape=lambda t: t[:1], neg=True, others=("x",), dtype=False)
bad(FIT_EM, "init-mixture-K", ValueError, "init", init=GaussianMixture(torch.zeros(3, dtype=F64), _randn(3, 2),
                                                                       _pos(3, 2)))
bad(FIT_EM, "init-mixture-cov", ValueError, "init", init=GaussianMixture(torch.zeros(2, dtype=F64), _randn(2, 2),
                                                                         _pos(2), "spherical"))

bad(FIT_VB, "prior-type-unknown", ValueError, "weight_concentration_prior_type",
    weight_concentration_prior_type="dirichlet")
number_rows(FIT_VB, "weight_concentration_prior", low=0.0)
number_rows(FIT_VB, "mean_precision_prior", low=0.0)
number_rows(FIT_VB, "degrees_of_freedom_prior", low=0.5)  # must be > D - 1 = 1
tensor_rows(FIT_VB_PRIORS, "mean_prior", shape=lambda t: t[:1], nan=True, inf=True, others=("x",), dtype=False)
tensor_rows(FIT_VB_PRIORS, "covariance_prior", shape=lambda t: t[:1], nan=True, neg=True, zero=True, others=("x",),
            dtype=False)
tensor_rows(FIT_VB_FULL_PRIORS, "covariance_prior", shape=lambda t: t[:1], nan=True, others=("x",), dtype=False)
bad(FIT_VB_FULL_PRIORS, "covariance_prior-not-pd", ValueError, "covariance_prior", covariance_prior=-torch.eye(2, dtype=F64))
bad(FIT_VB_SPH, "covariance_prior-negative", ValueError, "covariance_prior", covariance_prior=torch.tensor(-1.0,
                                                                                                         dtype=F64))
bad(FIT_VB_SPH, "covariance_prior-shape", ValueError, "covariance_prior", covariance_prior=torch.ones(2, dtype=F64))
bad(FIT_VB, "init-mixture", TypeError, "init", init=GaussianMixture(torch.zeros(2, dtype=F64), _randn(2, 2),
                                                                    _pos(2, 2)))

# -- chunked / distributed fitting
for f in (FIT_EM_CHUNKED, FIT_VB_CHUNKED):
    bad(f, "chunks-empty", ValueError, "chunks", chunks=[])
    bad(f, "chunks-iterator", ValueError, "chunks", chunks=iter(_CHUNKS()))
    bad(f, "chunks-list-of-lists", TypeError, "chunks", chunks=[[[0.0, 1.0]], [[1.0, 2.0]]])
    bad(f, "chunks-int64", TypeError, "chunks", chunks=[torch.ones(10, 2, dtype=torch.int64)])
    bad(f, "chunks-rank", ValueError, "chunks", chunks=[_randn(10)])
    int_rows(f, "n_components", low=0)
    int_rows(f, "max_iter", low=0)
    number_rows(f, "tol", low=-1.0)
    number_rows(f, "reg_covar", low=-1.0)
    choice_rows(f, "cov_type")
    bad(f, "distributed-int", TypeError, "distributed", distributed=2)
    bad(f, "distributed-uninitialised", ValueError, "distributed", distributed=True)
bad(FIT_VB_CHUNKED, "prior-type-unknown", ValueError, "weight_concentration_prior_type",
    weight_concentration_prior_type="dirichlet")
number_rows(FIT_VB_CHUNKED, "degrees_of_freedom_prior", low=0.5)
number_rows(FIT_VB_CHUNKED, "mean_precision_prior", low=0.0)

# -- the fused EM pass
tensor_rows(EM_STATS, "x", rank=lambda t: t[0], shape=lambda t: t[:, :1], others=("logits", "means"))
tensor_rows(EM_STATS, "logits", shape=lambda t: t[:2], nan=True, others=("x",))
tensor_rows(EM_STATS, "means", rank=lambda t: t[0], shape=lambda t: t[:0], others=("x",))
tensor_rows(EM_STATS, "scale", shape=lambda t: t[:, :1], nan=True, inf=True, neg=True, zero=True, others=("x",))
choice_rows(EM_STATS, "cov_type")
choice_rows(EM_STATS, "backend")
bad(EM_STATS, "with_resp-int", TypeError, "with_resp", with_resp=2)
tensor_rows(EM_MSTEP, "nk", rank=lambda t: t[0], shape=lambda t: t[:2], nan=True, inf=True, others=("sx",))
tensor_rows(EM_MSTEP, "sx", rank=lambda t: t[0], shape=lambda t: t[:, :1], nan=True, others=("nk", "sxx"))
tensor_rows(EM_MSTEP, "sxx", rank=lambda t: t[0], shape=lambda t: t[:, :1], nan=True, inf=True, others=("nk",))
choice_rows(EM_MSTEP, "cov_type")
choice_rows(EM_MSTEP, "backend")
number_rows(EM_MSTEP, "reg_covar", low=-1.0)
bad(EM_MSTEP, "full-sxx-diag-shape", ValueError, "sxx", cov_type="full")

# -- Gibbs
tensor_rows(GIBBS, "x", rank=lambda t: t[0], nan=True, inf=True, dtype=False, meta=False)
bad(GIBBS, "x-rank4", ValueError, "x", x=_randn(1, 1, 20, 2))
bad(GIBBS, "x-meta-only", ValueError, "x", x=_meta(_DATA()))
bad(GIBBS, "distributed-int", TypeError, "distributed", distributed=2)
bad(GIBBS, "distributed-uninitialised", ValueError, "distributed", distributed=True)
int_rows(GIBBS, "n_components", low=0, high=21)
int_rows(GIBBS, "n_chains", low=0)
bad(GIBBS, "n_chains-data-sets", ValueError, ("x", "n_chains"), x=_randn(3, 20, 2), n_chains=4)
int_rows(GIBBS, "n_sweeps", low=-1)
int_rows(GIBBS, "burn_in", low=-1)
int_rows(GIBBS, "thin", low=0)
bad(GIBBS, "thin-negative", ValueError, "thin", thin=-1)
bad(GIBBS, "burn_in-all", ValueError, "burn_in", burn_in=2, keep_trace=True)
int_rows(GIBBS, "seed", high=1 << 64)
bad(GIBBS, "keep_trace-int", TypeError, "keep_trace", keep_trace=2)
choice_rows(GIBBS, "backend")
bad(GIBBS, "prior-tuple", TypeError, "prior", prior=(1.0, 0.01, 1.0, 1.0, None))
bad(GIBBS, "prior-alpha", ValueError, "prior.alpha", prior=GibbsPrior(alpha=0.0))
bad(GIBBS_C, "init-not-tuple", TypeError, "init", init=torch.zeros(3, 2))
bad(GIBBS_C, "init-length", ValueError, "init", init=(torch.zeros(3, 2), torch.zeros(3, 2, 2)))
_lw, _mu, _var = GIBBS_C.good()["init"]
for _label, _init, _name in [
    ("var-negative", (_lw, _mu, -_var), "var"), ("var-zero", (_lw, _mu, 0 * _var), "var"),
    ("var-nan", (_lw, _mu, _with(_var, NAN)), "var"), ("logw-nan", (_with(_lw, NAN), _mu, _var), "logw"),
    ("logw-all-neginf", (torch.full((3, 2), -INF, dtype=F64), _mu, _var), "logw"),
    ("means-nan", (_lw, _with(_mu, NAN), _var), "means"), ("means-shape", (_lw, _mu[:, :, :1], _var), "means"),
    ("var-shape", (_lw, _mu, _var[:2]), "var"), ("logw-shape", (_lw[:, :1], _mu, _var), "logw"),
    ("means-list", (_lw, _mu.tolist(), _var), "means"), ("var-int", (_lw, _mu, _var.long()), "var"),
    ("logw-meta", (_meta(_lw), _mu, _var), "logw"),
]:
    exc = TypeError if _label.endswith(("list", "int")) else ValueError
    bad(GIBBS_C, f"init-{_label}", exc, (f"init.{_name}", "init"), init=_init)

# -- k-means
tensor_rows(KMEANS, "x", rank=lambda t: t[0], nan=True, inf=True, dtype=False, meta=False)
bad(KMEANS, "x-meta-only", ValueError, "x", x=_meta(_DATA()))
int_rows(KMEANS, "k", low=0, high=21)
int_rows(KMEANS, "iters", low=0)
bad(KMEANS, "iters-negative", ValueError, "iters", iters=-1)
number_rows(KMEANS, "tol", low=-1.0)
int_rows(KMEANS, "seed", high=1 << 64)
choice_rows(KMEANS, "backend")
bad(KMEANS, "init-shape", ValueError, "init", init=_randn(3, 2))
bad(KMEANS, "init-nan", ValueError, "init", init=_with(_randn(2, 2), NAN))
bad(KMEANS, "init-list", TypeError, "init", init=[[0.0, 0.0], [1.0, 1.0]])
bad(KMEANS, "init-meta", ValueError, ("init", "x"), init=_meta(_randn(2, 2)))
tensor_rows(KPP, "x", rank=lambda t: t[0], nan=True, inf=True, dtype=False, meta=False)
bad(KPP, "x-meta-only", ValueError, "x", x=_meta(_DATA()))
int_rows(KPP, "n_components", low=0, high=21)
int_rows(KPP, "n_local_trials", low=0)
bad(KPP, "generator-str", TypeError, "generator", generator="cpu")

# -- samplers
for f in (SAMPLE, SAMPLE_DDIM):
    bad(f, "model-not-callable", TypeError, "model", model=3)
    bad(f, "schedule-str", TypeError, "schedule", schedule="linear")
    bad(f, "shape-str", TypeError, "shape", shape="4, 2")
    bad(f, "shape-empty", ValueError, "shape", shape=())
    bad(f, "shape-zero", ValueError, "shape", shape=(0, 2))
    bad(f, "shape-negative", ValueError, "shape", shape=(4, -2))
    int_rows(f, "K", low=0, high=101)
    bad(f, "generator-str", TypeError, "generator", generator="cpu")
    bad(f, "x_T-shape", ValueError, "x_T", x_T=torch.zeros(4, 3))
    bad(f, "x_T-list", TypeError, "x_T", x_T=[[0.0, 0.0]] * 4)
    bad(f, "x_T-int", TypeError, "x_T", x_T=torch.zeros(4, 2, dtype=torch.int64))
    number_rows(f, "eta", low=-0.1, high=1.5)
    number_rows(f, "clip_x0", low=0.0)
    number_rows(f, "last_var_max", low=-1.0)
    choice_rows(f, "spacing", bogus="cubic")
    bad(f, "dtype-int", TypeError, "dtype", dtype=torch.int64)
    bad(f, "dtype-str", TypeError, "dtype", dtype="float32")
    bad(f, "device-bogus", ValueError, "device", device="nonsense")
    bad(f, "progress-int", TypeError, "progress", progress=2)
    bad(f, "return_trajectory-str", TypeError, "return_trajectory", return_trajectory="yes")
    bad(f, "noise-not-callable", TypeError, "noise", noise=3)
choice_rows(SAMPLE, "method", bogus="heun")
bad(SAMPLE, "method-euler-discrete", ValueError, ("method", "schedule"), method="euler_maruyama")
bad(SAMPLE_ADPM, "gamma-length", ValueError, "gamma", gamma=torch.full((2,), 0.5))
bad(SAMPLE_ADPM, "gamma-nan", ValueError, "gamma", gamma=torch.tensor([0.5, NAN, 0.5]))
bad(SAMPLE_ADPM, "gamma-missing", ValueError, ("x0_ref", "gamma"), gamma=None)
bad(SAMPLE_ADPM, "x0_ref-shape", ValueError, "x0_ref", gamma=None, x0_ref=torch.zeros(8, 3))
bad(SAMPLE_ADPM, "x0_ref-list", TypeError, "x0_ref", gamma=None, x0_ref=[[0.0, 0.0]])
bad(DDPM, "variance-unknown", ValueError, "variance", variance="mid")
number_rows(DDIM, "eta", low=-0.1, high=1.5)
bad(EST_GAMMA, "x0-list", TypeError, "x0", x0=[[0.0, 0.0]])
bad(EST_GAMMA, "times-out-of-range", ValueError, "times", times=torch.tensor([500.0]))
bad(EST_GAMMA, "times-nan", ValueError, "times", times=torch.tensor([NAN]))
int_rows(EST_GAMMA, "batch_size", low=0)
int_rows(COUNTER_NOISE, "seed", high=1 << 64)
int_rows(COUNTER_NOISE, "tag", low=-1, high=1 << 32)
int_rows(COUNTER_NOISE, "offset", low=-1, high=1 << 32)

# -- GMS sampler helpers (gmmkernels/diffusion/methods/gms.py)
bad(GMS_SAMPLE, "model-not-callable", TypeError, "model", model=3)
bad(GMS_SAMPLE, "schedule-str", TypeError, "schedule", schedule="linear")
bad(GMS_SAMPLE, "K-zero", ValueError, "K", K=0)
bad(GMS_SAMPLE, "K-above", ValueError, "K", K=101)
bad(GMS_SAMPLE, "fit-unknown", ValueError, "fit", fit="newton")
bad(GMS_SAMPLE, "shape-zero", ValueError, "shape", shape=(0, 2))
bad(GMS_SAMPLE, "x_T-shape", ValueError, "x_T", x_T=torch.zeros(4, 3))
bad(GMS_SAMPLE, "last_var_max-negative", ValueError, "last_var_max", last_var_max=-1.0)
bad(GMS_SAMPLE, "weight-above", ValueError, "weight", weight=1.5)
bad(GMS_SAMPLE, "per_image-int", TypeError, "per_image", per_image=2)
bad(ABLATION, "variant-unknown", ValueError, "variant", variant="bogus")
bad(ABLATION, "K-zero", ValueError, "K", K=0)
bad(RUN_SAMPLER, "name-unknown", ValueError, "name", name="bogus")
bad(RUN_SAMPLER, "batch_size-zero", ValueError, "batch_size", batch_size=0)

# -- training
int_rows(TRAIN_CONFIG, "steps", low=-1)
int_rows(TRAIN_CONFIG, "batch_size", low=0)
number_rows(TRAIN_CONFIG, "lr", low=0.0)
number_rows(TRAIN_CONFIG, "weight_decay", low=-0.1)
choice_rows(TRAIN_CONFIG, "optimizer", bogus="sgd")
number_rows(TRAIN_CONFIG, "beta1", low=-0.1, high=1.0)
number_rows(TRAIN_CONFIG, "beta2", low=-0.1, high=1.0)
int_rows(TRAIN_CONFIG, "warmup", low=-1)
number_rows(TRAIN_CONFIG, "ema_decay", low=-0.1, high=1.0)
number_rows(TRAIN_CONFIG, "grad_clip", low=-1.0)
bad(TRAIN_CONFIG, "head_weights-key", ValueError, "head_weights", head_weights={"eps4": 1.0})
bad(TRAIN_CONFIG, "head_weights-nan", ValueError, "head_weights", head_weights={"eps2": NAN})
bad(TRAIN_CONFIG, "head_weights-negative", ValueError, "head_weights", head_weights={"eps2": -1.0})
bad(TRAIN_CONFIG, "head_weights-list", TypeError, "head_weights", head_weights=[1.0])
bad(TRAIN_CONFIG, "conditional-str", TypeError, "conditional", conditional="yes")
bad(TRAIN_CONFIG, "progress-int", TypeError, "progress", progress=2)
int_rows(TRAIN_CONFIG, "seed", low=-(1 << 63) - 1, high=1 << 64)
for _a in ("log_every", "eval_every", "ckpt_every"):
    int_rows(TRAIN_CONFIG, _a, low=-1)
bad(TRAINER, "model-not-module", TypeError, "model", model=lambda x, t: x)
bad(TRAINER, "schedule-str", TypeError, "schedule", schedule="linear")
bad(TRAINER, "config-dict", TypeError, "config", config={"steps": 1})
bad(TRAINER, "data-list", TypeError, "data", data=[[0.0, 0.0]])
bad(TRAINER, "data-int", TypeError, "data", data=torch.zeros(10, 2, dtype=torch.int64))
bad(TRAINER, "data-rank", ValueError, "data", data=_randn(10))
bad(TRAINER, "data-empty", ValueError, "data", data=torch.zeros(0, 2))
bad(TRAINER, "data-nan", ValueError, "data", data=_with(_randn(10, 2), NAN))
bad(TRAINER, "data-meta", ValueError, "data", data=_meta(_randn(10, 2)))
bad(TRAINER, "labels-shape", ValueError, "labels", labels=torch.zeros(9, dtype=torch.int64))
bad(TRAINER, "labels-float", TypeError, "labels", labels=torch.zeros(10))
bad(TRAINER, "labels-list", TypeError, "labels", labels=[0] * 10)
bad(TRAINER, "device-bogus", ValueError, "device", device="nonsense")


# ----------------------------------------------------------------------------------------------------------
# the tests


def _names_in(msg: str, names: Tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", msg) for n in names)


@pytest.mark.parametrize("fn, replace, exc, names", CASES)
def test_bad_input_is_refused_clearly(fn: Fn, replace, exc, names):
    kw = {**fn.good(), **replace}
    with pytest.raises((ValueError, TypeError)) as info:
        fn.call(**kw)
    msg = str(info.value)
    assert type(info.value) is exc, f"{type(info.value).__name__} instead of {exc.__name__}: {msg}"
    assert msg.startswith(f"{fn.name}:"), msg
    assert _names_in(msg, names), f"the message names none of {names}: {msg}"
    assert "\n" not in msg, msg


@pytest.mark.parametrize("fn", ALL_FNS, ids=lambda f: f.name)
def test_good_arguments_run(fn: Fn):
    fn.call(**fn.good())


def test_the_table_covers_every_public_function():
    public = set(G.__all__) - {"GaussianMixture", "available_adapter_backends", "available_backends",
                               "available_gms_backends", "build_info", "set_validation"}
    public = {n for n in public if callable(getattr(G, n)) and not isinstance(getattr(G, n), type)}
    covered = {c.values[0].name for c in CASES}
    assert public <= covered, sorted(public - covered)
    assert {"sample", "ddpm", "ddim", "estimate_gamma", "counter_noise", "gms_sample", "ablation_sample",
            "run_sampler", "TrainConfig", "Trainer"} <= covered


# ----------------------------------------------------------------------------------------------------------
# degenerate but legal: a result, not an error (scikit-learn fits these too)


def _degenerate(dtype):
    pair = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=dtype)
    return {
        "constant": (torch.ones(50, 2, dtype=dtype), 2),
        "duplicated": (pair.repeat(25, 1), 2),
        "fewer-distinct-than-K": (pair.repeat(3, 1), 4),
        "K=N": (_randn(5, 2, dtype=dtype), 5),
        "constant-tiny-spread": (1.0 + 1e-30 * _randn(50, 2, dtype=dtype), 3),
    }


DEGENERATE = [pytest.param(dt, name, id=f"{str(dt)[6:]}-{name}") for dt in (F32, F64) for name in _degenerate(F64)]


def _distinct(x):
    return torch.unique(x, dim=0)


@pytest.mark.parametrize("dtype, case", DEGENERATE)
def test_kmeans_plusplus_on_degenerate_data(dtype, case):
    x, K = _degenerate(dtype)[case]
    idx = G.kmeans_plusplus(x, K, _g())
    assert idx.shape == (K,) and int(idx.min()) >= 0 and int(idx.max()) < x.shape[0]
    # as many distinct seeds as there are distinct points (up to K): a duplicate only when no new point is left
    assert len(_distinct(x[idx])) == min(K, len(_distinct(x)))
    if case == "K=N":
        assert sorted(idx.tolist()) == list(range(K))


@pytest.mark.parametrize("dtype, case", DEGENERATE)
def test_kmeans_on_degenerate_data(dtype, case):
    x, K = _degenerate(dtype)[case]
    km = G.kmeans(x, K)
    assert km.centers.shape == (K, 2) and torch.isfinite(km.centers).all()
    # every point sits on its center when there are no more distinct points than centers
    assert km.inertia <= 1e-12 and torch.allclose(km.centers[km.assignment], x)


@pytest.mark.parametrize("cov_type", ["diag", "spherical", "full"])
@pytest.mark.parametrize("dtype, case", DEGENERATE)
@pytest.mark.parametrize("fit", [G.fit_em, G.fit_vb], ids=["fit_em", "fit_vb"])
def test_fits_on_degenerate_data(fit, dtype, case, cov_type):
    x, K = _degenerate(dtype)[case]
    if fit is G.fit_vb and cov_type == "full" and case == "fewer-distinct-than-K":
        # two distinct points: the data covariance, VB's default covariance prior, is singular, and it is the whole
        # Wishart scale of the components k-means leaves empty, so no Cholesky factor exists: a clear error (not
        # yet a result, which scikit-learn's BayesianGaussianMixture does return on these data)
        with pytest.raises(ValueError, match="fit_vb: fitting failed because some components have ill-defined"):
            fit(x, K, cov_type, generator=_g())
        return
    r = fit(x, K, cov_type, generator=_g())
    mix = r.mixture
    w = mix.weights
    assert torch.isfinite(w).all() and torch.isfinite(mix.means).all() and torch.isfinite(mix.scale).all()
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(mix.log_prob(x)).all()
    if fit is G.fit_em and case != "K=N":
        # every point lies on a component that holds it (VB shrinks the means towards the prior mean instead)
        heavy = mix.means[w > 1e-3]
        assert torch.cdist(x.double(), heavy.double()).min(1).values.max() < 1e-3


@pytest.mark.parametrize("dtype, case", DEGENERATE)
def test_gibbs_on_degenerate_data(dtype, case):
    x, K = _degenerate(dtype)[case]
    if not _backend.has_kernel("gibbs_sweep", "CPU"):
        pytest.skip("native gibbs_sweep not built")
    r = G.gibbs(x, K, n_chains=2, n_sweeps=3, seed=1)
    assert r.means.shape == (2, K, 2) and torch.isfinite(r.means).all() and (r.var > 0).all()
    assert r.z.shape == (2, x.shape[0]) and int(r.z.min()) >= 0 and int(r.z.max()) < K


@pytest.mark.parametrize("dtype", [F32, F64])
def test_ops_on_degenerate_inputs(dtype):
    x = torch.ones(6, 2, dtype=dtype)
    centers = torch.ones(3, 2, dtype=dtype)  # every center the same: ties go to the lowest index
    assert G.nearest_center(x, centers).tolist() == [0] * 6
    nk, sx, sxx = G.mixture_suffstats(x, torch.zeros(6, 3, dtype=dtype))  # no point in any component
    assert nk.abs().sum() == 0 and sx.abs().sum() == 0 and sxx.abs().sum() == 0
    lp = G.mixture_log_prob(x, torch.zeros(3, dtype=dtype), centers, torch.ones(3, 2, dtype=dtype))
    assert torch.allclose(lp, torch.full((6,), -math.log(2 * math.pi), dtype=dtype))
