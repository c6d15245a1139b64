"""Paired A/B of the mixture_em_stats pass between two built checkouts of gmmkernels, for kernel changes whose effect
is smaller than the drift of the machine.

    python benchmarks/ab_checkouts.py DIR_A DIR_B [--cases diag:float64:100000,full:float32:50000] [--rounds 40]
        [--threads 1] [--clock process|wall] [--mixture start|true] [--passes 1] [--iterate 0] [--out benchmarks/results]
        [--no-write]

Each checkout must be built in place (``python setup.py build_ext --inplace``). One worker process per checkout
imports that checkout's ``gmmkernels`` (PYTHONPATH = the checkout), builds the same data from the same seed and waits;
then each round asks both workers, one after the other (the order alternating between rounds), for one timed pass
of a case (by default CPU time of the process, so time spent descheduled does not count; ``--clock wall`` for several
threads, where time a thread waits for another is part of what is measured). With ``--passes P`` a worker runs one
untimed pass and then P timed ones, and reports their median: a single pass right after the other worker's starts
with the caches that worker filled, while the passes of a fit follow one another. A slow phase of a shared machine
therefore hits both arms of a round. A case is ``cov:dtype:N`` with K = 32, D = 16 (diag, spherical) or K = 16, D = 8
(full), the shapes of bench_fit_em.py's headline cases, unit scales and zero logits; its means are K points of the
data (``--mixture start``, the state a fit starts from) or the centres the data were drawn around (``--mixture
true``: the generating mixture, the state a fit converges to, where most responsibilities of a row are near 0 and
tiny values below the smallest normal number arise: the case for changes to how those are handled). With ``--iterate
M`` the timed unit is instead M iterations of the native EM loop (``mixture_em_iterate``, tol 0) from that state,
reported per iteration: the pass together with what an iteration does around it (the M-step, the bookkeeping).

Reported per case: each arm's best and median ns per row, and the per-round ratio B / A (median and quartiles).
Writes mixture_em_stats_ab__<device>__<UTC>.json with both checkouts' commits.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OP = "mixture_em_stats_ab"
SHAPES = {"diag": (32, 16), "spherical": (32, 16), "full": (16, 8)}


def parse_case(case: str) -> tuple:
    try:
        cov, dtype, n = case.split(":")
        N = int(n)
    except ValueError:
        raise SystemExit(f"ab_checkouts: a case is cov:dtype:N (e.g. diag:float64:100000), got {case!r}")
    if cov not in SHAPES or dtype not in ("float32", "float64") or N < 1:
        raise SystemExit(f"ab_checkouts: bad case {case!r} (cov in {sorted(SHAPES)}, dtype float32|float64, N >= 1)")
    return cov, dtype, N


def worker(cases: list, threads: int, clock: str = "process", mixture: str = "start", iterate: int = 0) -> int:
    """Runs in a checkout (the working directory): builds every case's data, prints 'ready' and the gmmkernels it
    imported, then times one pass per line of stdin."""
    here = os.getcwd()
    sys.path[:] = [here] + [p for p in sys.path if p != str(Path(__file__).resolve().parent.parent)]
    import torch

    import gmmkernels
    from gmmkernels import mixture_em_stats

    torch.set_num_threads(threads)
    fns = {}
    for case in cases:
        cov, dts, N = parse_case(case)
        K, D = SHAPES[cov]
        g = torch.Generator().manual_seed(0)
        centres = 3.0 * torch.randn(K, D, generator=g, dtype=torch.float64)
        x = centres[torch.randint(K, (N,), generator=g)] + torch.randn(N, D, generator=g, dtype=torch.float64)
        dt = getattr(torch, dts)
        if mixture == "true":
            means = centres.to(dt)
        else:
            means = x[torch.randperm(N, generator=g)[: min(K, N)]].to(dt)
            means = means.repeat((K + means.shape[0] - 1) // means.shape[0], 1)[:K]
        x = x.to(dt)
        logits = torch.zeros(K, dtype=dt)
        scale = {"diag": torch.ones(K, D, dtype=dt), "spherical": torch.ones(K, dtype=dt),
                 "full": torch.eye(D, dtype=dt).expand(K, D, D).contiguous()}[cov]
        if iterate:
            from gmmkernels.fit._data import kernel_params
            from gmmkernels.ops.mixture_em_stats import COV_KINDS

            lg3, mu3, sc3 = logits[None], means[None], scale[None]
            prec, logc = kernel_params(lg3, mu3, sc3, cov)
            lower = torch.full((1,), float("-inf"), dtype=dt)
            kind = COV_KINDS[cov]
            fn = (lambda x3=x[None], lg3=lg3, mu3=mu3, sc3=sc3, prec=prec, logc=logc, lower=lower, kind=kind, N=N:
                  torch.ops.gmmkernels.mixture_em_iterate(x3, lg3, mu3, sc3, prec, logc, lower, kind, 1e-6, 0.0,
                                                          iterate, float(N)))
        else:
            fn = (lambda x=x, logits=logits, means=means, scale=scale, cov=cov:
                  mixture_em_stats(x, logits, means, scale, cov))
        fn()
        fns[case] = (fn, N * max(1, iterate))
    print("ready", Path(gmmkernels.__file__).resolve().parent.parent, flush=True)
    now = time.process_time if clock == "process" else time.perf_counter
    for line in sys.stdin:
        case, passes = line.split()
        fn, N = fns[case]
        passes = int(passes)
        if passes > 1:
            fn()  # untimed: brings this worker's data and code back into the caches after the other worker ran
        ts = []
        for _ in range(passes):
            t0 = now()
            fn()
            ts.append((now() - t0) / N * 1e9)
        print(f"{statistics.median(ts):.4f}", flush=True)
    return 0


def commit_of(path: Path) -> dict:
    def git(*a):
        r = subprocess.run(["git", "-C", str(path), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    return {"path": str(path), "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", nargs="?", help="checkout A (the baseline)")
    ap.add_argument("b", nargs="?", help="checkout B")
    ap.add_argument("--cases", default="diag:float64:100000,diag:float32:100000,full:float64:50000,full:float32:50000")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", default="process", choices=["process", "wall"],
                    help="process: CPU time of the worker (one thread; time descheduled does not count); wall: elapsed "
                         "time (several threads, where a thread that waits for another is the effect measured)")
    ap.add_argument("--mixture", default="start", choices=["start", "true"],
                    help="start: means at K data points; true: the means the data were drawn around (a converged "
                         "fit's state)")
    ap.add_argument("--passes", type=int, default=1,
                    help="passes per worker per round: 1 times one pass right after the other worker's (cold caches); "
                         "P > 1 runs one untimed pass, then P timed ones, and takes their median (the warm state of "
                         "the passes of a fit)")
    ap.add_argument("--iterate", type=int, default=0,
                    help="M > 0: time M iterations of the native EM loop (mixture_em_iterate) per unit instead of one "
                         "pass; ns per row and iteration")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cases = args.cases.split(",")
    for c in cases:
        parse_case(c)
    if args.worker:
        return worker(cases, args.threads, args.clock, args.mixture, args.iterate)
    if args.a is None or args.b is None:
        ap.error("two checkouts are needed: DIR_A DIR_B")
    if args.rounds < 2 or args.threads < 1 or args.passes < 1 or args.iterate < 0:
        ap.error("--rounds must be >= 2, --threads and --passes >= 1, --iterate >= 0")
    dirs = [Path(args.a).resolve(), Path(args.b).resolve()]
    for d in dirs:
        if not (d / "gmmkernels" / "__init__.py").is_file():
            ap.error(f"{d} is not a gmmkernels checkout")
    procs = []
    try:
        for d in dirs:
            env = dict(os.environ, PYTHONPATH=str(d), OMP_NUM_THREADS=str(args.threads))
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", "--cases", args.cases,
                                  "--threads", str(args.threads), "--clock", args.clock, "--mixture", args.mixture,
                                  "--iterate", str(args.iterate)],
                                 cwd=d, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(p)
            hello = p.stdout.readline().rstrip("\n").split(" ", 1)  # "ready <path>"; the path may hold spaces
            if len(hello) != 2 or hello[0] != "ready":
                raise SystemExit(f"ab_checkouts: the worker in {d} did not start (is the extension built there?)")
            if Path(hello[1]) != d:  # an installed gmmkernels (e.g. an editable install) shadowed the checkout
                raise SystemExit(f"ab_checkouts: the worker in {d} imported the gmmkernels of {hello[1]}")

        def ask(i, case):
            procs[i].stdin.write(f"{case} {args.passes}\n")
            procs[i].stdin.flush()
            return float(procs[i].stdout.readline())

        rows = []
        for case in cases:
            t = ([], [])
            for r in range(args.rounds):
                for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                    t[i].append(ask(i, case))
            ratio = [b / a for a, b in zip(*t)]
            q1, _, q3 = statistics.quantiles(ratio, n=4)
            cov, dts, N = parse_case(case)
            K, D = SHAPES[cov]
            rows.append({"op": OP, "case": case, "provider": "B/A", "mode": "ab", "dtype": dts, "device": "cpu",
                         "params": {"N": N, "K": K, "D": D, "cov": cov, "rounds": args.rounds,
                                    "threads": args.threads, "clock": args.clock, "mixture": args.mixture,
                                    "passes": args.passes, "iterate": args.iterate},
                         "error": None, "ns_per_row": {"A": t[0], "B": t[1]},
                         "ratio_b_over_a": {"median": statistics.median(ratio), "q1": q1, "q3": q3,
                                            "min": min(ratio), "max": max(ratio)}})
            print(f"{case}: A best {min(t[0]):.1f} / median {statistics.median(t[0]):.1f} ns/row, B best "
                  f"{min(t[1]):.1f} / median {statistics.median(t[1]):.1f}; B/A per round: median "
                  f"{statistics.median(ratio):.3f} (quartiles {q1:.3f}-{q3:.3f})", flush=True)
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=60)
    if not args.no_write:
        import torch

        from benchmarks import _harness as H

        torch.set_num_threads(args.threads)  # the file name and meta give the workers' thread count
        meta = H.collect_meta("cpu", argv=sys.argv, extra={"a": commit_of(dirs[0]), "b": commit_of(dirs[1])})
        path = H.write_results(args.out, OP, "cpu", rows, meta)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
