"""The MGDM experiments (``gmmkernels reproduce mgdm``, the MGDM section of ``gmmkernels demo``): MGDM vs DPS
(:mod:`gmmkernels.diffusion.methods.mgdm`) at equal network calls, each tuned with the same budget on held-out data.

(a) The exact gmm_25 toy (the posterior is known): both samplers get a grid of six values of their step (MGDM: a
multiplier of the Gauss_VI learning rates; DPS: gamma) chosen on two validation problems; then three test problems x
four sampler seeds, with the sweep over the number R of Gibbs sweeps. Metric: sliced W1 to exact-posterior samples,
beside its floor (two independent exact samples).

(b) Held-out digits, half-image inpainting and denoising, with three priors (UNet, three training seeds): the
same tuning on a validation split, then per-image PSNR, SSIM, the distance of the digits classifier's features (an
LPIPS analogue) and whether the classifier reads the true digit, paired per image, on the test split. The Frechet
distance of a hundred images cannot rank methods (random subsets of real digits spread by tens); it is reported
with that floor and not used in a verdict.

DPS's step is named ``gamma`` as in its Algorithm 1 and the MGDM code ((gamma / ||r||) grad ||r||^2), which is
twice the step on grad ||r|| (``zeta`` of :func:`dps`).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from ..methods.mgdm import CallCounter, Inpainting, LinearObservation, MGDMConfig, dps, dps_zeta, mgdm
from ._plots import MISSING, forest_figure, pyplot
from ._report import Report, default_workers, merge_plan, paired_table, run_jobs


# ----------------------------------------------------------------------------------------------
# the exact toy (docs/methods.md (MGDM)): gmm_25(dim) prior, linear A with d_y = 1


def toy_acp(T: int = 1000) -> Tensor:
    """abar = cumprod(linspace(0.9999, 0.98, T)) clipped to [1e-10, 1] (the official toy schedule)."""
    return torch.cumprod(torch.linspace(0.9999, 0.98, T, dtype=torch.float64), 0).clamp(1e-10, 1.0)


def toy_problem(dim: int, d_y: int = 1, sigma_y: float = 0.1, seed: int = 0):
    """(prior GaussianMixture, LinearObservation with y, exact posterior GaussianMixture) for gmm_25(dim)."""
    from ... import GaussianMixture
    from ..data import gmm25

    prior = gmm25(dim, seed=seed)
    g = torch.Generator().manual_seed(1000 + seed)
    A = torch.randn(d_y, dim, generator=g, dtype=torch.float64)
    x_true = prior.sample(1, generator=g)
    obs = LinearObservation(A, None, sigma_y)
    obs.y = obs.observe(x_true, generator=g)  # [1, d_y]
    # per component (covariance I): posterior N(S (mu_k + A^T y / s^2), S), S = (I + A^T A / s^2)^-1;
    # weight ∝ w_k N(y; A mu_k, s^2 I + A A^T)
    s2 = sigma_y**2
    eye = torch.eye(dim, dtype=torch.float64)
    S = torch.linalg.inv(eye + A.T @ A / s2)
    mu = prior.means
    post_mu = (mu + (A.T @ obs.y[0] / s2)) @ S.T
    Cy = s2 * torch.eye(d_y, dtype=torch.float64) + A @ A.T
    r = obs.y[0] - mu @ A.T  # [25, d_y]
    ll = -0.5 * (r @ torch.linalg.inv(Cy) * r).sum(-1)
    logits = torch.log_softmax(prior.logits, -1) + ll
    post = GaussianMixture(logits, post_mu, torch.linalg.cholesky(S).expand(25, dim, dim).contiguous(), "full")
    return prior, obs, post


def exact_eps_net(prior, acp: Tensor, dtype=torch.float64):
    """eps(x, t) = -sqrt(1 - abar_t) grad log p_t(x) for the mixture prior (the ideal network)."""
    acp = torch.as_tensor(acp, dtype=torch.float64)
    mix = prior.to(dtype) if hasattr(prior, "to") else prior

    def eps_net(x: Tensor, t: int) -> Tensor:
        a = float(acp[t])
        return mix.eps(x.to(dtype), math.sqrt(a), math.sqrt(1 - a)).to(x.dtype)

    return eps_net


def _sw(x: Tensor, y: Tensor) -> float:
    from ..metrics import sliced_wasserstein

    return sliced_wasserstein(x.double(), y.double(), n_proj=100, p=1, seed=0)


TOY_K_QUICK = 30
IMAGE_PIXEL_STD = 0.5  # per-pixel std of natural images in [-1, 1], the scale the official learning rates were set for


def toy_vi_scale(prior) -> float:
    """vi_scale for a toy prior: its per-coordinate std over the image scale (gmm_25: sqrt(128 + 1) / 0.5 = 22.7).

    Adam moves each parameter by about lr per step whatever the gradient's size, so the image learning rates
    (0.01 / 0.03, data in [-1, 1]) barely move the variational means of gmm_25 data (modes 8 apart, std 11.4 per
    coordinate). Running Gauss_VI in units of this scale transfers them (see ``_gauss_vi`` in
    :mod:`gmmkernels.diffusion.methods.mgdm`)."""
    w = torch.softmax(prior.logits.double(), -1)
    mu = prior.means.double()
    m = (w[:, None] * mu).sum(0)
    var = (w[:, None] * (mu - m) ** 2).sum(0).mean() + float((prior.scale.double() ** 2).mean())
    return float(var.sqrt()) / IMAGE_PIXEL_STD


def toy_config(prior, K: int = 100, R: int = 1, **kw) -> MGDMConfig:
    """The MGDM settings used on the toy: the paper's per-dataset context block (``settings='ffhq'``: G = 20 for the
    last 30 outer steps, else 5), the image learning rates, 'mix' index sampling, and Gauss_VI at the toy's scale."""
    return MGDMConfig(K=K, R=R, settings=kw.pop("settings", "ffhq"), vi_scale=kw.pop("vi_scale", toy_vi_scale(prior)), **kw)


_TOY_CASES: Dict[tuple, dict] = {}


def _toy_case(dim: int, n: int, seed: int) -> dict:
    """Problem ``seed`` of gmm_25(dim): prior, observation (batched to n), exact posterior and two independent
    n-samples of it (the reference and the floor's second sample); cached per process."""
    key = (dim, n, seed)
    if key not in _TOY_CASES:
        prior, obs, post = toy_problem(dim, seed=seed)
        acp = toy_acp()
        _TOY_CASES[key] = {
            "prior": prior, "post": post, "acp": acp, "net": exact_eps_net(prior, acp),
            "obs": LinearObservation(obs.A, obs.y.expand(n, -1), obs.sigma_y),
            "ref": post.sample(n, generator=torch.Generator().manual_seed(7 + seed)),
            "ref2": post.sample(n, generator=torch.Generator().manual_seed(8 + seed)),
        }
    return _TOY_CASES[key]


def toy_mgdm(dim: int, n: int, seed: int, *, R: int = 1, K: int = 100, sampler_seed: int = 0, lr_mult: float = 1.0,
             settings: str = "ffhq", vi_scale: Optional[float] = None, fused: Optional[bool] = None,
             time_index: str = "fixed") -> dict:
    """MGDM (:func:`toy_config`) on toy problem ``seed`` with ``sampler_seed``: sliced W1 to the exact posterior,
    network evaluations (a VJP counts two) and seconds."""
    c = _toy_case(dim, n, seed)
    cfg = toy_config(c["prior"], K=K, R=R, time_index=time_index, settings=settings, lr_mult=lr_mult,
                     vi_scale=toy_vi_scale(c["prior"]) if vi_scale is None else vi_scale)
    cnt = CallCounter()
    t0 = time.perf_counter()
    x = mgdm(c["net"], c["acp"], c["obs"].log_pot, (n, dim), cfg, fused=fused, seed=sampler_seed, dtype=torch.float64,
             counter=cnt)
    return {"sw": _sw(x, c["ref"]), "calls": cnt.total, "seconds": time.perf_counter() - t0, "vi_scale": cfg.vi_scale}


def toy_dps(dim: int, n: int, seed: int, *, steps: int, gamma: float, sampler_seed: int = 0,
            time_index: str = "fixed") -> dict:
    """DPS with step ``gamma`` (Algorithm 1's) and ``steps`` steps on toy problem ``seed``: sliced W1, calls."""
    c = _toy_case(dim, n, seed)
    cnt = CallCounter()
    t0 = time.perf_counter()
    x = dps(c["net"], c["acp"], c["obs"], (n, dim), steps=steps, gamma=gamma, seed=sampler_seed, dtype=torch.float64,
            counter=cnt, time_index=time_index)
    return {"sw": _sw(x, c["ref"]), "calls": cnt.total, "seconds": time.perf_counter() - t0}


def dps_steps_for(calls: int, T: int = 1000) -> int:
    """DPS steps with the network evaluations of ``calls`` (one VJP = 2 per step), capped at T - 1: DPS's grid
    cannot repeat times (a longer grid only adds pure guidance steps, which measured worse)."""
    return min(max(1, calls // 2), T - 1)


def run_toy(dim: int, n: int = 500, seed: int = 0, R: int = 1, K: int = 100, dps_steps: Optional[int] = None,
            zeta: float = 1.0, fused: Optional[bool] = None, time_index: str = "fixed", with_dps: bool = True,
            dps_zetas: tuple = (), settings: str = "ffhq", vi_scale: Optional[float] = None, *,
            sampler_seed: Optional[int] = None, gamma: Optional[float] = None, lr_mult: float = 1.0) -> dict:
    """MGDM and DPS on the exact toy; sliced Wasserstein (100 directions) to exact-posterior samples.

    ``seed`` picks the problem, ``sampler_seed`` (default: ``seed``) the samplers' randomness (both start from the same
    x_T). DPS gets the same number of network evaluations as MGDM (:func:`dps_steps_for`) unless ``dps_steps`` is
    given, with step ``gamma`` (Algorithm 1's; default: ``zeta`` / 2, ``zeta`` being the step on grad ||r||), and once
    more for each zeta in ``dps_zetas`` (``sw_dps_best``: the best of them, chosen on the exact posterior).
    ``vi_scale=None``: :func:`toy_vi_scale`."""
    ss = seed if sampler_seed is None else sampler_seed
    c = _toy_case(dim, n, seed)
    m = toy_mgdm(dim, n, seed, R=R, K=K, sampler_seed=ss, lr_mult=lr_mult, settings=settings, vi_scale=vi_scale,
                 fused=fused, time_index=time_index)
    out = {"dim": dim, "n": n, "seed": seed, "sampler_seed": ss, "R": R, "K": K, "settings": settings,
           "vi_scale": m["vi_scale"], "lr_mult": lr_mult, "sw_exact_vs_exact": _sw(c["ref"], c["ref2"]),
           "mgdm_s": m["seconds"], "mgdm_calls": m["calls"], "sw_mgdm": m["sw"]}
    if with_dps:
        g = zeta / 2.0 if gamma is None else gamma
        steps = dps_steps or dps_steps_for(m["calls"], c["acp"].shape[0])
        d = toy_dps(dim, n, seed, steps=steps, gamma=g, sampler_seed=ss, time_index=time_index)
        out.update(dps_s=d["seconds"], dps_calls=d["calls"], dps_steps=steps, dps_gamma=g, dps_zeta=dps_zeta(g),
                   sw_dps=d["sw"])
        if dps_zetas:
            sws = {str(z): (d["sw"] if z == dps_zeta(g) else
                            toy_dps(dim, n, seed, steps=steps, gamma=z / 2.0, sampler_seed=ss)["sw"]) for z in dps_zetas}
            best = min(sws, key=sws.get)
            out.update(sw_dps_by_zeta=sws, sw_dps_best=sws[best], dps_best_zeta=float(best))
    out["sw_prior_vs_exact"] = _sw(c["prior"].sample(n, generator=torch.Generator().manual_seed(9)), c["ref"])
    return out


# ----------------------------------------------------------------------------------------------
# (a) the toy: tuning on validation problems, then the R sweep on test problems x sampler seeds

# Six values each, by factors of 2; the optimum of a four-value grid (0.5 .. 4, 0.125 .. 1) sat at its edge.
TOY_LR_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # MGDM: multipliers of the Gauss_VI learning rates
TOY_GAMMA_GRID = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0)  # DPS: gamma (zeta = 2 gamma: 0.125 .. 4)


def _toy_plan(quick: bool) -> dict:
    if quick:
        return {"dims": [10], "Rs": [1, 2], "problems": [0], "sampler_seeds": [0, 1], "val_problems": [100],
                "n": 150, "K": TOY_K_QUICK, "lr_grid": [1.0, 2.0], "gamma_grid": [0.25, 0.5]}
    return {"dims": [10, 100], "Rs": [1, 2, 4, 6], "problems": [0, 1, 2], "sampler_seeds": [0, 1, 2, 3],
            "val_problems": [100, 101], "n": 500, "K": 100, "lr_grid": list(TOY_LR_GRID), "gamma_grid": list(TOY_GAMMA_GRID)}


def _toy_job(job) -> dict:
    """("tune", dim, problem, method, value, plan) -> sliced W1 of one tuning run; ("test", dim, problem, sampler
    seed, plan, chosen) -> every arm on one (problem, sampler seed) unit."""
    from .mixddpm import single_thread

    with single_thread("cpu"):
        if job[0] == "tune":
            _, dim, prob, method, v, P = job
            if method == "mgdm":
                return toy_mgdm(dim, P["n"], prob, K=P["K"], sampler_seed=0, lr_mult=v)
            c = _toy_case(dim, P["n"], prob)
            calls = _mgdm_calls(toy_config(c["prior"], K=P["K"]), c["acp"], 0)
            return toy_dps(dim, P["n"], prob, steps=dps_steps_for(calls), gamma=v, sampler_seed=0)
        _, dim, prob, ss, P, ch = job
        c = _toy_case(dim, P["n"], prob)
        rec = {"dim": dim, "problem": prob, "sampler_seed": ss, "sw_exact_vs_exact": _sw(c["ref"], c["ref2"]),
               "sw_prior_vs_exact": _sw(c["prior"].sample(P["n"], generator=torch.Generator().manual_seed(9)), c["ref"])}
        for R in P["Rs"]:
            m = toy_mgdm(dim, P["n"], prob, R=R, K=P["K"], sampler_seed=ss, lr_mult=ch["lr_mult"])
            rec[f"mgdm_R{R}"], rec[f"mgdm_R{R}_calls"], rec[f"mgdm_R{R}_s"] = m["sw"], m["calls"], m["seconds"]
        steps = dps_steps_for(rec["mgdm_R1_calls"])
        for name, g in (("dps_tuned", ch["gamma"]), ("dps_gamma0.5", 0.5)):
            d = toy_dps(dim, P["n"], prob, steps=steps, gamma=g, sampler_seed=ss)
            rec[name], rec[name + "_calls"] = d["sw"], d["calls"]
        rec["mgdm_official_unscaled"] = toy_mgdm(dim, P["n"], prob, K=P["K"], sampler_seed=ss, settings="default",
                                                 vi_scale=1.0)["sw"]
        return rec


def _toy_experiment(quick: bool, workers: int, log, override: Optional[dict] = None) -> dict:
    from ..metrics import paired_stats

    P = merge_plan(_toy_plan(quick), override, "plan toy")
    tune_jobs = [("tune", dim, prob, meth, v, P) for dim in P["dims"] for prob in P["val_problems"]
                 for meth, grid in (("mgdm", P["lr_grid"]), ("dps", P["gamma_grid"])) for v in grid]
    tuned = run_jobs(_toy_job, tune_jobs, workers)
    grid, chosen = [], {}
    for dim in P["dims"]:
        chosen[dim] = {}
        for meth, grid_v, key in (("mgdm", P["lr_grid"], "lr_mult"), ("dps", P["gamma_grid"], "gamma")):
            scores = {}
            for v in grid_v:
                sw = [r["sw"] for j, r in zip(tune_jobs, tuned) if j[1] == dim and j[3] == meth and j[4] == v]
                scores[v] = sum(sw) / len(sw)
                grid.append({"dim": dim, "method": meth, key: v, "val_sw": scores[v]})
            chosen[dim][key] = min(scores, key=scores.get)
        log(f"  toy dim {dim}: tuned on validation problems {P['val_problems']}: MGDM lr x {chosen[dim]['lr_mult']}, "
            f"DPS gamma {chosen[dim]['gamma']} ("
            + ", ".join(f"{g['method']} {g.get('lr_mult', g.get('gamma'))}: {g['val_sw']:.3f}" for g in grid if g["dim"] == dim) + ")")
    test_jobs = [("test", dim, prob, ss, P, chosen[dim]) for dim in P["dims"] for prob in P["problems"]
                 for ss in P["sampler_seeds"]]

    def done(job, r):
        log(f"  toy dim={r['dim']} problem={r['problem']} sampler seed={r['sampler_seed']}: "
            + ", ".join(f"R={R} {r[f'mgdm_R{R}']:.3f}" for R in P["Rs"])
            + f"; DPS tuned {r['dps_tuned']:.3f}, DPS gamma 0.5 {r['dps_gamma0.5']:.3f}; MGDM unscaled "
            f"{r['mgdm_official_unscaled']:.3f}; exact vs exact {r['sw_exact_vs_exact']:.3f}")

    rows = run_jobs(_toy_job, test_jobs, workers, done)
    comps = []
    for dim in P["dims"]:
        rs = [r for r in rows if r["dim"] == dim]
        floor = sum(r["sw_exact_vs_exact"] for r in rs) / len(rs)
        pairs = [(f"MGDM R={R}", f"mgdm_R{R}", "MGDM R=1", "mgdm_R1") for R in P["Rs"][1:]]
        pairs += [("MGDM R=1", "mgdm_R1", "DPS (tuned gamma)", "dps_tuned"),
                  (f"MGDM R={P['Rs'][-1]}", f"mgdm_R{P['Rs'][-1]}", "DPS (tuned gamma)", "dps_tuned"),
                  ("DPS (tuned gamma)", "dps_tuned", "DPS (gamma 0.5)", "dps_gamma0.5"),
                  ("MGDM R=1", "mgdm_R1", "MGDM, image settings unscaled", "mgdm_official_unscaled")]
        for a, ka, b, kb in pairs:
            p = paired_stats([r[ka] for r in rs], [r[kb] for r in rs])
            comps.append({"comparison": f"{a} vs {b}", "a": a, "b": b, "where": f"dim {dim}", "dim": dim,
                          "metric": "sliced_w1", **p, "floor": floor})
    means = {}
    for dim in P["dims"]:
        rs = [r for r in rows if r["dim"] == dim]
        keys = [f"mgdm_R{R}" for R in P["Rs"]] + ["dps_tuned", "dps_gamma0.5", "mgdm_official_unscaled",
                                                 "sw_exact_vs_exact", "sw_prior_vs_exact"]
        means[dim] = {k: {"mean": sum(r[k] for r in rs) / len(rs),
                          "se": float(torch.tensor([r[k] for r in rs]).std() / len(rs) ** 0.5) if len(rs) > 1 else 0.0}
                      for k in keys}
        means[dim]["calls"] = {f"R{R}": sum(r[f"mgdm_R{R}_calls"] for r in rs) / len(rs) for R in P["Rs"]}
        means[dim]["calls"]["dps"] = rs[0]["dps_tuned_calls"]
    return {"plan": P, "tuning": grid, "chosen": chosen, "rows": rows, "means": means, "comparisons": comps,
            "notes": "MGDM: toy_config (settings 'ffhq': G = 20 for the last 30 outer steps else 5; image lrs 0.01/0.03 "
                     "times the tuned multiplier; 'mix' index sampling; Gauss_VI at vi_scale = toy std / 0.5 ~ 23); "
                     "time_index 'fixed'. DPS: Algorithm 1 with the tuned gamma and as many network evaluations as MGDM "
                     "at R = 1 (a VJP counts as 2), capped at 999 steps. Both tuned on the validation problems with a "
                     "grid of the same size. Units: test problem x sampler seed (the sampler seed gives both methods the same "
                     "x_T). Sliced W1, 100 directions, to n exact-posterior samples; floor: two exact samples."}


# ----------------------------------------------------------------------------------------------
# (b) digits: three priors, tuning on a validation split, per-image paired metrics on the test split

DIGITS_TEST = 297  # the last 297 digits are held out of the prior's training set and used as ground truth
VAL_IMAGES = slice(0, 64)  # of the held-out digits: the validation split (tuning)
TEST_IMAGES = slice(97, 225)  # the test split
# Six values each; the four-value grids (1 .. 8, 0.25 .. 2) had their optima at the edge (MGDM x 8, DPS 0.25).
DIGITS_LR_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
DIGITS_GAMMA_GRID = (0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0)
TASKS = ("inpaint_right_half", "denoise_sigma0.5")


def _digits_plan(quick: bool) -> dict:
    if quick:
        return {"prior_seeds": [0], "prior_size": "tiny", "prior_steps": 300, "K": 20, "val": (0, 8), "test": (97, 113),
                "lr_grid": [1.0, 4.0], "gamma_grid": [0.5, 1.0]}
    return {"prior_seeds": [0, 1, 2], "prior_size": "small", "prior_steps": 3000, "K": 100,
            "val": (VAL_IMAGES.start, VAL_IMAGES.stop), "test": (TEST_IMAGES.start, TEST_IMAGES.stop),
            "lr_grid": list(DIGITS_LR_GRID), "gamma_grid": list(DIGITS_GAMMA_GRID)}


def _prior_path(out: Path, P: dict, seed: int) -> Path:
    return Path(out) / f"mgdm_digits_prior_{P['prior_size']}_{P['prior_steps']}_seed{seed}.pt"


def _prior_job(job) -> dict:
    """("prior", out, plan, seed): train (or find cached) the digits eps-network of training seed ``seed``."""
    from ..data import load_digits
    from ..models import default_model
    from ..schedules import make_schedule
    from ..trainer import Trainer, TrainConfig
    from .mixddpm import single_thread

    _, out, P, seed = job
    path = _prior_path(out, P, seed)
    if path.exists():
        return {"seed": seed, "path": str(path), "cached": True}
    with single_thread("cpu"):
        x, _ = load_digits(8)
        sched = make_schedule("linear", 1000)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = default_model((1, 8, 8), sched.t_max, size=P["prior_size"])
        steps = P["prior_steps"]
        cfg = TrainConfig(steps=steps, batch_size=128, lr=2e-3, ema_decay=0.995, warmup=min(100, steps), seed=seed,
                          log_every=steps, progress=False)
        t0 = time.perf_counter()
        tr = Trainer(model, sched, x[:-DIGITS_TEST], cfg, meta={"dataset": "digits[:-297]", "for": "mgdm", "seed": seed})
        tr.train()
        tr.save(path)
    return {"seed": seed, "path": str(path), "cached": False, "seconds": time.perf_counter() - t0,
            "final_loss": tr.history[-1]["loss"] if tr.history else None}


def _digits_eps_net(model, sched):
    """(eps_net, acp) in the mgdm contract for a package model: its times are schedule indices 1..T with abar_all[t],
    so model time index k (acp[k] = abar_all[k + 1]) is schedule time k + 1."""
    acp = sched.abar_all[1:].clone()

    def eps_net(x: Tensor, t: int) -> Tensor:
        return model(x.float(), torch.full((x.shape[0],), float(t + 1), device=x.device)).to(x.dtype)

    return eps_net, acp


def _task(name: str, x_true: Tensor, seed: int) -> Inpainting:
    """The observation of task ``name`` for the images x_true, its noise drawn from ``seed`` (the same y for every
    method)."""
    mask = torch.ones(1, 1, 8, 8)
    if name == "inpaint_right_half":
        mask[..., 4:] = 0.0
        obs = Inpainting(mask, None, 0.05)
    else:
        obs = Inpainting(mask, None, 0.5)
    obs.y = obs.observe(x_true, generator=torch.Generator().manual_seed(seed))
    return obs


def _mgdm_calls(cfg: MGDMConfig, acp: Tensor, seed: int) -> int:
    """MGDM's network evaluations for ``cfg`` and ``seed`` (independent of the network and the data): a run with a zero
    network on one tiny input."""
    c = CallCounter()
    mgdm(lambda x, t: torch.zeros_like(x), acp, lambda x: -(x * x).flatten(1).sum(1), (1, 1, 2, 2), cfg, seed=seed,
         counter=c)
    return c.total


def per_image_metrics(x: Tensor, x_true: Tensor, labels: Tensor, obs) -> Dict[str, List[float]]:
    """PSNR, SSIM, the L2 distance of the digits classifier's features (an LPIPS analogue), whether the classifier
    reads the true digit, and the observation residual, one value per image."""
    from ..digits_classifier import digits_features, load_digits_classifier, to_classifier_input
    from ..metrics import psnr, ssim

    net = load_digits_classifier()
    x = x.clamp(-1, 1)
    fx, ft = digits_features(net, x), digits_features(net, x_true)
    with torch.no_grad():
        ok = net(to_classifier_input(x)).argmax(1) == labels
    return {"psnr": psnr(x, x_true).tolist(), "ssim": ssim(x, x_true).tolist(), "feat_dist": (fx - ft).norm(dim=1).tolist(),
            "class_ok": ok.float().tolist(), "residual": obs.residual_norm(x).tolist()}


def _digits_job(job) -> dict:
    """("recon", task, method, value, prior path, (start, stop) of the held-out digits, sampler seed, K): one method's
    reconstructions of a split, per-image metrics, the split's FD and the first 12 reconstructions."""
    from ..data import load_digits
    from ..metrics import digits_fd
    from ..trainer import load_checkpoint
    from .mixddpm import single_thread

    _, task, method, v, path, (a, b), sseed, K = job
    with single_thread("cpu"):
        model, sched, _ = load_checkpoint(path)
        model = model.eval().requires_grad_(False)
        eps_net, acp = _digits_eps_net(model, sched)
        data, labels = load_digits(8)
        x_true, lab = data[-DIGITS_TEST:][a:b], labels[-DIGITS_TEST:][a:b]
        obs = _task(task, x_true, 123 + TASKS.index(task))
        cfg = MGDMConfig(K=K, lr_mult=v if method == "mgdm" else 1.0)
        c = CallCounter()
        t0 = time.perf_counter()
        if method == "mgdm":
            x = mgdm(eps_net, acp, obs.log_pot, x_true.shape, cfg, seed=sseed, counter=c)
        elif method == "dps":
            x = dps(eps_net, acp, obs, x_true.shape, steps=dps_steps_for(_mgdm_calls(cfg, acp, sseed), acp.shape[0]),
                    gamma=v, seed=sseed, counter=c)
        else:  # the observation itself
            x = obs.y
        secs = time.perf_counter() - t0
        return {"task": task, "method": method, "value": v, "prior": path, "split": [a, b], "sampler_seed": sseed,
                "calls": c.total, "seconds": secs, **per_image_metrics(x, x_true, lab, obs),
                "fd": digits_fd(x.clamp(-1, 1), data), "first": x[:12].clamp(-1, 1)}


def _mean(v):
    return float(sum(v) / len(v))


def _digits_experiment(out: Path, quick: bool, workers: int, log, override: Optional[dict] = None) -> dict:
    from ..data import load_digits
    from ..metrics import digits_fd, digits_fd_floor, paired_stats

    P = merge_plan(_digits_plan(quick), override, "plan digits")
    priors = run_jobs(_prior_job, [("prior", str(out), P, s) for s in P["prior_seeds"]], workers)
    for p in priors:
        log(f"  digits prior seed {p['seed']}: " + ("cached" if p["cached"] else
                                                    f"{P['prior_size']} UNet, {P['prior_steps']} steps in {p['seconds']:.0f} s"))
    paths = {p["seed"]: p["path"] for p in priors}
    p0 = paths[P["prior_seeds"][0]]
    # tuning: the same grid size for both methods, on the validation split, prior of the first seed
    tune_jobs = [("recon", task, meth, v, p0, P["val"], 0, P["K"]) for task in TASKS
                 for meth, grid in (("mgdm", P["lr_grid"]), ("dps", P["gamma_grid"])) for v in grid]
    tuned = run_jobs(_digits_job, tune_jobs, workers)
    grid, chosen = [], {}
    for task in TASKS:
        chosen[task] = {}
        for meth in ("mgdm", "dps"):
            rs = [r for r in tuned if r["task"] == task and r["method"] == meth]
            for r in rs:
                grid.append({"task": task, "method": meth, "value": r["value"], "val_psnr": _mean(r["psnr"]),
                             "val_ssim": _mean(r["ssim"]), "val_feat_dist": _mean(r["feat_dist"]),
                             "val_residual": _mean(r["residual"])})
            chosen[task][meth] = max(rs, key=lambda r: _mean(r["psnr"]))["value"]
        log(f"  digits {task}: tuned on {P['val'][1] - P['val'][0]} validation digits (PSNR): MGDM lr x "
            f"{chosen[task]['mgdm']}, DPS gamma {chosen[task]['dps']} ("
            + ", ".join(f"{g['method']} {g['value']}: {g['val_psnr']:.2f} dB, residual {g['val_residual']:.2f}"
                        for g in grid if g["task"] == task) + ")")
    test_jobs = [("recon", task, meth, chosen[task][meth], paths[s], P["test"], 100 + s, P["K"])
                 for s in P["prior_seeds"] for task in TASKS for meth in ("mgdm", "dps")]
    test_jobs += [("recon", task, "observation", 0.0, p0, P["test"], 0, P["K"]) for task in TASKS]
    results = run_jobs(_digits_job, test_jobs, workers)
    seed_of = {v: k for k, v in paths.items()}
    rows = []
    for r in results:
        r["prior_seed"] = seed_of[r["prior"]]
        rows.append(r)
        log(f"  digits {r['task']:20s} {r['method']:11s} prior {r['prior_seed']}: PSNR {_mean(r['psnr']):.2f}  SSIM "
            f"{_mean(r['ssim']):.3f}  feature distance {_mean(r['feat_dist']):.2f}  class {_mean(r['class_ok']):.3f}  "
            f"residual {_mean(r['residual']):.2f}  FD {r['fd']:.1f}  ({r['calls']} calls, {r['seconds']:.0f} s)")
    data, _ = load_digits(8)
    truth = data[-DIGITS_TEST:][P["test"][0]:P["test"][1]]
    n = truth.shape[0]
    fd_truth = digits_fd(truth, data)
    fd_floor = digits_fd_floor(n, reps=3 if quick else 8)
    log(f"  FD of the {n} true test digits: {fd_truth:.1f}; of random {n}-subsets of real digits: {fd_floor['mean']:.1f} "
        f"± {fd_floor['std']:.1f} (so FD differences below ~{2 * fd_floor['std']:.0f} cannot rank)")
    comps, per_prior = [], []
    keys = {"psnr": True, "ssim": True, "feat_dist": False, "class_ok": True}
    for task in TASKS:
        by = {(r["method"], r["prior_seed"]): r for r in rows if r["task"] == task and r["method"] != "observation"}
        for k, hb in keys.items():
            # per image, averaged over the priors; and each prior's mean difference (sign agreement across priors)
            diffs = [[a - b for a, b in zip(by[("mgdm", s)][k], by[("dps", s)][k])] for s in P["prior_seeds"]]
            ma = [_mean([by[("mgdm", s)][k][i] for s in P["prior_seeds"]]) for i in range(n)]
            mb = [_mean([by[("dps", s)][k][i] for s in P["prior_seeds"]]) for i in range(n)]
            p = paired_stats(ma, mb, hb)
            prior_diffs = [_mean(d) for d in diffs]
            agree = sum((d > 0) == hb for d in prior_diffs if d != 0)
            comps.append({"comparison": "MGDM vs DPS (both tuned)", "a": "MGDM", "b": "DPS", "where": task,
                          "metric": k, **p, "prior_diffs": prior_diffs, "priors_mgdm_better": agree,
                          "floor": f"images: se {p['se']:.2g}"})
        for s in P["prior_seeds"]:
            per_prior.append({"task": task, "prior_seed": s, **{f"{m}_{k}": _mean(by[(m, s)][k]) for m in ("mgdm", "dps")
                                                                for k in list(keys) + ["residual"]},
                              "mgdm_fd": by[("mgdm", s)]["fd"], "dps_fd": by[("dps", s)]["fd"]})
    return {"plan": P, "priors": priors, "tuning": grid, "chosen": chosen, "comparisons": comps, "per_prior": per_prior,
            "rows": [{k: v for k, v in r.items() if k != "first"} for r in rows], "fd_truth": fd_truth,
            "fd_floor": fd_floor, "n_test": n,
            "first": {f"{r['task']}|{r['method']}|{r['prior_seed']}": r["first"] for r in rows},
            "truth_first": truth[:12], "observed_first": {t: _task(t, truth, 123 + TASKS.index(t)).y[:12] for t in TASKS},
            "notes": "MGDM: the official image defaults (K = 100, R = 1, M = 20, G 3/20, 'mix') with its Gauss_VI learning "
                     "rates times the tuned multiplier; DPS: Algorithm 1 with the tuned gamma, as many network evaluations "
                     "as MGDM (at most 999 steps). Both tuned on the validation split with grids of the same size (PSNR), "
                     "prior of seed 0; test: per-image metrics averaged over the three priors, paired per image; "
                     "priors_mgdm_better counts the priors whose mean difference favours MGDM."}


# ----------------------------------------------------------------------------------------------
# figures


def _save_grid(path: Path, rows: list, labels: list, title: str):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    ncol = rows[0].shape[0]
    fig, axs = plt.subplots(len(rows), ncol, figsize=(0.8 * ncol + 1.6, 0.85 * len(rows) + 0.5), squeeze=False)
    for i, (imgs, lab) in enumerate(zip(rows, labels)):
        for j in range(ncol):
            ax = axs[i][j]
            ax.imshow(imgs[j, 0].detach().cpu().clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axs[i][0].set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _plot_toy(toy: dict, path: Path):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    P = toy["plan"]
    fig, axs = plt.subplots(1, len(P["dims"]), figsize=(5.2 * len(P["dims"]), 3.9), squeeze=False)
    for ax, dim in zip(axs[0], P["dims"]):
        m = toy["means"][dim]
        Rs = P["Rs"]
        ax.errorbar(Rs, [m[f"mgdm_R{R}"]["mean"] for R in Rs], yerr=[m[f"mgdm_R{R}"]["se"] for R in Rs], fmt="o-",
                    capsize=3, label="MGDM (tuned lr)")
        d = m["dps_tuned"]
        ax.axhline(d["mean"], color="C1", ls="--", label=f"DPS, tuned gamma {toy['chosen'][dim]['gamma']}")
        ax.axhspan(d["mean"] - d["se"], d["mean"] + d["se"], color="C1", alpha=0.15)
        ax.axhline(m["sw_exact_vs_exact"]["mean"], color="k", ls=":", label="floor: exact vs exact")
        ax.set_xlabel("R (Gibbs sweeps per step)")
        ax.set_ylabel("sliced W1 to the exact posterior (lower is better)")
        ax.set_title(f"gmm_25, dim {dim}, d_y = 1: mean ± s.e. over {len(P['problems'])} problems x "
                     f"{len(P['sampler_seeds'])} sampler seeds", fontsize=8)
        ax.set_xticks(Rs)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_tuning(toy: dict, dig: dict, path: Path):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    fig, axs = plt.subplots(2, 2, figsize=(10, 7))
    for ax, meth, key, lab in ((axs[0][0], "mgdm", "lr_mult", "MGDM: Gauss_VI learning-rate multiplier"),
                               (axs[0][1], "dps", "gamma", "DPS: gamma")):
        for i, dim in enumerate(toy["plan"]["dims"]):
            g = [r for r in toy["tuning"] if r["dim"] == dim and r["method"] == meth]
            ax.plot([r[key] for r in g], [r["val_sw"] for r in g], "o-", color=f"C{i}", label=f"toy dim {dim}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(lab)
        ax.set_ylabel("validation sliced W1 (lower is better)")
        ax.set_title(f"toy tuning, {meth.upper()}", fontsize=9)
        ax.legend(fontsize=7)
    for ax, meth, lab in ((axs[1][0], "mgdm", "MGDM: Gauss_VI learning-rate multiplier"), (axs[1][1], "dps", "DPS: gamma")):
        for i, task in enumerate(TASKS):
            g = [r for r in dig["tuning"] if r["task"] == task and r["method"] == meth]
            ax.plot([r["value"] for r in g], [r["val_psnr"] for r in g], "o-", color=f"C{i + 2}", label=task)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(lab)
        ax.set_ylabel("validation PSNR, dB (higher is better)")
        ax.set_title(f"digits tuning, {meth.upper()} (prior seed 0)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_paired(toy: dict, dig: dict, path: Path):
    panels = [(f"toy, dim {dim}: sliced W1, paired over problems x sampler seeds", "sliced W1", "left",
               [dict(r, label=r["comparison"]) for r in toy["comparisons"] if r["dim"] == dim]) for dim in toy["plan"]["dims"]]
    for k, better, lab in (("psnr", "right", "PSNR (dB)"), ("feat_dist", "left", "feature distance")):
        panels.append((f"digits, MGDM - DPS (both tuned): {lab}, paired per test image", lab, better,
                       [dict(r, label=r["where"]) for r in dig["comparisons"] if r["metric"] == k]))
    return forest_figure(panels, path, base=0.0, per_panel=1.4, per_row=0.35)


# ----------------------------------------------------------------------------------------------
# reproduce / demo


def _verdicts(toy: dict, dig: dict) -> List[dict]:
    out = []

    def add(claim, r, extra=""):
        state = "reproduced" if r["a_wins"] else "reversed" if r["excludes_zero"] else "no paired difference"
        out.append({"claim": claim, "state": state, "where": r["where"], "metric": r["metric"], "diff": r["diff"],
                    "se": r["se"], "ci95": r["ci95"], "a_better": f"{r['a_better']}/{r['n']}", "extra": extra})

    for r in toy["comparisons"]:
        if r["b"] == "MGDM R=1" or (r["b"].startswith("DPS (tuned") and r["a"].startswith("MGDM")):
            add(f"{r['a']} beats {r['b']} on the exact toy", r)
    for r in dig["comparisons"]:
        if r["metric"] in ("psnr", "feat_dist"):
            agree = f"priors favouring MGDM: {r['priors_mgdm_better']}/{len(r['prior_diffs'])}"
            add("MGDM beats DPS on digits (both tuned)", r, agree)
    return out


def reproduce_mgdm(out: Path, quick: bool = False, device="cpu", plan: Optional[dict] = None) -> dict:
    """MGDM vs DPS: (a) the exact gmm_25 toy at dim 10 and 100, both samplers tuned on validation problems, the R sweep
    on test problems x sampler seeds; (b) digits inpainting / denoising with three priors, both tuned on a validation
    split, per-image paired metrics on the test split. Writes results.json, results.md, console.log and the figures
    under ``out``. quick: dim 10 only, R in (1, 2), one problem, two sampler seeds, a tiny prior, 8 validation and 16
    test digits, two grid values per method. Everything runs on CPU worker processes (``device`` is not used).
    ``plan``: {"toy": {...}, "digits": {...}}, entries that replace those of :func:`_toy_plan` / :func:`_digits_plan`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report()
    log = rep.log
    workers = 1 if quick else default_workers()
    plan = merge_plan({"toy": {}, "digits": {}}, plan)
    merge_plan(_toy_plan(quick), plan["toy"], "plan toy")  # unknown entries fail before any work
    merge_plan(_digits_plan(quick), plan["digits"], "plan digits")
    label = " (quick)" if quick else ""
    changed = [f"{part}.{k}" for part in ("toy", "digits") for k in sorted(plan[part] or {})]
    label += f" (reduced plan: {', '.join(changed)} changed)" if changed else ""
    log(f"mgdm reproduce{label}: {workers} worker process(es)")
    log("mgdm: (a) exact toy (gmm_25, d_y = 1, sigma_y = 0.1)")
    toy = _toy_experiment(quick, workers, log, plan.get("toy"))
    log("\nToy paired comparisons\n" + paired_table(toy["comparisons"]))
    log("\nmgdm: (b) digits (8x8)")
    dig = _digits_experiment(out, quick, workers, log, plan.get("digits"))
    log("\nDigits, MGDM vs DPS (both tuned), paired per test image (values averaged over the priors)\n"
        + paired_table(dig["comparisons"]))
    verdicts = _verdicts(toy, dig)
    log("\nVerdicts (paired 95% interval):")
    for v in verdicts:
        log(f"  {v['where']} {v['metric']}: {v['claim']}: {v['state']} (diff {v['diff']:+.4g} ± {v['se']:.2g}, better on "
            f"{v['a_better']}{'; ' + v['extra'] if v['extra'] else ''})")
    figures = [
        {"path": _plot_toy(toy, out / "mgdm_toy.png"),
         "shows": "toy: MGDM's sliced W1 to the exact posterior against R, DPS (tuned) and the exact-vs-exact floor",
         "better": "lower"},
        {"path": _plot_tuning(toy, dig, out / "mgdm_tuning.png"),
         "shows": "the equal tuning budgets: validation score of each grid value, toy and digits", "better":
         "toy: lower sliced W1; digits: higher PSNR"},
        {"path": _plot_paired(toy, dig, out / "mgdm_paired.png"),
         "shows": "paired differences with 95% intervals: R vs R = 1 and MGDM vs DPS on the toy, MGDM vs DPS on digits",
         "better": "sliced W1 and feature distance: left of zero; PSNR: right of zero"},
    ]
    s0 = dig["plan"]["prior_seeds"][0]
    for task in TASKS:
        figures.append({"path": _save_grid(out / f"mgdm_digits_{task}.png",
                                           [dig["truth_first"], dig["observed_first"][task],
                                            dig["first"][f"{task}|mgdm|{s0}"], dig["first"][f"{task}|dps|{s0}"]],
                                           ["truth", "observed", f"MGDM (lr x {dig['chosen'][task]['mgdm']})",
                                            f"DPS (gamma {dig['chosen'][task]['dps']})"],
                                           f"{task}: 12 test digits, prior seed {s0}, both methods tuned"),
                        "shows": f"{task}: truth, observation and the reconstructions of both tuned methods",
                        "better": "rows closer to the truth row"})
    rt = rep.log_runtime("mgdm reproduce", workers)
    dig_json = {k: v for k, v in dig.items() if k not in ("first", "truth_first", "observed_first")}
    res = {"experiment": "mgdm", "quick": quick, "plan_changed": changed, "runtime": rt, "verdicts": verdicts,
           "toy": toy, "digits": dig_json,
           "figures": figures}
    res["toy"]["means"] = {str(k): v for k, v in toy["means"].items()}
    res["toy"]["chosen"] = {str(k): v for k, v in toy["chosen"].items()}
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    md = ["# MGDM reproduction" + label, "", "Plans: toy `" + json.dumps(toy["plan"]) + "`, digits `"
          + json.dumps(dig["plan"]) + "`", "", "## (a) Exact toy", "", toy["notes"], "",
          "Validation grid (sliced W1):", ""]
    md += [f"- dim {g['dim']} {g['method']} {g.get('lr_mult', g.get('gamma'))}: {g['val_sw']:.4f}" for g in toy["tuning"]]
    md += ["", "Means over test units (sliced W1 ± s.e.):", ""]
    for dim, m in res["toy"]["means"].items():
        md.append(f"- dim {dim}: " + ", ".join(f"{k} {v['mean']:.3f} ± {v['se']:.2g}" for k, v in m.items() if k != "calls")
                  + "; calls " + ", ".join(f"{k} {v:.0f}" for k, v in m["calls"].items()))
    md += ["", paired_table(toy["comparisons"]), "", "## (b) Digits", "", dig["notes"], "",
           f"FD of the {dig['n_test']} true test digits {dig['fd_truth']:.1f}; random {dig['n_test']}-subsets of real "
           f"digits {dig['fd_floor']['mean']:.1f} ± {dig['fd_floor']['std']:.1f}.", "", "Validation grid:", ""]
    md += [f"- {g['task']} {g['method']} {g['value']}: PSNR {g['val_psnr']:.2f}, SSIM {g['val_ssim']:.3f}, feature "
           f"distance {g['val_feat_dist']:.2f}, residual {g['val_residual']:.2f}" for g in dig["tuning"]]
    md += ["", "Per prior (test split means):", ""]
    md += ["- " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
           for r in dig["per_prior"]]
    md += ["", paired_table(dig["comparisons"]), "", "## Verdicts", ""]
    md += [f"- {v['where']} {v['metric']}: {v['claim']}: {v['state']} ({v['diff']:+.4g} ± {v['se']:.2g}, "
           f"{v['a_better']}{'; ' + v['extra'] if v['extra'] else ''})" for v in verdicts]
    (out / "results.md").write_text("\n".join(md) + "\n")
    rep.write(out / "console.log")
    return res


def demo_section(out: Path, quick: bool = True) -> dict:
    """A short MGDM section for the demo: the dim-10 toy, MGDM (toy_config) vs DPS at equal network calls over a few
    sampler seeds with the same x_T."""
    from ..metrics import format_paired_stats, paired_stats

    n, K = (150, TOY_K_QUICK) if quick else (400, 100)
    seeds = [0, 1] if quick else [0, 1, 2]
    rs = [run_toy(10, n=n, seed=0, sampler_seed=s, R=1, K=K, gamma=0.5) for s in seeds]
    p = paired_stats([r["sw_mgdm"] for r in rs], [r["sw_dps"] for r in rs])
    r0 = rs[0]
    summary = [f"gmm_25(10), one random linear measurement (sigma_y 0.1), {len(seeds)} sampler seeds (same x_T for both):",
               "sliced W1 to exact posterior samples, MGDM vs DPS (gamma 0.5, equal calls capped at 999 steps): "
               + format_paired_stats(p),
               f"floors: exact vs exact {r0['sw_exact_vs_exact']:.3f}, prior vs exact {r0['sw_prior_vs_exact']:.3f}; "
               f"network evaluations: MGDM {r0['mgdm_calls']}, DPS {r0['dps_calls']}"]
    Path(out).mkdir(parents=True, exist_ok=True)  # the summary lines are printed by the demo
    plt = pyplot()
    fig_path = MISSING
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(seeds, [r["sw_mgdm"] for r in rs], "o-", label="MGDM")
        ax.plot(seeds, [r["sw_dps"] for r in rs], "s--", label="DPS (gamma 0.5)")
        ax.axhline(r0["sw_exact_vs_exact"], color="k", ls=":", label="floor: exact vs exact")
        ax.set_xlabel("sampler seed (same x_T for both)")
        ax.set_ylabel("sliced W1 to exact posterior (lower is better)")
        ax.set_xticks(seeds)
        ax.set_title("MGDM vs DPS on gmm_25(10)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig_path = str(Path(out) / "mgdm_demo.png")
        fig.savefig(fig_path, dpi=110)
        plt.close(fig)
    res = {"runs": rs, "paired": p, "text": " ".join(summary), "summary": summary,
           "figures": [{"path": fig_path, "shows": "sliced W1 of MGDM and DPS per sampler seed on the dim-10 toy",
                        "better": "lower"}]}
    (Path(out) / "mgdm_demo.json").write_text(json.dumps(res, indent=2))
    return res
