"""mixDDPM dispatcher (nearest center + gather + centred forward noising): fused kernels vs eager PyTorch.

    python benchmarks/bench_mixture_dispatch.py [--quick] [--device cpu|cuda] [--out DIR] [--no-write]

Op: j = argmin_k |x0 - c_k|^2, x_t = a x0 + (1 - a) c_j + sigma eps, dist2 = |x0 - c_j|^2, for x0 [N, D],
centers [K, D], per-row a, sigma. Shapes: EMNIST-like (D = 784, K = 47), CIFAR-like (D = 3072, K = 10) and a
2-D toy (K = 25), the shapes of docs/kernels.md (mixture_dispatch).

Providers: gmmkernels-{cpu,cuda,triton} (``mixture_dispatch(backend=...)``), torch-eager (GEMM distances with
addmm, argmin, index_select, elementwise noising: what one writes without the fused op) and torch-compile (the
same function under torch.compile). Every row is first checked against a float64 reference: ``assign_agree`` =
fraction of rows with the reference's assignment (near ties may differ in float32) and ``max_err_xt`` = max
|x_t - x_t_ref| given the provider's own assignment. Writes mixture_dispatch__<device>__<UTC>.json
(schema gmmkernels.bench/1).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness  # noqa: E402
from gmmkernels import mixture_dispatch  # noqa: E402
from gmmkernels.ops.mixture_dispatch import dispatch_backends  # noqa: E402
from gmmkernels.reference.mixture_dispatch import mixture_dispatch_ref  # noqa: E402

OP = "mixture_dispatch"


def eager(x0, c, a, s, eps):
    d = torch.addmm((c * c).sum(1).unsqueeze(0), x0, c.t(), beta=1.0, alpha=-2.0)
    j = d.argmin(1)
    cj = c.index_select(0, j)
    xt = a[:, None] * x0 + (1 - a)[:, None] * cj + s[:, None] * eps
    return xt, j, ((x0 - cj) ** 2).sum(1)


def _shapes(quick: bool, device: str):
    if quick:
        return [("emnist-like", 512, 47, 784), ("toy-2d", 4096, 25, 2)]
    big = device == "cuda"
    return [("emnist-like", 65536 if big else 8192, 47, 784), ("cifar-like", 16384 if big else 2048, 10, 3072),
            ("toy-2d", 1 << 20 if big else 1 << 17, 25, 2)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--min-run-time", type=float, default=0.5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    dev = args.device
    if args.quick and dev == "cpu":
        torch.set_num_threads(1)
    providers = {f"gmmkernels-{b}": b for b in dispatch_backends(dev) if b != "reference"}
    if dev == "cpu" and "gmmkernels-triton" in providers:
        del providers["gmmkernels-triton"]  # the interpreter is not a speed path
    rows = []
    for name, N, K, D in _shapes(args.quick, dev):
        g = torch.Generator().manual_seed(0)
        c = 2.0 * torch.randn(K, D, generator=g)
        x0 = c[torch.randint(K, (N,), generator=g)] + torch.randn(N, D, generator=g)
        a, s = torch.rand(N, generator=g), torch.rand(N, generator=g)
        eps = torch.randn(N, D, generator=g)
        M = min(N, 2048)  # rows checked against float64
        ref = mixture_dispatch_ref(x0[:M].double(), c.double(), a[:M].double(), s[:M].double(), eps[:M].double())
        x0, c, a, s, eps = (t.to(dev) for t in (x0, c, a, s, eps))
        fns = {p: (lambda b=b: mixture_dispatch(x0, c, a, s, eps, backend=b)) for p, b in providers.items()}
        fns["torch-eager"] = lambda: eager(x0, c, a, s, eps)
        if not args.quick:
            ce = torch.compile(eager, dynamic=False)
            fns["torch-compile"] = lambda: ce(x0, c, a, s, eps)
        base = None
        for prov, fn in fns.items():
            row = {"op": OP, "case": name, "provider": prov, "precision": "ieee", "mode": "fwd", "dtype": "float32",
                   "device": dev, "params": {"N": N, "K": K, "D": D}, "ms": None, "error": None}
            try:
                out, first = _harness.time_first_call(fn, dev)
                xt, j, _ = out
                j64 = j[:M].cpu()
                ref_j = mixture_dispatch_ref(x0[:M].double().cpu(), c.double().cpu(), a[:M].double().cpu(),
                                             s[:M].double().cpu(), eps[:M].double().cpu(), assignment=j64)
                err = float((xt[:M].double().cpu() - ref_j.x_t).abs().max())
                agree = float((j64 == ref.assignment).double().mean())
                row["errors_vs_fp64"] = {"max_err_xt": err, "assign_agree": agree}
                row["ok"] = err < 1e-4 * (1 + D ** 0.5) and agree > 0.999
                row["first_call_ms"] = first
                row["ms"] = _harness.time_fn(fn, dev, args.min_run_time)
                bytes_moved = 4 * (3 * N * D + K * D + 4 * N) + 8 * N
                row["gbps"] = bytes_moved / (row["ms"]["p50"] * 1e-3) / 1e9
                row["gflops"] = 2.0 * N * K * D / (row["ms"]["p50"] * 1e-3) / 1e9
                if prov == "torch-eager":
                    base = row["ms"]["p50"]
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {e}"[:300]
            rows.append(row)
        for r in rows[-len(fns):]:
            if r["ms"] and base:
                r["speedup_vs_eager"] = base / r["ms"]["p50"]
    print(f"mixture_dispatch on {_harness.device_name(dev)} ({torch.get_num_threads()} threads)")
    print("| case | N | K | D | provider | p50 ms | GFLOP/s | GB/s | vs eager | assign agree | max err x_t |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["params"]
        if r["error"]:
            print(f"| {r['case']} | {p['N']} | {p['K']} | {p['D']} | {r['provider']} | error: {r['error'][:80]} | | | | | |")
            continue
        e = r["errors_vs_fp64"]
        print(f"| {r['case']} | {p['N']} | {p['K']} | {p['D']} | {r['provider']} | {r['ms']['p50']:.3f} | {r['gflops']:.1f} | "
              f"{r['gbps']:.1f} | {r.get('speedup_vs_eager', 0):.2f}x | {e['assign_agree']:.4f} | {e['max_err_xt']:.2e} |")
    if not args.no_write:
        path = _harness.write_results(args.out, OP, dev, rows, _harness.collect_meta(dev, argv))
        print(f"wrote {path}")
    bad = [r for r in rows if r.get("ok") is False]
    return 3 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
