"""The GMS experiments (``gmmkernels reproduce gms``, the GMS section of ``gmmkernels demo``): DDPM, SN-DDPM and
the GMS samplers of :mod:`gmmkernels.diffusion.methods.gms` compared at equal NFE on toy mixtures with the exact
oracle heads (sliced W1, exact NLL) and on the 8x8 digits with trained backbones and heads (digits Frechet
distance), with the controls that tell which part of a GMS step does what; tables, verdict and plots.

How the comparisons are made (docs/methods.md (GMS)):

* Common random numbers: every arm run with one seed shares x_T, every step's normals and (GMS) the component
  choices (:func:`~gmmkernels.diffusion.methods.gms.run_sampler`), so a difference between two arms is the
  difference of their kernels, not of their noise. The control ``sn_fused - sn_ddpm`` (SN-DDPM's kernel computed by
  the fused step) must then be zero up to rounding.
* The contrasts (:data:`CONTRASTS`) split GMS into parts: the official Adan fit's change of mean and variance with
  the components merged (``gms_merged - sn_fused``), its mixture alone (``gms - gms_merged``), and the closed-form
  fit, which matches the first three moments where SN-DDPM matches two (``gms_closed - sn_ddpm``).
* Replicates: sampler seeds on the exact oracle; training seeds (backbone + heads) times sampler seeds on the
  digits, where the differences are averaged per training seed and the interval is taken over training seeds.
  A claim counts as reproduced when the 95% interval of the paired difference excludes zero.
* Noise floors: each metric between two independent samples of real data of the same size (several draws).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ... import GaussianMixture
from ..methods.gms import (SAMPLER_LABELS, fit_diagnostics, official_last_var, run_sampler, train_backbone,
                           train_gms_heads)
from ..metrics import format_paired, paired_contrast
from ..oracle import MixtureOracle
from ..schedules import Schedule, make_schedule
from ._parallel import cpu_seconds, default_workers, run_tasks, torch_threads
from ._plots import pyplot, save_figure


#: GMS paper, CIFAR10 linear schedule, FID vs K (docs/methods.md (GMS), via GMFlow's Table 5)
PAPER_CIFAR10_FID = {
    "K": [10, 25, 50, 100],
    "DDPM (small var)": [34.76, 16.18, 11.11, 8.38],
    "SN-DDPM": [16.33, 6.05, 4.19, 3.83],
    "GMS": [13.80, 5.48, 4.00, 3.46],
}

#: the arms of every experiment (all at equal NFE, on the same heads)
ARMS = ("ddpm", "sn_ddpm", "sn_fused", "gms", "gms_merged", "gms_closed")

#: (arm, baseline, what the paired difference arm - baseline isolates)
CONTRASTS = (
    ("sn_fused", "sn_ddpm", "control: the same Gaussian kernel through the fused step (must be 0)"),
    ("gms", "sn_ddpm", "the claim: GMS (official Adan fit) vs SN-DDPM"),
    ("gms_closed", "sn_ddpm", "GMS with the closed-form fit (third moment matched) vs SN-DDPM"),
    ("gms_merged", "sn_fused", "the Adan fit's shift of mean and variance, components merged"),
    ("gms", "gms_merged", "the Adan fit's mixture alone (its component choice)"),
    ("ddpm", "sn_ddpm", "context: DDPM's fixed variance vs SN-DDPM's learned one"),
)

QUICK_DROPS = ("quick: oracle n 4000 / 2000 (full 6000 / 3000), K 10, 25 (full 10, 25, 50), 3 oracle seeds "
               "(full 5); digits: 150 + 100 training steps (full 500 + 250; both a tiny UNet), 2 training seeds x 2 "
               "sampler seeds (full 3 x 2), n 200 (full 400), K 10 (full 10, 25), 2 floor draws (full 5)")


def _log(line: str) -> None:
    print(line, flush=True)


def _diag_summary(diag: List[Dict]) -> str:
    f = lambda k: sum(d[k] for d in diag) / len(diag)  # noqa: E731
    return (f"mean over the {len(diag)} GMM steps: separation |mu1-mu2|/sqrt(V) Adan {f('sep_adan'):.4f} vs closed "
            f"form {f('sep_closed'):.3f}; variance ratio v/V Adan {f('var_ratio_adan'):.3f} vs closed form "
            f"{f('var_ratio_closed'):.3f}")


def _mean_sd(vals: Sequence[float]) -> Dict:
    vals = [float(v) for v in vals]
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
    return {"mean": m, "sd": sd, "n_draws": len(vals)}


# ----------------------------------------------------------------------------------------------------------
# the exact oracle


def toy_mixture(name: str) -> GaussianMixture:
    """The toy laws of the oracle experiment, rescaled into [-1, 1] (the official moments clamp x0 there):
    'gmm1d' = the package's 1-D law (weights .3/.5/.2, means -1.5/0.2/1.6, stds .2/.3/.15) times 0.45;
    'gmm2d' = 8 Gaussians on a circle of radius 2, std 0.2, times 0.4."""
    from ..data import gmm1d, gmm2d

    if name == "gmm1d":
        m, c = gmm1d(), 0.45
        return GaussianMixture(m.logits, m.means * c, m.scale * c, m.cov_type)
    if name == "gmm2d":
        m, c = gmm2d(), 0.4
        return GaussianMixture(m.logits, m.means * c, m.scale * c, m.cov_type)
    raise ValueError(f"toy_mixture: argument 'name' must be 'gmm1d' or 'gmm2d', got {name!r}")


def _toy_metrics(x: Tensor, ref: Tensor, mix: GaussianMixture) -> Dict:
    from ..metrics import mixture_nll, sliced_wasserstein

    x = x.double()
    return {"sliced_w1": sliced_wasserstein(x, ref, n_proj=200), "nll": mixture_nll(x, mix),
            "frac_outside_unit": float((x.abs() > 1.0).any(1).double().mean())}


#: a difference smaller than this fraction of the metric's noise floor is below its resolution ("no difference")
RESOLUTION = 1e-3


def _contrasts(rows: List[Dict], Ks: Sequence[int], key: str, floor: float,
               units_key: Optional[str] = None) -> List[Dict]:
    """Every :data:`CONTRASTS` entry at every K where both arms ran: the paired difference of ``key`` (lower is
    better), pair i of one arm against pair i of the other (same random numbers), units from ``units_key``; the
    verdict needs the 95% interval to exclude 0 and the difference to exceed :data:`RESOLUTION` x ``floor``."""
    out = []
    for K in Ks:
        for arm, base, what in CONTRASTS:
            ra = _row(rows, arm, K)
            rb = _row(rows, base, K)
            if ra is None or rb is None:
                continue
            d = paired_contrast(ra[key + "_per_seed"], rb[key + "_per_seed"],
                                units=ra[units_key] if units_key else None, floor=floor, resolution=RESOLUTION)
            out.append({"arm": arm, "baseline": base, "K": K, "metric": key, "isolates": what,
                        "mean_arm": ra[key], "mean_baseline": rb[key], **d})
    return out


def _row(rows: List[Dict], sampler: str, K: int) -> Optional[Dict]:
    r = [r for r in rows if r["sampler"] == sampler and r["K"] == K]
    return r[0] if r else None


def oracle_experiment(name: str, Ks: Sequence[int], n: int, seeds: Sequence[int], samplers: Sequence[str] = ARMS,
                      schedule: Optional[Schedule] = None, log=_log, floor_draws: int = 8) -> Dict:
    """Every sampler in ``samplers`` at every K with the exact heads of a toy mixture, sampler seed s shared by all
    arms (common random numbers): sliced W1 to a fixed data sample of size n and the exact NLL; the paired
    :data:`CONTRASTS`; the noise floor (the same metrics for ``floor_draws`` fresh data samples of size n)."""
    schedule = schedule or make_schedule("linear", 1000)
    mix = toy_mixture(name)
    oracle = MixtureOracle(mix, schedule)
    D = mix.D
    ref = mix.sample(n, generator=torch.Generator().manual_seed(12345)).double()
    floor = [_toy_metrics(mix.sample(n, generator=torch.Generator().manual_seed(54321 + i)).double(), ref, mix)
             for i in range(floor_draws)]
    res = {"dataset": name, "D": D, "n": n, "seeds": list(seeds), "T": getattr(schedule, "T", None),
           "schedule": schedule.spec(),
           "floor": {k: _mean_sd([f[k] for f in floor]) for k in ("sliced_w1", "nll")},
           "rows": [], "samples": {}}
    res["floor"]["what"] = f"the metrics of {floor_draws} fresh data samples of size n (NLL: the entropy estimate)"
    for K in Ks:
        for sname in samplers:
            per_seed = []
            t0 = time.perf_counter()
            for sd in seeds:
                x = run_sampler(sname, oracle, schedule, (n, D), K, seed=sd, clip_x0=1.0, last_var_max=None,
                                dtype=torch.float64)
                per_seed.append(_toy_metrics(x, ref, mix))
                if sd == seeds[0]:
                    res["samples"][(sname, K)] = x.float()
            sec = time.perf_counter() - t0
            row = {"sampler": sname, "K": K,
                   **{k: sum(m[k] for m in per_seed) / len(per_seed) for k in per_seed[0]},
                   "sliced_w1_per_seed": [m["sliced_w1"] for m in per_seed],
                   "nll_per_seed": [m["nll"] for m in per_seed], "seconds": round(sec, 2)}
            res["rows"].append(row)
            log(f"  oracle {name} K={K:4d} {sname:12s}: SW1 {row['sliced_w1']:.5f}  NLL {row['nll']:.4f}  [{sec:.1f}s]")
    res["contrasts"] = _contrasts(res["rows"], Ks, "sliced_w1", res["floor"]["sliced_w1"]["mean"])
    res["fit_diagnostics"] = {"K": min(Ks), "steps": fit_diagnostics(oracle, schedule, ref, min(Ks))}
    res["fit_diagnostics"]["summary"] = _diag_summary(res["fit_diagnostics"]["steps"])
    log(f"  oracle {name} fit at K={min(Ks)}: {res['fit_diagnostics']['summary']}")
    return res


# ----------------------------------------------------------------------------------------------------------
# digits


def _digits_seed(task: Dict) -> Dict:
    """One training seed of the digits experiment: backbone (seed s) and heads (seed 1000 + s), the fit diagnostics,
    then every arm at every K for each sampler seed (seed 1000 s + j, shared by the arms). Runs in a worker."""
    from ..data import load_digits
    from ..metrics import digits_fd, pixel_fd

    s = task["train_seed"]
    data, _ = load_digits(8)
    sch = make_schedule("linear", 1000)
    t0 = time.perf_counter()
    backbone, tb = train_backbone(data, sch, steps=task["backbone_steps"], arch="unet", size=task["size"],
                                  batch_size=128, lr=2e-3, ema_decay=0.995, seed=s,
                                  log_every=max(task["backbone_steps"] // 20, 1))
    t_bb = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, th = train_gms_heads(backbone, sch, data, mode="complex", steps=task["head_steps"], batch_size=128,
                                lr=1e-3, ema_decay=0.995, seed=1000 + s, log_every=max(task["head_steps"] // 20, 1))
    t_h = time.perf_counter() - t0
    _log(f"  digits train seed {s}: backbone ({task['size']} UNet) {task['backbone_steps']} steps in {t_bb:.0f}s, "
        f"loss {tb.history[-1]['loss']:.4f}; heads {task['head_steps']} steps in {t_h:.0f}s, head loss "
        f"{th.history[0]['loss']:.3f} -> {th.history[-1]['loss']:.3f}")
    n = task["n"]
    diag = fit_diagnostics(model, sch, data[:n], min(task["Ks"]))
    out = {"task": task, "train_seed": s, "backbone_seconds": round(t_bb, 1), "head_seconds": round(t_h, 1),
           "backbone_loss": tb.history, "head_loss": th.history,
           "params_backbone": sum(p.numel() for p in backbone.parameters()),
           "params_heads": sum(p.numel() for p in model.head.parameters()),
           "fit_diagnostics": diag, "results": [], "samples": {}}
    lv = task["last_var_max"]
    for K in task["Ks"]:
        for arm in task["arms"]:
            t0 = time.perf_counter()
            for j in range(task["sampler_seeds"]):
                x = run_sampler(arm, model, sch, (n, 1, 8, 8), K, seed=1000 * s + j, clip_x0=1.0, last_var_max=lv)
                out["results"].append({"sampler": arm, "K": K, "sampler_seed": j, "fd": digits_fd(x, data),
                                       "fd_pixels": pixel_fd(x, data)})
                if j == 0 and task.get("keep_samples"):
                    out["samples"][(arm, K)] = x[:64].clone()
            fds = [r["fd"] for r in out["results"] if r["sampler"] == arm and r["K"] == K]
            _log(f"  digits train seed {s} K={K:3d} {arm:10s}: FD {', '.join(f'{v:.3f}' for v in fds)}  "
                 f"[{time.perf_counter() - t0:.0f}s]")
    return out


def _digits_tasks(Ks: Sequence[int], n: int, backbone_steps: int, head_steps: int, size: str,
                  train_seeds: Sequence[int], sampler_seeds: int, arms: Sequence[str] = ARMS) -> List[Dict]:
    lv = official_last_var(2.0)
    return [{"kind": "digits", "train_seed": s, "Ks": list(Ks), "n": n, "backbone_steps": backbone_steps,
             "head_steps": head_steps, "size": size, "sampler_seeds": sampler_seeds, "arms": list(arms),
             "last_var_max": lv, "keep_samples": s == train_seeds[0]} for s in train_seeds]


def _digits_collect(per_seed: List[Dict], floor_draws: int, log=_log) -> Dict:
    """The digits results of the training seeds (:func:`_digits_seed` outputs, in seed order): rows per arm and K
    (values in (training seed, sampler seed) order, with the training seed as the unit), the contrasts, the floor."""
    from ..data import load_digits
    from ..metrics import digits_fd, pixel_fd, real_split_floor

    data, _ = load_digits(8)
    t = per_seed[0]["task"]
    Ks, arms = t["Ks"], t["arms"]
    res = {"dataset": "digits 8x8 (1797 images, [-1, 1])", "T": 1000, "schedule": "linear 1e-4..0.02",
           "backbone": {"arch": "unet", "size": t["size"], "steps": t["backbone_steps"],
                        "params": per_seed[0]["params_backbone"]},
           "heads": {"mode": "complex", "steps": t["head_steps"], "params": per_seed[0]["params_heads"]},
           "n": t["n"], "train_seeds": [p["train_seed"] for p in per_seed],
           "sampler_seeds_per_train_seed": t["sampler_seeds"], "last_var_max": t["last_var_max"], "clip_x0": 1.0,
           "rows": [], "samples": per_seed[0]["samples"],
           "per_train_seed": [{k: v for k, v in r.items() if k not in ("samples", "results", "task")}
                              for r in per_seed]}
    halves = {"fd": real_split_floor(data, digits_fd, floor_draws),
              "fd_pixels": real_split_floor(data, pixel_fd, floor_draws)}
    res["floor"] = {k: {"mean": v["mean"], "sd": v["sd"], "n_draws": floor_draws} for k, v in halves.items()}
    res["floor"]["what"] = (f"the metric between two disjoint halves ({halves['fd']['n']} / {halves['fd']['n_rest']}) "
                            f"of the real digits, {floor_draws} random splits; the samples' metric (n={t['n']} "
                            "against all 1797) has a smaller floor")
    for K in Ks:
        for arm in arms:
            rs = [(r, p["train_seed"]) for p in per_seed for r in p["results"] if r["sampler"] == arm and r["K"] == K]
            row = {"sampler": arm, "K": K, "units": [u for _, u in rs]}
            for key in ("fd", "fd_pixels"):
                vals = [r[key] for r, _ in rs]
                row[key + "_per_seed"] = vals
                row[key] = sum(vals) / len(vals)
            res["rows"].append(row)
    res["contrasts"] = _contrasts(res["rows"], Ks, "fd", res["floor"]["fd"]["mean"], units_key="units")
    res["contrasts_pixels"] = _contrasts(res["rows"], Ks, "fd_pixels", res["floor"]["fd_pixels"]["mean"],
                                         units_key="units")
    diag = [d for p in per_seed for d in p["fit_diagnostics"]]
    res["fit_diagnostics"] = {"K": min(Ks), "summary": _diag_summary(diag), "per_train_seed": [
        _diag_summary(p["fit_diagnostics"]) for p in per_seed]}
    log(f"  digits fit at K={min(Ks)}: {res['fit_diagnostics']['summary']}")
    return res


def digits_experiment(Ks: Sequence[int], n: int, backbone_steps: int, head_steps: int, size: str,
                      train_seeds: Sequence[int], sampler_seeds: int, arms: Sequence[str] = ARMS,
                      workers: int = 1, floor_draws: int = 8, log=_log) -> Dict:
    """Backbone + frozen-backbone heads on the 8x8 digits for each training seed, then every arm at every K for
    ``sampler_seeds`` sampler seeds per training seed (common random numbers across arms): the digits FD and the
    pixel FD of n samples against all 1797 digits; the paired :data:`CONTRASTS` with the training seed as the
    unit; the noise floor (both metrics between disjoint halves of the real digits, ``floor_draws`` splits). The
    training seeds run on ``workers`` processes."""
    tasks = _digits_tasks(Ks, n, backbone_steps, head_steps, size, train_seeds, sampler_seeds, arms)
    return _digits_collect(run_tasks(_digits_seed, tasks, workers), floor_draws, log)


def _task(task: Dict) -> Dict:
    """One task of :func:`reproduce_gms`'s process pool: a digits training seed or an oracle experiment."""
    if task["kind"] == "oracle":
        return oracle_experiment(**task["kw"])
    return _digits_seed(task)


# ----------------------------------------------------------------------------------------------------------
# tables, plots, verdict


def _metric_table(rows: List[Dict], key: str, label: str, fmt: str, floor: Dict) -> str:
    Ks = sorted({r["K"] for r in rows})
    arms = [a for a in ARMS if any(r["sampler"] == a for r in rows)]
    lines = [f"| {label} | " + " | ".join(f"K={K}" for K in Ks) + " |", "|---|" + "---|" * len(Ks)]
    for a in arms:
        vals = [format(_row(rows, a, K)[key], fmt) if _row(rows, a, K) else "-" for K in Ks]
        lines.append(f"| {SAMPLER_LABELS[a]} | " + " | ".join(vals) + " |")
    lines.append("| noise floor (real vs real, mean +- sd) | " + " | ".join(
        f"{format(floor['mean'], fmt)} +- {format(floor['sd'], fmt)}" for _ in Ks) + " |")
    return "\n".join(lines) + "\n"


def _contrast_table(contrasts: List[Dict], fmt: str, unit: str) -> str:
    Ks = sorted({c["K"] for c in contrasts})
    lines = [f"| paired difference (arm - baseline; 95% CI; {unit} agreeing in sign) | what it isolates | "
             + " | ".join(f"K={K}" for K in Ks) + " |", "|---|---|" + "---|" * len(Ks)]
    for arm, base, what in CONTRASTS:
        cells = []
        for K in Ks:
            c = [c for c in contrasts if c["arm"] == arm and c["baseline"] == base and c["K"] == K]
            cells.append(f"{format_paired(c[0], fmt)}; {100 * c[0]['fraction_of_floor']:.2g}% of the floor: "
                         f"{c[0]['verdict']}" if c else "-")
        if any(cell != "-" for cell in cells):
            lines.append(f"| {arm} - {base} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tables(res: Dict) -> str:
    parts = []
    for name in ("gmm1d", "gmm2d"):
        o = res.get("oracle", {}).get(name)
        if o is None:
            continue
        parts.append(f"### Exact oracle, {name} (D={o['D']}, n={o['n']}, {len(o['seeds'])} sampler seeds, common "
                     "random numbers across arms, linear T=1000)\n")
        parts.append(_metric_table(o["rows"], "sliced_w1", "sliced W1 to data, mean over seeds (lower is better)",
                                   ".5f", o["floor"]["sliced_w1"]))
        parts.append(_metric_table(o["rows"], "nll", "exact NLL of the samples, nats (not a ranking: the floor row "
                                   "is the data's entropy)", ".4f", o["floor"]["nll"]))
        parts.append(_contrast_table(o["contrasts"], ".5f", "sampler seeds"))
        parts.append(f"Fit at K={o['fit_diagnostics']['K']} on exact x_t: {o['fit_diagnostics']['summary']}.\n")
    if "digits" in res:
        d = res["digits"]
        parts.append(f"### Digits 8x8 ({len(d['train_seeds'])} training seeds x {d['sampler_seeds_per_train_seed']} "
                     f"sampler seeds; UNet {d['backbone']['size']}, backbone {d['backbone']['steps']} steps + heads "
                     f"{d['heads']['steps']} steps; n={d['n']} samples against all 1797 digits; linear T=1000)\n")
        parts.append(_metric_table(d["rows"], "fd", "digits FD (classifier features), mean (lower is better)", ".3f",
                                   d["floor"]["fd"]))
        parts.append(_metric_table(d["rows"], "fd_pixels", "FD in pixel space, mean", ".4f", d["floor"]["fd_pixels"]))
        parts.append(f"Noise floor: {d['floor']['what']}.\n")
        parts.append("Paired differences of the digits FD: averaged per training seed, interval over training seeds.\n")
        parts.append(_contrast_table(d["contrasts"], ".3f", "training seeds"))
        parts.append(f"Fit at K={d['fit_diagnostics']['K']} on noised data: {d['fit_diagnostics']['summary']}.\n")
    parts.append("### Paper (CIFAR10 FID, linear schedule; docs/methods.md (GMS))\n")
    p = PAPER_CIFAR10_FID
    parts.append("| sampler | " + " | ".join(f"K={K}" for K in p["K"]) + " |\n|---|" + "---|" * len(p["K"]))
    for k in ("DDPM (small var)", "SN-DDPM", "GMS"):
        parts.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in p[k]) + " |")
    return "\n".join(parts)


def _find(contrasts: List[Dict], arm: str, base: str, K: int) -> Optional[Dict]:
    c = [c for c in contrasts if c["arm"] == arm and c["baseline"] == base and c["K"] == K]
    return c[0] if c else None


def _claims(res: Dict) -> List[Dict]:
    """The findings, one per (experiment, contrast, K): the contrasts of the arms against their baselines."""
    out = []
    exps = [(f"oracle {k}", o["contrasts"], "sliced W1", ".5f") for k, o in res.get("oracle", {}).items()]
    if "digits" in res:
        exps.append(("digits", res["digits"]["contrasts"], "digits FD", ".3f"))
    for label, cs, metric, fmt in exps:
        for c in cs:
            out.append({"experiment": label, "metric": metric, "arm": c["arm"], "baseline": c["baseline"],
                        "K": c["K"], "difference": format_paired(c, fmt), "verdict": c["verdict"],
                        "reproduced": c["verdict"] == "better"})
    return out


def _verdict(res: Dict) -> str:
    """The claim (GMS beats SN-DDPM at few steps) per experiment and K, from the paired intervals; then the closed
    form, the decomposition and the control."""
    def line(arm, base):
        parts = []
        exps = [(f"oracle {k}", o["contrasts"], ".5f") for k, o in res.get("oracle", {}).items()]
        if "digits" in res:
            exps.append(("digits", res["digits"]["contrasts"], ".3f"))
        for label, cs, fmt in exps:
            ks = sorted({c["K"] for c in cs})
            cells = [f"K={K} {format_paired(c, fmt)} ({c['verdict']})" for K in ks
                     for c in [_find(cs, arm, base, K)] if c]
            parts.append(f"{label}: " + "; ".join(cells))
        return " | ".join(parts)

    digits = res.get("digits", {}).get("contrasts", [])
    k0 = min((c["K"] for c in digits), default=None)
    main = _find(digits, "gms", "sn_ddpm", k0) if k0 is not None else None
    if main is None:
        head = "Inconclusive: no digits run"
    elif main["verdict"] == "better":
        head = (f"Reproduced on the digits at K={k0}: GMS (official Adan fit) has a lower FD than SN-DDPM, "
                f"{format_paired(main, '.3f')} over training seeds")
    else:
        head = (f"Not reproduced on the digits at K={k0}: GMS (official Adan fit) minus SN-DDPM "
                f"{format_paired(main, '.3f')} over training seeds ({main['verdict']})")
    return (f"{head} (paper, CIFAR10 FID at K=10: GMS 13.80 vs SN-DDPM 16.33). Paired differences, every random "
            f"number shared, 95% intervals. GMS (Adan) - SN-DDPM: {line('gms', 'sn_ddpm')}. GMS closed form - "
            f"SN-DDPM: {line('gms_closed', 'sn_ddpm')}. Adan fit's mean/variance shift (merged - sn_fused): "
            f"{line('gms_merged', 'sn_fused')}. Adan fit's mixture (gms - merged): {line('gms', 'gms_merged')}. "
            f"Control (sn_fused - sn_ddpm, same kernel): {line('sn_fused', 'sn_ddpm')}.")


COLORS = {"ddpm": "tab:gray", "sn_ddpm": "tab:blue", "sn_fused": "tab:cyan", "gms": "tab:red",
          "gms_merged": "tab:purple", "gms_closed": "tab:orange"}


def _plot_contrasts(ax, contrasts: List[Dict], metric: str, title: str, unit: str) -> None:
    """The contrasts but the DDPM context, as % of the baseline's mean, with their 95% intervals."""
    Ks = sorted({c["K"] for c in contrasts})
    shown = [(a, b) for a, b, _ in CONTRASTS if a != "ddpm"
             and any(c["arm"] == a and c["baseline"] == b for c in contrasts)]
    w = 0.8 / max(len(shown), 1)
    for i, (a, b) in enumerate(shown):
        xs, ys, lo, hi = [], [], [], []
        for j, K in enumerate(Ks):
            c = _find(contrasts, a, b, K)
            if c is None:
                continue
            r = 100.0 / c["mean_baseline"]
            ci = c["ci"] if all(math.isfinite(v) for v in c["ci"]) else [c["mean"], c["mean"]]
            xs.append(j - 0.4 + (i + 0.5) * w)
            ys.append(c["mean"] * r)
            lo.append((c["mean"] - ci[0]) * r)
            hi.append((ci[1] - c["mean"]) * r)
        hollow = b == "gms_merged"  # gms - gms_merged shares the arm's colour with gms - sn_ddpm
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="s" if hollow else "o", ms=4, capsize=3, color=COLORS[a],
                    mfc="white" if hollow else COLORS[a], label=f"{a} - {b}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(Ks)))
    ax.set_xticklabels([f"K={K}" for K in Ks])
    ax.set_xlabel("K (steps)")
    ax.set_ylabel(f"paired difference of {metric}, % of the baseline\n(< 0: arm better; 95% CI over {unit})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)


def _plot_metric_vs_k(ax, rows: List[Dict], key: str, floor: Dict, title: str, ylabel: str) -> None:
    for a in ARMS:
        rr = sorted([r for r in rows if r["sampler"] == a], key=lambda r: r["K"])
        if rr:
            ax.plot([r["K"] for r in rr], [r[key] for r in rr], "o-", ms=3, color=COLORS[a], label=SAMPLER_LABELS[a])
    ax.axhspan(floor["mean"] - floor["sd"], floor["mean"] + floor["sd"], color="k", alpha=0.15,
               label="noise floor (real vs real, mean +- sd)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    Ks = sorted({r["K"] for r in rows})
    ax.set_xticks(Ks)
    ax.set_xticklabels([str(K) for K in Ks])
    ax.minorticks_off()
    ax.set_xlabel("K (steps = network evaluations)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)


def _plot(res: Dict, out: Path) -> List[Dict]:
    """Three figures: the paired differences and the metrics against K; samples over the data; training losses."""
    plt = pyplot()
    if plt is None:
        return []
    figs = []
    oracle = res.get("oracle", {})
    exps = [(f"exact oracle {k}", o["contrasts"], o["rows"], "sliced_w1", o["floor"]["sliced_w1"], "sliced W1",
             "sampler seeds") for k, o in oracle.items()]
    if "digits" in res:
        d = res["digits"]
        exps.append(("digits", d["contrasts"], d["rows"], "fd", d["floor"]["fd"], "digits FD", "training seeds"))
    fig, axes = plt.subplots(2, len(exps), figsize=(5.2 * len(exps), 8.5), squeeze=False)
    for j, (label, cs, rows, key, floor, metric, unit) in enumerate(exps):
        _plot_contrasts(axes[0][j], cs, metric, f"{label}: paired differences (common random numbers)", unit)
        _plot_metric_vs_k(axes[1][j], rows, key, floor, f"{label}: {metric} against K", f"{metric} (lower is better)")
    figs.append(save_figure(fig, out / "gms.png",
        shows="top: paired differences arm - baseline with 95% intervals per K (the "
              "sn_fused - sn_ddpm control must sit on 0); bottom: each metric against K with the real-vs-real "
              "noise floor", better="a difference below 0 (the arm beats its baseline); a lower metric"))

    fig, axes = plt.subplots(2, 4, figsize=(17, 8.5), squeeze=False)
    fig.subplots_adjust(wspace=0.35)
    ax = axes[0][0]
    if "gmm1d" in oracle:
        o = oracle["gmm1d"]
        K = min(r["K"] for r in o["rows"])
        mix = toy_mixture("gmm1d")
        grid = torch.linspace(-1.2, 1.2, 400, dtype=torch.float64).unsqueeze(1)
        ax.fill_between(grid[:, 0], mix.log_prob(grid).exp(), color="0.85", label="data density")
        for s in ("sn_ddpm", "gms", "gms_closed"):
            x = o["samples"].get((s, K))
            if x is not None:
                ax.hist(x[:, 0].numpy(), bins=120, range=(-1.2, 1.2), density=True, histtype="step", color=COLORS[s],
                        label=SAMPLER_LABELS[s])
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.set_title(f"gmm1d: data (grey) vs samples, K={K}, same seed", fontsize=9)
        ax.legend(fontsize=6)
    if "gmm2d" in oracle:
        o = oracle["gmm2d"]
        K = min(r["K"] for r in o["rows"])
        data = toy_mixture("gmm2d").sample(3000, generator=torch.Generator().manual_seed(1))
        for ax, s in zip(axes[0][1:], ("sn_ddpm", "gms", "gms_closed")):
            x = o["samples"].get((s, K))
            if x is None:
                continue
            ax.scatter(data[:, 0], data[:, 1], s=2, color="0.7", label="data")
            ax.scatter(x[:2000, 0], x[:2000, 1], s=1, alpha=0.5, color=COLORS[s], label="samples")
            ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), xlabel="x1", ylabel="x2")
            ax.set_aspect("equal")
            ax.set_title(f"gmm2d, K={K}: {SAMPLER_LABELS[s]}\n(samples over the data in grey)", fontsize=9)
            ax.legend(fontsize=6, markerscale=5, loc="upper right")
    if "digits" in res:
        d = res["digits"]
        K = min(r["K"] for r in d["rows"])
        from ..data import load_digits

        panels = [("real digits (data)", load_digits(8)[0][:32])] + [
            (f"{SAMPLER_LABELS[s]}, K={K}", d["samples"][(s, K)][:32])
            for s in ("sn_ddpm", "gms", "gms_closed") if (s, K) in d["samples"]]
        for ax, (title, x) in zip(axes[1], panels):
            im = ax.imshow(x.reshape(4, 8, 8, 8).permute(0, 2, 1, 3).reshape(32, 64).clamp(-1, 1).numpy(), cmap="gray",
                           vmin=-1, vmax=1)
            ax.set_title(title + ("" if title.startswith("real") else "\n(same x_T and noise in every sampler)"),
                         fontsize=9)
            ax.axis("off")
        fig.colorbar(im, ax=list(axes[1]), fraction=0.015, label="pixel value")
    for row in axes:
        for ax in row:
            if not ax.has_data() and not ax.images:
                ax.axis("off")
    figs.append(save_figure(fig, out / "gms_samples.png",
        shows="samples at the fewest K drawn with the same random numbers by every "
              "sampler: 1-D histograms over the data density, 2-D samples over the data, digits next to real ones",
        better="samples that follow the grey data more closely", bbox=True))

    if "digits" in res:
        d = res["digits"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False)
        for p_ in d["per_train_seed"]:
            for ax, key, what in ((axes[0][0], "backbone_loss", "eps-backbone loss"),
                                  (axes[0][1], "head_loss", "eps2 + eps3 head loss (frozen backbone)")):
                h = p_[key]
                ax.plot([r["step"] for r in h], [r["loss"] for r in h], label=f"training seed {p_['train_seed']}")
                ax.set_xlabel("optimizer step")
                ax.set_ylabel(what)
                ax.set_yscale("log")
                ax.set_title(what, fontsize=9)
                ax.legend(fontsize=6)
        figs.append(save_figure(fig, out / "gms_training.png",
            shows="training losses of the digits backbone and heads per training seed "
                  "(separate axes: different scales)", better="lower, flat at the end"))
    return figs


def _strip(res: Dict) -> Dict:
    """The results without the sample tensors (JSON-ready)."""
    out = {}
    for k, v in res.items():
        if isinstance(v, dict):
            out[k] = _strip({kk: vv for kk, vv in v.items() if kk != "samples"})
        else:
            out[k] = v
    return out


def _summary_lines(res: Dict) -> List[str]:
    lines = [res["verdict"].split(". Paired")[0] + "."]
    for label, o in [(f"oracle {k}", o) for k, o in res.get("oracle", {}).items()]:
        for arm in ("gms", "gms_closed"):
            cs = [c for c in o["contrasts"] if c["arm"] == arm and c["baseline"] == "sn_ddpm"]
            lines.append(f"{label}, {arm} - sn_ddpm (sliced W1; floor {o['floor']['sliced_w1']['mean']:.4f}): "
                         + "; ".join(f"K={c['K']} {c['mean']:+.5f} ({c['verdict']})" for c in cs))
    if "digits" in res:
        d = res["digits"]
        for arm, base in (("gms", "sn_ddpm"), ("gms_closed", "sn_ddpm"), ("sn_fused", "sn_ddpm")):
            cs = [c for c in d["contrasts"] if c["arm"] == arm and c["baseline"] == base]
            lines.append(f"digits, {arm} - {base} (FD; floor {d['floor']['fd']['mean']:.2f}): "
                         + "; ".join(f"K={c['K']} {format_paired(c, '.3f')} ({c['verdict']})" for c in cs))
    return lines


def _plot_samples(res: Dict) -> Dict:
    """The samples the figures show (the fewest K; at most 20000 / 2000 / 32 per arm), keyed like ``res``."""
    keep = {}
    for name, o in res.get("oracle", {}).items():
        K = min(r["K"] for r in o["rows"])
        keep[name] = {k: v[: 20000 if name == "gmm1d" else 2000] for k, v in o["samples"].items() if k[1] == K}
    if "digits" in res:
        K = min(r["K"] for r in res["digits"]["rows"])
        keep["digits"] = {k: v[:32] for k, v in res["digits"]["samples"].items() if k[1] == K}
    return keep


def replot(out: Path) -> List[Dict]:
    """Redraw the figures of a finished run from its ``results.json`` and ``samples.pt`` (no sampling)."""
    out = Path(out)
    res = json.loads((out / "results.json").read_text())
    samples = torch.load(out / "samples.pt", weights_only=False)
    for name, o in res.get("oracle", {}).items():
        o["samples"] = samples.get(name, {})
    if "digits" in res:
        res["digits"]["samples"] = samples.get("digits", {})
    return _plot(res, out)


def reproduce_gms(out: Path, quick: bool = False, device="cpu", workers: Optional[int] = None) -> dict:
    """The GMS reproduction (``gmmkernels reproduce gms``).

    (1) exact oracle (no training) on the 1-D and 2-D toy mixtures (:func:`toy_mixture`): the :data:`ARMS` at K = 10,
        25, 50 on the linear T=1000 schedule, 5 sampler seeds with common random numbers across arms; sliced W1
        to data and the exact NLL; the paired :data:`CONTRASTS` and the noise floors;
    (2) digits 8x8: for each of 3 training seeds a tiny-UNet eps-backbone and the eps2/eps3 heads on it, then the same
        arms at K = 10, 25 with 2 sampler seeds each; the digits Frechet distance
        (:func:`gmmkernels.diffusion.metrics.digits_fd`, an FID analogue), the contrasts over training seeds.
    Writes ``results.json`` (tables, contrasts, verdict), ``results.md``, the figures and ``samples.pt`` (the samples
    the figures show; :func:`replot` redraws them) into ``out``; returns the results. The digits training seeds and
    the two oracle experiments run as tasks on ``workers`` processes (default
    :func:`~gmmkernels.diffusion.experiments._parallel.default_workers`). ``quick``: see :data:`QUICK_DROPS` (a few
    minutes of CPU). ``device`` is accepted for the command's signature; the runs use the
    CPU (the networks are too small to gain from a GPU).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else workers
    t0, c0 = time.perf_counter(), cpu_seconds()
    log = _log
    if quick:
        Ks, n1, n2, seeds, fl = (10, 25), 4000, 2000, (0, 1, 2), 2
        dig = dict(Ks=(10,), n=200, backbone_steps=150, head_steps=100, size="tiny", train_seeds=(0, 1),
                   sampler_seeds=2)
    else:
        # sized for about an hour on a shared 2-core CPU
        Ks, n1, n2, seeds, fl = (10, 25, 50), 6000, 3000, tuple(range(5)), 5
        dig = dict(Ks=(10, 25), n=400, backbone_steps=500, head_steps=250, size="tiny", train_seeds=(0, 1, 2),
                   sampler_seeds=2)
    res: Dict = {"quick": quick, "quick_drops": QUICK_DROPS, "device": "cpu", "workers": workers,
                 "setup": {"schedule": "linear T=1000 (beta 1e-4..0.02)", "gms_weight": 1 / 3, "adan": "lr 0.06, 70 it",
                           "var_floor": 0.1, "pairing": "common random numbers: x_T, every step's normals and the "
                           "component choices shared by every arm run with one seed (methods.gms.run_sampler)",
                           "note": "oracle: float64, exact heads, x0 clip 1, no last-step cap; "
                                   "digits: float32, last-step variance cap (2*2/255*sqrt(pi/2))^2"}}
    # one pool for everything: the digits training seeds (the longest tasks) first, then the two oracle experiments
    tasks = _digits_tasks(**dig) + [
        {"kind": "oracle", "kw": dict(name=name, Ks=Ks, n=nn, seeds=seeds, samplers=ARMS, floor_draws=fl)}
        for name, nn in (("gmm1d", n1), ("gmm2d", n2))]
    done = run_tasks(_task, tasks, workers)
    res["oracle"] = {"gmm1d": done[-2], "gmm2d": done[-1]}
    res["oracle"]["gmm1d"]["note"] = "1-D: per-element and per-image component draws are the same thing"
    res["digits"] = _digits_collect(done[:-2], fl, log)
    res["tables_md"] = _tables(res)
    res["verdict"] = _verdict(res)
    res["claims"] = _claims(res)
    res["paper_cifar10_fid"] = PAPER_CIFAR10_FID
    res["figures"] = _plot(res, out)
    res["summary"] = _summary_lines(res)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["cpu_seconds"] = round(cpu_seconds() - c0, 1)
    clean = _strip(res)
    (out / "results.json").write_text(json.dumps(clean, indent=1, default=str))
    torch.save(_plot_samples(res), out / "samples.pt")
    (out / "results.md").write_text("## GMS reproduction\n\n" + res["tables_md"] + "\n\n**Verdict.** " + res["verdict"]
                                    + "\n")
    print(res["tables_md"])
    print("verdict:", res["verdict"])
    print(f"gms reproduce: {res['seconds']:.0f} s wall, {res['cpu_seconds']:.0f} s CPU (this process and its "
          f"{workers} worker process{'es' if workers > 1 else ''})", flush=True)
    return clean


def demo_section(out: Path, quick: bool = True) -> dict:
    """Demo: exact oracle on the 1-D toy mixture, DDPM / SN-DDPM / GMS (Adan and closed form) at K = 10 and 25 with
    common random numbers over a few sampler seeds; a few seconds on a CPU."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    Ks = (10, 25)
    n, seeds = (4000, (0, 1, 2)) if quick else (20000, tuple(range(6)))
    arms = ("ddpm", "sn_ddpm", "gms", "gms_closed")
    with torch_threads(1):
        o = oracle_experiment("gmm1d", Ks, n, seeds, arms, floor_draws=4)
    res = {"dataset": "gmm1d (rescaled into [-1, 1]), exact heads", "n": n, "sampler_seeds": len(seeds),
           "floor_sliced_w1": o["floor"]["sliced_w1"]["mean"], "entropy_estimate": o["floor"]["nll"]["mean"]}
    for r in o["rows"]:
        res[f"sw1_{r['sampler']}_K{r['K']}"] = round(r["sliced_w1"], 5)
        res[f"nll_{r['sampler']}_K{r['K']}"] = round(r["nll"], 5)
    res["summary"] = [f"exact-oracle 1-D mixture, {len(seeds)} sampler seeds, every random number shared by the arms; "
                      f"sliced W1 noise floor {o['floor']['sliced_w1']['mean']:.4f}"]
    for c in o["contrasts"]:
        if c["baseline"] == "sn_ddpm" and c["arm"] in ("gms", "gms_closed"):
            res[f"diff_sw1_{c['arm']}_minus_sn_ddpm_K{c['K']}"] = round(c["mean"], 6)
            res["summary"].append(f"K={c['K']}: {c['arm']} - sn_ddpm sliced W1 {format_paired(c, '.5f')} "
                                  f"({c['verdict']})")
    res["figures"] = []
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        mix = toy_mixture("gmm1d")
        grid = torch.linspace(-1.2, 1.2, 400, dtype=torch.float64).unsqueeze(1)
        ax = axes[0]
        ax.fill_between(grid[:, 0], mix.log_prob(grid).exp(), color="0.85", label="data density")
        for s in ("sn_ddpm", "gms", "gms_closed"):
            ax.hist(o["samples"][(s, 10)][:, 0].numpy(), bins=100, range=(-1.2, 1.2), density=True, histtype="step",
                    color=COLORS[s], label=SAMPLER_LABELS[s])
        ax.set(xlabel="x", ylabel="density", title="data (grey) vs samples at K=10, same random numbers")
        ax.legend(fontsize=6)
        for a in arms:
            rr = [r for r in o["rows"] if r["sampler"] == a]
            axes[1].plot([r["K"] for r in rr], [r["sliced_w1"] for r in rr], "o-", color=COLORS[a],
                         label=SAMPLER_LABELS[a])
        f = o["floor"]["sliced_w1"]
        axes[1].axhspan(f["mean"] - f["sd"], f["mean"] + f["sd"], color="k", alpha=0.15, label="noise floor")
        axes[1].set(xlabel="K (steps)", ylabel="sliced W1 to data (lower is better)", xscale="log", yscale="log",
                    title="sliced W1 against K")
        axes[1].legend(fontsize=6)
        res["figures"].append(save_figure(fig, out / "gms_demo.png",
            shows="1-D mixture: sample histograms over the data density at K=10 "
                  "(left) and sliced W1 against K with the real-vs-real noise floor (right)",
            better="lower sliced W1; histograms closer to the grey density"))
    (out / "gms_demo.json").write_text(json.dumps(res, indent=1))
    return res
