"""The SMD experiments (``gmmkernels reproduce smd``, the SMD section of ``gmmkernels demo``): vanilla vs SMD
(:mod:`gmmkernels.diffusion.methods.smd`) trained and sampled with few steps on the 7x7 grid toy (mode coverage,
fraction within 2 sigma, sliced W1) and on the digits (few-step DDIM / DDPM, Frechet distances); the demo also
times the fused adapter against the materialised form.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..methods.smd import SETTINGS, build_smd_model, eta_sensitivity, make_smd_schedule, sample, train
from ._plots import pyplot


def _toy_metrics(x: Tensor, ds) -> Dict:
    from ..metrics import mode_coverage, sliced_wasserstein

    # A sampler can blow up (e.g. epsilon-prediction with T = 10 linear betas clipped at 0.999 amplifies the
    # epsilon error by 1/sqrt(1 - 0.999) ~ 32 per step): such samples are counted as diverged (non-finite or farther
    # than 100 x the data's extent) and left out of the sliced W1, which would otherwise be inf / NaN.
    extent = float(ds.x.abs().max())
    ok = torch.isfinite(x).all(-1) & (x.abs().amax(-1) <= 100 * extent)
    mc = mode_coverage(x, ds.mixture.means.float(), ds.mode_std, radius=2.0)
    ref = ds.x[: max(4000, x.shape[0])]
    kept = x[ok]
    sw = sliced_wasserstein(kept.float(), ref.float(), n_proj=200) if kept.shape[0] > 0 else float("nan")
    return {"modes_covered": mc["modes_covered"], "n_modes": mc["n_modes"], "within_2sigma": mc["on_mode"],
            "occupancy_tv": mc["occupancy_tv"], "sliced_w1": sw, "diverged_fraction": float(1 - ok.float().mean())}


def _fd_digits(x: Tensor, ref: Tensor) -> Dict:
    from .. import metrics as M

    out = {}
    try:
        out["fd_classifier"] = M.digits_fd(x, ref)
    except Exception as e:  # the classifier is optional
        out["fd_classifier"] = None
        out["fd_classifier_error"] = type(e).__name__
    out["fd_pixels"] = M.frechet_distance(*M.gaussian_stats(x.reshape(x.shape[0], -1)), *M.gaussian_stats(ref.reshape(ref.shape[0], -1)))
    return out


def _plot_toy(x_by: Dict, ds, path: Path, Ts: Sequence[int], methods: Sequence[str]) -> Optional[str]:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(len(methods), len(Ts), figsize=(3 * len(Ts), 3 * len(methods)), squeeze=False)
    mu = ds.mixture.means.float()
    for i, m in enumerate(methods):
        for j, T in enumerate(Ts):
            ax = axes[i][j]
            x = x_by[(m, T)]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
            ax.scatter(mu[:, 0], mu[:, 1], s=6, c="red", marker="x")
            ax.set_xlim(-4.5, 4.5)
            ax.set_ylim(-4.5, 4.5)
            ax.set_title(f"{m}, T={T}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_digits(x_by: Dict, path: Path) -> Optional[str]:
    plt = pyplot()
    if plt is None:
        return None
    keys = list(x_by)
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.9), squeeze=False)
    for ax, k in zip(axes[0], keys):
        x = x_by[k][:64].reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)
        ax.imshow(x.clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(k, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _toy_experiment(out: Path, quick: bool, device, settings: Sequence[str], Ts: Sequence[int], steps: int,
                    n_samples: int, seeds: Dict[str, Sequence[int]], latent_dim: int, log) -> Dict:
    from ..data import get_dataset

    ds = get_dataset("grid7x7", n=20000, seed=0)
    res: Dict = {"dataset": "grid7x7 (49 modes, spacing 1.0, std 0.25)", "steps": steps, "n_samples": n_samples,
                 "seeds": {k: list(v) for k, v in seeds.items()}, "latent_dim": latent_dim, "runs": []}
    for setting in settings:
        cfg = SETTINGS[setting]
        setting_seeds = seeds[setting]
        x_plot = {}
        for T in Ts:
            sch = make_smd_schedule(cfg["schedule"], T)
            for method in ("vanilla", "smd"):
                for seed in setting_seeds:
                    torch.manual_seed(seed)
                    model = build_smd_model((2,), sch, smd=method == "smd", latent_dim=latent_dim,
                                            objective=cfg["objective"], size="small")
                    tr = train(model, ds.x, steps=steps, batch_size=512, lr=2e-3, weighting=cfg["weighting"],
                               ema_decay=0.99, seed=seed, device=device)
                    ema = tr["ema"]
                    t0 = time.perf_counter()
                    x = sample(ema, n_samples, method="ddpm", generator=torch.Generator().manual_seed(100 + seed),
                               device=device)
                    ts = time.perf_counter() - t0
                    m = _toy_metrics(x, ds)
                    rec = {"setting": setting, "T": T, "method": method, "seed": seed, **m,
                           "train_s": round(tr["seconds"], 2), "sample_s": round(ts, 2),
                           "final_loss": sum(tr["losses"][-100:]) / max(1, len(tr["losses"][-100:])),
                           "eta_sensitivity": eta_sensitivity(ema.cpu(), ds.x) if method == "smd" else {}}
                    res["runs"].append(rec)
                    if seed == setting_seeds[0]:
                        x_plot[(method, T)] = x
                    log(f"  toy {setting:5s} T={T:4d} {method:7s} seed={seed}: modes {m['modes_covered']}/49, "
                        f"within 2sd {m['within_2sigma']:.3f}, SW1 {m['sliced_w1']:.4f}, "
                        f"diverged {m['diverged_fraction']:.4f} (train {tr['seconds']:.0f}s)")
        res[f"plot_{setting}"] = _plot_toy(x_plot, ds, out / f"smd_toy_{setting}.png", Ts, ("vanilla", "smd"))
    return res


def _digits_experiment(out: Path, quick: bool, device, steps: int, n_samples: int, Ks: Sequence[int], latent_dim: int,
                       log) -> Dict:
    from ..data import load_digits

    x, _ = load_digits(8)
    cfg = SETTINGS["code"]
    T = 1000
    sch = make_smd_schedule(cfg["schedule"], T)
    res: Dict = {"dataset": "digits 8x8 (1797 images)", "T": T, "setting": "code", "steps": steps,
                 "n_samples": n_samples, "latent_dim": latent_dim, "runs": []}
    imgs = {}
    for method in ("vanilla", "smd"):
        torch.manual_seed(0)
        model = build_smd_model((1, 8, 8), sch, smd=method == "smd", latent_dim=latent_dim, objective=cfg["objective"],
                                size="small")
        tr = train(model, x, steps=steps, batch_size=128, lr=1e-3, weighting=cfg["weighting"], ema_decay=0.995,
                   seed=0, device=device)
        log(f"  digits {method}: trained {steps} steps in {tr['seconds']:.0f}s")
        for sampler in ("ddim", "ddpm"):
            for K in Ks:
                xs = sample(tr["ema"], n_samples, method=sampler, K=K, clip_x0=1.0,
                            generator=torch.Generator().manual_seed(7), device=device, batch_size=500)
                m = _fd_digits(xs, x)
                res["runs"].append({"method": method, "sampler": sampler, "K": K, **m,
                                    "train_s": round(tr["seconds"], 2)})
                imgs[f"{method} {sampler} K={K}"] = xs
                fd = m["fd_classifier"] if m["fd_classifier"] is not None else float("nan")
                log(f"  digits {method:7s} {sampler} K={K:4d}: FD(classifier) {fd:.3f}, FD(pixels) {m['fd_pixels']:.3f}")
    res["plot"] = _plot_digits({k: v for k, v in imgs.items() if "ddim" in k}, out / "smd_digits.png")
    return res


def _summary_table(res: Dict) -> str:
    lines = ["SMD vs vanilla, 7x7 grid (ancestral DDPM with all T steps; mean over seeds)",
             f"{'setting':8s} {'T':>5s} {'method':8s} {'modes':>6s} {'in 2sd':>7s} {'SW1':>8s} {'diverged':>8s}"]
    runs = res["toy"]["runs"]
    keys = sorted({(r["setting"], r["T"], r["method"]) for r in runs}, key=lambda k: (k[0], k[1], k[2] != "vanilla"))
    for k in keys:
        rs = [r for r in runs if (r["setting"], r["T"], r["method"]) == k]
        mean = lambda f: sum(r[f] for r in rs) / len(rs)  # noqa: E731
        lines.append(f"{k[0]:8s} {k[1]:5d} {k[2]:8s} {mean('modes_covered'):6.1f} {mean('within_2sigma'):7.3f} "
                     f"{mean('sliced_w1'):8.4f} {mean('diverged_fraction'):8.4f}")
    if "digits" in res:
        lines += ["", "digits 8x8, T=1000 (code setting): Frechet distances (classifier features; pixels)",
                  f"{'method':8s} {'sampler':7s} {'K':>5s} {'FD cls':>8s} {'FD pix':>8s}"]
        for r in res["digits"]["runs"]:
            fd = r["fd_classifier"]
            lines.append(f"{r['method']:8s} {r['sampler']:7s} {r['K']:5d} {fd if fd is not None else float('nan'):8.3f} "
                         f"{r['fd_pixels']:8.3f}")
    return "\n".join(lines)


def reproduce_smd(out: Path, quick: bool = False, device="cpu") -> dict:
    """The SMD reproduction: 7x7 grid toy (vanilla vs SMD trained and sampled with T in {10, 50, 1000} steps; mode
    coverage, fraction within 2 sigma, sliced W1) and digits (few-step DDIM / DDPM, Frechet distance). Writes
    ``smd.json`` and PNGs into ``out``, prints a table, returns the results. quick: a small version (< ~1 min CPU)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    t0 = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    if quick:
        toy = _toy_experiment(out, quick, device, ("code",), (10, 50), steps=400, n_samples=1000, seeds={"code": (0,)},
                              latent_dim=16, log=log)
        res = {"quick": True, "toy": toy}
    else:
        toy = _toy_experiment(out, quick, device, ("code", "paper"), (10, 50, 1000), steps=1500, n_samples=4000,
                              seeds={"code": (0, 1), "paper": (0,)}, latent_dim=32, log=log)
        dig = _digits_experiment(out, quick, device, steps=1200, n_samples=1000, Ks=(10, 25, 100), latent_dim=32,
                                 log=log)
        res = {"quick": False, "toy": toy, "digits": dig}
    res["device"] = str(device)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["table"] = _summary_table(res)
    res["findings"] = _findings(res)
    print(res["table"])
    print("\n".join(res["findings"]))
    (out / "smd.json").write_text(json.dumps(res, indent=1, default=str))
    return res


def _findings(res: Dict) -> List[str]:
    runs = res["toy"]["runs"]
    out = []
    for setting in sorted({r["setting"] for r in runs}):
        for T in sorted({r["T"] for r in runs if r["setting"] == setting}):
            def mean(method, f):
                rs = [r[f] for r in runs if r["setting"] == setting and r["T"] == T and r["method"] == method]
                return sum(rs) / len(rs)
            dv = mean("smd", "within_2sigma") - mean("vanilla", "within_2sigma")
            dw = mean("smd", "sliced_w1") - mean("vanilla", "sliced_w1")
            line = (f"toy {setting} T={T}: SMD - vanilla: within-2sd {dv:+.3f}, SW1 {dw:+.4f} "
                    f"({'SMD better' if dv > 0 and dw < 0 else 'vanilla better' if dv < 0 and dw > 0 else 'mixed'})")
            dg = {m: mean(m, "diverged_fraction") for m in ("vanilla", "smd")}
            if any(v > 0 for v in dg.values()):
                line += f"; diverged samples: vanilla {dg['vanilla']:.4f}, SMD {dg['smd']:.4f} (left out of SW1)"
            out.append(line)
    return out


def demo_section(out: Path, quick: bool = True) -> dict:
    """Demo: the fused adapter against the materialised (official) form on one SMD-sized layer, then vanilla vs SMD
    on the 7x7 grid with T = 10 steps (a small training run)."""
    from ... import lowrank_adapter

    def materialised(*a):  # the official form: every W_l = u_l u_l^T + softplus(s_l) I built explicitly
        return lowrank_adapter(*a, backend="reference")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res: Dict = {}
    g = torch.Generator().manual_seed(0)
    P, L, d = (2048 if quick else 8192), 2, 100
    r = torch.randn(P, d, generator=g)
    u = torch.randn(P, L, d, generator=g) / math.sqrt(d)
    s = torch.randn(L, generator=g)
    timings = {}
    for b in ("reference", "auto"):
        ts = []
        for _ in range(3):
            a = [v.clone().requires_grad_() for v in (r, u, s)]
            t0 = time.perf_counter()
            y = (materialised(*a) if b == "reference" else lowrank_adapter(*a))
            y.square().sum().backward()
            ts.append(time.perf_counter() - t0)
        timings[b] = min(ts)
    err = float((lowrank_adapter(r, u, s) - materialised(r.double(), u.double(), s.double())).abs().max())
    res["adapter"] = {"P": P, "L": L, "d_z": d, "max_abs_err_vs_float64": err,
                      "fwd_bwd_ms_materialised": round(1e3 * timings["reference"], 2),
                      "fwd_bwd_ms_fused": round(1e3 * timings["auto"], 2),
                      "materialised_W_bytes": P * L * d * d * 4}
    print(f"SMD adapter (P={P}, d_z={d}, L={L}): fused fwd+bwd {1e3 * timings['auto']:.1f} ms vs materialised "
          f"{1e3 * timings['reference']:.1f} ms; max error vs float64 {err:.1e}", flush=True)
    from ..data import get_dataset

    ds = get_dataset("grid7x7", n=20000, seed=0)
    sch = make_smd_schedule("sigmoid", 10)
    steps = 250 if quick else 1500
    toy = {}
    xs = {}
    for method in ("vanilla", "smd"):
        torch.manual_seed(0)
        model = build_smd_model((2,), sch, smd=method == "smd", latent_dim=16, objective="v")
        tr = train(model, ds.x, steps=steps, batch_size=512, lr=2e-3, weighting="abar", ema_decay=0.99)
        x = sample(tr["ema"], 1000, generator=torch.Generator().manual_seed(1))
        xs[(method, 10)] = x
        toy[method] = {**_toy_metrics(x, ds), "train_s": round(tr["seconds"], 1)}
        print(f"SMD demo, 7x7 grid, T=10, {method}: {toy[method]['modes_covered']}/49 modes, within 2sd "
              f"{toy[method]['within_2sigma']:.3f}, SW1 {toy[method]['sliced_w1']:.4f}", flush=True)
    res["toy_T10"] = toy
    res["plot"] = _plot_toy(xs, ds, out / "smd_demo_toy.png", (10,), ("vanilla", "smd"))
    return res
