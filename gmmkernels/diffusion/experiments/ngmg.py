"""The NGMG experiments (``gmmkernels reproduce ngmg``, the NGMG section of ``gmmkernels demo``), with the methods
of :mod:`gmmkernels.diffusion.methods.ngmg`.

The paper makes two claims. (1) Conditioning on latents drawn from per-feature GMMs gives fewer defective samples
than conditioning on latents drawn from per-class GMMs. (2) NGMG trains the auxiliary classifier of diffusion
training more stably than BCE.

(1) needs features that carry information beyond the class, so here each 8x8 digit has seven binary features: the
four of its class (odd, loop, straight, large) and three of the image itself (thick, wide, slanted: above its digit's
median), and a *class* is a combination of the seven (72 occur). Four conditionings, all an F = 7 vector into the
same network, form a 2 x 2 design:

  feature-GMM   per-feature 1-D GMM latents (FeatureGMM)          the paper's proposal
  class-GMM     per-class GMM latents with a random code per class (ClassGMM, same family, size and fit)
  feature-code  the +-1 feature vector itself (no GMM)
  class-code    the class's code itself (no GMM)

so feature vs class is measured with and without GMM sampling. Six combinations are left out of training: the
feature conditionings can be asked for them, the class conditionings cannot. Two more arms add an auxiliary
classifier term to feature-GMM training, NGMG against BCE (the control).

(2) is measured where the implementation tests it, under symmetric label noise, which measures the robustness of
a loss to flipped labels: NGMG at small sigma is bounded (a flipped label far from the prediction gives almost no
gradient), so the control is another bounded loss, MAE on sigmoid outputs, and the same losses without noise.

Every arm of one training seed starts from the same weights, sees the same batches, times and noise, and samples
with the same start noise, step noise (:func:`counter_noise`) and latent uniforms and normals. Comparisons are
paired over training seeds, each with the metric's noise floor (the metric of real digits).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..methods.ngmg import (AUX_LOSSES, FEATURE_TABLE, FEATURES, STYLE_FEATURES, ClassGMM, CondTrainer, FeatureGMM,
                            all_features, class_codes, combination_classes, style_features,
                            style_thresholds, train_aux_classifier)
from ..samplers import counter_noise
from ._plots import MISSING, forest_figure, pyplot
from ._report import Report, default_workers, merge_plan, paired_table, run_jobs

ALL_FEATURES = FEATURES + STYLE_FEATURES
# arm -> (CondTrainer mode, which GMM, auxiliary classifier loss or None)
GEN_ARMS = {
    "feature-GMM": ("feature", "feature", None),
    "class-GMM": ("class-gmm", "class", None),
    "feature-code": ("feature-bits", None, None),
    "class-code": ("class-code", "class", None),
    "feature-GMM+NGMG-aux": ("feature", "feature", "ngmg"),
    "feature-GMM+BCE-aux": ("feature", "feature", "bce"),
}
GEN_COMPARISONS = [
    ("feature-GMM", "class-GMM", "feature vs class GMM latents (the claim)"),
    ("feature-code", "class-code", "feature vs class code, no GMM"),
    ("feature-GMM", "feature-code", "GMM sampling of the feature latent"),
    ("class-GMM", "class-code", "GMM sampling of the class latent"),
    ("feature-GMM+NGMG-aux", "feature-GMM", "the NGMG auxiliary term"),
    ("feature-GMM+NGMG-aux", "feature-GMM+BCE-aux", "NGMG vs BCE as the auxiliary term"),
]
GEN_KEYS = {"defect_rate": False, "cond_acc": True, "class_acc": True, "style_acc": True, "digits_fd": False}
AUX_COMPARISONS = [("ngmg", "bce"), ("ngmg", "mae"), ("mae", "bce")]


# ---------------------------------------------------------------------------------------------------------
# evaluation: the package's digits classifier


def _classifier():
    """(logits_fn(x [N,1,8,8]) -> [N, 10], features_fn) of the package's digits classifier."""
    from ..digits_classifier import digits_features, load_digits_classifier, to_classifier_input

    net = load_digits_classifier()
    return (lambda x: net(to_classifier_input(x.clamp(-1, 1)))), (lambda x: digits_features(net, x.clamp(-1, 1)))


def digits_fd_any(samples: Tensor) -> float:
    """Frechet distance to the real digits in the digits classifier's feature space."""
    from .. import metrics as M

    return M.digits_fd(samples.clamp(-1, 1))


def conditional_metrics(samples: Tensor, req_feats: Tensor, thresholds: Tensor = None) -> Dict[str, float]:
    """The sample's features against the requested ones: its class features from the digit the classifier sees,
    its style features (when the request has them, ``thresholds`` given) from the image against that digit's
    medians. cond_acc: every feature right; class_acc: the four class features right; style_acc: mean over the
    style features; acc_<feature>; defect rate (classifier max probability < 0.5); digits Frechet distance."""
    logits_fn, _ = _classifier()
    with torch.no_grad():
        p = torch.softmax(logits_fn(samples.clamp(-1, 1)), -1)
    pred = p.argmax(1)
    pf = FEATURE_TABLE[pred]
    nf = len(FEATURES)
    if req_feats.shape[1] > nf:
        pf = torch.cat([pf, style_features(samples.clamp(-1, 1), pred, thresholds)], 1)
    ok = pf == req_feats
    out = {"cond_acc": float(ok.all(1).float().mean()), "class_acc": float(ok[:, :nf].all(1).float().mean()),
           "defect_rate": float((p.max(1).values < 0.5).float().mean()), "digits_fd": digits_fd_any(samples)}
    if req_feats.shape[1] > nf:
        out["style_acc"] = float(ok[:, nf:].float().mean())
    for k, name in enumerate(ALL_FEATURES[:req_feats.shape[1]]):
        out[f"acc_{name}"] = float(ok[:, k].float().mean())
    return out


# ---------------------------------------------------------------------------------------------------------
# figures


def _plot_stability(curves: Dict[str, Dict[str, List[List[dict]]]], path: Path, chosen: Dict[str, dict]):
    """curves[noise][loss] = list over seeds of curves; accuracy per noise level (mean ± range over seeds), and
    each loss's training loss on its own axes (they have different scales)."""
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    noises = list(curves)
    losses = list(next(iter(curves.values())))
    ncol = max(len(noises), len(losses))
    fig, axes = plt.subplots(2, ncol, figsize=(4.2 * ncol, 6.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for col, nz in enumerate(noises):
        ax = axes[0][col]
        ax.axis("on")
        for i, loss in enumerate(losses):
            runs = curves[nz][loss]
            st = [r["step"] for r in runs[0]]
            acc = torch.tensor([[r["test_acc"] for r in c] for c in runs])
            ax.plot(st, acc.mean(0), color=f"C{i}", label=f"{loss} (lr {chosen[nz][loss]:g})")
            ax.fill_between(st, acc.min(0).values, acc.max(0).values, color=f"C{i}", alpha=0.2)
        ax.set_xlabel("training step")
        ax.set_ylabel("clean test accuracy (higher is better)")
        ax.set_title(f"label noise {nz}: mean, band = min..max over seeds", fontsize=9)
        ax.legend(fontsize=7)
    nz = noises[0]
    for col, loss in enumerate(losses):
        ax = axes[1][col]
        ax.axis("on")
        for c in curves[nz][loss]:
            ax.plot([r["step"] for r in c], [r["loss"] for r in c], color=f"C{col}", alpha=0.6, lw=0.8)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{loss} training loss (noisy labels)")
        ax.set_title(f"{loss}: training loss at label noise {nz}, one line per seed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_grid(panels, path: Path, title: str):
    plt = pyplot()
    if plt is None:  # pragma: no cover
        return MISSING
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 0.75 * len(panels) + 0.6), squeeze=False)
    for ax, (label, imgs) in zip(axes[:, 0], panels):
        row = torch.cat(list(imgs[:16, 0].clamp(-1, 1)), 1).numpy()
        ax.imshow(row, cmap="gray_r", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ---------------------------------------------------------------------------------------------------------
# (2) the auxiliary classifier under label noise


def _stability_summary(runs: List[List[dict]]) -> Dict[str, float]:
    final = torch.tensor([c[-1]["test_acc"] for c in runs])
    half = [c[len(c) // 2:] for c in runs]
    osc = torch.tensor([sum(abs(b["test_acc"] - a["test_acc"]) for a, b in zip(h, h[1:])) / max(len(h) - 1, 1) for h in half])
    drop = torch.tensor([max(r["test_acc"] for r in c) - c[-1]["test_acc"] for c in runs])
    return {"final_acc_mean": float(final.mean()), "final_acc_std": float(final.std()) if len(runs) > 1 else 0.0,
            "late_oscillation": float(osc.mean()), "drop_from_best": float(drop.mean())}


def _per_seed(runs: List[List[dict]]) -> Dict[str, List[float]]:
    half = [c[len(c) // 2:] for c in runs]
    return {"final_acc": [c[-1]["test_acc"] for c in runs],
            "drop_from_best": [max(r["test_acc"] for r in c) - c[-1]["test_acc"] for c in runs],
            "late_oscillation": [sum(abs(b["test_acc"] - a["test_acc"]) for a, b in zip(h, h[1:])) / max(len(h) - 1, 1)
                                 for h in half]}


def _aux_job(job) -> List[dict]:
    """(loss, noise, lr, seed, steps, data): the curve of one auxiliary-classifier run."""
    from .mixddpm import single_thread

    loss, nz, lr, seed, steps, (x, feats, x_val, fv, x_test, feats_test) = job
    with single_thread("cpu"):
        return train_aux_classifier(loss, x, feats, x_test, feats_test, steps=steps, seed=seed, label_noise=nz, lr=lr,
                                    eval_every=max(steps // 20, 1), x_val=x_val, feats_val=fv)[1]


def aux_study(x, feats, x_val, feats_val, x_test, feats_test, *, losses: Sequence[str], noises: Sequence[float],
              lrs: Sequence[float], seeds: Sequence[int], steps: int, log, workers: int = 1) -> dict:
    """Every loss at every label-noise level with the same learning-rate grid (equal tuning budget), the rate chosen
    per (loss, noise) by the mean final accuracy on the validation split, whose labels carry the same noise.
    Paired over seeds (same initial weights, batches and flipped labels for every loss)."""
    from ..metrics import paired_stats
    from ..methods.ngmg import flip_labels

    fvs = {nz: flip_labels(feats_val, nz, torch.Generator().manual_seed(31)) for nz in noises}
    jobs = [(loss, nz, lr, sd, steps, (x, feats, x_val, fvs[nz], x_test, feats_test))
            for nz in noises for loss in losses for lr in lrs for sd in seeds]
    got = dict(zip([j[:4] for j in jobs], run_jobs(_aux_job, jobs, workers)))
    curves, chosen, table = {}, {}, []
    for nz in noises:
        curves[str(nz)], chosen[str(nz)] = {}, {}
        for loss in losses:
            best = None
            for lr in lrs:
                runs = [got[(loss, nz, lr, sd)] for sd in seeds]
                val = sum(c[-1]["val_acc"] for c in runs) / len(runs)
                table.append({"noise": nz, "loss": loss, "lr": lr, "val_acc": val, **_stability_summary(runs)})
                log(f"  aux noise={nz} loss={loss} lr={lr:g}: validation {val:.4f}, clean test "
                    f"{table[-1]['final_acc_mean']:.4f} ± {table[-1]['final_acc_std']:.4f}")
                if best is None or val > best[0]:
                    best = (val, lr, runs)
            chosen[str(nz)][loss] = best[1]
            curves[str(nz)][loss] = best[2]
    comps = []
    for nz in noises:
        ps = {loss: _per_seed(curves[str(nz)][loss]) for loss in losses}
        for a, b in AUX_COMPARISONS:
            if a not in ps or b not in ps:
                continue
            for k, hb in (("final_acc", True), ("drop_from_best", False), ("late_oscillation", False)):
                comps.append({"comparison": f"{a} vs {b}", "a": a, "b": b, "where": f"label noise {nz}", "noise": nz,
                              "metric": k, **paired_stats(ps[a][k], ps[b][k], hb)})
    return {"grid": table, "chosen_lr": chosen, "curves": curves, "comparisons": comps,
            "summary": {nz: {loss: _stability_summary(curves[nz][loss]) for loss in losses} for nz in curves}}


# ---------------------------------------------------------------------------------------------------------
# (1) conditional generation


def _setup(quick: bool) -> dict:
    """Data, features, held-out combinations, GMMs' codes and requests (see the module docstring)."""
    from ..data import load_digits

    x, y = load_digits(8)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    thr = style_thresholds(x[tr], y[tr])
    f_all = all_features(x, y, thr)
    table_all = combination_classes(f_all[tr])[1]
    held = table_all[torch.randperm(table_all.shape[0], generator=torch.Generator().manual_seed(11))[:6]]
    is_held = (f_all.unsqueeze(1) == held.unsqueeze(0)).all(-1).any(1)  # [1797]
    tr_gen = tr[~is_held[tr]]
    cls_tr, table = combination_classes(f_all[tr_gen])
    te_seen, pool_held = te[~is_held[te]], torch.cat([tr[is_held[tr]], te[is_held[te]]])
    n_seen, n_held = (150, 40) if quick else (1000, 300)
    g = torch.Generator().manual_seed(5)
    req = te_seen[torch.randint(len(te_seen), (n_seen,), generator=g)]
    req_held = pool_held[torch.randint(len(pool_held), (n_held,), generator=g)]
    return {"x": x, "y": y, "tr": tr, "te": te, "thr": thr, "f_all": f_all, "tr_gen": tr_gen, "cls_tr": cls_tr,
            "table": table, "held": held, "req": req, "req_c": combination_classes(f_all[req], table)[0],
            "req_held": req_held, "codes": class_codes(table.shape[0], f_all.shape[1], seed=0)}


_SETUP: Dict[bool, dict] = {}


def _gen_job(job) -> dict:
    """(arm, seed, quick, plan, GMM states, aux learning rates): train the arm (and, for an auxiliary-term arm, its
    classifier on clean labels, same seed) and score its samples; the data come from :func:`_setup`."""
    from .mixddpm import single_thread

    name, seed, quick, plan, states, aux_lr = job
    if quick not in _SETUP:
        _SETUP[quick] = _setup(quick)
    S = _SETUP[quick]
    gmms = {"feature": FeatureGMM(S["f_all"].shape[1], "expansion"), "class": ClassGMM(S["codes"], "expansion")}
    for k, g in gmms.items():
        g.load_state_dict(states[k])
    lines: List[str] = []
    with single_thread("cpu"):
        aux = GEN_ARMS[name][2]
        net = None
        if aux is not None:
            tg = S["tr_gen"]
            net = train_aux_classifier(aux, S["x"][tg], S["f_all"][tg], S["x"][S["te"]], S["f_all"][S["te"]],
                                       steps=plan["aux_steps"], seed=seed, label_noise=0.0, lr=aux_lr[aux],
                                       eval_every=plan["aux_steps"])[0]
        rec = _gen_arm(name, S, gmms, net, seed=seed, steps=plan["gen_steps"], K=plan["K"], log=lines.append)
    rec["_lines"] = lines
    return rec


def _gen_arm(name: str, S: dict, gmms: dict, aux_net, *, seed: int, steps: int, K: int, log) -> dict:
    """Train arm ``name`` with training seed ``seed``; sample the seen requests (and, for feature conditionings, the
    held-out combinations) with sampler seed 1000 + seed; score them."""
    mode, gk, aux = GEN_ARMS[name]
    x, y = S["x"], S["y"]
    tg = S["tr_gen"]
    ct = CondTrainer(mode, x[tg], y[tg], gmms.get(gk), seed=seed, feats=S["f_all"][tg], classes=S["cls_tr"],
                     aux=None if aux is None else (aux_net, aux), aux_weight=0.0 if aux is None else 0.1)
    ct.train(steps)
    sseed = 1000 + seed
    req, req_f = S["req"], S["f_all"][S["req"]]
    smp = ct.sample(y[req], req_f, K=K, seed=sseed, classes=S["req_c"], noise=counter_noise(sseed))
    rec = {"arm": name, "seed": seed, **conditional_metrics(smp, req_f, S["thr"]),
           "final_train_loss": float(sum(ct.losses[-50:]) / 50)}
    if mode in ("feature", "feature-bits"):
        rh = S["req_held"]
        sh = ct.sample(y[rh], S["f_all"][rh], K=K, seed=sseed, noise=counter_noise(sseed))
        rec.update({f"held_{k}": v for k, v in conditional_metrics(sh, S["f_all"][rh], S["thr"]).items()
                    if k in ("cond_acc", "class_acc", "style_acc", "defect_rate")})
    log("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
    rec["_samples"] = smp[:16]
    return rec


def _gen_compare(rows: List[dict], floors: Dict[str, float]) -> List[dict]:
    from ..metrics import paired_stats

    val = {(r["arm"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    out = []
    for a, b, what in GEN_COMPARISONS:
        if not all((u, s) in val for u in (a, b) for s in seeds):
            continue
        for k, hb in GEN_KEYS.items():
            p = paired_stats([val[(a, s)][k] for s in seeds], [val[(b, s)][k] for s in seeds], hb)
            out.append({"comparison": f"{a} vs {b}", "a": a, "b": b, "measures": what, "where": "seen combinations",
                        "metric": k, **p, "floor": floors.get(k)})
    return out


def _means(rows: List[dict], keys) -> List[dict]:
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        rs = [r for r in rows if r["arm"] == arm]
        rec = {"arm": arm, "seeds": len(rs)}
        for k in keys:
            if k in rs[0]:
                v = torch.tensor([r[k] for r in rs], dtype=torch.float64)
                rec[k] = float(v.mean())
                rec[k + "_se"] = float(v.std() / len(rs) ** 0.5) if len(rs) > 1 else 0.0
        out.append(rec)
    return out


def _means_table(means: List[dict], keys) -> str:
    head = ["arm", "seeds"] + list(keys)
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in means:
        lines.append(" | ".join([r["arm"], str(r["seeds"])] + [f"{r[k]:.4g} ± {r[k + '_se']:.2g}" if k in r else "n/a"
                                                               for k in keys]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# reproduce


def _plan(quick: bool) -> dict:
    if quick:
        return {"aux_losses": list(AUX_LOSSES), "aux_noises": [0.2], "aux_lrs": [3e-3], "aux_seeds": [0, 1],
                "aux_steps": 300, "gen_arms": ["feature-GMM", "class-GMM", "feature-code"], "gen_seeds": [0, 1],
                "gen_steps": 200, "K": 40, "gmm_steps": 60}
    return {"aux_losses": list(AUX_LOSSES), "aux_noises": [0.2, 0.0], "aux_lrs": [1e-3, 3e-3, 1e-2],
            "aux_seeds": [0, 1, 2, 3, 4], "aux_steps": 1500, "gen_arms": list(GEN_ARMS), "gen_seeds": [0, 1, 2, 3],
            "gen_steps": 6000, "K": 100, "gmm_steps": 300}  # 1500 steps left the generator at FD ~140


def reproduce_ngmg(out: Path, quick: bool, device, plan: Optional[dict] = None) -> dict:
    """``plan``: entries that replace those of the quick or full plan (:func:`_plan`), e.g. fewer seeds."""
    from .mixddpm import single_thread

    with single_thread(device):
        return _reproduce_ngmg(Path(out), quick, torch.device(device), plan)


def _reproduce_ngmg(out: Path, quick: bool, device, plan_override: Optional[dict] = None) -> dict:
    """(2) the auxiliary classifier study, then (1) the conditional-generation arms over training seeds; paired
    comparisons, noise floors, verdicts. Writes metrics.json, table.md, console.log, aux_stability.png, samples.png
    and paired_differences.png. CPU only. --quick: one noise level and learning rate, two seeds, three generation
    arms (no code-only class arm, no auxiliary-term arms), short training, few samples."""
    from .. import metrics as M

    out.mkdir(parents=True, exist_ok=True)
    rep = Report()
    log = rep.log
    plan = merge_plan(_plan(quick), plan_override)
    label = " (quick)" if quick else ""
    label += f" (reduced plan: {', '.join(sorted(plan_override))} changed)" if plan_override else ""
    log(f"ngmg reproduce{label}: plan {json.dumps(plan)}")
    if quick not in _SETUP:
        _SETUP[quick] = _setup(quick)
    S = _SETUP[quick]
    x, y, f_all = S["x"], S["y"], S["f_all"]
    tr, te = S["tr"], S["te"]
    log(f"features {list(ALL_FEATURES)}; {S['table'].shape[0]} combinations ('classes') in training, 6 held out "
        f"({len(S['tr']) - len(S['tr_gen'])} training images removed); style features within each digit: "
        + ", ".join(f"{n} {float(v):.2f}" for n, v in zip(STYLE_FEATURES, f_all[tr][:, len(FEATURES):].mean(0))))

    # ---- (2) auxiliary classifier
    log("\n(2) auxiliary feature classifier: NGMG vs BCE vs MAE, same lr grid, lr chosen on a noisy validation split")
    tr_a, va = tr[:1150], tr[1150:]
    workers = 1 if quick else default_workers()
    log(f"{workers} worker process(es)")
    aux = aux_study(x[tr_a], f_all[tr_a], x[va], f_all[va], x[te], f_all[te], losses=plan["aux_losses"],
                    noises=plan["aux_noises"], lrs=plan["aux_lrs"], seeds=plan["aux_seeds"], steps=plan["aux_steps"],
                    log=log, workers=workers)
    log("\nAuxiliary classifier, paired over seeds (clean test labels)\n"
        + paired_table([dict(r, metric=r["metric"]) for r in aux["comparisons"]]))

    # ---- (1) conditional generation
    log("\n(1) conditional generation")
    gmms = {"feature": FeatureGMM(f_all.shape[1], "expansion"), "class": ClassGMM(S["codes"], "expansion")}
    fit_nll = {k: g.fit(steps=plan["gmm_steps"]) for k, g in gmms.items()}
    log("latent GMMs fitted (mean NLL per coordinate): " + ", ".join(f"{k} {v:.4f}" for k, v in fit_nll.items()))
    aux_lr = aux["chosen_lr"].get("0.0", aux["chosen_lr"][str(plan["aux_noises"][0])])
    real = conditional_metrics(x[S["req"]], f_all[S["req"]], S["thr"])
    fd_floor = M.digits_fd_floor(len(S["req"]), reps=3 if quick else 5)
    floors = {k: real[k] for k in GEN_KEYS if k != "digits_fd"}
    floors["digits_fd"] = f"{fd_floor['mean']:.3g} ± {fd_floor['std']:.2g}"
    log("real test digits asked for their own features (the ceiling / floor of each metric): "
        + ", ".join(f"{k} {v:.4g}" for k, v in real.items()) + f"; FD floor at n = {len(S['req'])}: "
        f"{fd_floor['mean']:.3g} ± {fd_floor['std']:.2g}")
    states = {k: g.state_dict() for k, g in gmms.items()}
    jobs = [(name, seed, quick, plan, states, aux_lr) for seed in plan["gen_seeds"] for name in plan["gen_arms"]]

    def done(job, r):
        log(f"[gen] {job[0]}, training seed {job[1]}")
        for line in r["_lines"]:
            log(line)

    rows, keep = [], {}
    for job, r in zip(jobs, run_jobs(_gen_job, jobs, workers, done)):
        r.pop("_lines")
        smp = r.pop("_samples")
        if job[1] == plan["gen_seeds"][0]:
            keep[job[0]] = smp
        rows.append(r)
    keys = list(GEN_KEYS) + ["held_cond_acc", "held_style_acc", "held_defect_rate"]
    means = _means(rows, keys)
    comps = _gen_compare(rows, floors)
    log("\nGeneration, seen combinations: mean ± s.e. over training seeds (held_*: the 6 held-out combinations, "
        "feature conditionings only)\n" + _means_table(means, keys))
    log("\nGeneration, paired over training seeds\n" + paired_table(comps))

    # ---- verdicts
    def pick(rows_, a, b, k, where=None):
        return next((r for r in rows_ if r["a"] == a and r["b"] == b and r["metric"] == k
                     and (where is None or r["where"] == where)), None)

    verdicts = []

    def judge(claim, r, metric_label):
        if r is None:
            return
        state = ("reproduced" if r["a_wins"] else "reversed" if r["excludes_zero"] else "not reproduced (no paired difference)")
        verdicts.append({"claim": claim, "state": state, "metric": metric_label, "diff": r["diff"], "se": r["se"],
                         "ci95": r["ci95"], "a_better": f"{r['a_better']}/{r['n']}"})

    judge("feature-GMM conditioning gives fewer defective samples than class-GMM conditioning",
          pick(comps, "feature-GMM", "class-GMM", "defect_rate"), "defect rate")
    judge("feature-GMM conditioning meets the requested features more often than class-GMM conditioning",
          pick(comps, "feature-GMM", "class-GMM", "cond_acc"), "conditional accuracy")
    judge("the NGMG auxiliary term lowers the defect rate of feature-GMM training",
          pick(comps, "feature-GMM+NGMG-aux", "feature-GMM", "defect_rate"), "defect rate")
    judge("NGMG beats BCE as the auxiliary term", pick(comps, "feature-GMM+NGMG-aux", "feature-GMM+BCE-aux",
                                                        "defect_rate"), "defect rate")
    for nz in plan["aux_noises"]:
        judge(f"NGMG trains the auxiliary classifier to a higher clean accuracy than BCE (label noise {nz})",
              pick(aux["comparisons"], "ngmg", "bce", "final_acc", f"label noise {nz}"), "final clean test accuracy")
        judge(f"NGMG is more stable than BCE (smaller drop from its best accuracy, label noise {nz})",
              pick(aux["comparisons"], "ngmg", "bce", "drop_from_best", f"label noise {nz}"), "drop from best")
        judge(f"NGMG beats MAE, the bounded-loss control (label noise {nz})",
              pick(aux["comparisons"], "ngmg", "mae", "final_acc", f"label noise {nz}"), "final clean test accuracy")
    log("\nVerdicts (paired 95% interval over seeds):")
    for v in verdicts:
        log(f"  {v['claim']}: {v['state']} ({v['metric']} diff {v['diff']:+.4g} ± {v['se']:.2g}, better on {v['a_better']})")

    # ---- figures
    panels = [("real (the requests' images)", x[S["req"]][:16])] + [(k, v) for k, v in keep.items()]
    req16 = f_all[S["req"]][:16]
    figures = [
        {"path": _plot_stability(aux["curves"], out / "aux_stability.png", aux["chosen_lr"]),
         "shows": "clean test accuracy of the auxiliary classifier (NGMG, BCE, MAE) under each label-noise level, "
                  "and each loss's training loss on its own axes",
         "better": "higher accuracy, flat after its peak"},
        {"path": _plot_grid(panels, out / "samples.png",
                            "the same 16 requests, training seed 0: digits " + " ".join(str(int(v)) for v in y[S["req"]][:16])
                            + "\nthick/wide/slanted bits " + " ".join("".join(str(int(b)) for b in r[len(FEATURES):])
                                                                      for r in req16)),
         "shows": "samples of each conditioning for the same requests under the real images that define them",
         "better": "rows that look like digits with the requested class and style"},
        {"path": forest_figure([("generation: defect rate, paired over training seeds", "defect rate", "left",
                                [dict(r, label=r["comparison"]) for r in comps if r["metric"] == "defect_rate"]),
                               ("generation: conditional accuracy (all 7 features)", "conditional accuracy", "right",
                                [dict(r, label=r["comparison"]) for r in comps if r["metric"] == "cond_acc"]),
                               ("auxiliary classifier: final clean test accuracy", "accuracy", "right",
                                [dict(r, label=f"{r['comparison']} ({r['where']})") for r in aux["comparisons"]
                                 if r["metric"] == "final_acc"])], out / "paired_differences.png", base=1.3, per_row=0.45),
         "shows": "paired differences with 95% intervals over seeds",
         "better": "defect rate: left of zero; accuracies: right of zero"},
    ]
    rt = rep.log_runtime("ngmg reproduce", workers)
    result = {"plan": plan, "runtime": rt, "verdicts": verdicts,
              "aux": {k: v for k, v in aux.items()},
              "generation": {"rows": rows, "means": means, "comparisons": comps, "real_digits": real,
                             "fd_floor": fd_floor, "gmm_fit_nll": fit_nll, "n_seen_requests": len(S["req"]),
                             "n_held_requests": len(S["req_held"]), "classes_in_training": int(S["table"].shape[0]),
                             "held_out_combinations": S["held"].tolist()},
              "features": {"names": list(ALL_FEATURES), "class_table": FEATURE_TABLE.tolist(),
                           "style_thresholds": S["thr"].tolist()},
              "figures": figures, "quick": quick, "plan_changed": sorted(plan_override or {}),
              "notes": "NGMG, the latent GMMs, the features and the defect rate are reconstructions/definitions "
                       "documented in gmmkernels/diffusion/methods/ngmg.py (docs/methods.md (NGMG))"}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    md = ["# NGMG reproduction" + label, "", "Plan: `" + json.dumps(plan) + "`", "", "## (2) Auxiliary classifier", "",
          "Learning-rate grid (validation accuracy on noisy labels; clean test accuracy):", "",
          " | ".join(["noise", "loss", "lr", "val acc", "test acc", "drop from best", "late oscillation"]),
          " | ".join(["---"] * 7)]
    md += [f"{r['noise']} | {r['loss']} | {r['lr']:g} | {r['val_acc']:.4f} | {r['final_acc_mean']:.4f} ± "
           f"{r['final_acc_std']:.4f} | {r['drop_from_best']:.4f} | {r['late_oscillation']:.4f}" for r in aux["grid"]]
    md += ["", paired_table(aux["comparisons"]), "", "## (1) Conditional generation", "", _means_table(means, keys), "",
           paired_table(comps), "", "## Verdicts", ""]
    md += [f"- {v['claim']}: {v['state']} ({v['metric']} {v['diff']:+.4g} ± {v['se']:.2g}, better on {v['a_better']})"
           for v in verdicts]
    (out / "table.md").write_text("\n".join(md) + "\n")
    rep.write(out / "console.log")
    return result


# ---------------------------------------------------------------------------------------------------------
# demo


def demo_section(out: Path, quick: bool) -> dict:
    """NGMG vs BCE vs MAE on the auxiliary feature classifier (20% label noise, paired seeds); writes
    ngmg_stability.png and returns the summaries, paired differences, figures and summary lines."""
    from ..data import load_digits
    from ..metrics import format_paired_stats
    from .mixddpm import single_thread

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with single_thread("cpu"):
        x, y = load_digits(8)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        tr, te = perm[:1400], perm[1400:]
        thr = style_thresholds(x[tr], y[tr])
        f = all_features(x, y, thr)
        seeds = [0, 1] if quick else [0, 1, 2]
        aux = aux_study(x[tr[:1150]], f[tr[:1150]], x[tr[1150:]], f[tr[1150:]], x[te], f[te], losses=list(AUX_LOSSES),
                        noises=[0.2], lrs=[3e-3], seeds=seeds, steps=300 if quick else 1000, log=lambda s: None)
    res = {"summary_by_loss": aux["summary"]["0.2"]}
    lines = [f"auxiliary classifier of 7 digit features under 20% label noise, {len(seeds)} paired seeds:"]
    for r in aux["comparisons"]:
        if r["metric"] == "final_acc":
            res[r["comparison"]] = {k: r[k] for k in ("diff", "se", "ci95", "a_better", "n")}
            lines.append(f"clean test accuracy {r['comparison']}: " + format_paired_stats(r))
    lines.append("MAE is the bounded-loss control: NGMG's edge over BCE under label noise is that of a bounded loss")
    res["figures"] = [{"path": _plot_stability(aux["curves"], out / "ngmg_stability.png", aux["chosen_lr"]),
                       "shows": "clean test accuracy of the auxiliary classifier per loss, and each training loss",
                       "better": "higher accuracy, flat after its peak"}]
    res["summary"] = lines
    return res
