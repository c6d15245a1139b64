"""`gmmkernels demo`: the fused mixture op on an embedded 2-D mixture, then (when available) the diffusion demo.

Writes into the output folder:
  mixture_field.png   log-density, score field and samples of the embedded mixture (and of its noised law)
  summary.json        agreement with the float64 reference, timings against eager PyTorch, diffusion metrics
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import threading
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
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.4))
    ext = (-4, 4, -4, 4)
    floor = 12.0  # log-density shown down to (max - floor); lower values share the darkest colour
    lp = st.log_prob.reshape(n, n).cpu()
    means = flower.means.detach().cpu()

    im = axes[0].imshow(lp.clamp_min(lp.max() - floor).numpy(), origin="lower", extent=ext, cmap="magma")
    fig.colorbar(im, ax=axes[0], shrink=0.85, label=f"log p(x)   (clipped below at max - {floor:g})")
    axes[0].scatter(means[:, 0], means[:, 1], s=18, c="white", marker="x", label="component means")
    axes[0].set_title("1. log-density of the 9-component mixture\n(fused op, full covariances)")

    sub = slice(None, None, max(1, n // 24))
    gx = grid.reshape(n, n, 2)[sub, sub].cpu()
    sc = st.score.reshape(n, n, 2)[sub, sub].cpu()
    mag = sc.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    q = axes[1].quiver(gx[..., 0], gx[..., 1], (sc / mag)[..., 0], (sc / mag)[..., 1], mag[..., 0].log10(),
                       cmap="viridis", scale=26, width=0.005)
    fig.colorbar(q, ax=axes[1], shrink=0.85, label="log10 |score|")
    axes[1].scatter(means[:, 0], means[:, 1], s=18, c="red", marker="x", label="component means")
    axes[1].set_title("2. score = gradient of log p(x) (fused op)\narrows: direction (towards higher density)")

    alpha = 0.7
    sigma = math.sqrt(1 - alpha**2)
    lpn = flower.noised(alpha, sigma).log_prob(grid).reshape(n, n).cpu()
    im = axes[2].imshow(lpn.clamp_min(lpn.max() - floor).numpy(), origin="lower", extent=ext, cmap="magma")
    fig.colorbar(im, ax=axes[2], shrink=0.85, label=f"log p_t(x)   (clipped below at max - {floor:g})")
    s = samples.cpu()
    axes[2].scatter(s[:, 0], s[:, 1], s=1, c="cyan", alpha=0.4, label=f"{len(s):,} samples of the mixture (x0)")
    axes[2].set_title(f"3. noised law of x_t = {alpha:g} x0 + {sigma:.2f} eps (colour)\n"
                      "and samples of the noise-free mixture (dots)")
    for a in axes:
        a.set_xlim(-4, 4)
        a.set_ylim(-4, 4)
        a.set_aspect("equal")
        a.set_xlabel("x1")
        a.set_ylabel("x2")
        a.legend(loc="lower right", fontsize=8, markerscale=3, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _op_figures(m: dict) -> list:
    """The op section's figure, in the form the method sections use."""
    a = m["agreement_vs_float64"]
    return [{"path": m["figure"],
             "shows": "the embedded 2-D mixture (8 elongated petals + a round centre): 1. its log-density, 2. its "
                      "score field, 3. the density of its noised law with samples of the mixture on top",
             "better": f"panels 1-2 are the fused op's float32 output; its largest error against the float64 "
                       f"reference on the grid is {a['max_abs_err_log_prob']:.1e} in log p (lower is better; float32 "
                       f"rounding alone gives about 1e-6 times |log p|)"}]


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
    print(f"[{name}] {_experiments.EXPERIMENTS[name].description}{' (quick)' if quick else ''} ...", flush=True)
    with _Heartbeat(name):
        res = section(out / name, quick)
    res = dict(res) if isinstance(res, dict) else {"result": res}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] done in {_duration(res['seconds'])}", flush=True)
    _report(name, res, out / name)
    return res


# -- console output ------------------------------------------------------------------------------------

def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{int(s // 60)} min {int(s % 60):02d} s"


class _Heartbeat:
    """While a section runs, prints "[name] still running (...)" after every ``every`` seconds without output, so a
    long silent step (training a model, sampling) shows that it is alive."""

    def __init__(self, name: str, every: float = 30.0):
        self.name, self.every = name, every

    def __enter__(self):
        self._out = sys.stdout
        self.t0 = self.last = time.monotonic()
        self._stop = threading.Event()
        sys.stdout = self
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        sys.stdout = self._out
        return False

    # the stdout proxy: every write counts as a sign of life, and every line the section prints gets its
    # "[name]" prefix (unless it has one already)
    _at_line_start = True

    def write(self, s: str) -> int:
        self.last = time.monotonic()
        pre = f"[{self.name}]   "
        parts = s.split("\n")
        out = []
        for i, part in enumerate(parts):
            if part and self._at_line_start and not part.startswith(f"[{self.name}]"):
                part = pre + part
            out.append(part)
            if i < len(parts) - 1:
                self._at_line_start = True
            elif part:
                self._at_line_start = False
        self._out.write("\n".join(out))
        return len(s)

    def flush(self) -> None:
        self._out.flush()

    def __getattr__(self, name):
        return getattr(self._out, name)

    def _beat(self) -> None:
        while not self._stop.wait(min(5.0, self.every)):
            now = time.monotonic()
            if now - self.last >= self.every:
                self._out.write(f"[{self.name}] still running ({_duration(now - self.t0)}) ...\n")
                self._out.flush()
                self.last = now


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _compact(res: dict, width: int = 110, max_lines: int = 6) -> list:
    """A short rendering of a section's result without a "summary": the top-level numbers on one line, then one
    line per nested group, each cut at ``width`` characters, at most ``max_lines`` lines."""
    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                yield f"{prefix}{k}={_fmt(v)}"

    skip = {"seconds", "figures", "summary"}
    top = [f"{k}={_fmt(v)}" for k, v in res.items()
           if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)]
    groups = [(k, list(flat(v))) for k, v in res.items() if k not in skip and isinstance(v, dict)]
    lines = ([", ".join(top)] if top else []) + [f"{k}: " + ", ".join(items) for k, items in groups if items]
    lines = [ln if len(ln) <= width else ln[: width - 3] + "..." for ln in lines]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more groups in summary.json)"]
    return lines


def _png_entries(res, out: Path) -> list:
    """Figures named in a result without a "figures" list: any string value ending in .png."""
    found = []

    def walk(v):
        if isinstance(v, dict):
            for w in v.values():
                walk(w)
        elif isinstance(v, str) and v.endswith(".png"):
            path = Path(v) if Path(v).is_absolute() else out / v
            found.append({"path": str(path)})

    walk(res)
    return found


def _report(name: str, res: dict, out: Path) -> None:
    """Print a section's summary lines (or a compact rendering of its numbers) and its figures."""
    lines = res.get("summary")
    if not (isinstance(lines, (list, tuple)) and lines):
        lines = _compact(res)
    for line in lines:
        print(f"[{name}]   {line}")
    figures = res.get("figures")
    if not isinstance(figures, (list, tuple)):
        figures = _png_entries(res, out)
    for f in figures:
        if not isinstance(f, dict) or "path" not in f:
            continue
        if not str(f["path"]).endswith(".png") or not Path(f["path"]).exists():
            print(f"[{name}]   figure {f['path']}")  # e.g. "skipped: matplotlib is not installed"
            continue
        print(f"[{name}]   figure {f['path']}")
        for key in ("shows", "better"):
            if f.get(key):
                print(f"[{name}]       {key}: {f[key]}")
    sys.stdout.flush()


def _diffusion_report(res: dict, out: Path) -> dict:
    """Figures and summary lines of the diffusion core's section (small DDPMs on the 2-D toy and the digits)."""
    toy, dig = res.get("toy2d", {}), res.get("digits", {})
    summary, figures = [], []
    if toy:
        summary.append(f"2-D toy: {toy.get('arch')} with {toy.get('params', 0):,} parameters, {toy.get('steps')} training "
                       f"steps; sliced W1 to the data {_fmt(toy.get('sliced_wasserstein'))} (lower is better), NLL of "
                       f"the samples {_fmt(toy.get('nll'))} vs the data's {_fmt(toy.get('nll_data'))} (closer is better)")
        figures.append({"path": str(out / toy.get("png", "diffusion_toy2d.png")),
                        "shows": "left: the 2-D training data (8 Gaussians on a ring); right: samples of the DDPM "
                                 f"trained on it ({toy.get('sampler')})",
                        "better": "the closer the right panel is to the left, the better (sliced W1 above)"})
    if dig:
        summary.append(f"digits: {dig.get('arch')} with {dig.get('params', 0):,} parameters, {dig.get('steps')} "
                       f"training steps; Frechet distance {_fmt(dig.get('digits_fd'))} (lower is better; real digits "
                       f"score {_fmt(dig.get('digits_fd_real_subset'))}, the floor)")
        figures.append({"path": str(out / dig.get("png", "diffusion_digits.png")),
                        "shows": "left: real 8x8 digits; right: digits sampled from the DDPM trained on them",
                        "better": "recognisable, varied digits on the right (the Frechet distance above: lower is "
                                  "better)"})
    return {"summary": summary, "figures": figures}


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
        methods = _methods(args)
    except ValueError as e:
        print(f"gmmkernels demo: {e}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    sections = ["op"] + ([] if args.skip_diffusion else ["diffusion"] + methods)
    print(f"gmmkernels demo: writing to {out.resolve()}; sections: {', '.join(sections)}", flush=True)
    if importlib.util.find_spec("matplotlib") is None:
        print("gmmkernels demo: matplotlib is not installed, so the figures drawn with it (mixture_field.png and "
              "most method figures) are skipped; every number still goes to the console and summary.json. "
              "To get them: pip install matplotlib", flush=True)

    summary = {"mixture_op": op_section(out, device, args.quick, args.seed)}
    m = summary["mixture_op"]
    a, s = m["agreement_vs_float64"], m["speed_log_prob_and_score"]
    print(f"[op] backends on {device}: {', '.join(m['backends'])}")
    print(f"[op] vs float64 reference on {a['points']} grid points: max |d log p| = {a['max_abs_err_log_prob']:.2e}, "
          f"max rel score err = {a['max_rel_err_score']:.2e} (lower is better; float32 rounding is about 1e-6)")
    print(f"[op] log p + score, N={s['shape']['N']} K={s['shape']['K']} D={s['shape']['D']} diag fp32: "
          f"fused {s['fused_ms']:.1f} ms vs eager {s['eager_ms']:.1f} ms ({s['speedup_vs_eager']:.1f}x faster)")
    m["figures"] = _op_figures(m)
    _report("op", {"summary": [], "figures": m["figures"]}, out)
    if not args.skip_diffusion:
        from .diffusion.commands import demo_section

        print("[diffusion] training two small DDPMs (2-D toy, 8x8 digits) and sampling them: about "
              f"{'1-2 min' if args.quick else '5-10 min'} on 2 CPU cores ...", flush=True)
        t0 = time.perf_counter()
        with _Heartbeat("diffusion"):
            summary["diffusion"] = demo_section(out, args.quick)
        summary["diffusion"].update(_diffusion_report(summary["diffusion"], out))
        print(f"[diffusion] done in {_duration(time.perf_counter() - t0)}", flush=True)
        _report("diffusion", summary["diffusion"], out)
        for name in methods:
            summary[name] = _method_section(name, out, args.quick)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"gmmkernels demo: done in {_duration(time.perf_counter() - t_start)}; every number is in "
          f"{out / 'summary.json'}")
    return 0
