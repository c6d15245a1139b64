"""One EM / VB pass (E-step + sufficient statistics): the fused mixture_em_stats vs the two-kernel path and eager
PyTorch, with the FMA bound (CPU) or the roofline (GPU) of every case; and EM's M-step, mixture_em_mstep, against
the host path of torch ops it replaces in fit_em.

    python benchmarks/bench_mixture_em_stats.py [--quick] [--device cpu|cuda] [--out DIR] [--no-write]
        [--cases cpu|flash|kscan|mstep|all] [--min-run-time S]

Op: sum log p, sum r log r, N_k, sum r x, sum r x^2 (diag) or sum r x x^T (full) of x [N, D] under a K-component
mixture. Providers: gmmkernels-{cpu,cuda} (``mixture_em_stats``), gmmkernels-triton (CUDA: the Triton one-pass
kernel, ``backend="triton"``, diag float32 cases; K above 64 in tiles), gmmkernels-two-step (``mixture_stats`` with the
N x K responsibilities written, then ``mixture_suffstats``: the iteration before the fused op), torch-eager (the
GEMM-expansion E-step scikit-learn uses, log-softmax, then R^T [x, x^2] / einsum) and torch-compile (the same
function compiled). Every provider is first checked against a float64 reference on the first 4096 rows.

Work model (useful fused multiply-adds per point and component): diag 4 D (E-step 2 D, statistics 2 D), full
D (D + 1) + 2 D. CPU bound = FMAs / (cores x FMA ports x lanes x clock), with the clock and ports taken from a
measured FMA-throughput probe (see ``fma_peak``); GPU: the H100/H200 peaks of benchmarks/_harness.py (FP32 SIMT,
HBM, SFU exponentials; the fused CUDA kernel, and the Triton kernel when K > 64, evaluate each logit twice, which
the roofline does not count).
Shapes: the fit_em headline cases (N = 1e5, K = 32, D = 16 diag; N = 5e4, K = 16, D = 8 full; N = 1e6) and on
CUDA Flash-GMM's E-step shape (N = 1e6, K = 1024, D = 128 diag); ``--cases kscan``: the fused pass alone at
N = 5e4, D = 16, K = 8 .. 256 (diag), which separates the cost per row from the cost per component.
``--cases mstep`` (also part of ``all``): the M-step of one mixture from its statistics, as fit_em calls it
(gmmkernels-<device>: the native op below the autograd layer) and as fit_em computed it before
(host-path: about 45 torch ops: means, covariances, Cholesky with its check, weights, inverse factor, logc), at the
fit_em shapes, at K = 256, D = 32 full and at Flash-GMM's K = 1024, D = 128 diag; op "mixture_em_mstep" in the
JSON. Writes mixture_em_stats__<device>__<UTC>.json.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness as H  # noqa: E402
from gmmkernels import mixture_em_stats, mixture_stats, mixture_suffstats  # noqa: E402
from gmmkernels.fit._data import Stats, kernel_params  # noqa: E402
from gmmkernels.fit.em import m_step  # noqa: E402
from gmmkernels.ops.mixture_em_stats import em_mstep_kernel  # noqa: E402
from gmmkernels.reference.mixture_em_stats import mixture_em_mstep_ref, mixture_em_stats_ref  # noqa: E402

OP = "mixture_em_stats"
LOG_2PI = math.log(2 * math.pi)

# ------------------------------------------------------------------------------------------------- the CPU bound

_PROBE = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
/* one register of the widest vector unit -march=native gives, and enough independent chains to cover the FMA latency
   on every port (latency 4-5 cycles x 2 ports) while all of them and the two constants stay in registers */
#if defined(__AVX512F__)
#define VB 64
#define NCH 12
#elif defined(__AVX__)
#define VB 32
#define NCH 10
#else
#define VB 16
#define NCH 10
#endif
typedef float VF __attribute__((vector_size(VB)));
typedef double VD __attribute__((vector_size(VB)));
static long ITERS = 40000000;
/* the CPU time of the calling thread: the rate of a core while it runs this thread, also on a shared machine */
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
#define BODY(V, s)                                                                                  \
  V a[NCH], b = (V){} + (s)0.9999, c = (V){} + (s)1e-4;                                             \
  for (int i = 0; i < NCH; ++i) a[i] = (V){} + (s)(0.001 * i);                                      \
  double t0 = now();                                                                                \
  for (long it = 0; it < ITERS; ++it)                                                               \
    _Pragma("GCC unroll 16") for (int i = 0; i < NCH; ++i) a[i] = a[i] * b + c;                     \
  double dt = now() - t0;                                                                           \
  s acc = 0;                                                                                        \
  for (int i = 0; i < NCH; ++i) acc += a[i][0];                                                     \
  if (acc == (s)12345) printf("-");
static void* runf(void* out) { BODY(VF, float) *(double*)out = (double)NCH * ITERS * (VB / 4) / dt; return 0; }
static void* rund(void* out) { BODY(VD, double) *(double*)out = (double)NCH * ITERS * (VB / 8) / dt; return 0; }
int main(int argc, char** argv) {
  int n = atoi(argv[1]);
  pthread_t th[256];
  double r[256];
  printf("vector_bytes %d\n", VB);
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < n; ++i) pthread_create(&th[i], 0, pass ? rund : runf, &r[i]);
    double tot = 0;
    for (int i = 0; i < n; ++i) { pthread_join(th[i], 0); tot += r[i]; }
    printf("%s %.6e\n", pass ? "float64" : "float32", tot);
  }
  return 0;
}
"""


def fma_peak(cores: int) -> dict:
    """Measured lane-FMAs per second of ``cores`` threads running independent fused multiply-add chains on vectors of
    the widest unit -march=native targets (64 bytes with AVX-512, 32 with AVX2, 16 otherwise: the width the CPU
    kernels are built for, csrc/include/gmmkernels/cpu_vec.h), as many chains as cover the FMA latency on every port
    and fit the register file (12 of 32 registers, 10 of 16), fully unrolled so that they stay in registers (a vector
    wider than the target's registers, or a rolled loop at -O2, keeps them in memory and the probe times the stack
    instead: 64-byte vectors read 0.2 "ports x GHz" on an AVX2 AMD EPYC, 12x below its FMA rate), compiled with the
    system C compiler and -march=native, each thread timed by its own CPU-time clock (so time spent descheduled does
    not count), the best of 5 runs (a clock drop while another process loads the machine still lowers a run: a single
    run once read 4.97 against 7.15-7.47 for float64 on an AMD EPYC); and what they imply: FMA ports x clock per
    core in vectors of that width, one rate for both dtypes. Falls back to 2 ports of 64-byte vectors at the nominal
    clock of /proc/cpuinfo when no compiler is found."""
    out = {"cores": cores, "vector_bytes": 64, "lanes": {"float32": 16, "float64": 8}, "method": None}
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc:
        with tempfile.TemporaryDirectory() as d:
            src, exe = os.path.join(d, "probe.c"), os.path.join(d, "probe")
            Path(src).write_text(_PROBE)
            r = subprocess.run([cc, "-O2", "-march=native", "-ffp-contract=fast", "-pthread", src, "-o", exe],
                               capture_output=True, text=True)
            if r.returncode == 0:
                # best of 5 runs (a run is ~0.1 s, so another process on the core or a clock drop lowers it), and
                # one rate for both dtypes: the same FMA ports serve them, so a lower rate for one is noise
                runs = [subprocess.run([exe, str(cores)], capture_output=True, text=True, timeout=120).stdout.split()
                        for _ in range(5)]
                vb = int(runs[0][1])  # "vector_bytes N", then "dtype rate" pairs
                out["vector_bytes"] = vb
                out["lanes"] = {"float32": vb // 4, "float64": vb // 8}
                best = max(float(res[i + 1]) / cores / out["lanes"][res[i]] / 1e9
                           for res in runs for i in range(2, len(res), 2))
                out["ports_x_ghz_per_core"] = {k: best for k in out["lanes"]}
                out["lane_fma_per_s"] = {k: best * 1e9 * cores * lanes for k, lanes in out["lanes"].items()}
                out["method"] = "measured (FMA-chain probe, best of 5 runs, one rate for both dtypes)"
    if out["method"] is None:
        ghz = 2.0
        try:
            mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
            ghz = max(mhz) / 1e3 if mhz else ghz
        except OSError:
            pass
        out["lane_fma_per_s"] = {k: cores * 2 * lanes * ghz * 1e9 for k, lanes in out["lanes"].items()}
        out["ports_x_ghz_per_core"] = {k: 2 * ghz for k in out["lanes"]}
        out["method"] = f"assumed: 2 FMA ports at the nominal {ghz:.2f} GHz"
    return out


def fmas(N: int, K: int, D: int, cov: str) -> float:
    """Useful fused multiply-adds of one pass (E-step + statistics), the work model of the module docstring."""
    per = D * (D + 1) + 2 * D if cov == "full" else 4 * D
    return float(N) * K * per


def cpu_bound_ms(N, K, D, cov, dtype: str, peak: dict) -> float:
    return 1e3 * fmas(N, K, D, cov) / peak["lane_fma_per_s"][dtype]


# ------------------------------------------------------------------------------------------------- providers


def eager_em_stats(x, logits, means, scale, cov):
    """What one writes in PyTorch: the E-step of scikit-learn (GEMM expansion for diag, a triangular solve per
    component for full), log-softmax, then the statistics as products with the responsibilities."""
    D = x.shape[-1]
    logw = torch.log_softmax(logits, -1)
    if cov == "full":
        z = torch.linalg.solve_triangular(scale, (x.unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2), upper=False)
        maha = (z * z).sum(1).T  # [N, K]
        logdet = torch.log(torch.diagonal(scale, dim1=-2, dim2=-1)).sum(-1)
    else:
        prec = scale.pow(-2)
        maha = (x * x) @ prec.T - 2 * x @ (means * prec).T + (means * means * prec).sum(-1)
        logdet = torch.log(scale).sum(-1)
    logit = logw - logdet - 0.5 * D * LOG_2PI - 0.5 * maha
    lse = torch.logsumexp(logit, -1)
    log_r = logit - lse[:, None]
    r = log_r.exp()
    sxx = torch.einsum("nk,ni,nj->kij", r, x, x) if cov == "full" else r.T @ (x * x)
    return lse.sum(), (r * log_r).sum(), r.sum(0), r.T @ x, sxx


def two_step(x, logits, means, scale, cov):
    st = mixture_stats(x, logits, means, scale, cov, with_score=False, with_resp=True)
    r = st.responsibilities
    nk, sx, sxx = mixture_suffstats(x, r, cov == "full")
    return st.log_prob.sum(), torch.where(r > 0, r * r.log(), 0).sum(), nk, sx, sxx


def make_case(N, K, D, cov, dtype, device, seed=0):
    """Clustered data with the mixture roughly fitted to it (the state of EM after a few iterations)."""
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(K, D, generator=g, dtype=torch.float64)
    x = centres[torch.randint(K, (N,), generator=g)] + torch.randn(N, D, generator=g, dtype=torch.float64)
    means = centres + 0.3 * torch.randn(K, D, generator=g, dtype=torch.float64)
    logits = torch.zeros(K, dtype=torch.float64)
    scale = (torch.eye(D, dtype=torch.float64).expand(K, D, D).contiguous() if cov == "full"
             else torch.ones(K, D, dtype=torch.float64))
    return [t.to(device=device, dtype=dtype) for t in (x, logits, means, scale)]


def check(out, ref, N, M):
    """Relative errors of the outputs on the first M rows against the float64 reference (the sums rescaled). The
    entropy sum is measured against the scale of the bound it enters (max of |sum r log r| and |sum log p|): each row's
    r log r terms are computed from s = 1 + (small terms) in the working precision, so on well-separated clusters,
    where the entropy is nearly zero, its own relative error is large (float32: up to ~1e-1) while its absolute error
    stays at the precision's epsilon per row."""
    names = ("sum_log_prob", "sum_r_log_r", "nk", "sx", "sxx")
    err = {}
    for nm, a, b in zip(names, out, ref):
        a = a.double().cpu() * (M / N)
        scale = b.abs().max()
        if nm == "sum_r_log_r":
            scale = torch.maximum(scale, ref[0].abs().max())
        err[nm] = float((a - b).abs().max() / scale.clamp_min(1e-30))
    return err


def _cases(which: str, quick: bool, device: str):
    if quick:
        return [("quick-diag", 4096, 8, 4, "diag"), ("quick-full", 4096, 8, 4, "full")]
    cpu = [("headline-diag", 100000, 32, 16, "diag"), ("headline-full", 50000, 16, 8, "full"),
           ("1e6-diag", 1000000, 32, 16, "diag"), ("1e6-full", 1000000, 16, 8, "full")]
    flash = [("flash-gmm", 1000000, 1024, 128, "diag")]
    if which == "kscan":  # the fused pass alone as K grows: the per-row cost against the per-component cost
        return [(f"kscan-K{K}", 50000, K, 16, "diag") for K in (8, 16, 32, 64, 128, 256)]
    if which == "cpu":
        return cpu
    if which == "flash":
        return flash
    return cpu + (flash if device == "cuda" else [])


MSTEP_CASES = [("mstep-diag", 32, 16, "diag"), ("mstep-full", 16, 8, "full"), ("mstep-full-K256", 256, 32, "full"),
               ("mstep-flash", 1024, 128, "diag")]


def host_mstep(nk, sx, sxx, cov):
    """The M-step as fit_em computes it with torch ops where it does not take mixture_em_mstep (its host path),
    with the next pass's kernel parameters: (logits, means, scale, prec, logc)."""
    logits, mu, scale, _ = m_step("bench", Stats(None, None, nk, sx, sxx), cov, 1e-6, None)
    return (logits, mu, scale, *kernel_params(logits, mu, scale, cov))


def mstep_stats(K, D, cov, dtype, device, seed=0):
    """Statistics (nk [1, K], sx [1, K, D], sxx) of K well-conditioned components with 50-150 points each: means
    ~ N(0, 4 I), covariances A A^T / D + I / 2 (full) or uniform variances in [0.5, 1.5] (diag)."""
    g = torch.Generator().manual_seed(seed)
    nk = 50 + 100 * torch.rand(1, K, generator=g, dtype=torch.float64)
    mu = 2 * torch.randn(1, K, D, generator=g, dtype=torch.float64)
    if cov == "full":
        A = torch.randn(1, K, D, D, generator=g, dtype=torch.float64)
        c = A @ A.transpose(-1, -2) / D + 0.5 * torch.eye(D, dtype=torch.float64)
        sxx = nk[..., None, None] * (c + mu[..., :, None] * mu[..., None, :])
    else:
        sxx = nk[..., None] * (0.5 + torch.rand(1, K, D, generator=g, dtype=torch.float64) + mu * mu)
    return tuple(t.to(device=device, dtype=dtype) for t in (nk, nk[..., None] * mu, sxx))


def run_mstep(dev: str, dtypes, min_run_time: float, quick: bool) -> list:
    """Rows of op "mixture_em_mstep": the native M-step against the host path, from the statistics of
    :func:`mstep_stats`."""
    rows = []
    for name, K, D, cov in MSTEP_CASES[:2] if quick else MSTEP_CASES:
        for dts in dtypes:
            dt = getattr(torch, dts)
            stats = mstep_stats(K, D, cov, dt, dev)
            want = mixture_em_mstep_ref(*(t.double().cpu() for t in stats), cov, 1e-6)
            fns = {f"gmmkernels-{dev}": lambda: em_mstep_kernel(*stats, cov, 1e-6, dev),
                   "host-path": lambda: host_mstep(*stats, cov)}
            for prov, fn in fns.items():
                row = {"op": "mixture_em_mstep", "case": name, "provider": prov, "precision": "ieee", "mode": "fwd",
                       "dtype": dts, "device": dev, "params": {"B": 1, "K": K, "D": D, "cov": cov}, "ms": None,
                       "error": None}
                try:
                    out = fn()
                    if prov != "host-path" and not bool(out.ok.all()):
                        raise RuntimeError("the native M-step flagged a component of well-conditioned statistics")
                    row["errors_vs_fp64"] = {
                        f: float(((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-30)))
                        for f, a, b in zip(("logits", "means", "scale", "prec", "logc"), tuple(out)[:5], want)}
                    row["ok"] = all(v < (1e-9 if dt == torch.float64 else 1e-4) for v in row["errors_vs_fp64"].values())
                    _, row["first_call_ms"] = H.time_first_call(fn, dev)
                    row["ms"] = H.time_fn(fn, dev, min_run_time)
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                rows.append(row)
            if rows[-1]["ms"] and rows[-2]["ms"]:
                rows[-2]["speedup_vs_host_path"] = rows[-1]["ms"]["p50"] / rows[-2]["ms"]["p50"]
            H.cleanup(dev, full=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cases", default="all", choices=["cpu", "flash", "kscan", "mstep", "all"],
                    help="kscan: diag, N = 5e4, D = 16, K = 8 .. 256, the fused pass only; mstep: the M-step only")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--min-run-time", type=float, default=0.5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    dev = args.device
    cores = torch.get_num_threads()
    peak = fma_peak(cores) if dev == "cpu" else None
    if peak:
        print(f"FMA peak ({peak['method']}): {cores} cores, lane-FMA/s {peak['lane_fma_per_s']}, "
              f"ports x GHz per core {peak['ports_x_ghz_per_core']}")
    rows = []
    for name, N, K, D, cov in ([] if args.cases == "mstep" else _cases(args.cases, args.quick, dev)):
        for dts in args.dtypes.split(","):
            dt = getattr(torch, dts)
            x, logits, means, scale = make_case(N, K, D, cov, dt, dev)
            M = min(N, 4096)
            ref = mixture_em_stats_ref(*(t[:M] if i == 0 else t for i, t in
                                         enumerate(t.double().cpu() for t in (x, logits, means, scale))), cov)
            fused = lambda: tuple(mixture_em_stats(x, logits, means, scale, cov))[:5]  # noqa: E731
            fns = {f"gmmkernels-{dev}": fused}
            # the Triton one-pass kernel (diag / spherical, float32): explicit backend, CUDA only
            if dev == "cuda" and cov != "full" and dt == torch.float32:
                fns["gmmkernels-triton"] = lambda: tuple(mixture_em_stats(x, logits, means, scale, cov,
                                                                          backend="triton"))[:5]
            if args.cases != "kscan":
                fns["gmmkernels-two-step"] = lambda: two_step(x, logits, means, scale, cov)
            nkd = N * K * D * (D if cov == "full" else 1)
            if nkd <= 4e8 and N * K <= 2e8 and args.cases != "kscan":
                fns["torch-eager"] = lambda: eager_em_stats(x, logits, means, scale, cov)
                if not args.quick:
                    ce = torch.compile(eager_em_stats, dynamic=False)
                    fns["torch-compile"] = lambda: ce(x, logits, means, scale, cov)
            base = None
            for prov, fn in fns.items():
                row = {"op": OP, "case": name, "provider": prov, "precision": "ieee", "mode": "fwd", "dtype": dts,
                       "device": dev, "params": {"N": N, "K": K, "D": D, "cov": cov}, "ms": None, "error": None}
                try:
                    small = (x[:M], logits, means, scale)
                    if prov == f"gmmkernels-{dev}":
                        out = tuple(mixture_em_stats(*small, cov))[:5]
                    elif prov == "gmmkernels-triton":
                        out = tuple(mixture_em_stats(*small, cov, backend="triton"))[:5]
                    elif prov == "gmmkernels-two-step":
                        out = two_step(*small, cov)
                    else:
                        out = eager_em_stats(*small, cov)
                    row["errors_vs_fp64"] = check(out, ref, M, M)
                    tol = 1e-9 if dt == torch.float64 else 2e-4
                    row["ok"] = all(v < tol for v in row["errors_vs_fp64"].values())
                    _, row["first_call_ms"] = H.time_first_call(fn, dev)
                    row["ms"] = H.time_fn(fn, dev, args.min_run_time)
                    sec = row["ms"]["p50"] * 1e-3
                    f = fmas(N, K, D, cov)
                    row["gflops"] = 2 * f / sec / 1e9
                    c = H.Counts(flops=2 * f, bytes=x.element_size() * N * D, exps=N * K)
                    row["counts"] = {"flops": c.flops, "bytes": c.bytes, "exps": c.exps}
                    if peak:
                        t_min = cpu_bound_ms(N, K, D, cov, dts, peak)
                        row["fma_bound"] = {"t_min_ms": t_min, "fraction": t_min / row["ms"]["p50"],
                                            "x_bound": row["ms"]["p50"] / t_min}
                    elif dev == "cuda":
                        row["roofline"] = H.roofline(c, row["ms"]["p50"], "ieee", H.device_name(dev))
                    if prov == "torch-eager":
                        base = row["ms"]["p50"]
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                rows.append(row)
                H.cleanup(dev)
            for r in rows[-len(fns):]:
                if r["ms"] and base:
                    r["speedup_vs_eager"] = base / r["ms"]["p50"]
            del x, logits, means, scale, fns
            H.cleanup(dev, full=True)
    mrows = run_mstep(dev, args.dtypes.split(","), args.min_run_time, args.quick) if args.cases in ("mstep", "all") else []
    def pass_values(r):
        xb = r.get("fma_bound", {}).get("x_bound") or (1 / r["roofline"]["fraction"] if r.get("roofline") else None)
        return [f"{r['ms']['p50']:.3f}", f"{r['gflops']:.1f}", f"{r.get('speedup_vs_eager', float('nan')):.2f}x",
                "" if xb is None else f"{xb:.2f}", f"{max(r['errors_vs_fp64'].values()):.1e}"]

    H.print_markdown(f"mixture_em_stats on {H.device_name(dev)} ({cores} threads)",
                     ["case", "N", "K", "D", "cov", "dtype", "provider", "p50 ms", "GFLOP/s", "vs eager", "x bound",
                      "max rel err"], rows,
                     lambda r: [r["case"], *(r["params"][k] for k in ("N", "K", "D", "cov")), r["dtype"], r["provider"]],
                     pass_values)
    if mrows:
        H.print_markdown(f"mixture_em_mstep (B = 1) on {H.device_name(dev)}",
                         ["case", "K", "D", "cov", "dtype", "provider", "p50 us", "vs host path", "max rel err"], mrows,
                         lambda r: [r["case"], *(r["params"][k] for k in ("K", "D", "cov")), r["dtype"], r["provider"]],
                         lambda r: [f"{1e3 * r['ms']['p50']:.1f}", f"{r.get('speedup_vs_host_path', float('nan')):.2f}x",
                                    f"{max(r['errors_vs_fp64'].values()):.1e}"])
    rows += mrows
    if not args.no_write:
        path = H.write_results(args.out, OP, dev, rows, H.collect_meta(dev, argv, extra={"fma_peak": peak}))
        print(f"wrote {path}")
    return 3 if any(r.get("ok") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
