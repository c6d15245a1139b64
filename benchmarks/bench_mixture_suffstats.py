"""M-step sufficient statistics from given responsibilities: mixture_suffstats vs eager PyTorch and torch.compile.

    python benchmarks/bench_mixture_suffstats.py [--quick] [--device cpu|cuda] [--out DIR] [--no-write]

Op: N_k = sum_n r, S1 = sum_n r x, S2 = sum_n r x^2 (diag) or sum_n r x x^T (full) of x [N, D] and r [N, K].
Providers: gmmkernels-{cpu,cuda} (``mixture_suffstats``), torch-eager (``r.sum(0)``, ``r.T @ x``,
``r.T @ (x * x)`` or ``einsum('nk,ni,nj->kij')``) and torch-compile. Each is checked against the float64
reference first. Work: 2 N K (1 + D + D) flops (diag) or 2 N K (1 + D + D^2) (full); compulsory bytes: x and r
read once. On CUDA the roofline of benchmarks/_harness.py. The fused EM pass, which computes the responsibilities
in the same kernel instead of reading them, is benchmarks/bench_mixture_em_stats.py. Writes
mixture_suffstats__<device>__<UTC>.json (schema gmmkernels.bench/1).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness as H  # noqa: E402
from gmmkernels import mixture_suffstats  # noqa: E402
from gmmkernels.reference.mixture_suffstats import mixture_suffstats_ref  # noqa: E402

OP = "mixture_suffstats"


def eager(x, r, full):
    sxx = torch.einsum("nk,ni,nj->kij", r, x, x) if full else r.T @ (x * x)
    return r.sum(0), r.T @ x, sxx


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--min-run-time", type=float, default=0.5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    dev = args.device
    if args.quick:
        shapes = [(4096, 8, 4, False), (4096, 8, 4, True)]
    else:
        big = 10 if dev == "cuda" else 1
        shapes = [(100000 * big, 32, 16, False), (50000 * big, 16, 8, True), (1000000, 32, 16, False)]
    rows = []
    for N, K, D, full in shapes:
        for dts in ("float32", "float64"):
            dt = getattr(torch, dts)
            g = torch.Generator().manual_seed(0)
            x64 = torch.randn(N, D, generator=g, dtype=torch.float64)
            r64 = torch.softmax(3 * torch.randn(N, K, generator=g, dtype=torch.float64), -1)
            M = min(N, 4096)
            ref = mixture_suffstats_ref(x64[None, :M], r64[None, :M], full)
            x, r = x64.to(dev, dt), r64.to(dev, dt)
            fns = {f"gmmkernels-{dev}": lambda: mixture_suffstats(x, r, full), "torch-eager": lambda: eager(x, r, full)}
            if not args.quick:
                ce = torch.compile(eager, dynamic=False)
                fns["torch-compile"] = lambda: ce(x, r, full)
            flops = 2.0 * N * K * (1 + D + (D * D if full else D))
            c = H.Counts(flops=flops, bytes=x.element_size() * N * (D + K))
            base = None
            for prov, fn in fns.items():
                row = {"op": OP, "provider": prov, "precision": "ieee", "mode": "fwd", "dtype": dts, "device": dev,
                       "params": {"N": N, "K": K, "D": D, "cov": "full" if full else "diag"}, "ms": None, "error": None}
                try:
                    small = mixture_suffstats(x[:M], r[:M], full) if prov.startswith("gmmkernels") else eager(x[:M], r[:M], full)
                    err = max(float((a.double().cpu().reshape(b.shape) - b).abs().max() / b.abs().max())
                              for a, b in zip(small, ref))
                    row["errors_vs_fp64"] = {"max_rel": err}
                    row["ok"] = err < (1e-10 if dt == torch.float64 else 1e-4)
                    _, row["first_call_ms"] = H.time_first_call(fn, dev)
                    row["ms"] = H.time_fn(fn, dev, args.min_run_time)
                    sec = row["ms"]["p50"] * 1e-3
                    row["gflops"], row["gbps"] = flops / sec / 1e9, c.bytes / sec / 1e9
                    row["counts"] = {"flops": c.flops, "bytes": c.bytes}
                    if dev == "cuda":
                        row["roofline"] = H.roofline(c, row["ms"]["p50"], "ieee", H.device_name(dev))
                    if prov == "torch-eager":
                        base = row["ms"]["p50"]
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                rows.append(row)
            for rr in rows[-len(fns):]:
                if rr["ms"] and base:
                    rr["speedup_vs_eager"] = base / rr["ms"]["p50"]
            H.cleanup(dev, full=True)
    H.print_markdown(f"mixture_suffstats on {H.device_name(dev)} ({torch.get_num_threads()} threads)",
                     ["N", "K", "D", "cov", "dtype", "provider", "p50 ms", "GFLOP/s", "GB/s", "vs eager",
                      "max rel err"], rows,
                     lambda r: [*(r["params"][k] for k in ("N", "K", "D", "cov")), r["dtype"], r["provider"]],
                     lambda r: [f"{r['ms']['p50']:.3f}", f"{r['gflops']:.1f}", f"{r['gbps']:.1f}",
                                f"{r.get('speedup_vs_eager', float('nan')):.2f}x",
                                f"{r['errors_vs_fp64']['max_rel']:.1e}"])
    if not args.no_write:
        path = H.write_results(args.out, OP, dev, rows, H.collect_meta(dev, argv))
        print(f"wrote {path}")
    return 3 if any(r.get("ok") is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
