"""Run every benchmarks/bench_*.py module, write one JSON result file per module, then plots and a table.

    python benchmarks/run_all.py [--quick] [--device cpu|cuda] [--out DIR] [--only mixture_stats,...] [bench flags]
    python -m benchmarks.run_all ...

A bench module is found by its file name (bench_<op>.py). Either it defines ``OP`` (str) and ``run(args) -> rows``
(and optionally ``add_arguments(parser)``, ``meta_extra(args) -> dict``): run in this process, JSON written here;
or it is a standalone script with ``main(argv)`` accepting ``--quick --device D --out DIR`` that writes its own
gmmkernels.bench/1 JSON into DIR: run in a subprocess (``--script-timeout`` seconds). See README.md.
Exit status: 0, or 1 if a module crashed, 3 if an exact-arithmetic row failed its float64 check.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness as H

HERE = Path(__file__).resolve().parent


def discover() -> list:
    mods = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = f"benchmarks.{path.stem}"
        try:
            mod = importlib.import_module(name)
        except Exception as e:
            print(f"run_all: cannot import {name}: {type(e).__name__}: {e}", file=sys.stderr)
            mods.append((path.stem, None, e))
            continue
        if not (hasattr(mod, "run") and hasattr(mod, "OP")) and not hasattr(mod, "main"):
            print(f"run_all: {name} has neither OP/run(args) nor main(argv); skipped", file=sys.stderr)
            continue
        mods.append((path.stem, mod, None))
    return mods


def run_script(stem: str, args, out: Path):
    """Run a standalone bench script; returns (result files it wrote into ``out``, exit code)."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob("*.json"))
    cmd = [sys.executable, str(HERE / f"{stem}.py"), "--device", args.device, "--out", str(out)]
    if args.quick:
        cmd.append("--quick")
    timeout = args.script_timeout or (args.budget_s + 60 if args.budget_s else None)
    try:
        rc = subprocess.call(cmd, cwd=HERE.parent, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"run_all: {stem} timed out after {timeout:.0f} s", file=sys.stderr)
        rc = 124
    new = []
    for p in sorted(set(out.glob("*.json")) - before):
        try:
            H.load_results(p)
            new.append(p)
        except Exception as e:
            print(f"run_all: {p} is not a gmmkernels.bench/1 file ({e}); not plotted", file=sys.stderr)
    return new, rc


def main(argv=None) -> int:
    mods = discover()
    ap = H.common_parser(__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="comma-separated op names (or bench module stems) to run")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--script-timeout", type=float, default=None,
                    help="seconds for each standalone bench script (default: --budget-s + 60, else none)")
    seen = set()
    for _stem, mod, _err in mods:
        if mod is not None and hasattr(mod, "add_arguments"):
            # modules share one parser: a flag two modules both define is added once
            sub = H.argparse.ArgumentParser(add_help=False)
            mod.add_arguments(sub)
            for act in sub._actions:
                if not any(o in seen for o in act.option_strings):
                    ap._add_action(act)
                    seen.update(act.option_strings)
    args = H.finalize_args(ap.parse_args(argv))
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    if only:
        # a module answers to its file stem (bench_fit_em), the stem without "bench_" (fit_em) or its OP
        names = {n for stem, mod, _ in mods for n in (stem, stem[len("bench_"):], getattr(mod, "OP", None)) if n}
        unknown = [o for o in only if o not in names]
        if unknown:
            ap.error(f"--only: no benchmark named {', '.join(unknown)}; choose from "
                     f"{', '.join(sorted(stem[len('bench_'):] for stem, _, _ in mods))}")
    out = Path(args.out)
    status = 0
    written = []
    all_rows = []
    for stem, mod, err in mods:
        if only and not any(o in (stem, stem[len("bench_"):], getattr(mod, "OP", None)) for o in only):
            continue
        if mod is None:
            status = 1
            continue
        print(f"=== {stem} ({args.device}{', quick' if args.quick else ''})", flush=True)
        t0 = time.perf_counter()
        if not (hasattr(mod, "run") and hasattr(mod, "OP")):
            new, rc = run_script(stem, args, out)
            written.extend(new)
            print(f"=== {stem}: rc={rc}, {len(new)} result file(s) in {time.perf_counter() - t0:.1f} s", flush=True)
            if rc != 0:
                status = 1
            continue
        try:
            rows = mod.run(args)
        except Exception:
            traceback.print_exc()
            status = 1
            continue
        H.print_table(rows)
        all_rows.extend(rows)
        print(f"=== {stem}: {len(rows)} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        if not args.no_write:
            extra = mod.meta_extra(args) if hasattr(mod, "meta_extra") else {}
            path = H.write_results(out, mod.OP, args.device, rows, H.collect_meta(args.device, extra=extra))
            print(f"wrote {path}")
            written.append(path)
    if written and not args.no_plots:
        try:
            from benchmarks import plot

            for p in plot.make_plots(written, out / "plots"):
                print(f"wrote {p}")
        except Exception:
            traceback.print_exc()
    if args.compare and not H.compare_results(all_rows, args.compare, args.fail_if_regression):
        status = status or 1
    return status or H.check_status(all_rows)


if __name__ == "__main__":
    sys.exit(main())
