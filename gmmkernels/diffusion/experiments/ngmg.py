"""The NGMG experiments (``gmmkernels reproduce ngmg``, the NGMG section of ``gmmkernels demo``), with the
methods of :mod:`gmmkernels.diffusion.methods.ngmg`: (1) NGMG vs BCE for the auxiliary feature classifier under
20% label noise, over seeds (training stability); (2) feature- vs class-conditioned generation of digits
(conditional accuracy, Frechet distance, defect rate), with and without the NGMG auxiliary term.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..methods.ngmg import FEATURE_TABLE, FEATURES, CondTrainer, FeatureGMM, digit_features, train_aux_classifier
from ._plots import pyplot


# ---------------------------------------------------------------------------------------------------------
# evaluation: the digits classifier (the package's, with a local fallback)


_FALLBACK = {}


def _classifier():
    """(logits_fn(x [N,1,8,8]) -> [N, 10], features_fn) of the package's digits classifier, or of a small MLP
    trained here when that module is missing."""
    try:
        from ..digits_classifier import digits_features, load_digits_classifier, to_classifier_input

        net = load_digits_classifier()
        return (lambda x: net(to_classifier_input(x.clamp(-1, 1)))), (lambda x: digits_features(net, x.clamp(-1, 1)))
    except ImportError:
        pass
    if "net" not in _FALLBACK:
        from ..data import load_digits

        x, y = load_digits(8)
        g = torch.Generator().manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(600):
            i = torch.randint(len(x), (256,), generator=g)
            xi = x[i] + 0.1 * torch.randn(x[i].shape, generator=g)
            loss = F.cross_entropy(net(xi), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        _FALLBACK["net"] = net.eval().requires_grad_(False)
    net = _FALLBACK["net"]
    return (lambda x: net(x.clamp(-1, 1))), (lambda x: net[:3](x.clamp(-1, 1)))


def digits_fd_any(samples: Tensor) -> float:
    """Frechet distance to the real digits in the digits classifier's feature space (package classifier or fallback)."""
    from .. import metrics as M
    from ..data import load_digits

    try:
        return M.digits_fd(samples.clamp(-1, 1))
    except ImportError:
        _, feat = _classifier()
        with torch.no_grad():
            f1, f2 = feat(samples), feat(load_digits(8)[0])
        return M.frechet_distance(*M.gaussian_stats(f1), *M.gaussian_stats(f2))


def conditional_metrics(samples: Tensor, req_feats: Tensor) -> Dict[str, float]:
    """cond_acc: predicted digit's features all equal the requested ones; per-feature accuracy; defect rate
    (classifier max probability < 0.5); digits Frechet distance."""
    logits_fn, _ = _classifier()
    with torch.no_grad():
        p = torch.softmax(logits_fn(samples.clamp(-1, 1)), -1)
    pred = p.argmax(1)
    pf = FEATURE_TABLE[pred]
    out = {"cond_acc": float((pf == req_feats).all(1).float().mean()),
           "defect_rate": float((p.max(1).values < 0.5).float().mean()),
           "digits_fd": digits_fd_any(samples)}
    for k, name in enumerate(FEATURES):
        out[f"acc_{name}"] = float((pf[:, k] == req_feats[:, k]).float().mean())
    return out


# ---------------------------------------------------------------------------------------------------------
# experiments


def _plot_stability(curves: Dict[str, List[List[dict]]], path: Path):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    colors = {"ngmg": "C0", "bce": "C3"}
    for name, runs in curves.items():
        for i, c in enumerate(runs):
            st = [r["step"] for r in c]
            axes[0].plot(st, [r["loss"] for r in c], color=colors[name], alpha=0.5, label=name if i == 0 else None)
            axes[1].plot(st, [r["test_acc"] for r in c], color=colors[name], alpha=0.5, label=name if i == 0 else None)
    axes[0].set_title("training loss (noisy labels)")
    axes[1].set_title("clean test accuracy (features)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_grid(panels, path: Path):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.4 * len(panels)))
    axes = [axes] if len(panels) == 1 else axes
    for ax, (title, imgs) in zip(axes, panels):
        row = torch.cat(list(imgs[:16, 0].clamp(-1, 1)), 1).numpy()
        ax.imshow(row, cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _stability_summary(runs: List[List[dict]]) -> Dict[str, float]:
    final = torch.tensor([c[-1]["test_acc"] for c in runs])
    half = [c[len(c) // 2:] for c in runs]
    osc = torch.tensor([sum(abs(b["test_acc"] - a["test_acc"]) for a, b in zip(h, h[1:])) / max(len(h) - 1, 1) for h in half])
    drop = torch.tensor([max(r["test_acc"] for r in c) - c[-1]["test_acc"] for c in runs])
    return {"final_acc_mean": float(final.mean()), "final_acc_std": float(final.std()) if len(runs) > 1 else 0.0,
            "late_oscillation": float(osc.mean()), "drop_from_best": float(drop.mean())}


def reproduce_ngmg(out: Path, quick: bool, device) -> dict:
    from .mixddpm import single_thread

    with single_thread(device):
        return _reproduce_ngmg(Path(out), quick, torch.device(device))


def _reproduce_ngmg(out: Path, quick: bool, device) -> dict:
    """(1) NGMG vs BCE for the auxiliary feature classifier under 20% label noise, over seeds; (2) feature- vs
    class-conditioned generation of digits (conditional accuracy, Frechet distance, defect rate), with and without
    the NGMG auxiliary term. Writes metrics.json, stability.png, samples.png and prints tables. CPU only."""
    from ..data import load_digits

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    lines: List[str] = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    x, y = load_digits(8)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    fx, fy = digit_features(y[tr]), digit_features(y[te])
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    steps = 300 if quick else 2000
    curves = {}
    nets = {}
    for loss in ("ngmg", "bce"):
        curves[loss] = []
        for sd in seeds:
            net, c = train_aux_classifier(loss, x[tr], fx, x[te], fy, steps=steps, seed=sd, eval_every=steps // 20)
            curves[loss].append(c)
            nets.setdefault(loss, net)
    stab = {k: _stability_summary(v) for k, v in curves.items()}
    log("Auxiliary feature classifier, 20% label noise, seeds " + str(seeds))
    log("loss | final test acc (mean +- std) | late oscillation | drop from best")
    for k, v in stab.items():
        log(f"{k} | {v['final_acc_mean']:.4f} +- {v['final_acc_std']:.4f} | {v['late_oscillation']:.4f} | {v['drop_from_best']:.4f}")
    plots = {"stability": _plot_stability(curves, out / "stability.png")}

    # conditional generation
    gmm = FeatureGMM(len(FEATURES), "expansion")
    gmm_nll = gmm.fit(steps=100 if quick else 300)
    gen_steps = 200 if quick else 3000
    n_eval = 150 if quick else 1000
    K = 40 if quick else 100
    gq = torch.Generator().manual_seed(5)
    req_y = y[tr][torch.randint(len(tr), (n_eval,), generator=gq)]
    req_f = digit_features(req_y)
    variants = [("class", "class", None, 0.0), ("feature-gmm", "feature", None, 0.0)]
    if not quick:
        variants += [("feature-bits", "feature-bits", None, 0.0),
                     ("feature-gmm+ngmg-aux", "feature", (nets["ngmg"], "ngmg"), 0.1)]
    gen = {}
    panels = []
    for name, mode, aux, w in variants:
        ct = CondTrainer(mode, x[tr], y[tr], gmm, aux=aux, aux_weight=w)
        ct.train(gen_steps)
        smp = ct.sample(req_y, req_f, K=K)
        m = conditional_metrics(smp, req_f)
        m["final_train_loss"] = float(sum(ct.losses[-50:]) / 50)
        gen[name] = m
        panels.append((f"{name}: requested digits {req_y[:16].tolist()}", smp))
        log(f"[gen] {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items()))
    plots["samples"] = _plot_grid(panels, out / "samples.png")
    log("\nconditioning | cond acc | defect rate | digits FD | " + " | ".join(f"acc {f}" for f in FEATURES))
    for k, m in gen.items():
        log(f"{k} | {m['cond_acc']:.4f} | {m['defect_rate']:.4f} | {m['digits_fd']:.3f} | "
            + " | ".join(f"{m['acc_' + f]:.3f}" for f in FEATURES))
    result = {"stability": stab, "curves": curves, "generation": gen, "gmm_fit_nll": gmm_nll, "plots": plots,
              "quick": quick, "seconds": round(time.time() - t0, 1), "train_steps_generation": gen_steps,
              "features": {"names": list(FEATURES), "table": FEATURE_TABLE.tolist()},
              "notes": "NGMG, the latent GMMs, the features and the defect rate are reconstructions/definitions "
                       "documented in gmmkernels/diffusion/methods/ngmg.py (docs/methods.md (NGMG))"}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return result


def demo_section(out: Path, quick: bool) -> dict:
    """NGMG vs BCE on the auxiliary feature classifier (two seeds, 20% label noise); writes ngmg_stability.png."""
    from ..data import load_digits
    from .mixddpm import single_thread

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with single_thread("cpu"):
        x, y = load_digits(8)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        tr, te = perm[:1400], perm[1400:]
        fx, fy = digit_features(y[tr]), digit_features(y[te])
        steps = 300 if quick else 1500
        curves = {k: [train_aux_classifier(k, x[tr], fx, x[te], fy, steps=steps, seed=s, eval_every=max(steps // 15, 1))[1]
                      for s in (0, 1)] for k in ("ngmg", "bce")}
        res = {k: _stability_summary(v) for k, v in curves.items()}
        res["plot"] = _plot_stability(curves, out / "ngmg_stability.png")
    return res
