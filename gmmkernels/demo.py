"""`gmmkernels demo`: the fused mixture op on an embedded 2-D mixture, then (when available) the diffusion demo.

Writes into the output folder:
  mixture_field.png   log-density, score field and samples of the embedded mixture (and of its noised law)
  summary.json        agreement with the float64 reference, timings against eager PyTorch, diffusion metrics
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from .reference.mixture_stats import mixture_stats_ref
from .mixture import GaussianMixture
from .ops.mixture_stats import available_backends, mixture_stats

# The embedded data set: an 8-petal "flower" of elongated full-covariance components around a round centre.
_PETALS = 8


def flower_mixture(dtype=torch.float32, device="cpu") -> GaussianMixture:
    ang = torch.arange(_PETALS, dtype=torch.float64) * (2 * math.pi / _PETALS)
    centres = torch.cat([torch.stack([2.2 * ang.cos(), 2.2 * ang.sin()], -1), torch.zeros(1, 2, dtype=torch.float64)])
    rot = torch.stack([torch.stack([ang.cos(), -ang.sin()], -1), torch.stack([ang.sin(), ang.cos()], -1)], -2)
    rot = torch.cat([rot, torch.eye(2, dtype=torch.float64)[None]])
    s = torch.tensor([[0.55, 0.16]] * _PETALS + [[0.35, 0.35]], dtype=torch.float64)
    cov = rot @ torch.diag_embed(s**2) @ rot.transpose(-1, -2)
    logits = torch.tensor([0.0] * _PETALS + [0.7], dtype=torch.float64)
    L = torch.linalg.cholesky(cov)
    return GaussianMixture(logits.to(dtype), centres.to(dtype), L.to(dtype), "full").to(device)


def _eager_stats(x, logits, means, scale):
    """What a user writes without the fused op: materialise N x K x D, then logsumexp / softmax."""
    delta = x[:, None, :] - means[None]
    inv_var = scale.pow(-2)
    logit = torch.log_softmax(logits, -1) - 0.5 * (delta * delta * inv_var).sum(-1) - torch.log(scale).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    logp = torch.logsumexp(logit, -1)
    r = torch.softmax(logit, -1)
    score = -(r[..., None] * delta * inv_var).sum(1)
    return logp, score


def _time(fn, reps: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def op_section(out: Path, device: torch.device, quick: bool, seed: int) -> dict:
    g = torch.Generator(device=device).manual_seed(seed)
    flower = flower_mixture(device=device)
    summary: dict = {"device": str(device), "backends": available_backends(device)}

    # 1. agreement with the float64 reference on a grid
    n = 120 if quick else 200
    lin = torch.linspace(-4, 4, n, device=device)
    grid = torch.stack(torch.meshgrid(lin, lin, indexing="xy"), -1).reshape(-1, 2)
    st = flower.stats(grid, with_resp=True)
    ref64 = mixture_stats_ref(grid.double().cpu(), *(t.double().cpu() for t in (flower.logits, flower.means, flower.scale)), "full")
    summary["agreement_vs_float64"] = {
        "points": grid.shape[0],
        "max_abs_err_log_prob": float((st.log_prob.double().cpu() - ref64.log_prob).abs().max()),
        "max_rel_err_score": float(((st.score.double().cpu() - ref64.score).norm(dim=-1) / ref64.score.norm(dim=-1).clamp_min(1e-12)).max()),
        "max_abs_err_responsibilities": float((st.responsibilities.double().cpu() - ref64.responsibilities).abs().max()),
    }

    # 2. speed against eager PyTorch (materialising) on a mid-size diagonal mixture
    N, K, D = (16384, 64, 32) if quick else (65536, 64, 32)
    x = torch.randn(N, D, generator=g, device=device)
    logits = torch.randn(K, generator=g, device=device)
    means = torch.randn(K, D, generator=g, device=device)
    scale = torch.rand(K, D, generator=g, device=device) + 0.5
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    reps = 3 if quick else 5
    t_fused = _time(lambda: mixture_stats(x, logits, means, scale), reps, sync)
    t_eager = _time(lambda: _eager_stats(x, logits, means, scale), reps, sync)
    lp_e, sc_e = _eager_stats(x, logits, means, scale)
    lp_f, sc_f = mixture_stats(x, logits, means, scale)[:2]
    summary["speed_log_prob_and_score"] = {
        "shape": {"N": N, "K": K, "D": D, "cov": "diag", "dtype": "float32"},
        "fused_ms": round(t_fused, 3),
        "eager_ms": round(t_eager, 3),
        "speedup_vs_eager": round(t_eager / t_fused, 2),
        "max_abs_diff_log_prob_vs_eager": float((lp_e - lp_f).abs().max()),
        "note": "best of %d runs after one warm-up; eager materialises N x K x D" % reps,
    }

    # 3. the picture
    samples = flower.sample(2000 if quick else 4000, generator=g)
    summary["figure"] = _plot(out / "mixture_field.png", flower, grid, st, n, samples)
    return summary


def _plot(path: Path, flower, grid, st, n, samples):
    from .diffusion.experiments._plots import MISSING, pyplot

    plt = pyplot()
    if plt is None:
        return MISSING
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    ext = (-4, 4, -4, 4)
    lp = st.log_prob.reshape(n, n).cpu()
    axes[0].imshow(lp.clamp_min(lp.max() - 12).numpy(), origin="lower", extent=ext, cmap="magma")
    axes[0].set_title("log p(x) (fused op)")
    sub = slice(None, None, max(1, n // 24))
    gx = grid.reshape(n, n, 2)[sub, sub].cpu()
    sc = st.score.reshape(n, n, 2)[sub, sub].cpu()
    mag = sc.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    axes[1].quiver(gx[..., 0], gx[..., 1], (sc / mag)[..., 0], (sc / mag)[..., 1], mag[..., 0].log(), cmap="viridis", scale=40)
    axes[1].set_title("score direction (colour: log |score|)")
    noised = flower.noised(0.7, math.sqrt(1 - 0.49))
    lpn = noised.log_prob(grid).reshape(n, n).cpu()
    axes[2].imshow(lpn.numpy(), origin="lower", extent=ext, cmap="magma", alpha=0.9)
    s = samples.cpu()
    axes[2].scatter(s[:, 0], s[:, 1], s=1, c="cyan", alpha=0.4)
    axes[2].set_title("samples, over the noised law (a=0.7)")
    for a in axes:
        a.set_xlim(-4, 4)
        a.set_ylim(-4, 4)
        a.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# the method sections: the registry of the methods' experiments, each with demo_section(out: Path, quick: bool) -> dict
try:
    from .diffusion import experiments as _experiments
except ImportError:  # the package without its diffusion layer: the op part only
    _experiments = None
METHODS = tuple(_experiments.EXPERIMENTS) if _experiments is not None else ()


def _methods(args) -> list:
    spec = getattr(args, "methods", "all").strip().lower()
    if spec == "all":
        return list(METHODS)
    if spec in ("none", ""):
        return []
    names = [m.strip() for m in spec.split(",") if m.strip()]
    accepted = _experiments.names() if _experiments is not None else ()
    bad = [m for m in names if m not in accepted]
    if bad:
        raise ValueError(f"unknown --methods entry {bad[0]!r}; choose from {', '.join(METHODS)}, 'all' or 'none'")
    return [_experiments.resolve(m) for m in names]


def _method_section(name: str, out: Path, quick: bool) -> dict:
    t0 = time.perf_counter()
    section = _experiments.EXPERIMENTS[name].demo_section
    print(f"[{name}] running its demo section{' (quick)' if quick else ''} ...", flush=True)
    res = section(out / name, quick)
    res = dict(res) if isinstance(res, dict) else {"result": res}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] done in {res['seconds']} s: {_brief(res)}", flush=True)
    return res


def _brief(res: dict, limit: int = 700) -> str:
    """One line of the numbers in a section's result (nested keys joined with '.')."""
    items = []

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, w in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), w)
        elif isinstance(v, float):
            items.append(f"{prefix}={v:.4g}")
        elif isinstance(v, int) and not isinstance(v, bool):
            items.append(f"{prefix}={v}")

    walk("", {k: v for k, v in res.items() if k != "seconds"})
    line = ", ".join(items)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            print(f"gmmkernels demo: unknown --device {args.device!r}", file=sys.stderr)
            return 2
        if device.type == "cuda" and not torch.cuda.is_available():
            print("gmmkernels demo: --device cuda but no CUDA device is available", file=sys.stderr)
            return 2
    try:
        _methods(args)
    except ValueError as e:
        print(f"gmmkernels demo: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    print(f"gmmkernels demo: writing to {out.resolve()}", flush=True)
    summary = {"mixture_op": op_section(out, device, args.quick, args.seed)}
    m = summary["mixture_op"]
    a, s = m["agreement_vs_float64"], m["speed_log_prob_and_score"]
    print(f"[op] backends on {device}: {', '.join(m['backends'])}")
    print(f"[op] vs float64 reference on {a['points']} grid points: max |d log p| = {a['max_abs_err_log_prob']:.2e}, "
          f"max rel score err = {a['max_rel_err_score']:.2e}")
    print(f"[op] log p + score, N={s['shape']['N']} K={s['shape']['K']} D={s['shape']['D']} diag fp32: "
          f"fused {s['fused_ms']:.1f} ms vs eager {s['eager_ms']:.1f} ms ({s['speedup_vs_eager']:.1f}x)")
    print(f"[op] figure: {m['figure']}", flush=True)
    if not args.skip_diffusion:
        from .diffusion.commands import demo_section

        summary["diffusion"] = demo_section(out, args.quick)
        for name in _methods(args):
            summary[name] = _method_section(name, out, args.quick)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"gmmkernels demo: done; summary in {out / 'summary.json'}")
    return 0
