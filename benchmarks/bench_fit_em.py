"""EM fits: gmmkernels.fit_em vs scikit-learn's GaussianMixture from the same start, and the time per iteration
against the FMA bound.

    python benchmarks/bench_fit_em.py [--quick] [--device cpu|cuda] [--out DIR] [--iters 20] [--reps 3] [--rounds 1]
        [--cases headline,1e6,small,flash] [--no-sklearn] [--threads N] [--clock wall|process]
    python benchmarks/bench_fit_em.py --plot RESULT.json [RESULT.json ...] [--out DIR]
    python benchmarks/bench_fit_em.py --ab ROUNDS [--cases ...] [--threads N]

Each case fits the same clustered data (K true clusters, unit spread) from the same initial parameters: uniform
weights, K data points drawn with a fixed seed as means, unit precisions (``weights_init`` / ``means_init`` /
``precisions_init`` in both libraries; the initial responsibilities that both compute before overriding them are
'random'). ``tol = 0`` makes both run exactly ``--iters`` iterations. On CUDA the diag float32 cases are also fit with
``backend="triton"`` (provider gmmkernels-triton: the Triton pass, the native M-step). Reported per case and dtype:

* fit time (best of ``--reps``) of both, the speed-up, and both final lower bounds (they must agree: float64 to
  1e-9 relative, float32 to 1e-4 -- scikit-learn computes float32 data in float32 too);
* gmmkernels' time per iteration, (T(iters + 1) - T(1)) / iters from two fits (initialisation excluded), against
  the FMA bound of one iteration (benchmarks/bench_mixture_em_stats.py: useful FMAs / measured FMA peak of the
  threads used) and the pass alone (``mixture_em_stats`` under fixed parameters). With ``--rounds R`` that timing
  runs in R rounds after the fits of every case: each round after the first measures the FMA probe again (the first
  uses the probe taken at the start of the run), then times every case in turn; a case reports the median over the
  rounds and the range, and its ratio to the bound is the median of the per-round ratios (iteration time over the
  bound from that round's probe). On a shared virtual machine whose speed drifts over minutes, a single run of each
  case in sequence compares cases and the probe taken in different phases; the rounds spread every case over the
  run;
* a control for the bound: the same number of FMAs as two plain matrix products through torch.matmul (the vendor
  BLAS: MKL / oneDNN on CPU, cuBLAS on CUDA), at the iteration's shapes and dtype -- the logits product [N, P] x
  [P, K] and the statistics product [P, N] x [N, K], P = 2D (diag) or D + D(D + 1)/2 (full) features, so 2NKP =
  the FMAs the bound counts -- with nothing else (no exponential, no softmax, no features). It is timed in every
  round right after the case itself, on the same threads and clock: ``gemm_control`` holds its time (median over
  rounds), its ratio to the bound and the per-round ratio of the iteration to it. It says how near the bound the
  machine's tuned GEMMs come at these skinny shapes;
* the memory the fit needs above its input (resident high-water mark on CPU, max allocated on CUDA; see
  ``benchmarks/_harness.measure_peak_memory``) beside the sizes of the data (N x D) and of the N x K
  responsibilities that a materialising iteration would hold.

Cases: 'headline' = the README's sizes (diag N = 1e5, K = 32, D = 16; full N = 5e4, K = 16, D = 8), '1e6'
(N = 1e6, same K and D) and 'small' (N = 2000, K = 8, D = 4: the time of an iteration outside its pass, the host
side, dominates there). On CUDA scikit-learn is not run; add 'flash' for N = 1e6, K = 1024, D = 128 (diag).
Writes fit_em__<device>__<UTC>.json (schema gmmkernels.bench/1) with the load average before and after, and its
figure OUT/plots/fit_em__<device>__<UTC>.png (ms per iteration of scikit-learn -- its fit time over the iterations --,
gmmkernels and the FMA bound); ``--plot`` draws the figure of existing files side by side.

``--ab ROUNDS``: the host side of an iteration, isolated. In one process, ROUNDS rounds each time fit_em three ways
on the same data from the same start: ``native-loop`` (as shipped: the iterations in one native call),
``python-loop`` (the same native pass and M-step called from Python once per iteration) and ``host-mstep`` (the
native pass, then the M-step as torch ops: the iteration before the native M-step). Each round times the three in
turn, so slow phases of a shared machine hit all three; the output is each way's per-iteration time and the per-round
ratios to ``native-loop`` (min, median, max). Writes fit_em_ab__<device>__<UTC>.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import _harness as H  # noqa: E402
from benchmarks.bench_mixture_em_stats import cpu_bound_ms, fma_peak, fmas  # noqa: E402
from gmmkernels import fit_em, mixture_em_stats  # noqa: E402
from gmmkernels._backend import HAS_TRITON  # noqa: E402

OP = "fit_em"


def make_data(N, K, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(K, D, generator=g, dtype=torch.float64)
    x = centres[torch.randint(K, (N,), generator=g)] + torch.randn(N, D, generator=g, dtype=torch.float64)
    idx = torch.randperm(N, generator=g)[:K]
    return x, x[idx].clone()


def precisions(K, D, cov):
    return torch.ones(K, D, dtype=torch.float64) if cov == "diag" else torch.eye(D, dtype=torch.float64).expand(K, D, D)


CLOCK = {"wall": time.perf_counter, "process": time.process_time}


def best(fn, reps, device, clock="wall"):
    """Best of ``reps`` timings of ``fn`` (seconds) and its last output. clock "process": CPU time of this process
    (all its threads), which other processes on a shared machine do not inflate; meaningful with one thread."""
    now = CLOCK[clock]
    ts, out = [], None
    for _ in range(reps):
        H.sync(device)
        t0 = now()
        out = fn()
        H.sync(device)
        ts.append(now() - t0)
    return min(ts), out


def gemm_features(N, K, D, cov) -> int:
    """Features P of the control's two products, from the bound's work model: 2NKP multiply-adds = fmas(N, K, D, cov)
    (2D diag / spherical, D + D(D + 1)/2 full)."""
    return int(fmas(1, 1, D, cov)) // 2


def gemm_control(N, K, D, cov, dtype, device):
    """The bound's FMAs as two matrix products through torch.matmul into preallocated outputs (so that no page of a
    new output is touched inside the timing): logits F [N, P] x A [P, K] and statistics F^T [P, N] x R [N, K].
    Returns the function that runs both and returns both outputs (its operands in its attribute ``operands``); the
    operands are uniform in [0.5, 1) (no denormals, no zeros)."""
    P = gemm_features(N, K, D, cov)
    g = torch.Generator(device=device).manual_seed(1)
    F = torch.empty(N, P, dtype=dtype, device=device).uniform_(0.5, 1.0, generator=g)
    A = torch.empty(P, K, dtype=dtype, device=device).uniform_(0.5, 1.0, generator=g)
    R = torch.empty(N, K, dtype=dtype, device=device).uniform_(0.5, 1.0, generator=g)
    logits, stats = torch.empty(N, K, dtype=dtype, device=device), torch.empty(P, K, dtype=dtype, device=device)

    def run():
        torch.matmul(F, A, out=logits)
        torch.matmul(F.t(), R, out=stats)
        return logits, stats

    run.operands = {"F": F, "A": A, "R": R}
    run()  # warm-up (the BLAS's own buffers)
    return run


def plot(paths, out_dir) -> Path:
    """One figure of the result files ``paths`` (one panel each): milliseconds per iteration of scikit-learn,
    gmmkernels and the FMA bound per case, log scale; written to ``out_dir``/fit_em__<first file's stem>.png."""
    from gmmkernels.diffusion.experiments._plots import pyplot

    plt = pyplot()
    if plt is None:
        raise ImportError("matplotlib is not installed")
    docs = [H.load_results(p) for p in paths]
    fig, axes = plt.subplots(1, len(docs), figsize=(6.5 * len(docs), 4.2), squeeze=False)
    for ax, doc, path in zip(axes[0], docs, paths):
        rows = doc["results"]
        labels = [f"{r['params']['cov']} {r['dtype'].replace('float', 'f')}"
                  f"{' triton' if r['provider'] == 'gmmkernels-triton' else ''}\nN={r['params']['N']:.0e}"
                  for r in rows]
        series = [("scikit-learn", [r["sklearn"]["fit_s"] * 1e3 / r["n_iter"] if r.get("sklearn") else float("nan")
                                    for r in rows]),
                  ("gmmkernels", [r["per_iter_ms"] for r in rows]),
                  ("GEMM control", [(r.get("gemm_control") or {}).get("ms", float("nan")) for r in rows]),
                  ("FMA bound", [(r.get("fma_bound") or {}).get("t_min_ms", float("nan")) for r in rows])]
        w = 0.2
        for i, (name, ys) in enumerate(series):
            ax.bar([j + (i - 1.5) * w for j in range(len(rows))], ys, w, label=name)
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, fontsize=7, rotation=40, ha="right")
        ax.set_ylabel("ms per EM iteration")
        m = doc["meta"]
        ax.set_title(f"{Path(path).stem}\n{m.get('clock', 'wall')} clock, {m.get('threads')} thread(s)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_dir) / f"fit_em__{Path(paths[0]).stem.split('__', 1)[1]}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run_ab(shapes, dtypes, rounds: int, iters: int, reps: int, dev: str, clock: str) -> list:
    """Paired per-iteration times of fit_em: native loop, Python loop, host M-step (see ``--ab``)."""
    import gmmkernels.fit.em as em

    ways = {"native-loop": {}, "python-loop": {"em_iterate_kernel": lambda *a: (None,) * 6 + (0, 0)},
            "host-mstep": {"mstep_backend": lambda *a: None}}
    saved = {k: getattr(em, k) for k in ("em_iterate_kernel", "mstep_backend")}
    rows = []
    try:
        for name, cov, N, K, D in shapes:
            x64, m0 = make_data(N, K, D)
            for dts in dtypes:
                dt = getattr(torch, dts)
                x = x64.to(device=dev, dtype=dt)
                kw = dict(tol=0.0, reg_covar=1e-6, init="random", weights_init=torch.full((K,), 1.0 / K, device=dev),
                          means_init=m0.to(dev), precisions_init=precisions(K, D, cov).to(dev))
                times = {w: [] for w in ways}
                for _ in range(rounds):
                    for w, patch in ways.items():
                        for k, v in saved.items():
                            setattr(em, k, patch.get(k, v))
                        fit = lambda n: fit_em(x, K, cov, max_iter=n, **kw)  # noqa: E731
                        fit(2)
                        t1, _ = best(lambda: fit(1), reps, dev, clock)
                        tn, _ = best(lambda: fit(iters + 1), reps, dev, clock)
                        times[w].append((tn - t1) / iters * 1e3)
                base = times["native-loop"]
                for w, t in times.items():
                    ratio = [a / b for a, b in zip(t, base)]
                    rows.append({"op": OP, "case": name, "provider": w, "mode": "ab", "dtype": dts, "device": dev,
                                 "params": {"N": N, "K": K, "D": D, "cov": cov, "iters": iters, "rounds": rounds},
                                 "error": None, "ms": {"p50": statistics.median(t)}, "per_iter_ms_rounds": t,
                                 "ratio_to_native_loop": {"min": min(ratio), "median": statistics.median(ratio),
                                                          "max": max(ratio)}})
                    print(f"{name} {cov} {dts} N={N} K={K} D={D} {w}: {statistics.median(t):.3f} ms/iter (median of "
                          f"{rounds}), / native-loop per round {min(ratio):.3f}-{max(ratio):.3f} (median "
                          f"{statistics.median(ratio):.3f})", flush=True)
    finally:
        for k, v in saved.items():
            setattr(em, k, v)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of the per-iteration timing (each after the first re-measures the FMA probe; each "
                         "times every case in turn); reported: the median over rounds and its range")
    ap.add_argument("--cases", default="headline,1e6")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="threads of both libraries (default: torch's)")
    ap.add_argument("--clock", default="wall", choices=["wall", "process"],
                    help="wall: elapsed time; process: CPU time of the process (use with --threads 1 on a shared "
                         "machine: it measures the work of one core, not the waiting)")
    ap.add_argument("--ab", type=int, default=0, metavar="ROUNDS",
                    help="paired rounds of native loop / Python loop / host M-step (see the module docstring)")
    ap.add_argument("--plot", nargs="+", metavar="JSON", default=None,
                    help="only draw the figure of these result files (into OUT/plots) and exit")
    args = ap.parse_args(argv)
    if args.plot:
        print(f"wrote {plot(args.plot, Path(args.out) / 'plots')}")
        return 0
    dev = args.device
    if args.clock == "process" and dev != "cpu":
        raise SystemExit("--clock process: CPU only")
    if args.rounds < 1 or args.reps < 1:
        raise SystemExit("--rounds and --reps: at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = list(os.getloadavg())
    cores = torch.get_num_threads()
    peak = fma_peak(cores) if dev == "cpu" else None
    if peak:
        print(f"FMA peak ({peak['method']}): {cores} cores x {peak['vector_bytes']}-byte vectors "
              f"({peak['lanes']['float32']} float32 / {peak['lanes']['float64']} float64 lanes); "
              f"measured ports x GHz per core {peak['ports_x_ghz_per_core']}", flush=True)
    shapes = []
    for c in args.cases.split(","):
        if args.quick:
            shapes = [("quick", "diag", 20000, 8, 8), ("quick", "full", 10000, 8, 4)]
            break
        if c == "headline":
            shapes += [("headline", "diag", 100000, 32, 16), ("headline", "full", 50000, 16, 8)]
        elif c == "1e6":
            shapes += [("1e6", "diag", 1000000, 32, 16), ("1e6", "full", 1000000, 16, 8)]
        elif c == "flash":
            shapes += [("flash", "diag", 1000000, 1024, 128)]
        elif c == "small":
            shapes += [("small", "diag", 2000, 8, 4), ("small", "full", 2000, 8, 4)]
        else:
            raise SystemExit(f"--cases: unknown case {c!r} (headline, 1e6, flash, small)")
    if args.ab:
        rows = run_ab(shapes, args.dtypes.split(","), args.ab, args.iters, args.reps, dev, args.clock)
        meta = H.collect_meta(dev, ["bench_fit_em.py"] + list(argv if argv is not None else sys.argv[1:]),
                              extra={"clock": args.clock, "threads": cores, "loadavg_before": load0,
                                     "loadavg_after": list(os.getloadavg())})
        if not args.no_write:
            print(f"wrote {H.write_results(args.out, OP + '_ab', dev, rows, meta)}")
        return 0
    use_sk = dev == "cpu" and not args.no_sklearn
    if use_sk:
        from sklearn.mixture import GaussianMixture as SK
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
    rows, timed = [], []
    for name, cov, N, K, D in shapes:
        x64, m0 = make_data(N, K, D)
        w0 = torch.full((K,), 1.0 / K, dtype=torch.float64)
        p0 = precisions(K, D, cov)
        for dts in args.dtypes.split(","):
            dt = getattr(torch, dts)
            x = x64.to(device=dev, dtype=dt)
            kw = dict(tol=0.0, reg_covar=1e-6, init="random", weights_init=w0.to(dev), means_init=m0.to(dev),
                      precisions_init=p0.to(dev), generator=torch.Generator(device=dev).manual_seed(0))

            # the native kernels ("auto"), and on CUDA also the Triton pass (diag / spherical, float32)
            backends = [("auto", f"gmmkernels-{dev}")]
            if dev == "cuda" and HAS_TRITON and cov != "full" and dt == torch.float32:
                backends.append(("triton", "gmmkernels-triton"))
            for be, prov in backends:
                def ours(n_iter, x=x, K=K, cov=cov, kw=kw, be=be):
                    return fit_em(x, K, cov, max_iter=n_iter, backend=be, **kw)

                ours(2)  # warm-up (threads, allocator)
                t_fit, r = best(lambda: ours(args.iters), args.reps, dev, args.clock)
                mix = r.mixture
                # the pass alone, under the fitted parameters
                xc = x - x.mean(0)
                t_pass, _ = best(lambda: mixture_em_stats(xc, mix.logits, mix.means - x.mean(0), mix.scale, cov,
                                                          backend=be), 5, dev, args.clock)
                del xc
                mem, how = H.measure_peak_memory(lambda: ours(args.iters), dev)
                row = {"op": OP, "case": name, "provider": prov, "mode": "fit", "dtype": dts, "device": dev,
                       "params": {"N": N, "K": K, "D": D, "cov": cov, "iters": args.iters}, "error": None,
                       "fit_s": t_fit, "pass_ms": t_pass * 1e3,
                       "lower_bound": float(r.lower_bound), "n_iter": int(r.n_iter),
                       "peak_mem_mb": mem, "peak_mem_method": how,
                       "data_mb": x.element_size() * N * D / 2**20, "resp_mb": x.element_size() * N * K / 2**20}
                if use_sk:
                    X = x64.numpy().astype("float32" if dt == torch.float32 else "float64")
                    sk = SK(K, covariance_type=cov, max_iter=args.iters, tol=0.0, reg_covar=1e-6, init_params="random",
                            weights_init=w0.numpy(), means_init=m0.numpy(), precisions_init=p0.numpy(), random_state=0)
                    with warnings.catch_warnings(), threadpool_limits(cores):
                        warnings.simplefilter("ignore")
                        t_sk, skm = best(lambda: sk.fit(X), max(1, min(args.reps, 2)), "cpu", args.clock)
                    row["sklearn"] = {"fit_s": t_sk, "lower_bound": float(skm.lower_bound_), "n_iter": int(skm.n_iter_),
                                      "dtype": str(X.dtype)}
                    row["speedup_vs_sklearn"] = t_sk / t_fit
                    rel = abs(row["lower_bound"] - skm.lower_bound_) / abs(skm.lower_bound_)
                    row["lower_bound_rel_diff"] = rel
                    row["ok"] = rel < (1e-9 if dt == torch.float64 else 1e-4) and int(skm.n_iter_) == int(r.n_iter)
                rows.append(row)
                timed.append((row, ours))
    # time per iteration, in rounds: each round after the first re-measures the FMA probe (the first reuses the one of
    # the start), then times every case in turn, so that each case meets the phases of a shared machine that the others
    # meet, and the ratios of later rounds pair the iteration with a probe run minutes away from it
    # the GEMM control of a case is timed right after the case in every round (its operands built for that timing and
    # freed after it, so that at most one case's operands are held at a time)
    per_round = {id(row): [] for row, _ in timed}  # (ms per iteration, probe, ms of the GEMM control) per round
    for rnd in range(args.rounds):
        peak_r = peak if (rnd == 0 or not peak) else fma_peak(cores)
        for row, ours in timed:
            t_one, _ = best(lambda: ours(1), args.reps, dev, args.clock)
            t_more, _ = best(lambda: ours(args.iters + 1), args.reps, dev, args.clock)
            p = row["params"]
            run = gemm_control(p["N"], p["K"], p["D"], p["cov"], getattr(torch, row["dtype"]), dev)
            t_gemm = best(run, args.reps, dev, args.clock)[0] * 1e3
            del run
            per_round[id(row)].append(((t_more - t_one) / args.iters * 1e3, peak_r, t_gemm))
    for row, _ in timed:
        p, cov, dts = row["params"], row["params"]["cov"], row["dtype"]
        its = [t for t, _, _ in per_round[id(row)]]
        per_iter = statistics.median(its)
        if min(its) <= 0:
            print(f"warning: {row['case']} {cov} {dts}: a round's T({args.iters + 1}) - T(1) came out <= 0 (the fit is "
                  f"too short to time this way here); raise --iters or --reps", flush=True)
        row.update({"ms": {"p50": per_iter, "min": min(its), "max": max(its)}, "per_iter_ms": per_iter,
                    "per_iter_ms_rounds": its, "rounds": args.rounds})
        if peak:
            bounds = [cpu_bound_ms(p["N"], p["K"], p["D"], cov, dts, pk) for _, pk, _ in per_round[id(row)]]
            ratios = [t / b for t, b in zip(its, bounds)]
            t_min = statistics.median(bounds)
            row["fma_bound"] = {"fmas_per_iter": fmas(p["N"], p["K"], p["D"], cov), "t_min_ms": t_min,
                                "t_min_ms_rounds": bounds, "x_bound_iter": statistics.median(ratios),
                                "x_bound_iter_rounds": ratios, "x_bound_pass": row["pass_ms"] / t_min}
        gms = [g for _, _, g in per_round[id(row)]]
        row["gemm_control"] = {"features": gemm_features(p["N"], p["K"], p["D"], cov), "ms": statistics.median(gms),
                               "ms_rounds": gms, "x_iter_over_gemm": statistics.median([t / g for t, g in zip(its, gms)])}
        if peak:
            row["gemm_control"]["x_bound"] = statistics.median([g / b for g, b in zip(gms, bounds)])
        gc = row["gemm_control"]
        sk_txt = (f"sklearn {row['sklearn']['fit_s']:.3f} s ({row['speedup_vs_sklearn']:.1f}x), lb diff "
                  f"{row['lower_bound_rel_diff']:.1e}" if use_sk else "")
        fb = row.get("fma_bound")
        rng = f" (rounds {min(its):.2f}-{max(its):.2f})" if args.rounds > 1 else ""
        xr = (f", rounds {min(fb['x_bound_iter_rounds']):.2f}-{max(fb['x_bound_iter_rounds']):.2f}x"
              if fb and args.rounds > 1 else "")
        print(f"{row['case']} {cov} {dts} N={p['N']} K={p['K']} D={p['D']}: fit {row['fit_s']:.3f} s, "
              f"{per_iter:.2f} ms/iter{rng}, pass {row['pass_ms']:.2f} ms, extra memory "
              f"{row['peak_mem_mb'] if row['peak_mem_mb'] is None else round(row['peak_mem_mb'])} MB (data "
              f"{row['data_mb']:.0f} MB, N x K {row['resp_mb']:.0f} MB)"
              + (f", bound {fb['t_min_ms']:.2f} ms ({fb['x_bound_iter']:.2f}x per iter{xr}, "
                 f"{fb['x_bound_pass']:.2f}x pass)" if fb else "")
              + f"; GEMM control {gc['ms']:.2f} ms" + (f" ({gc['x_bound']:.2f}x bound)" if peak else "")
              + f", iteration {gc['x_iter_over_gemm']:.2f}x it; {sk_txt}", flush=True)
    del timed
    meta = H.collect_meta(dev, ["bench_fit_em.py"] + list(argv if argv is not None else sys.argv[1:]),
                          extra={"fma_peak": peak, "loadavg_before": load0, "loadavg_after": list(os.getloadavg()),
                                 "clock": args.clock, "threads": cores})
    print(f"\nload average before {load0}, after {meta['loadavg_after']}; clock {args.clock}, {cores} threads")
    print("| case | cov | dtype | N | K | D | scikit-learn (s) | gmmkernels (s) | speed-up | ms / iter | FMA bound (ms) "
          "| x bound | GEMM control (ms) | lower bound (gmmkernels / scikit-learn) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, sk, fb = r["params"], r.get("sklearn"), r.get("fma_bound") or {}
        case = r["case"] + (" (triton)" if r["provider"] == "gmmkernels-triton" else "")
        cells = [case, p["cov"], r["dtype"], p["N"], p["K"], p["D"],
                 f"{sk['fit_s']:.3f}" if sk else "", f"{r['fit_s']:.3f}",
                 f"{r['speedup_vs_sklearn']:.1f}x" if sk else "", f"{r['per_iter_ms']:.2f}",
                 f"{fb['t_min_ms']:.2f}" if fb else "", f"{fb['x_bound_iter']:.2f}" if fb else "",
                 f"{r['gemm_control']['ms']:.2f}" if r.get("gemm_control") else "",
                 f"{r['lower_bound']:.10g} / {sk['lower_bound']:.10g}" if sk else f"{r['lower_bound']:.10g}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if not args.no_write:
        path = H.write_results(args.out, OP, dev, rows, meta)
        print(f"wrote {path}")
        try:
            print(f"wrote {plot([path], Path(args.out) / 'plots')}")
        except ImportError as e:  # no matplotlib: the JSON is the result
            print(f"no plot ({e})")
    return 3 if any(r.get("ok") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
