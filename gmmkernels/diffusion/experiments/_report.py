"""What the reproductions share besides plots: a console log kept for the output folder with the run's wall and CPU
time, and the table of paired comparisons (:func:`gmmkernels.diffusion.metrics.paired_stats`) they print."""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


class PlanError(ValueError):
    """A plan override with entries the plan does not have, or that is not a mapping."""


def merge_plan(base: dict, override: Optional[dict], what: str = "plan") -> dict:
    """``base`` with the entries of ``override`` replaced; PlanError for an entry ``base`` does not have (a misspelt
    entry would otherwise be ignored and the run would silently use the default)."""
    if override is None:
        return dict(base)
    if not isinstance(override, dict):
        raise PlanError(f"{what}: expected a mapping of plan entries, got {type(override).__name__}")
    unknown = sorted(set(override) - set(base))
    if unknown:
        raise PlanError(f"{what}: unknown entries {', '.join(map(repr, unknown))}; the entries are "
                        + ", ".join(sorted(base)))
    return {**base, **override}


class Report:
    """Prints and keeps the lines of a reproduction's console output, and measures its runtime from creation:
    wall-clock seconds and CPU seconds of this process (all its threads)."""

    def __init__(self):
        self.lines: List[str] = []
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        self._child0 = _children_cpu()

    def log(self, s: str = "") -> None:
        print(s, flush=True)
        self.lines.append(s)

    def runtime(self, workers: int = 1) -> Dict[str, float]:
        """wall_s, cpu_s (this process and its finished worker processes), the worker count and torch threads."""
        cpu = time.process_time() - self._cpu0 + _children_cpu() - self._child0
        return {"wall_s": round(time.perf_counter() - self._wall0, 1), "cpu_s": round(cpu, 1), "workers": workers,
                "torch_threads_per_worker": 1 if workers > 1 else torch.get_num_threads()}

    def log_runtime(self, name: str, workers: int = 1) -> Dict[str, float]:
        rt = self.runtime(workers)
        self.log(f"{name}: wall {rt['wall_s']:.0f} s, CPU {rt['cpu_s']:.0f} s ({workers} worker process(es), "
                 f"{rt['torch_threads_per_worker']} torch thread(s) each)")
        return rt

    def write(self, path: Path) -> None:
        Path(path).write_text("\n".join(self.lines) + "\n")


def paired_table(rows: Sequence[dict], fmt: str = ".3g") -> str:
    """Markdown table of paired comparisons: each row a dict with 'comparison', 'metric', optional 'where', and the
    fields of :func:`paired_stats` (mean_a, mean_b, diff, se, ci95, a_better, n); 'floor' (the metric's noise floor)
    when known."""
    head = ["comparison (a vs b)", "where", "metric", "a", "b", "a - b", "± se", "95% interval", "a better", "floor"]
    out = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lo, hi = r["ci95"]
        floor = r.get("floor")
        out.append(" | ".join([
            r["comparison"], str(r.get("where", "")), r["metric"] + (" (higher better)" if r["higher_better"] else ""),
            f"{r['mean_a']:{fmt}}", f"{r['mean_b']:{fmt}}", f"{r['diff']:+{fmt}}", f"{r['se']:{fmt}}",
            f"[{lo:{fmt}}, {hi:{fmt}}]" + (" *" if r["excludes_zero"] else ""), f"{r['a_better']}/{r['n']}",
            "" if floor is None else (floor if isinstance(floor, str) else f"{floor:{fmt}}")]))
    return "\n".join(out) + "\n\n(* the 95% interval of the paired difference excludes zero)"


def default_workers() -> int:
    """Worker processes of a reproduction: ``$GMMKERNELS_WORKERS`` when set, else the CPUs this process may use."""
    env = os.environ.get("GMMKERNELS_WORKERS")
    if env:
        n = int(env)
        if n < 1:
            raise ValueError(f"GMMKERNELS_WORKERS must be an int >= 1, got {env!r}")
        return n
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_jobs(fn: Callable, jobs: Sequence, workers: int = 1, on_done: Optional[Callable] = None) -> List:
    """[fn(job) for job in jobs], in worker processes when ``workers`` > 1 (spawned, one torch thread each); the
    results come back in the order of ``jobs``. ``fn`` must be a module-level function and the jobs picklable; each
    job must be deterministic on its own (seeded inside), so the results do not depend on the worker count (up to
    float rounding: BLAS kernels may round differently in another process, which a diverging sampler amplifies).
    ``on_done(job, result)`` runs in this process as each job finishes."""
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        out = []
        for j in jobs:
            out.append(fn(j))
            if on_done is not None:
                on_done(j, out[-1])
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    res: Dict[int, object] = {}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=torch.set_num_threads,
                             initargs=(1,)) as ex:
        futs = {ex.submit(fn, j): i for i, j in enumerate(jobs)}
        for f in as_completed(futs):
            i = futs[f]
            res[i] = f.result()
            if on_done is not None:
                on_done(jobs[i], res[i])
    return [res[i] for i in range(len(jobs))]
