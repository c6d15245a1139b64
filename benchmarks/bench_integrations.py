"""The front-ends of gmmkernels.integrations against the bare ops they wrap and against the libraries they imitate.

    python benchmarks/bench_integrations.py [--quick] [--device cpu|cuda] [--out DIR] [--reps N]
                                            [--only sklearn,distributions,diffusers]

Writes <out>/integrations__<device>__<UTC>.json (schema gmmkernels.bench/1); every row has ``frontend``, ``params``,
``provider`` and ``ms`` (p20 / p50 / p80 of repeated calls after a warm-up; the arms of one ``params`` are timed
in interleaved rounds, so that load from other work falls on all of them alike), and the front-end rows also
``overhead_vs_bare`` (front-end p50 / bare-op p50 at the same dtype and inputs). A front-end whose library is
missing gets one row with ``"error"``.

* sklearn: a whole ``fit`` (``max_iter`` EM iterations, ``tol=0`` so that every arm runs all of them, the same
  ``random_from_data`` initialisation from the same ``random_state``) of ``sklearn.mixture.GaussianMixture``
  (float64), of ``gmmkernels.integrations.sklearn.GaussianMixture`` on a float64 numpy array and on a float32
  tensor, and of the bare ``gmmkernels.fit_em`` on the same initial responsibilities (float64 and float32).
* distributions: ``log_prob`` of N points (forward, and forward + backward to every parameter) for
  ``MixtureOfGaussians`` (with and without ``validate_args``), the bare ``gmmkernels.mixture_log_prob`` and torch's
  ``MixtureSameFamily``.
* diffusers: one ``GMSScheduler.step`` against the bare ``gmmkernels.gms_step`` it calls, and
  ``DiffusersEpsModel(x, t)`` against the bare ``unet(x, t - 1).sample`` on a small randomly initialised UNet.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

import gmmkernels
from benchmarks import _harness as H

OP = "integrations"


def _time_arms(arms, device, reps):
    """{name: ms} for every ``arms[name]()``: one warm-up call each, then ``reps`` rounds calling every arm once per
    round, so that load from other work on the machine falls on all arms alike (the arms are paired by round)."""
    times = {k: [] for k in arms}
    for f in arms.values():
        f()
    H.sync(device)
    for _ in range(reps):
        for k, f in arms.items():
            t0 = time.perf_counter()
            f()
            H.sync(device)
            times[k].append(time.perf_counter() - t0)
    out = {}
    for k, ts in times.items():
        ts = sorted(ts)
        q = lambda f: 1e3 * ts[min(len(ts) - 1, int(f * len(ts)))]  # noqa: E731
        out[k] = {"p20": q(0.2), "p50": q(0.5), "p80": q(0.8), "n": len(ts)}
    return out


def _row(frontend, provider, params, dtype, ms, **extra):
    return {"op": OP, "frontend": frontend, "provider": provider, "dtype": dtype, "params": params, "ms": ms, **extra}


def _overheads(rows, bare_of):
    """``overhead_vs_bare`` on every row whose provider maps (bare_of) to a bare-op row with the same params."""
    ms = {(r["provider"], repr(r["params"])): r["ms"] for r in rows if r.get("ms")}
    for r in rows:
        key = (bare_of.get(r["provider"]), repr(r["params"]))
        if r.get("ms") and key in ms:
            r["overhead_vs_bare"] = r["ms"]["p50"] / ms[key]["p50"]
            r["overhead_vs_bare_p20"] = r["ms"]["p20"] / ms[key]["p20"]  # the less load-sensitive quantile


# ------------------------------------------------------------------------------------------------------------------
def bench_sklearn(device, quick, reps):
    from sklearn.mixture import GaussianMixture as SkGM

    from gmmkernels.integrations.sklearn import GaussianMixture as FusedGM

    iters = 10
    shapes = [(2000, 8, 4, "diag"), (2000, 8, 4, "full")] if quick else \
        [(2000, 8, 4, "diag"), (2000, 8, 4, "full"), (20000, 16, 8, "diag"), (20000, 16, 8, "full"),
         (100000, 16, 16, "diag")]
    rows = []
    for N, K, D, cov in shapes:
        g = torch.Generator().manual_seed(0)
        centers = 4 * torch.randn(K, D, generator=g, dtype=torch.float64)
        X = (centers[torch.randint(0, K, (N,), generator=g)] + torch.randn(N, D, generator=g, dtype=torch.float64))
        X64 = X.numpy()
        idx = np.random.RandomState(0).choice(N, size=K, replace=False)  # what random_from_data draws from seed 0
        resp = torch.zeros(1, N, K, dtype=torch.float64)
        resp[0, torch.from_numpy(idx), torch.arange(K)] = 1
        p = {"N": N, "K": K, "D": D, "cov": cov, "max_iter": iters}
        kw = dict(n_components=K, covariance_type=cov, max_iter=iters, tol=0.0, init_params="random_from_data",
                  random_state=0)
        arms, last = {}, {}

        def arm(provider, fn):
            def call():
                last[provider] = fn()
            arms[provider] = call

        if device == "cpu":
            arm("sklearn.mixture (numpy float64)", lambda: SkGM(**kw).fit(X64))
        arm("integrations.sklearn (numpy float64)", lambda: FusedGM(**kw, device=device).fit(X64))
        x32 = X.float().to(device)
        arm("integrations.sklearn (tensor float32)", lambda: FusedGM(**kw).fit(x32))
        for dt, xx in (("float64", X.to(device)), ("float32", x32)):
            r = resp.to(device, xx.dtype)
            arm(f"bare fit_em ({dt})", lambda xx=xx, r=r: gmmkernels.fit_em(xx[None], K, cov, max_iter=iters,
                                                                            tol=0.0, init=r))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never converges, on purpose
            ms = _time_arms(arms, device, reps)
        for provider, est in last.items():
            bare = provider.startswith("bare")
            rows.append(_row("sklearn", provider, p, "float32" if "float32" in provider else "float64", ms[provider],
                             n_iter=int(est.n_iter[0]) if bare else int(est.n_iter_),
                             lower_bound=float(est.lower_bound[0]) if bare else float(est.lower_bound_)))
        print("sklearn", p, [(r["provider"], round(r["ms"]["p50"], 1)) for r in rows if r["params"] == p], flush=True)
    _overheads(rows, {"integrations.sklearn (numpy float64)": "bare fit_em (float64)",
                      "integrations.sklearn (tensor float32)": "bare fit_em (float32)",
                      "sklearn.mixture (numpy float64)": "bare fit_em (float64)"})
    return rows


# ------------------------------------------------------------------------------------------------------------------
def _mixture_params(K, D, cov, device, dtype):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(K, generator=g)
    loc = 2 * torch.randn(K, D, generator=g)
    if cov == "full":
        A = torch.randn(K, D, D, generator=g) / D ** 0.5
        scale = torch.linalg.cholesky(A @ A.transpose(-1, -2) + 0.5 * torch.eye(D))
    else:
        scale = 0.5 + torch.rand(K, D, generator=g)
    return [t.to(device, dtype).requires_grad_() for t in (logits, loc, scale)]


def bench_distributions(device, quick, reps):
    from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal

    from gmmkernels.integrations.distributions import MixtureOfGaussians

    shapes = [(1024, 8, 4)] if quick else [(1024, 8, 4), (16384, 16, 16), (65536, 32, 16)]
    rows = []
    for N, K, D in shapes:
        for cov in ("diag", "full") if N * K * D * D <= 2 ** 26 else ("diag",):
            logits, loc, scale = _mixture_params(K, D, cov, device, torch.float32)
            x = torch.randn(N, D, generator=torch.Generator().manual_seed(2)).to(device)
            tril_kw = {"scale_tril": scale} if cov == "full" else {"scale": scale}
            arms = {
                "bare mixture_log_prob": lambda: gmmkernels.mixture_log_prob(x, logits, loc, scale, cov),
                "MixtureOfGaussians.log_prob": lambda: MixtureOfGaussians(
                    loc, logits=logits, cov_type=cov, validate_args=False, **tril_kw).log_prob(x),
                "MixtureOfGaussians.log_prob (validate_args)": lambda: MixtureOfGaussians(
                    loc, logits=logits, cov_type=cov, validate_args=True, **tril_kw).log_prob(x),
                "torch MixtureSameFamily.log_prob": lambda: MixtureSameFamily(
                    Categorical(logits=logits),
                    MultivariateNormal(loc, scale_tril=scale) if cov == "full" else Independent(Normal(loc, scale), 1),
                    validate_args=False).log_prob(x),
            }
            for mode in ("fwd", "fwd+bwd"):
                p = {"N": N, "K": K, "D": D, "cov": cov, "mode": mode}
                calls = {}
                for name, f in arms.items():
                    if mode == "fwd":
                        def call(f=f):
                            with torch.no_grad():
                                f()
                    else:
                        def call(f=f):
                            torch.autograd.grad(f().sum(), (logits, loc, scale))
                    calls[name] = call
                for name, ms in _time_arms(calls, device, reps).items():
                    rows.append(_row("distributions", name, p, "float32", ms))
                print("distributions", p, [(r["provider"], round(r["ms"]["p50"], 3)) for r in rows if r["params"] == p],
                      flush=True)
    bare = "bare mixture_log_prob"
    _overheads(rows, {"MixtureOfGaussians.log_prob": bare, "MixtureOfGaussians.log_prob (validate_args)": bare,
                      "torch MixtureSameFamily.log_prob": bare})
    return rows


# ------------------------------------------------------------------------------------------------------------------
def bench_diffusers(device, quick, reps):
    from diffusers import DDPMScheduler, UNet2DModel

    from gmmkernels.integrations.diffusers import DiffusersEpsModel, GMSScheduler

    rows = []
    shapes = [(8, 1, 8, 8)] if quick else [(8, 1, 8, 8), (64, 1, 8, 8), (16, 3, 32, 32)]
    for shape in shapes:
        B, C, S, _ = shape
        g = torch.Generator().manual_seed(3)
        x = torch.randn(shape, generator=g).to(device)
        e1, e2, e3 = (torch.randn(shape, generator=g).to(device) for _ in range(3))
        e2 = e2.abs() + 1.0
        for fit in ("closed", "adan"):
            sch = GMSScheduler(num_train_timesteps=1000, fit=fit)
            sch.set_timesteps(10)
            t = sch.timesteps[0]
            gen = torch.Generator(device).manual_seed(0)
            sch.step(torch.cat([e1, e2, e3], 1), t, x, generator=gen)  # draws the kernel seed once
            tt, ss = int(t) + 1, sch.previous_timestep(t) + 1
            a_t, sig_t = (float(v) for v in sch.schedule.alpha_sigma(tt))
            c = gmmkernels.GMSCoeffs(a_t, sig_t, *(float(v) for v in sch.schedule.posterior(tt, ss)))
            p = {"shape": list(shape), "fit": fit}
            out = torch.cat([e1, e2, e3], 1)

            def step():
                sch._step_index = 0  # the same step every call
                sch.step(out, t, x)

            cfg = sch.config
            ms = _time_arms({"GMSScheduler.step": step, "bare gms_step": lambda: gmmkernels.gms_step(
                x, e1, e2, e3, c, method=fit, weight=cfg.weight, per_image=cfg.per_image, seed=sch._seed, offset=0,
                iters=cfg.iters, lr=cfg.lr, var_floor=cfg.var_floor)}, device, reps)
            rows += [_row("diffusers", k, p, "float32", v) for k, v in ms.items()]
        torch.manual_seed(0)
        unet = UNet2DModel(sample_size=S, in_channels=C, out_channels=C, block_out_channels=(32, 64),
                           layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).to(device).eval()
        for ptype in ("epsilon", "v_prediction"):
            m = DiffusersEpsModel(unet, DDPMScheduler(num_train_timesteps=1000, prediction_type=ptype))
            tsched = torch.full((B,), 500.0, device=device)
            p = {"shape": list(shape), "prediction_type": ptype}
            with torch.no_grad():
                ms = _time_arms({"DiffusersEpsModel(x, t)": lambda: m(x, tsched),
                                 "bare unet(x, t - 1).sample": lambda: unet(x, (tsched - 1).long()).sample},
                                device, reps)
            rows += [_row("diffusers", k, p, "float32", v) for k, v in ms.items()]
        print("diffusers", shape, [(r["provider"], round(r["ms"]["p50"], 2)) for r in rows
                                   if r["params"]["shape"] == list(shape)], flush=True)
    _overheads(rows, {"GMSScheduler.step": "bare gms_step", "DiffusersEpsModel(x, t)": "bare unet(x, t - 1).sample"})
    return rows


FRONTENDS = {"sklearn": bench_sklearn, "distributions": bench_distributions, "diffusers": bench_diffusers}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--only", default=",".join(FRONTENDS), help="comma-separated front-ends")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed rounds (default: 3 for the sklearn fits and with --quick, else 10)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    for name in a.only.split(","):
        reps = a.reps or (3 if a.quick or name == "sklearn" else 10)
        try:
            rows += FRONTENDS[name](a.device, a.quick, reps)
        except ImportError as e:
            rows.append({"op": OP, "frontend": name, "provider": None, "params": {}, "ms": None,
                         "error": f"unavailable: {e}"})
            print(f"{name}: skipped ({e})", flush=True)
    meta = H.collect_meta(a.device, argv=["bench_integrations.py"] + list(argv if argv is not None else sys.argv[1:]))
    f = H.write_results(a.out, OP, a.device, rows, meta)
    print("wrote", f)
    return rows


if __name__ == "__main__":
    main()
