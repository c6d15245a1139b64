"""The fused MGDM elementwise steps vs eager PyTorch: one Gauss_VI step (gradient from the VJP output, Adam update of
(mu, rho), next reparameterised sample) and one bridge draw, on B x P elements (P = 3*256*256 for FFHQ pixels).

    python benchmarks/bench_mgdm_step.py [--quick] [--device cpu|cuda] [--out DIR]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import _harness as H
from gmmkernels.reference.mgdm_step import mgdm_vi_step_ref


def _ms(fn, dev, reps):
    ts = H.repeat_times(fn, dev, reps)
    return 1e3 * sum(ts) / len(ts)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    dev = a.device
    shapes = [(4, 3 * 64 * 64)] if a.quick else [(4, 3 * 64 * 64), (8, 3 * 256 * 256)]
    rows = []
    for B, P in shapes:
        st = torch.zeros(6, B, P, device=dev)
        st[1] = -1.0
        g, e, m = (torch.randn(B, P, device=dev) for _ in range(3))
        inv = torch.ones(B, device=dev)
        reps = 5 if dev == "cpu" else 50

        def eager():
            return mgdm_vi_step_ref(st, g, e, m, inv, 0.03, 0.9, 0.999, 1e-8, 3, torch.randn(B, P, device=dev))

        fused = _ms(lambda: torch.ops.gmmkernels.mgdm_vi_step(st, g, e, m, inv, 0.03, 0.9, 0.999, 1e-8, 3, 0, 1), dev, reps)
        ea = _ms(eager, dev, reps)
        bf = _ms(lambda: torch.ops.gmmkernels.mgdm_bridge(g, e, 0.3, 0.5, 0.2, 0, 1), dev, reps)
        be = _ms(lambda: 0.3 * g + 0.5 * e + 0.2 * torch.randn(B, P, device=dev), dev, reps)
        vi_bytes = 4 * B * P * (6 * 2 + 3 + 2)
        row = {"params": {"B": B, "P": P}, "device": dev, "vi_fused_ms": fused, "vi_eager_ms": ea, "vi_speedup": ea / fused,
               "vi_fused_gbps": vi_bytes / fused / 1e6, "bridge_fused_ms": bf, "bridge_eager_ms": be, "bridge_speedup": be / bf}
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    f = H.write_results(a.out, "mgdm_step", dev, rows, H.collect_meta(dev, argv=["bench_mgdm_step.py"] + list(argv or [])))
    print("wrote", f)
    return rows


if __name__ == "__main__":
    main()
