"""Shared benchmark machinery: cases, providers, timing, correctness checks, memory, rooflines, JSON results.

A benchmark module (``benchmarks/bench_<op>.py``) describes its op with

* ``Case`` objects (op, params, dtype, mode, device),
* a ``ProviderRegistry`` of ``Provider(name, setup)`` where ``setup(case, inputs) -> fn`` and ``fn()`` returns a
  dict of output tensors,
* ``make_inputs(case) -> dict``, ``reference(case, inputs) -> dict`` (float64 expected outputs),
  ``compare(case, outputs, expected, precision) -> (errors, ok)`` and ``counts(case) -> Counts``,

and hands them to :func:`run_cases`, which produces one result row per (case, provider): an error row
(``"error": "..."``, null timings) when the provider is unavailable, unsupported, would not fit in memory
or failed, so a sweep never crashes. See benchmarks/README.md for the row schema.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch

SCHEMA = "gmmkernels.bench/1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"

# ----------------------------------------------------------------------------------------------
# peak rates (docs/kernels.md (mixture_stats), with their sources); nothing here is measured


@dataclass(frozen=True)
class DevicePeaks:
    name: str
    hbm_bytes_per_s: float
    fp32_flops: float  # SIMT FMA
    tf32_flops: float  # dense tensor core
    bf16_flops: float  # dense tensor core
    exp_per_s: float  # SFU exponentials


PEAKS = {
    "H100": DevicePeaks("H100 SXM5", 3.35e12, 66.9e12, 494.7e12, 989.4e12, 3.9e12),
    # same compute as the H100, HBM3e bandwidth
    "H200": DevicePeaks("H200", 4.8e12, 66.9e12, 494.7e12, 989.4e12, 3.9e12),
}


def device_peaks(device_name: str) -> Optional[DevicePeaks]:
    for key, p in PEAKS.items():
        if key in device_name.upper():
            return p
    return None


@dataclass
class Counts:
    """Analytic work of one call: useful FLOP, compulsory DRAM bytes, exponentials."""

    flops: float
    bytes: float
    exps: float = 0.0


def roofline(counts: Counts, ms: float, precision: str, device_name: str) -> Optional[dict]:
    """Lower bound on the time of one call from the peak table, which bound applies, and the achieved fraction."""
    peaks = device_peaks(device_name)
    if peaks is None or ms is None or ms <= 0:
        return None
    compute_peak = {"ieee": peaks.fp32_flops, "tf32": peaks.tf32_flops, "bf16": peaks.bf16_flops}.get(
        precision, peaks.fp32_flops
    )
    compute_name = {"ieee": "fp32", "tf32": "tf32", "bf16": "bf16"}.get(precision, "fp32")
    bounds = {
        "memory": counts.bytes / peaks.hbm_bytes_per_s,
        compute_name: counts.flops / compute_peak,
        "exp": counts.exps / peaks.exp_per_s,
    }
    bound = max(bounds, key=bounds.get)
    t_min = bounds[bound]
    return {
        "peaks": peaks.name,
        "bound": bound,
        "t_min_ms": t_min * 1e3,
        "t_bounds_ms": {k: v * 1e3 for k, v in bounds.items()},
        "fraction": (t_min * 1e3) / ms,
    }


# ----------------------------------------------------------------------------------------------
# cases and providers


@dataclass
class Case:
    op: str
    params: dict
    dtype: str = "float32"
    mode: str = "fwd"  # "fwd" | "bwd" | "fwd+bwd"
    device: str = "cpu"
    name: str = ""  # workload tag, e.g. "A2-mid-D"; used by --cases filters and plot labels
    providers: Optional[list] = None  # restrict to these providers (None: all selected)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def label(self) -> str:
        p = self.params
        core = ",".join(f"{k}={_short(v)}" for k, v in p.items() if k in ("N", "K", "D"))
        extra = p.get("cov", "")
        return f"{self.name + ' ' if self.name else ''}{core} {extra} {self.mode}".strip()

    def key(self) -> tuple:
        return (self.op, self.mode, self.dtype, self.device, json.dumps(self.params, sort_keys=True))


def _short(v):
    if isinstance(v, int) and v >= 10_000:
        for unit, div in (("M", 1_000_000), ("k", 1000)):
            if v % div == 0:
                return f"{v // div}{unit}"
        if v % 1024 == 0:
            return f"{v // 1024}Ki"
    return str(v)


class Unsupported(Exception):
    """Raised by a provider's setup for a combination it does not handle (becomes an error row, not a failure)."""


@dataclass
class Provider:
    name: str
    setup: Callable[[Case, dict], Callable[[], dict]]
    available: Callable[[str], Optional[str]] = lambda device: None  # returns a reason when unavailable
    precision: str = "ieee"  # accuracy class for tolerances and the roofline compute peak
    devices: tuple = ("cpu", "cuda")
    default: bool = True  # part of the default provider set
    nkd_temporaries: dict = field(default_factory=dict)  # mode -> number of N*K*D-sized temporaries (OOM estimate)
    description: str = ""


class ProviderRegistry:
    def __init__(self):
        self._p: dict[str, Provider] = {}

    def register(self, p: Provider) -> Provider:
        self._p[p.name] = p
        return p

    def __getitem__(self, name):
        return self._p[name]

    def names(self) -> list[str]:
        return list(self._p)

    def select(self, device: str, wanted: Optional[Iterable[str]]) -> list[Provider]:
        """Providers for ``device``: the default set, or those matching ``wanted`` (exact names or fnmatch globs)."""
        import fnmatch

        out = []
        for p in self._p.values():
            if device not in p.devices:
                continue
            if wanted:
                if any(fnmatch.fnmatch(p.name, w) for w in wanted):
                    out.append(p)
            elif p.default:
                out.append(p)
        return out


# ----------------------------------------------------------------------------------------------
# environment


def _git(*args) -> Optional[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except Exception:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu: {cpu_model()}"


def collect_meta(device: str, argv: Optional[list] = None, extra: Optional[dict] = None) -> dict:
    try:
        import gmmkernels

        version = gmmkernels.__version__
        build = gmmkernels.build_info()
    except Exception as e:  # the harness must still describe the machine
        version, build = None, {"error": f"{type(e).__name__}: {e}"}
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    meta = {
        "gmmkernels": version,
        "git_sha": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": (bool(status) if status is not None else None),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "device": device_name(device),
        "device_type": device,
        "cpu": cpu_model(),
        "num_threads": torch.get_num_threads(),
        "build": build,
        "argv": list(sys.argv if argv is None else argv),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cpu_count": os.cpu_count(),
        "loadavg": (list(os.getloadavg()) if hasattr(os, "getloadavg") else None),  # other work on the machine
        "env": {k: os.environ[k] for k in ("TRITON_INTERPRET", "GMMKERNELS_BACKEND", "OMP_NUM_THREADS",
                                           "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        meta["gpu"] = {"sm_count": props.multi_processor_count, "total_memory_gb": props.total_memory / 2**30,
                       "capability": f"{props.major}.{props.minor}"}
        peaks = device_peaks(meta["device"])
        meta["peaks"] = None if peaks is None else peaks.__dict__
    if extra:
        meta.update(extra)
    return meta


def device_slug(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = f"cpu-{torch.get_num_threads()}t"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_results(out_dir: Path | str, op: str, device: str, rows: list, meta: dict) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = out_dir / f"{op}__{device_slug(device)}__{stamp}.json"
    n = 1
    while path.exists():
        path = out_dir / f"{op}__{device_slug(device)}__{stamp}-{n}.json"
        n += 1
    doc = {"schema": SCHEMA, "meta": meta, "results": rows}
    path.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, torch.dtype):
        return str(o).replace("torch.", "")
    if isinstance(o, (torch.device, Path)):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_results(path) -> dict:
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected {SCHEMA!r}")
    return doc


# ----------------------------------------------------------------------------------------------
# memory


def free_memory_bytes(device: str) -> Optional[int]:
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _proc_status_kb(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Reset the process' resident-set high-water mark (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak_memory(fn: Callable, device: str) -> tuple[Optional[float], Optional[str]]:
    """Extra memory (MB) one call needs above what is allocated before it, and how it was measured.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats`` minus the memory allocated before.
    CPU: resident-set high-water mark (VmHWM after resetting it) minus VmRSS before the call; includes
    allocator slack and is coarse (page granularity, freed blocks the allocator keeps count once).
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        del out
        return (torch.cuda.max_memory_allocated() - base) / 2**20, "cuda_max_memory_allocated"
    if not _reset_rss_peak():
        return None, None
    rss0 = _proc_status_kb("VmRSS")
    out = fn()
    hwm = _proc_status_kb("VmHWM")
    del out
    if rss0 is None or hwm is None:
        return None, None
    return max(0, hwm - rss0) / 1024, "rss_high_water_mark"


def cleanup(device: str, full: bool = False):
    # a full collection costs ~1 s in a process that imported sympy/inductor; tensors die by refcount anyway
    gc.collect() if full else gc.collect(1)
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# timing


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def repeat_times(fn: Callable, device: str, reps: int) -> list:
    """Seconds taken by each of ``reps`` calls of ``fn()`` after one warm-up call (synchronised on CUDA); for the
    standalone scripts whose ops are too slow or too stateful for ``time_fn``'s autorange."""
    fn()
    sync(device)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return ts


def time_first_call(fn: Callable, device: str):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, (time.perf_counter() - t0) * 1e3


def time_fn(fn: Callable, device: str, min_run_time: float = 0.5, threads: Optional[int] = None,
            min_samples: int = 5) -> dict:
    """Steady-state time of ``fn()`` in ms: {"p50", "p20", "p80", "iqr", "n", "method"}."""
    if device == "cuda":
        import triton.testing

        p50, p20, p80 = triton.testing.do_bench(
            fn, warmup=25, rep=max(20, int(min_run_time * 1e3 * 0.2)), quantiles=[0.5, 0.2, 0.8]
        )
        return {"p50": p50, "p20": p20, "p80": p80, "iqr": p80 - p20, "n": None,
                "method": "triton.testing.do_bench (L2 flushed; p20/p80)"}
    import numpy as np
    import torch.utils.benchmark as tbench

    threads = threads or torch.get_num_threads()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        fn()
        t_warm = time.perf_counter() - t0
        if t_warm > 1.0:
            min_samples = min(min_samples, 3)  # multi-second baselines: three calls are enough to see noise
        if t_warm * min_samples > min_run_time:
            # slow call: blocked_autorange would take one sample; time single calls, at least min_samples
            times = [t_warm]
            while len(times) < min_samples or sum(times) < min_run_time:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            t = np.asarray(times) * 1e3
            q20, q25, q50, q75, q80 = np.quantile(t, [0.2, 0.25, 0.5, 0.75, 0.8])
            return {"p50": float(q50), "p20": float(q20), "p80": float(q80), "iqr": float(q75 - q25),
                    "n": len(times), "method": f"perf_counter per call ({len(times)} calls), {threads} threads"}
    finally:
        torch.set_num_threads(prev_threads)
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    times = np.asarray(m.times) * 1e3
    return {
        "p50": float(m.median * 1e3),
        "p20": float(np.quantile(times, 0.2)),
        "p80": float(np.quantile(times, 0.8)),
        "iqr": float(m.iqr * 1e3),
        "n": int(len(times) * m.number_per_run),
        "method": f"torch.utils.benchmark blocked_autorange(min_run_time={min_run_time}), {threads} threads",
    }


# ----------------------------------------------------------------------------------------------
# the sweep


@dataclass
class OpSpec:
    """What :func:`run_cases` needs to know about an op."""

    make_inputs: Callable[[Case], dict]
    reference: Callable[[Case, dict], dict]
    compare: Callable[[Case, dict, dict, str], tuple]  # -> (errors: dict, ok: bool)
    counts: Callable[[Case], Counts]
    nkd_elements: Callable[[Case], int] = lambda case: 0  # size of one materialised intermediate


def base_row(case: Case, provider: str, precision: str) -> dict:
    return {
        "op": case.op,
        "case": case.name,
        "provider": provider,
        "precision": precision,
        "mode": case.mode,
        "dtype": case.dtype,
        "device": case.device,
        "params": dict(case.params),
        "ms": None,
        "first_call_ms": None,
        "gbps": None,
        "gflops": None,
        "tflops": None,
        "peak_mem_mb": None,
        "peak_mem_method": None,
        "errors_vs_fp64": None,
        "ok": None,
        "speedup_vs_eager": None,
        "roofline": None,
        "error": None,
    }


def _err_text(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}"
    msg = " ".join(msg.split())
    return msg[:500]


def run_cases(
    spec: OpSpec,
    cases: list[Case],
    providers: list[Provider],
    *,
    min_run_time: float = 0.5,
    threads: Optional[int] = None,
    budget_s: Optional[float] = None,
    memory_fraction: float = 0.8,
    baseline: str = "torch-eager",
    log: Callable[[str], Any] = print,
) -> list[dict]:
    """Check, then time every provider on every case; one row each. Never raises for a provider's failure."""
    t_start = time.perf_counter()
    rows = []
    for case in cases:
        case_rows = []
        dev = case.device
        try:
            inputs = spec.make_inputs(case)
            expected = spec.reference(case, inputs)
        except Exception as e:  # the case itself cannot be built (OOM for the inputs, ...)
            for p in providers:
                r = base_row(case, p.name, p.precision)
                r["error"] = f"case setup failed: {_err_text(e)}"
                case_rows.append(r)
            rows.extend(case_rows)
            log(f"[{case.label()}] case setup failed: {_err_text(e)}")
            cleanup(dev)
            continue
        for p in providers:
            if case.providers is not None and p.name not in case.providers:
                continue
            row = base_row(case, p.name, p.precision)
            case_rows.append(row)
            if budget_s is not None and time.perf_counter() - t_start > budget_s:
                row["error"] = f"skipped: time budget of {budget_s:.0f} s used up"
                continue
            reason = p.available(dev)
            if reason:
                row["error"] = f"unavailable: {reason}"
                continue
            n_tmp = p.nkd_temporaries.get(case.mode, 0)
            if n_tmp:
                need = n_tmp * spec.nkd_elements(case) * max(4, torch.empty((), dtype=case.torch_dtype).element_size())
                free = free_memory_bytes(dev)
                if free is not None and need > memory_fraction * free:
                    row["error"] = (f"skipped: would need ~{need / 2**30:.1f} GiB ({n_tmp} N*K*D temporaries) "
                                    f"> {memory_fraction:.0%} of {free / 2**30:.1f} GiB free (OOM)")
                    log(f"[{case.label()}] {p.name}: {row['error']}")
                    continue
            fn = out = None
            try:
                fn = p.setup(case, inputs)
                out, row["first_call_ms"] = time_first_call(fn, dev)
                errors, ok = spec.compare(case, out, expected, p.precision)
                row["errors_vs_fp64"], row["ok"] = errors, bool(ok)
                del out
                out = None
                t = time_fn(fn, dev, min_run_time=min_run_time, threads=threads)
                row["ms"] = {k: t[k] for k in ("p50", "p20", "p80", "iqr")}
                row["timing"] = {"n": t["n"], "method": t["method"]}
                row["peak_mem_mb"], row["peak_mem_method"] = measure_peak_memory(fn, dev)
                c = spec.counts(case)
                sec = t["p50"] / 1e3
                row["counts"] = {"flops": c.flops, "bytes": c.bytes, "exps": c.exps}
                row["gbps"] = c.bytes / sec / 1e9
                row["gflops"] = c.flops / sec / 1e9
                row["tflops"] = c.flops / sec / 1e12
                if dev == "cuda":
                    row["roofline"] = roofline(c, t["p50"], p.precision, device_name(dev))
                flag = "" if row["ok"] else "  ** CHECK FAILED **"
                log(f"[{case.label()}] {p.name}: {t['p50']:.4g} ms (first call {row['first_call_ms']:.4g} ms) "
                    f"{_fmt_errors(errors)}{flag}")
            except Unsupported as e:
                row["error"] = f"unsupported: {e}"
                log(f"[{case.label()}] {p.name}: {row['error']}")
            except torch.OutOfMemoryError as e:
                row["error"] = f"OOM: {_err_text(e)}"
                log(f"[{case.label()}] {p.name}: OOM")
            except Exception as e:
                if isinstance(e, RuntimeError) and "out of memory" in str(e).lower():
                    row["error"] = f"OOM: {_err_text(e)}"
                else:
                    row["error"] = _err_text(e)
                    if os.environ.get("GMMKERNELS_BENCH_TRACEBACK"):
                        traceback.print_exc()
                log(f"[{case.label()}] {p.name}: ERROR {row['error']}")
            finally:
                del fn, out
                cleanup(dev)
        _add_speedups(case_rows, baseline)
        rows.extend(case_rows)
        del inputs, expected
        cleanup(dev, full=True)
    return rows


def _fmt_errors(errors: Optional[dict]) -> str:
    if not errors:
        return ""
    return " ".join(f"{k}={v:.2g}" for k, v in errors.items() if isinstance(v, (int, float)))


def _add_speedups(case_rows: list, baseline: str):
    base = next((r for r in case_rows if r["provider"] == baseline and r["ms"]), None)
    if base is None:
        return
    for r in case_rows:
        if r["ms"]:
            r["speedup_vs_eager"] = base["ms"]["p50"] / r["ms"]["p50"]


# ----------------------------------------------------------------------------------------------
# comparing two result files


def row_key(r: dict) -> tuple:
    return (r["op"], r["provider"], r["mode"], r["dtype"], r["device"], json.dumps(r["params"], sort_keys=True))


def compare_results(new_rows: list, old_path, fail_pct: Optional[float] = None, log=print) -> bool:
    """Print p50 ratios new/old for rows present in both; False if some row got slower by more than ``fail_pct``%."""
    old = {row_key(r): r for r in load_results(old_path)["results"]}
    ok = True
    log(f"comparison with {old_path}: new/old p50")
    for r in new_rows:
        o = old.get(row_key(r))
        if not o or not o.get("ms") or not r.get("ms"):
            continue
        ratio = r["ms"]["p50"] / o["ms"]["p50"]
        slower = (ratio - 1) * 100
        bad = fail_pct is not None and slower > fail_pct
        ok &= not bad
        log(f"  {r['provider']:28s} {r['mode']:8s} {json.dumps(r['params'], sort_keys=True)}: "
            f"{o['ms']['p50']:.4g} -> {r['ms']['p50']:.4g} ms ({ratio:.2f}x){'  REGRESSION' if bad else ''}")
    return ok


# ----------------------------------------------------------------------------------------------
# command line shared by bench_*.py and run_all.py


def common_parser(description: str = "") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="default: cuda when available, else cpu")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few providers (CI smoke run)")
    ap.add_argument("--providers", default=None,
                    help="comma-separated provider names or globs (default: the provider set of the device)")
    ap.add_argument("--cases", default=None, help="comma-separated substrings of case names to keep (e.g. headline,A2)")
    ap.add_argument("--modes", default=None, help="comma-separated subset of fwd,fwd+bwd")
    ap.add_argument("--dtype", "--dtypes", dest="dtypes", default="float32",
                    help="comma-separated torch dtypes of the inputs (float32, float64, bfloat16)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="directory for the JSON result files (and plots)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads); default: torch's")
    ap.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per measurement")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-clock budget per bench module; later rows become 'skipped' error rows")
    ap.add_argument("--no-write", action="store_true", help="do not write JSON (print only)")
    ap.add_argument("--compare", default=None, help="OLD.json: print new/old timing ratios")
    ap.add_argument("--fail-if-regression", type=float, default=None, metavar="PCT",
                    help="with --compare: exit 1 if any row got slower by more than PCT percent")
    return ap


def finalize_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads is None and args.quick and args.device == "cpu":
        args.threads = 1  # smoke runs: one thread, so a busy CI machine does not turn OpenMP barriers into noise
    if args.threads:
        torch.set_num_threads(args.threads)
    split = lambda s: [t.strip() for t in s.split(",") if t.strip()] if s else None  # noqa: E731
    args.provider_list = split(args.providers)
    args.case_filters = split(args.cases)
    args.mode_list = split(args.modes)
    args.dtype_list = split(args.dtypes) or ["float32"]
    if args.min_run_time is None:
        args.min_run_time = 0.05 if args.quick else (0.3 if args.device == "cpu" else 0.5)
    return args


def filter_cases(cases: list[Case], args) -> list[Case]:
    out = []
    for c in cases:
        if args.case_filters and not any(f in c.name for f in args.case_filters):
            continue
        if args.mode_list and c.mode not in args.mode_list:
            continue
        out.append(c)
    return out


def print_markdown(title: str, columns: list, rows: list, lead: Callable, values: Callable, log=print):
    """A markdown table of result rows under ``title``: ``lead(row)`` gives the cells that name a row (its leading
    columns), ``values(row)`` the measured ones; a row that failed shows its error in place of them."""
    log(f"\n{title}")
    log("| " + " | ".join(columns) + " |")
    log("|" + "---|" * len(columns))
    for r in rows:
        head = list(lead(r))
        tail = ([f"error: {r['error'][:80]}"] + [""] * (len(columns) - len(head) - 1) if r["error"]
                else list(values(r)))
        log("| " + " | ".join(str(c) for c in head + tail) + " |")


def print_table(rows: list, log=print):
    """Compact text summary of a run."""
    for r in rows:
        if r["ms"]:
            sp = f"{r['speedup_vs_eager']:.2f}x" if r.get("speedup_vs_eager") else "-"
            log(f"  {r['case']:>14s} {r['params'].get('cov', ''):9s} {r['mode']:7s} {r['provider']:26s} "
                f"{r['ms']['p50']:10.4g} ms  vs eager {sp:>8s}  ok={r['ok']}")
        else:
            log(f"  {r['case']:>14s} {r['params'].get('cov', ''):9s} {r['mode']:7s} {r['provider']:26s} "
                f"{'-':>10s}     {r['error']}")


def main_for(module, argv=None) -> int:
    """``python benchmarks/bench_<op>.py ...``: parse the shared flags (+ the module's), run, write, compare."""
    ap = common_parser(module.__doc__.splitlines()[0] if module.__doc__ else "")
    if hasattr(module, "add_arguments"):
        module.add_arguments(ap)
    args = finalize_args(ap.parse_args(argv))
    rows = module.run(args)
    print_table(rows)
    if not args.no_write:
        meta = collect_meta(args.device, extra=getattr(module, "meta_extra", lambda a: {})(args))
        path = write_results(args.out, module.OP, args.device, rows, meta)
        print(f"wrote {path}")
    status = 0
    if args.compare and not compare_results(rows, args.compare, args.fail_if_regression):
        status = 1
    return status or check_status(rows)


def check_status(rows: list, log=None) -> int:
    """3 if an exact-arithmetic ("ieee") row failed its float64 check, else 0.

    Rows of the tensor-core modes (tf32, bf16) that miss their tolerance are reported (``"ok": false``)
    but do not fail the run: how inexact they are on a given workload is a result, not a bug.
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    failed = [r for r in rows if r.get("ok") is False]
    hard = [r for r in failed if r.get("precision", "ieee") == "ieee" and r.get("dtype") not in ("bfloat16", "float16")]
    for r in failed:
        log(f"float64 check failed{'' if r in hard else ' (reduced precision, not fatal)'}: {r['provider']} "
            f"{r['mode']} {json.dumps(r['params'], sort_keys=True)} {_fmt_errors(r['errors_vs_fp64'])}")
    return 3 if hard else 0
