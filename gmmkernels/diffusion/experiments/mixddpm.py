"""The mixDDPM / mixSGM experiments (``gmmkernels reproduce mixddpm``, the mixDDPM section of ``gmmkernels
demo``): DDPM vs mixDDPM and SGM vs mixSGM (:mod:`gmmkernels.diffusion.methods.mixddpm`) at equal training budgets
on the standardised 25-cluster toy and on the 8x8 digits; metrics, Reverse Effort, tables, curves and a verdict.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Dict, List, Sequence

import torch
from torch import Tensor

from ..methods.mixddpm import MixPrior, MixTrainer, reverse_effort, sample_mix
from ..schedules import DiscreteSchedule, VPSDE
from ..trainer import TrainConfig
from ._plots import pyplot


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


def _run_method(name, family, data, prior, budgets, cfg_kw, metric_fn, *, n_samples, K_sample, device, seed,
                cluster_cond=False, arch=None, size="small", log=print):
    from ..models import default_model

    torch.manual_seed(seed)
    sched = DiscreteSchedule.linear(1000) if family == "ddpm" else VPSDE()
    t_max = 1000.0 if family == "ddpm" else 1.0
    net = default_model(tuple(data.shape[1:]), t_max, arch=arch, size=size,
                        num_classes=prior.K if cluster_cond else 0)
    cfg = TrainConfig(**{**cfg_kw, "steps": max(budgets), "seed": seed, "progress": False, "log_every": 0})
    tr = MixTrainer(net, sched, data, prior, cfg, cluster_cond=cluster_cond, device=device)
    rows = []
    methods = ["ddpm"] if family == "ddpm" else (["em", "pc"] if K_sample >= 100 else ["em"])
    t0 = time.time()
    for b in sorted(budgets):
        tr.train(b)
        for m in methods:
            g = torch.Generator().manual_seed(seed + 1)
            x0, x_T, _ = sample_mix(tr.ema, prior, sched, n_samples, method=m, K=K_sample, cluster_cond=cluster_cond,
                                    generator=g, device=device)
            rec = {"method": name, "sampler": m, "steps": b, **metric_fn(x0.cpu()), **reverse_effort(x_T.cpu(), x0.cpu()),
                   "train_s": round(time.time() - t0, 1)}
            rows.append(rec)
            log("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
    return rows, tr.ema, sched


def _table(rows: List[dict], keys: Sequence[str]) -> str:
    head = ["method", "sampler", "steps", *keys]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lines.append(" | ".join(str(r.get(k)) if not isinstance(r.get(k), float) else f"{r[k]:.4g}" for k in head))
    return "\n".join(lines)


def _plot_curves(rows, keys, path: Path, title: str):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
    axes = [axes] if len(keys) == 1 else axes
    series = {}
    for r in rows:
        series.setdefault((r["method"], r["sampler"]), []).append(r)
    for ax, k in zip(axes, keys):
        for (m, s), rs in series.items():
            rs = sorted(rs, key=lambda r: r["steps"])
            ax.plot([r["steps"] for r in rs], [r[k] for r in rs], marker="o", label=f"{m} ({s})")
        ax.set_xscale("log")
        ax.set_xlabel("training steps")
        ax.set_title(k)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _scatter(panels, path: Path, lim: float):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.3))
    for ax, (title, pts) in zip(axes, panels):
        p = pts.cpu().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=1.5, alpha=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _toy_data(n: int, n_ref: int = 4000, seed: int = 0):
    """gmm25 (2-D; its weights depend on ``seed``): n training points and n_ref held-out points of the same law,
    both divided by one global scale (the training data's std) so every method sees unit-variance data."""
    from ..data import get_dataset

    ds = get_dataset("gmm25", n=n + n_ref, seed=seed, dim=2)
    x, ref = ds.x[:n], ds.x[n:]
    scale = float(x.double().std())
    return ds, x / scale, scale, ref / scale


def reproduce_mixddpm(out: Path, quick: bool, device) -> dict:
    with single_thread(device):
        return _reproduce_mixddpm(out, quick, device)


def _reproduce_mixddpm(out: Path, quick: bool, device) -> dict:
    """DDPM vs mixDDPM and SGM vs mixSGM at equal training budgets, on the 25-cluster toy (gmm25, 2-D,
    standardised) and on the 8x8 digits (clusters from k-means and from labels). Writes metrics.json, curves
    (toy_curves.png, digits_curves.png), a sample scatter (toy_samples.png) and prints tables."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    t_start = time.time()
    lines: List[str] = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    # ---- toy
    ds, xs, scale, ref = _toy_data(4000 if quick else 20000)
    ref = ref.double()
    budgets = [100, 300] if quick else [250, 500, 1000, 3000]
    n_s, Ks = (500, 40) if quick else (3000, 200)
    prior_km = MixPrior.from_kmeans(xs, 25, seed=0)
    priors = {"DDPM": MixPrior.standard(xs), "mixDDPM-kmeans": prior_km}
    cfg_kw = dict(batch_size=256, lr=2e-3, ema_decay=0.99)
    toy_rows = []
    log(f"toy gmm25 (2-D, 25 clusters, standardised by {scale:.3f}); k-means inertia "
        f"{float(((xs - prior_km.centers[prior_km.assignment]) ** 2).sum(1).mean()):.4f}")
    metric = lambda s: _toy_metrics(s, ds, scale, ref)  # noqa: E731
    last = {}
    for fam, pairs in (("ddpm", [("DDPM", "DDPM"), ("mixDDPM-kmeans", "mixDDPM-kmeans")]),
                       ("sgm", [("SGM", "DDPM"), ("mixSGM-kmeans", "mixDDPM-kmeans")])):
        if quick and fam == "sgm":
            budgets_f = budgets[-1:]
        else:
            budgets_f = budgets
        for name, pk in pairs:
            log(f"[toy] {name}")
            cc = priors[pk].K > 1
            rows, ema, sched = _run_method(name, fam, xs, priors[pk], budgets_f, cfg_kw, metric, n_samples=n_s,
                                           K_sample=Ks, device=device, seed=0, arch="mlp", cluster_cond=cc,
                                           size="tiny" if quick else "small", log=log)
            toy_rows += rows
            g = torch.Generator().manual_seed(7)
            last[name] = sample_mix(ema, priors[pk], sched, 2000, method="ddpm" if fam == "ddpm" else "em",
                                    K=Ks, generator=g, device=device, cluster_cond=cc)[0].cpu()
    # ablation: eps_theta without the cluster index (Algorithm 2 as written)
    log("[toy] mixDDPM-kmeans, eps does not see j")
    rows, _, _ = [], None, None
    if not quick:
        rows, _, _ = _run_method("mixDDPM-kmeans-noj", "ddpm", xs, prior_km, budgets[-1:] if quick else budgets, cfg_kw,
                                 metric, n_samples=n_s, K_sample=Ks, device=device, seed=0, cluster_cond=False,
                                 arch="mlp", size="tiny" if quick else "small", log=log)
    toy_rows += rows
    re_data = {"DDPM": priors["DDPM"].reverse_effort_data(xs), "mixDDPM": prior_km.reverse_effort_data(xs)}
    keys = ["sliced_w1", "mmd", "nll", "reeff_l2"]
    log("\nToy (gmm25) metrics vs training steps:\n" + _table(toy_rows, keys + ["on_mode", "modes_covered"]))
    plots = {"toy_curves": _plot_curves(toy_rows, keys, out / "toy_curves.png", "gmm25: DDPM vs mixDDPM, SGM vs mixSGM")}
    lim = float(xs.abs().max()) * 1.1
    plots["toy_samples"] = _scatter([("data", xs[:2000])] + [(k, v) for k, v in last.items()], out / "toy_samples.png", lim)

    # ---- digits
    from ..data import load_digits

    dx, dy = load_digits(8)
    d_budgets = [150] if quick else [500, 1000, 2000, 3000]
    d_priors = {"DDPM": MixPrior.standard(dx), "mixDDPM-kmeans": MixPrior.from_kmeans(dx, 10, seed=0),
                "mixDDPM-labels": MixPrior.from_labels(dx, dy)}
    dn, dK = (200, 40) if quick else (1000, 200)
    digit_rows = []
    d_cfg = dict(batch_size=128, lr=1e-3, ema_decay=0.995)
    plan = [("ddpm", "DDPM", "DDPM"), ("ddpm", "mixDDPM-kmeans", "mixDDPM-kmeans")]
    if not quick:
        plan += [("ddpm", "mixDDPM-labels", "mixDDPM-labels")]
    if not quick:
        plan += [("sgm", "SGM", "DDPM"), ("sgm", "mixSGM-kmeans", "mixDDPM-kmeans")]
    for fam, name, pk in plan:
        log(f"[digits] {name}")
        rows, _, _ = _run_method(name, fam, dx, d_priors[pk], d_budgets, d_cfg, _digit_metrics, n_samples=dn,
                                 K_sample=dK, device=device, seed=0, arch="mlp", size="small", log=log,
                                 cluster_cond=d_priors[pk].K > 1)
        digit_rows += rows
    dkeys = ["digits_fd", "class_tv", "reeff_l2"]
    log("\nDigits metrics vs training steps:\n" + _table(digit_rows, dkeys))
    plots["digits_curves"] = _plot_curves(digit_rows, dkeys, out / "digits_curves.png", "8x8 digits: DDPM vs mixDDPM")
    re_data.update({f"digits_{k}": v.reverse_effort_data(dx) for k, v in d_priors.items()})
    verdict = (_verdict(toy_rows, "sliced_w1") + _verdict(toy_rows, "on_mode", higher_better=True)
               + _verdict(digit_rows, "digits_fd"))
    for v in verdict:
        log(v)
    result = {"toy": toy_rows, "digits": digit_rows, "reverse_effort_data": re_data, "plots": plots,
              "verdict": verdict, "quick": quick, "seconds": round(time.time() - t_start, 1),
              "notes": "budgets are checkpoints of one constant-learning-rate run per method (EMA weights); "
                       "equations are reconstructions (docs/methods.md (mixDDPM))"}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return result


def _verdict(rows: List[dict], key: str, higher_better: bool = False) -> List[str]:
    """Plain statements: at each budget, does the mixture prior beat its baseline on ``key``?"""
    out = []
    by = {}
    for r in rows:
        by[(r["method"], r["sampler"], r["steps"])] = r[key]
    pairs = [("DDPM", "mixDDPM-kmeans"), ("DDPM", "mixDDPM-labels"), ("SGM", "mixSGM-kmeans")]
    for base, mix in pairs:
        for (m, s, b), v in sorted(by.items(), key=lambda kv: kv[0][2]):
            if m != mix or (base, s, b) not in by:
                continue
            bv = by[(base, s, b)]
            better = v > bv if higher_better else v < bv
            out.append(f"{key} at {b} steps ({s}): {mix} {v:.4g} vs {base} {bv:.4g} -> "
                       f"{'mixture prior better' if better else 'baseline better'} (ratio {v / max(bv, 1e-12):.2f})")
    return out


def demo_section(out: Path, quick: bool) -> dict:
    """Small demo: DDPM vs mixDDPM on the standardised gmm25 toy at one short training budget; writes
    mixddpm_samples.png and returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds, xs, scale, ref = _toy_data(4000, 3000)
    ref = ref.double()
    steps = 300 if quick else 1500
    prior = MixPrior.from_kmeans(xs, 25, seed=0)
    res, panels = {}, [("data", xs[:1500])]
    with single_thread("cpu"):
        for name, pr in (("DDPM", MixPrior.standard(xs)), ("mixDDPM", prior)):
            cc = pr.K > 1
            rows, ema, sched = _run_method(name, "ddpm", xs, pr, [steps], dict(batch_size=256, lr=2e-3, ema_decay=0.99),
                                           lambda s: _toy_metrics(s, ds, scale, ref), n_samples=1000, K_sample=50,
                                           device="cpu", seed=0, arch="mlp", size="tiny", log=lambda s: None,
                                           cluster_cond=cc)
            res[name] = rows[-1]
            g = torch.Generator().manual_seed(3)
            panels.append((f"{name}, {steps} steps",
                           sample_mix(ema, pr, sched, 1500, K=50, generator=g, cluster_cond=cc)[0]))
    lim = float(xs.abs().max()) * 1.1
    res["plot"] = _scatter(panels, out / "mixddpm_samples.png", lim)
    return res
