"""The mixDDPM / mixSGM experiments (``gmmkernels reproduce mixddpm``, the mixDDPM section of ``gmmkernels demo``),
with the methods of :mod:`gmmkernels.diffusion.methods.mixddpm`.

The paper's claim: a Gaussian-mixture prior (centers from clustering or classes) gives better samples than DDPM / SGM
at equal, limited training budgets. The experiments feed the cluster index j to eps_theta, so the comparison that
isolates the prior is against the **control**: DDPM (or SGM) with the N(0, I) prior fed the same j
(:meth:`MixPrior.as_standard`). Arms, on the standardised 2-D gmm25 toy and the 8x8 digits:

  DDPM            N(0, I) prior, no index                      (the paper's baseline)
  DDPM+j          N(0, I) prior, the cluster index j fed        (the control)
  mixDDPM+j       mixture prior, j fed                         (the method as run here)
  mixDDPM         mixture prior, no index                      (Algorithm 2 as written)
  mixDDPM+scales  per-cluster scales (toy), with and without j
  SGM, SGM+j, mixSGM+j on the VP-SDE (Euler-Maruyama)

Every arm of one training seed starts from the same network weights (all networks have the index embedding; arms
without j never call it), sees the same training batches, times and noise, and samples with the same j, the same
start noise z (x_T = c_j + s_j z) and the same per-step noise (:func:`counter_noise`). Each comparison is the paired
difference over training seeds (mean ± standard error, 95% t-interval, seeds agreeing in sign) beside the metric's
noise floor (the metric between two independent samples of real data at the same n).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..methods.mixddpm import MixPrior, MixTrainer, reverse_effort, sample_mix
from ..samplers import counter_noise
from ..schedules import DiscreteSchedule, VPSDE
from ..trainer import TrainConfig
from ._plots import MISSING, forest_figure, pyplot
from ._report import PlanError, Report, default_workers, merge_plan, paired_table, run_jobs


@contextlib.contextmanager
def single_thread(device):
    """The networks here are small: on CPU one intra-op thread is faster than several (and much faster when the
    cores are shared). Restores the previous setting."""
    n = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# name -> (family, prior key, cluster index fed to eps_theta)
TOY_ARMS = {
    "DDPM": ("ddpm", "control", False),
    "DDPM+j": ("ddpm", "control", True),
    "mixDDPM+j": ("ddpm", "kmeans", True),
    "mixDDPM": ("ddpm", "kmeans", False),
    "mixDDPM+scales+j": ("ddpm", "kmeans+scales", True),
    "mixDDPM+scales": ("ddpm", "kmeans+scales", False),
    "SGM": ("sgm", "control", False),
    "SGM+j": ("sgm", "control", True),
    "mixSGM+j": ("sgm", "kmeans", True),
}
DIGIT_ARMS = {
    "DDPM": ("ddpm", "control-kmeans", False),
    "DDPM+j (k-means)": ("ddpm", "control-kmeans", True),
    "mixDDPM+j (k-means)": ("ddpm", "kmeans", True),
    "mixDDPM (k-means)": ("ddpm", "kmeans", False),
    "DDPM+j (labels)": ("ddpm", "control-labels", True),
    "mixDDPM+j (labels)": ("ddpm", "labels", True),
    "SGM": ("sgm", "control-kmeans", False),
    "SGM+j (k-means)": ("sgm", "control-kmeans", True),
    "mixSGM+j (k-means)": ("sgm", "kmeans", True),
}
# (a, b, what the paired difference a - b measures)
TOY_COMPARISONS = [
    ("mixDDPM+j", "DDPM+j", "the mixture prior (same index)"),
    ("DDPM+j", "DDPM", "the cluster index (same prior)"),
    ("mixDDPM+j", "DDPM", "prior + index (the earlier comparison)"),
    ("mixDDPM", "DDPM", "the prior without the index (Algorithm 2)"),
    ("mixDDPM+scales+j", "DDPM+j", "per-cluster-scale prior (same index)"),
    ("mixDDPM+scales", "DDPM", "per-cluster-scale prior without the index"),
    ("mixSGM+j", "SGM+j", "the mixture prior, SGM (same index)"),
    ("SGM+j", "SGM", "the cluster index, SGM"),
]
DIGIT_COMPARISONS = [
    ("mixDDPM+j (k-means)", "DDPM+j (k-means)", "the mixture prior (k-means index)"),
    ("mixDDPM+j (labels)", "DDPM+j (labels)", "the mixture prior (label index)"),
    ("DDPM+j (k-means)", "DDPM", "the k-means index"),
    ("DDPM+j (labels)", "DDPM", "the label index"),
    ("mixDDPM+j (k-means)", "DDPM", "prior + index (the earlier comparison)"),
    ("mixDDPM (k-means)", "DDPM", "the prior without the index (Algorithm 2)"),
    ("mixSGM+j (k-means)", "SGM+j (k-means)", "the mixture prior, SGM (same index)"),
    ("SGM+j (k-means)", "SGM", "the k-means index, SGM"),
]
# the metric a verdict is decided on, and whether higher is better
TOY_KEYS = {"sliced_w1": False, "on_mode": True, "mmd": False, "nll": False, "reeff_l2": False}
DIGIT_KEYS = {"digits_fd": False, "class_tv": False, "reeff_l2": False}


# ---------------------------------------------------------------------------------------------------------
# metrics and their noise floors


def _toy_metrics(samples: Tensor, ds, scale: float, ref: Tensor) -> Dict[str, float]:
    from .. import metrics as M

    raw = samples.double() * scale
    out = {"sliced_w1": M.sliced_wasserstein(raw, ref * scale, n_proj=200), "mmd": M.mmd(raw, ref * scale, max_n=2000)}
    out["nll"] = M.mixture_nll(raw, ds.mixture)
    mc = M.mode_coverage(raw, ds.mixture.means, ds.mode_std, weights=torch.softmax(ds.mixture.logits.double(), -1))
    out.update({k: float(v) for k, v in mc.items() if isinstance(v, (int, float))})
    return out


def _digit_metrics(samples: Tensor) -> Dict[str, float]:
    from .. import metrics as M

    s = samples.clamp(-1, 1)
    hist = torch.tensor(M.digits_class_histogram(s))
    return {"digits_fd": M.digits_fd(s), "class_tv": float(0.5 * (hist - 0.1).abs().sum()),
            "classes_seen": int((hist > 0.02).sum())}


def _floor(values: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    keys = [k for k, v in values[0].items() if isinstance(v, (int, float))]
    out = {}
    for k in keys:
        v = torch.tensor([r[k] for r in values], dtype=torch.float64)
        out[k] = {"mean": float(v.mean()), "std": float(v.std()) if len(values) > 1 else 0.0}
    return out


def toy_noise_floor(ds, scale: float, ref: Tensor, n: int, reps: int = 5) -> Dict[str, Dict[str, float]]:
    """Each toy metric between ``reps`` independent n-samples of the true law and the reference sample (mean, std)."""
    vals = [_toy_metrics(ds.mixture.sample(n, generator=torch.Generator().manual_seed(50_000 + r)).float() / scale,
                         ds, scale, ref) for r in range(reps)]
    return _floor(vals)


def digits_noise_floor(n: int, reps: int = 5) -> Dict[str, Dict[str, float]]:
    """Each digits metric of ``reps`` random n-subsets of the real digits (FD against all 1797, which contain them:
    a lower bound on the floor of independent data)."""
    from ..data import load_digits

    x = load_digits(8)[0]
    g = torch.Generator().manual_seed(60_000)
    return _floor([_digit_metrics(x[torch.randperm(len(x), generator=g)[:n]]) for _ in range(reps)])


# ---------------------------------------------------------------------------------------------------------
# one arm, one training seed


def arm_network(data_shape, t_max: float, K: int, seed: int, size: str):
    """The eps-network of every arm of training seed ``seed``: an MLP with the K-way index embedding (arms without
    j never call it), so all arms start from the same weights."""
    from ..models import default_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return default_model(tuple(data_shape), t_max, arch="mlp", size=size, num_classes=K)


def _run_arm(name: str, arm, data: Tensor, priors: Dict[str, MixPrior], budgets: Sequence[int], cfg_kw: dict,
             metric_fn, *, n_samples: int, K_sample: int, seed: int, size: str, device, log, keep: Optional[dict] = None):
    """Train arm ``name`` = (family, prior key, j fed) with training seed ``seed``; at each budget draw n_samples
    with sampler seed 1000 + seed (j, z and the step noise shared by every arm) and score them."""
    family, pk, cc = arm
    prior = priors[pk]
    sched = DiscreteSchedule.linear(1000) if family == "ddpm" else VPSDE()
    net = arm_network(tuple(data.shape[1:]), sched.t_max, prior.K, seed, size)
    cfg = TrainConfig(**{**cfg_kw, "steps": max(budgets), "seed": seed, "progress": False, "log_every": 0})
    tr = MixTrainer(net, sched, data, prior, cfg, cluster_cond=cc, device=device)
    method = "ddpm" if family == "ddpm" else "em"
    rows = []
    for b in sorted(budgets):
        tr.train(b)
        sseed = 1000 + seed
        x0, x_T, _ = sample_mix(tr.ema, prior, sched, n_samples, method=method, K=K_sample, cluster_cond=cc,
                                generator=torch.Generator().manual_seed(sseed), device=device, noise=counter_noise(sseed))
        x0, x_T = x0.cpu(), x_T.cpu()
        rec = {"arm": name, "seed": seed, "steps": b, "sampler": method, **metric_fn(x0), **reverse_effort(x_T, x0)}
        rows.append(rec)
        log("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
        if keep is not None and b == max(budgets):
            keep[name] = x0
    return rows


def _compare(rows: List[dict], comparisons, keys: Dict[str, bool], floors: Dict[str, dict], where: str) -> List[dict]:
    """Paired differences over training seeds for every comparison, budget and metric."""
    from ..metrics import paired_stats

    val = {(r["arm"], r["seed"], r["steps"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for b in sorted({r["steps"] for r in rows}):
        for a, c, what in comparisons:
            if not all((x, s, b) in val for x in (a, c) for s in seeds):
                continue
            for k, hb in keys.items():
                p = paired_stats([val[(a, s, b)][k] for s in seeds], [val[(c, s, b)][k] for s in seeds], hb)
                fl = floors.get(k)
                out.append({"comparison": f"{a} vs {c}", "a": a, "b": c, "measures": what, "where": f"{where}, {b} steps",
                            "steps": b, "metric": k, **p,
                            "floor": None if fl is None else f"{fl['mean']:.3g} ± {fl['std']:.2g}"})
    return out


def _arm_means(rows: List[dict], keys) -> List[dict]:
    """Mean and standard error over training seeds of each metric, per arm and budget."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["steps"]), []).append(r)
    out = []
    for (arm, b), rs in groups.items():
        rec = {"arm": arm, "steps": b, "seeds": len(rs)}
        for k in keys:
            v = torch.tensor([r[k] for r in rs], dtype=torch.float64)
            rec[k] = float(v.mean())
            rec[k + "_se"] = float(v.std() / len(rs) ** 0.5) if len(rs) > 1 else 0.0
        out.append(rec)
    return out


def _means_table(means: List[dict], keys, arms) -> str:
    head = ["arm", "steps", "seeds"] + list(keys)
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    order = {a: i for i, a in enumerate(arms)}
    for r in sorted(means, key=lambda r: (r["steps"], order.get(r["arm"], 99))):
        lines.append(" | ".join([r["arm"], str(r["steps"]), str(r["seeds"])]
                                + [f"{r[k]:.4g} ± {r[k + '_se']:.2g}" for k in keys]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# figures


def _plot_curves(means: List[dict], keys: Dict[str, bool], floors: Dict[str, dict], path: Path, title: str):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    keys = [k for k in keys if k in floors or k == "reeff_l2"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.3 * len(keys), 3.8), squeeze=False)
    arms = list(dict.fromkeys(r["arm"] for r in means))
    for ax, k in zip(axes[0], keys):
        for i, arm in enumerate(arms):
            rs = sorted((r for r in means if r["arm"] == arm), key=lambda r: r["steps"])
            ax.errorbar([r["steps"] for r in rs], [r[k] for r in rs], yerr=[r[k + "_se"] for r in rs], marker="o",
                        ms=3, capsize=2, label=arm, color=f"C{i % 10}", ls="-" if "+j" in arm else "--")
        if k in floors:
            ax.axhline(floors[k]["mean"], color="k", ls=":", lw=1, label="noise floor (real vs real)")
        ax.set_xscale("log")
        vals = [r[k] for r in means]
        if min(vals) > 0 and max(vals) > 30 * min(vals):  # a diverging arm: log scale keeps the others apart
            ax.set_yscale("log")
        ax.set_xlabel("training steps")
        ax.set_ylabel(k + (" (higher is better)" if TOY_KEYS.get(k, DIGIT_KEYS.get(k)) else " (lower is better)"))
        ax.set_title(k, fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=7)
    fig.suptitle(title + " (mean ± s.e. over training seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_toy_samples(data: Tensor, samples: Dict[str, Tensor], path: Path, lim: float, steps: int):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    panels = [("data (held-out)", None)] + list(samples.items())
    ncol = min(len(panels), 5)
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 3.1 * nrow), squeeze=False)
    d = data.cpu().numpy()
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, pts) in zip(axes.flat, panels):
        ax.axis("on")
        ax.scatter(d[:, 0], d[:, 1], s=1, c="0.75" if pts is not None else "C0", alpha=0.5)
        if pts is not None:
            p = pts.cpu().numpy()
            ax.scatter(p[:, 0], p[:, 1], s=1.2, c="C3", alpha=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title if pts is None else f"{title}: samples (red) on data (grey)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"gmm25 (standardised), training seed 0, {steps} training steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_digit_samples(real: Tensor, samples: Dict[str, Tensor], path: Path, steps: int, ncol: int = 16):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    rows = [("real digits", real)] + list(samples.items())
    fig, axes = plt.subplots(len(rows), 1, figsize=(ncol * 0.5 + 2.2, 0.62 * len(rows) + 0.5), squeeze=False)
    for ax, (title, imgs) in zip(axes[:, 0], rows):
        strip = torch.cat(list(imgs[:ncol, 0].clamp(-1, 1)), 1).numpy()
        ax.imshow(strip, cmap="gray_r", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"8x8 digits: real (top) and samples of each arm, training seed 0, {steps} steps, same j, z and "
                 "step noise in every row", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ---------------------------------------------------------------------------------------------------------
# data and priors


def _toy_data(n: int, n_ref: int = 4000, seed: int = 0):
    """gmm25 (2-D; its weights depend on ``seed``): n training points and n_ref held-out points of the same law,
    both divided by one global scale (the training data's std) so every method sees unit-variance data."""
    from ..data import get_dataset

    ds = get_dataset("gmm25", n=n + n_ref, seed=seed, dim=2)
    x, ref = ds.x[:n], ds.x[n:]
    scale = float(x.double().std())
    return ds, x / scale, scale, ref / scale


def _kmeans_quality(prior: MixPrior, ds, scale: float) -> Dict[str, int]:
    """How the k-means centers sit on the true modes: modes with no center within 2 mode stds, modes with more
    than one."""
    d = torch.cdist(ds.mixture.means.double(), prior.centers.double() * scale)
    near = (d <= 2 * ds.mode_std).sum(1)
    return {"modes_without_center": int((near == 0).sum()), "modes_with_several_centers": int((near > 1).sum())}


def _toy_priors(xs: Tensor, n_init: int) -> Dict[str, MixPrior]:
    km = MixPrior.from_kmeans(xs, 25, seed=0, n_init=n_init)
    sc = MixPrior._finish(xs, km.centers, km.assignment, "cluster", "nearest", "kmeans25")
    return {"kmeans": km, "kmeans+scales": sc, "control": km.as_standard()}


def _digit_priors(dx: Tensor, dy: Tensor) -> Dict[str, MixPrior]:
    km = MixPrior.from_kmeans(dx, 10, seed=0, n_init=3)
    lb = MixPrior.from_labels(dx, dy)
    return {"kmeans": km, "labels": lb, "control-kmeans": km.as_standard(), "control-labels": lb.as_standard()}


# ---------------------------------------------------------------------------------------------------------
# verdicts


def _verdicts(comps: List[dict], primary: Dict[str, str]) -> List[dict]:
    """One verdict per (data set, comparison of the claim): reproduced when the mixture arm wins with a paired
    interval that excludes zero on the primary metric at every budget."""
    out = []
    for where, key in primary.items():
        for a, c in sorted({(r["a"], r["b"]) for r in comps if r["where"].startswith(where)}):
            rs = sorted((r for r in comps if r["a"] == a and r["b"] == c and r["metric"] == key
                         and r["where"].startswith(where)), key=lambda r: r["steps"])
            if not rs:
                continue
            wins = [r["a_wins"] for r in rs]
            loses = [r["excludes_zero"] and not r["a_wins"] for r in rs]
            state = ("better at every budget" if all(wins) else "worse at every budget" if all(loses)
                     else "no paired difference at any budget" if not any(wins) and not any(loses) else "mixed")
            out.append({"where": where, "a": a, "b": c, "metric": key, "state": state,
                        "by_budget": {str(r["steps"]): {"diff": r["diff"], "se": r["se"], "ci95": r["ci95"],
                                                        "a_better": f"{r['a_better']}/{r['n']}"} for r in rs}})
    return out


def _claim(verdicts: List[dict]) -> dict:
    """The paper's claim (mixture prior better than the standard prior at equal, limited budgets), judged by the
    controls: the mixture arm against the N(0, I) arm fed the same index, on the verdicts given (the primary
    metrics: sliced W1, digits FD). The on-mode fraction does not decide: samples tighter than the modes score
    above real data on it (under-dispersion), so a higher value is not better past the real data's level."""
    keyed = [v for v in verdicts if v["a"].startswith("mix") and "+j" in v["a"] and "+j" in v["b"]
             and "scales" not in v["a"]]
    rep = [v for v in keyed if v["state"] == "better at every budget"]
    return {"claim": "a Gaussian-mixture prior gives better samples than the N(0, I) prior at equal, limited training "
                     "budgets (the index j fed to both)",
            "reproduced": bool(keyed) and len(rep) == len(keyed),
            "partly": 0 < len(rep) < len(keyed),
            "evidence": [f"{v['where']}: {v['a']} vs {v['b']} on {v['metric']}: {v['state']}" for v in keyed]}


# ---------------------------------------------------------------------------------------------------------
# jobs: one arm and one training seed, deterministic on its own (runs in a worker process or in this one)

_CONTEXT: Dict[tuple, dict] = {}


def _context(kind: str, plan: dict) -> dict:
    """The data and priors of ``kind`` ("toy" or "digits"), built once per process (deterministic)."""
    key = (kind, plan["toy_n"], plan["n_init"])
    if key not in _CONTEXT:
        if kind == "toy":
            ds, xs, scale, ref = _toy_data(plan["toy_n"])
            _CONTEXT[key] = {"ds": ds, "x": xs, "scale": scale, "ref": ref.double(), "priors": _toy_priors(xs, plan["n_init"])}
        else:
            from ..data import load_digits

            dx, dy = load_digits(8)
            _CONTEXT[key] = {"x": dx, "y": dy, "priors": _digit_priors(dx, dy)}
    return _CONTEXT[key]


def _arm_job(job) -> dict:
    """job = (kind, arm name, training seed, plan, device): rows, console lines and, for the plan's first seed, the
    samples."""
    kind, name, seed, plan, device = job
    ctx = _context(kind, plan)
    lines: List[str] = []
    keep: Dict[str, Tensor] = {}
    with single_thread(device):
        if kind == "toy":
            rows = _run_arm(name, TOY_ARMS[name], ctx["x"], ctx["priors"], plan["toy_budgets"],
                            dict(batch_size=256, lr=2e-3, ema_decay=0.99),
                            lambda smp: _toy_metrics(smp, ctx["ds"], ctx["scale"], ctx["ref"]),
                            n_samples=plan["toy_n_samples"], K_sample=plan["toy_K"], seed=seed, size=plan["toy_size"],
                            device=device, log=lines.append, keep=keep)
        else:
            rows = _run_arm(name, DIGIT_ARMS[name], ctx["x"], ctx["priors"], plan["digit_budgets"],
                            dict(batch_size=128, lr=1e-3, ema_decay=0.995), _digit_metrics,
                            n_samples=plan["digit_n_samples"], K_sample=plan["digit_K"], seed=seed, size="small",
                            device=device, log=lines.append, keep=keep)
    first = plan["toy_seeds" if kind == "toy" else "digit_seeds"][0]
    return {"rows": rows, "lines": lines, "samples": keep.get(name) if seed == first else None}


# ---------------------------------------------------------------------------------------------------------
# reproduce


def reproduce_mixddpm(out: Path, quick: bool, device, plan: Optional[dict] = None) -> dict:
    """``plan``: entries that replace those of the quick or full plan (:func:`_plan`), e.g. fewer arms or seeds."""
    full = merge_plan(_plan(quick), plan)  # unknown entries fail before any work
    for key, arms in (("toy_arms", TOY_ARMS), ("digit_arms", DIGIT_ARMS)):
        bad = [a for a in full[key] if a not in arms]
        if bad:
            raise PlanError(f"plan: {key}: unknown arm(s) {', '.join(map(repr, bad))}; the arms are "
                            + ", ".join(map(repr, arms)))
    with single_thread(device):
        return _reproduce_mixddpm(Path(out), quick, torch.device(device), plan)


def _plan(quick: bool) -> dict:
    if quick:
        return {"toy_n": 4000, "toy_budgets": [150], "toy_seeds": [0, 1], "toy_n_samples": 500, "toy_K": 40,
                "toy_size": "tiny", "toy_arms": ["DDPM", "DDPM+j", "mixDDPM+j", "mixDDPM"],
                "digit_budgets": [100], "digit_seeds": [0, 1], "digit_n_samples": 200, "digit_K": 40,
                "digit_arms": ["DDPM", "DDPM+j (k-means)", "mixDDPM+j (k-means)"], "floor_reps": 2, "n_init": 1}
    return {"toy_n": 20000, "toy_budgets": [250, 1000, 2000], "toy_seeds": [0, 1, 2, 3], "toy_n_samples": 2000,
            "toy_K": 200, "toy_size": "small", "toy_arms": list(TOY_ARMS),
            "digit_budgets": [1000, 2500], "digit_seeds": [0, 1, 2], "digit_n_samples": 1000, "digit_K": 200,
            "digit_arms": list(DIGIT_ARMS), "floor_reps": 5, "n_init": 5}


def _reproduce_mixddpm(out: Path, quick: bool, device, plan_override: Optional[dict] = None) -> dict:
    """Every arm of TOY_ARMS / DIGIT_ARMS over several training seeds with common random numbers; paired
    comparisons (TOY_COMPARISONS / DIGIT_COMPARISONS) at each budget beside the metrics' noise floors; verdicts.
    Writes metrics.json, table.md, console.log and the figures into ``out``. --quick: fewer arms (no SGM, no
    per-cluster scales, no label prior), two seeds, one short budget, tiny networks, few samples."""
    out.mkdir(parents=True, exist_ok=True)
    rep = Report()
    log = rep.log
    plan = merge_plan(_plan(quick), plan_override)
    label = " (quick)" if quick else ""
    label += f" (reduced plan: {', '.join(sorted(plan_override))} changed)" if plan_override else ""
    log(f"mixddpm reproduce{label}: plan {json.dumps(plan)}")

    # ---- toy
    ctx = _context("toy", plan)
    ds, xs, scale, ref, priors = ctx["ds"], ctx["x"], ctx["scale"], ctx["ref"], ctx["priors"]
    km = priors["kmeans"]
    kq = _kmeans_quality(km, ds, scale)
    log(f"toy gmm25 (2-D, 25 modes 8 apart, mode std 1), standardised by {scale:.3f}: the modes are "
        f"{8 / scale:.2f} apart and {1 / scale:.3f} wide in the unit prior's noise units; k-means (best of "
        f"{plan['n_init']}): inertia {km_inertia(xs, km):.4f}, {kq['modes_without_center']} mode(s) without a "
        f"center, {kq['modes_with_several_centers']} with several; per-cluster scales "
        f"{float(priors['kmeans+scales'].scales.min()):.3f}..{float(priors['kmeans+scales'].scales.max()):.3f}")
    floors_toy = toy_noise_floor(ds, scale, ref, plan["toy_n_samples"], plan["floor_reps"])
    log("toy noise floors (metric of an independent sample of the true law, n = "
        f"{plan['toy_n_samples']}): " + ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in floors_toy.items()))
    workers = 1 if quick else default_workers()

    def done(job, res):
        log(f"[{job[0]}] {job[1]}, training seed {job[2]}")
        for line in res["lines"]:
            log(line)

    dev = str(device)
    jobs = [("toy", name, seed, plan, dev) for seed in plan["toy_seeds"] for name in plan["toy_arms"]]
    jobs += [("digits", name, seed, plan, dev) for seed in plan["digit_seeds"] for name in plan["digit_arms"]]
    log(f"{len(jobs)} training runs (arm x seed) on {min(workers, len(jobs))} worker process(es)")
    results = run_jobs(_arm_job, jobs, workers, done)
    toy_rows = [r for j, res in zip(jobs, results) if j[0] == "toy" for r in res["rows"]]
    keep_toy = {j[1]: res["samples"] for j, res in zip(jobs, results) if j[0] == "toy" and res["samples"] is not None}
    dig_rows = [r for j, res in zip(jobs, results) if j[0] == "digits" for r in res["rows"]]
    keep_dig = {j[1]: res["samples"] for j, res in zip(jobs, results) if j[0] == "digits" and res["samples"] is not None}
    toy_means = _arm_means(toy_rows, list(TOY_KEYS) + ["modes_covered"])
    toy_comp = _compare(toy_rows, TOY_COMPARISONS, TOY_KEYS, floors_toy, "toy")
    log("\nToy (gmm25): mean ± s.e. over training seeds\n" + _means_table(toy_means, list(TOY_KEYS) + ["modes_covered"],
                                                                        list(TOY_ARMS)))
    log("\nToy paired comparisons (training seeds; floor = the metric between independent real samples)\n"
        + paired_table([r for r in toy_comp if r["metric"] in ("sliced_w1", "on_mode")]))

    # ---- digits
    dctx = _context("digits", plan)
    dx, d_priors = dctx["x"], dctx["priors"]
    log(f"\ndigits: k-means (10, best of 3) inertia {km_inertia(dx, d_priors['kmeans']):.3f}; label centers inertia "
        f"{km_inertia(dx, d_priors['labels']):.3f}")
    floors_dig = digits_noise_floor(plan["digit_n_samples"], plan["floor_reps"])
    log(f"digits noise floors (random n = {plan['digit_n_samples']} subsets of real digits): "
        + ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in floors_dig.items()))
    dig_means = _arm_means(dig_rows, list(DIGIT_KEYS))
    dig_comp = _compare(dig_rows, DIGIT_COMPARISONS, DIGIT_KEYS, floors_dig, "digits")
    log("\nDigits: mean ± s.e. over training seeds\n" + _means_table(dig_means, list(DIGIT_KEYS), list(DIGIT_ARMS)))
    log("\nDigits paired comparisons (training seeds)\n" + paired_table([r for r in dig_comp if r["metric"] != "reeff_l2"]))

    # ---- verdicts and figures
    verdicts = _verdicts(toy_comp + dig_comp, {"toy": "sliced_w1", "digits": "digits_fd"})
    claim = _claim(verdicts)  # on the primary metrics only (see _claim)
    verdicts += _verdicts(toy_comp, {"toy": "on_mode"})
    re_data = {"toy_" + k: v.reverse_effort_data(xs) for k, v in priors.items()}
    re_data.update({"digits_" + k: v.reverse_effort_data(dx) for k, v in d_priors.items()})
    log("\nVerdicts (primary metrics; 'better' = the first arm, paired 95% interval excludes zero):")
    for v in verdicts:
        log(f"  {v['where']} {v['metric']}: {v['a']} vs {v['b']}: {v['state']}")
    log(f"Claim: {claim['claim']}: {'reproduced' if claim['reproduced'] else 'partly reproduced' if claim['partly'] else 'not reproduced'}")
    log("Reverse Effort of independent prior and data draws, E|x0 - c_j|^2 + D E[s_j^2] (lower by construction for "
        "a prior centred on the data): "
        + ", ".join(f"{k} {v:.3g}" for k, v in re_data.items()))

    fb, db = max(plan["toy_budgets"]), max(plan["digit_budgets"])
    lim = float(xs.abs().max()) * 1.05

    def forest_rows(comp, metric, steps):
        return [{"label": f"{r['a']} - {r['b']}", **r} for r in comp if r["metric"] == metric and r["steps"] == steps]

    figures = [
        {"path": _plot_curves(toy_means, {k: v for k, v in TOY_KEYS.items() if k != "mmd"}, floors_toy,
                              out / "toy_curves.png", "gmm25 toy: metrics vs training budget"),
         "shows": "toy metrics of every arm vs training steps, mean ± s.e. over training seeds, with the noise floor",
         "better": "lower sliced W1 / NLL / Reverse Effort, higher on-mode fraction"},
        {"path": _plot_toy_samples(ref[:3000].float(), keep_toy, out / "toy_samples.png", lim, fb),
         "shows": "toy samples of each arm (red) over held-out data (grey), same random numbers in every panel",
         "better": "samples on the grey modes, in their proportions"},
        {"path": _plot_curves(dig_means, DIGIT_KEYS, floors_dig, out / "digits_curves.png",
                              "8x8 digits: metrics vs training budget"),
         "shows": "digits Frechet distance, class-histogram TV and Reverse Effort vs training steps, with the floor",
         "better": "lower"},
        {"path": _plot_digit_samples(dx[:16], keep_dig, out / "digits_samples.png", db),
         "shows": "digit samples of each arm under real digits, same random numbers in every row",
         "better": "rows that look like the real row"},
        {"path": forest_figure([("toy: paired differences at %d steps" % fb, "sliced W1", "left",
                                forest_rows(toy_comp, "sliced_w1", fb)),
                               ("digits: paired differences at %d steps" % db, "digits FD", "left",
                                forest_rows(dig_comp, "digits_fd", db))], out / "paired_differences.png"),
         "shows": "paired differences (first arm - second arm) over training seeds with 95% intervals",
         "better": "left of zero: the first arm is better"},
    ]
    rt = rep.log_runtime("mixddpm reproduce", min(workers, len(jobs)))
    result = {"plan": plan, "runtime": rt, "claim": claim, "verdicts": verdicts,
              "toy": {"rows": toy_rows, "means": toy_means, "comparisons": toy_comp, "noise_floor": floors_toy,
                      "kmeans": kq, "scale": scale},
              "digits": {"rows": dig_rows, "means": dig_means, "comparisons": dig_comp, "noise_floor": floors_dig},
              "reverse_effort_data": re_data, "figures": figures, "quick": quick,
              "plan_changed": sorted(plan_override or {}),
              "notes": "arms: TOY_ARMS / DIGIT_ARMS of gmmkernels/diffusion/experiments/mixddpm.py; budgets are "
                       "checkpoints of one constant-learning-rate run per arm and seed (EMA weights); sampler seed "
                       "1000 + training seed with counter-based step noise, shared by all arms; equations are "
                       "reconstructions (docs/methods.md (mixDDPM))"}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    md = ["# mixDDPM / mixSGM reproduction" + label, "", "Plan: `" + json.dumps(plan) + "`", "",
          "## Toy (gmm25, 2-D, standardised)", "", _means_table(toy_means, list(TOY_KEYS) + ["modes_covered"], list(TOY_ARMS)),
          "", "Noise floor: " + ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in floors_toy.items()), "",
          paired_table(toy_comp), "", "## Digits 8x8", "", _means_table(dig_means, list(DIGIT_KEYS), list(DIGIT_ARMS)),
          "", "Noise floor: " + ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in floors_dig.items()), "",
          paired_table(dig_comp), "", "## Verdicts", ""]
    md += [f"- {v['where']} {v['metric']}: {v['a']} vs {v['b']}: {v['state']}" for v in verdicts]
    md += ["", f"Claim ({claim['claim']}): " + ("reproduced" if claim["reproduced"] else "partly reproduced"
                                                if claim["partly"] else "not reproduced"), ""]
    (out / "table.md").write_text("\n".join(md) + "\n")
    rep.write(out / "console.log")
    return result


def km_inertia(x: Tensor, prior: MixPrior) -> float:
    """Mean squared distance of the points to their assigned center."""
    xf = x.float().reshape(x.shape[0], -1)
    return float(((xf - prior.centers.reshape(prior.K, -1)[prior.assignment]) ** 2).sum(1).mean())


# ---------------------------------------------------------------------------------------------------------
# demo


def demo_section(out: Path, quick: bool) -> dict:
    """DDPM, the control DDPM+j and mixDDPM+j on the standardised gmm25 toy, two training seeds with common random
    numbers; writes mixddpm_samples.png and returns the metrics, the paired differences, figures and summary."""
    from ..metrics import format_paired_stats, paired_stats

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds, xs, scale, ref = _toy_data(4000, 3000)
    ref = ref.double()
    steps, seeds = (300, [0, 1]) if quick else (1500, [0, 1, 2])
    priors = _toy_priors(xs, 1)
    arms = ["DDPM", "DDPM+j", "mixDDPM+j"]
    rows, keep = [], {}
    with single_thread("cpu"):
        for seed in seeds:
            for name in arms:
                rows += _run_arm(name, TOY_ARMS[name], xs, priors, [steps], dict(batch_size=256, lr=2e-3, ema_decay=0.99),
                                 lambda s: _toy_metrics(s, ds, scale, ref), n_samples=1000, K_sample=50, seed=seed,
                                 size="tiny", device="cpu", log=lambda s: None, keep=keep if seed == 0 else None)
    val = {(r["arm"], r["seed"]): r for r in rows}
    res = {"steps": steps, "seeds": seeds}
    summary = [f"gmm25 toy, {steps} training steps, {len(seeds)} training seeds, every random number shared:"]
    for a, b in (("mixDDPM+j", "DDPM+j"), ("DDPM+j", "DDPM")):
        p = paired_stats([val[(a, s)]["sliced_w1"] for s in seeds], [val[(b, s)]["sliced_w1"] for s in seeds])
        res[f"{a} vs {b}"] = p
        summary.append(f"sliced W1 {a} vs {b}: " + format_paired_stats(p))
    for name in arms:
        res[name] = {k: sum(val[(name, s)][k] for s in seeds) / len(seeds) for k in ("sliced_w1", "on_mode", "reeff_l2")}
    summary.append("the mixture prior's own effect is the first line (control: the same index j fed to DDPM)")
    lim = float(xs.abs().max()) * 1.05
    res["figures"] = [{"path": _plot_toy_samples(ref[:1500].float(), keep, out / "mixddpm_samples.png", lim, steps),
                       "shows": "samples of DDPM, DDPM+j and mixDDPM+j (red) over held-out toy data (grey)",
                       "better": "samples on the grey modes"}]
    res["summary"] = summary
    return res
