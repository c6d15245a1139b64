"""Independent runs of an experiment (one per training seed, say) on several CPU processes.

The experiments train many small networks, each too small to gain from intra-op threads: one thread per run and
one run per core is the fastest layout, and oversubscribing the cores (two intra-op threads on each of two
busy cores) is many times slower. :func:`run_tasks` maps a module-level function over its tasks, in this process
or in ``workers`` spawned processes, each with one torch thread; every task seeds its own generators, so the
results do not depend on the number of workers.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, List, Sequence

import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers() -> int:
    """Processes for :func:`run_tasks`: $GMMKERNELS_WORKERS when set, else min(2, the usable CPU cores)."""
    env = os.environ.get("GMMKERNELS_WORKERS")
    if env:
        return max(1, int(env))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished child processes (the workers of
    :func:`run_tasks` once their pool has closed)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _one_thread_call(fn: Callable, task):
    torch.set_num_threads(1)
    return fn(task)


def run_tasks(fn: Callable, tasks: Sequence, workers: int = 1) -> List:
    """[fn(task) for task in tasks], in order. ``workers`` > 1 runs them in that many spawned processes (``fn`` and
    the tasks must pickle: a module-level function and plain data); every call runs with one torch thread."""
    tasks = list(tasks)
    if workers <= 1 or len(tasks) <= 1:
        with torch_threads(1):
            return [fn(t) for t in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        return list(pool.map(_one_thread_call, [fn] * len(tasks), tasks))
