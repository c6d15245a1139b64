"""EM iteration: gmmkernels (fused E-step + fused sufficient statistics) vs eager PyTorch (materialising) vs scikit-learn.

    python benchmarks/bench_fit_em.py [--quick] [--device cpu|cuda] [--out DIR]

Writes <out>/fit_em__<device>__<UTC>.json (schema gmmkernels.bench/1). Times one EM iteration (E-step + M-step)
at fixed parameters; scikit-learn is timed as one ``fit`` iteration (max_iter=1, its own initialisation excluded by
warm-starting from the same parameters)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

import gmmkernels
from benchmarks import _harness as H
from gmmkernels.fit._common import covariances
from gmmkernels.reference.mixture_suffstats import em_step_ref


def _time(fn, device, reps=5):
    ts = sorted(H.repeat_times(fn, device, reps))
    return {"p50": 1e3 * ts[len(ts) // 2], "p20": 1e3 * ts[max(0, len(ts) // 5)], "p80": 1e3 * ts[min(len(ts) - 1, 4 * len(ts) // 5)]}


def _em_iter_fused(x, logits, means, scale, cov):
    st = gmmkernels.mixture_stats(x, logits, means, scale, cov, with_score=False, with_resp=True)
    nk, sx, sxx = gmmkernels.mixture_suffstats(x, st.responsibilities, cov == "full")
    return covariances(nk, sx, sxx, cov, 1e-6)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--flash-shape", action="store_true", help="also N=1e6, K=1024, D=128 diag (GPU)")
    a = ap.parse_args(argv)
    dev = a.device
    shapes = [(2000, 8, 4)] if a.quick else [(10000, 16, 8), (100000, 32, 16), (100000, 32, 64)]
    if a.flash_shape and dev == "cuda":
        shapes.append((1000000, 1024, 128))
    rows = []
    for N, K, D in shapes:
        for cov in ("diag", "full"):
            if cov == "full" and D > 32 and N * K > 1e7:
                continue
            g = torch.Generator().manual_seed(0)
            x = torch.randn(N, D, generator=g).to(dev)
            logits = torch.zeros(K, device=dev)
            means = torch.randn(K, D, generator=g).to(dev)
            scale = torch.ones(K, D, device=dev) if cov == "diag" else torch.eye(D, device=dev).expand(K, D, D).contiguous()
            p = {"N": N, "K": K, "D": D, "cov": cov}
            rows.append({"op": "fit_em", "provider": f"gmmkernels-{dev}", "dtype": "float32", "params": p,
                         "ms": _time(lambda: _em_iter_fused(x, logits, means, scale, cov), dev)})
            if N * K * D <= 2e8 and not (cov == "full" and N * K * D * D > 2e9):
                var = torch.ones(K, D, device=dev) if cov == "diag" else scale
                w = torch.full((1, K), 1.0 / K, device=dev)
                rows.append({"op": "fit_em", "provider": "torch-eager", "dtype": "float32", "params": p,
                             "ms": _time(lambda: em_step_ref(x[None], w, means[None], var[None], cov), dev)})
            if dev == "cpu" and N * K * D <= 5e7:
                try:
                    import warnings

                    from sklearn.mixture import GaussianMixture as SK
                    X = x.double().numpy()
                    prec = (torch.ones(K, D) if cov == "diag" else torch.eye(D).expand(K, D, D)).double().numpy()
                    sk = SK(K, covariance_type=cov, max_iter=1, weights_init=[1.0 / K] * K, means_init=means.double().numpy(),
                            precisions_init=prec, init_params="random_from_data")
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        rows.append({"op": "fit_em", "provider": "sklearn (fit, max_iter=1, float64)", "dtype": "float64",
                                     "params": p, "ms": _time(lambda: sk.fit(X), dev, reps=3)})
                except ImportError:
                    pass
            print(rows[-1]["params"], [(r["provider"], round(r["ms"]["p50"], 2)) for r in rows if r["params"] == p], flush=True)
    f = H.write_results(a.out, "fit_em", dev, rows, H.collect_meta(dev, argv=["bench_fit_em.py"] + list(argv or [])))
    print("wrote", f)
    return rows


if __name__ == "__main__":
    main()
