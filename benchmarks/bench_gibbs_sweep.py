"""Gibbs sweeps per second: one fused launch per sweep (gibbs_sweep) vs an eager PyTorch sweep (gibbs_sweep_ref),
1e3 to 1e5 chains, each chain with its own data set (N points, D dims, K components).

    python benchmarks/bench_gibbs_sweep.py [--quick] [--device cpu|cuda] [--out DIR]

Reports sweeps/s, speed-up, and on CUDA the effective bandwidth (bytes read + written per sweep / time), its fraction
of the HBM peak (hbm_fraction) and the roofline of benchmarks/_harness.py."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import _harness as H
from gmmkernels import GibbsPrior, gibbs_sweep
from gmmkernels.reference.gibbs_sweep import gibbs_sweep_ref


def _rate(fn, dev, reps):
    ts = H.repeat_times(fn, dev, reps)
    return len(ts) / sum(ts)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--N", type=int, default=256)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--D", type=int, default=2)
    a = ap.parse_args(argv)
    dev, N, K, D = a.device, a.N, a.K, a.D
    chains = [1000] if a.quick else [1000, 10000, 100000]
    pr = GibbsPrior()
    rows = []
    for C in chains:
        if dev == "cpu" and C > 10000:
            continue
        x = torch.randn(C, N, D, device=dev)
        lw = torch.full((C, K), -math.log(K), device=dev)
        mu = torch.randn(C, K, D, device=dev)
        var = torch.ones(C, K, D, device=dev)
        m0 = torch.zeros(D, device=dev)
        reps = 3 if dev == "cpu" else 20
        fused = _rate(lambda: gibbs_sweep(x, lw, mu, var, pr, seed=0, step=0), dev, reps)
        eager = _rate(lambda: gibbs_sweep_ref(x, lw, mu, var, m0, pr.alpha, pr.kappa0, pr.a0, pr.b0), dev, max(2, reps // 2))
        nbytes = 4 * (C * N * D + C * N + 2 * (C * K + 2 * C * K * D))
        row = {"op": "gibbs_sweep", "dtype": "float32", "params": {"chains": C, "N": N, "K": K, "D": D}, "device": dev,
               "fused_sweeps_per_s": fused, "eager_sweeps_per_s": eager, "speedup": fused / eager,
               "fused_gbps": nbytes * fused / 1e9}
        if dev == "cuda":  # the sweep's compulsory bytes against HBM, its logits and exponentials against the peaks
            counts = H.Counts(flops=2 * 3.0 * C * N * K * D, bytes=nbytes, exps=2.0 * C * N * K)
            row["roofline"] = H.roofline(counts, 1e3 / fused, "ieee", H.device_name(dev))
            peaks = H.device_peaks(H.device_name(dev))
            row["hbm_fraction"] = nbytes * fused / peaks.hbm_bytes_per_s if peaks else None
        rows.append(row)
        print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    f = H.write_results(a.out, "gibbs_sweep", dev, rows, H.collect_meta(dev, argv=["bench_gibbs_sweep.py"] + list(argv or [])))
    print("wrote", f)
    return rows


if __name__ == "__main__":
    main()
