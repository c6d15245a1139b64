"""`gmmkernels info`: versions, build flags, devices and the backends of every op."""
from __future__ import annotations

import json
import platform
import sys

import torch

from . import __version__, _backend, _dispatch

# (public API, op family, native op) of each row of the table
_OPS = [
    ("mixture_log_prob / mixture_score / mixture_responsibilities / mixture_stats", "mixture_stats", "mixture_stats"),
    ("gms_fit", "gms_fit", "gms_fit"),
    ("gms_step", "gms_fit", "gms_step"),
    ("mixture_dispatch / nearest_center / kmeans", "mixture_dispatch", "mixture_dispatch"),
    ("lowrank_adapter / hypernet_adapter", "lowrank_adapter", "lowrank_adapter"),
    ("mixture_suffstats (EM / VB M-step)", "mixture_suffstats", "mixture_suffstats"),
    ("gibbs_sweep / gibbs", "gibbs_sweep", "gibbs_sweep"),
    ("mgdm_vi_step / mgdm_bridge (MGDM)", "mgdm_step", "mgdm_vi_step"),
    ("mixture_em_stats (fit_em / fit_vb iteration)", "mixture_em_stats", "mixture_em_stats"),
    ("mixture_em_mstep (fit_em M-step)", "mixture_em_stats", "mixture_em_mstep"),
]


def collect() -> dict:
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    info = {
        "gmmkernels": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _triton_version(),
        "triton_interpret": _backend.TRITON_INTERPRET,
        "native_extension": _backend.HAS_C,
        "native_extension_error": None if _backend.HAS_C else str(_backend.C_IMPORT_ERROR),
        "build": _backend.build_info(),
        "build_problem": _backend.LOAD_PROBLEM,
        "cpu_threads": torch.get_num_threads(),
        "devices": {d: (torch.cuda.get_device_name(int(d.split(":")[1])) if d.startswith("cuda") else platform.processor() or "cpu") for d in devices},
        "ops": {},
    }
    for public, family, native in _OPS:
        info["ops"][public] = {
            "native_kernels": [k for k in ("CPU", "CUDA") if _backend.has_kernel(native, k)],
            "backends": {d: _dispatch.available(family, d, native) for d in devices},
        }
    return info


def _triton_version():
    if not _backend.HAS_TRITON:
        return None
    try:
        import triton

        return triton.__version__
    except Exception as e:  # pragma: no cover
        return f"unusable ({e})"


def render(info: dict) -> str:
    lines = [f"gmmkernels {info['gmmkernels']}  (python {info['python']}, {info['platform']})"]
    lines.append(f"torch      {info['torch']}  cuda={info['torch_cuda']}")
    lines.append(f"triton     {info['triton']}" + ("  [interpreter: TRITON_INTERPRET=1]" if info["triton_interpret"] else ""))
    if info["native_extension"]:
        b = info["build"]
        cuda = f"CUDA {b['cuda_version']} archs {b['cuda_archs'] or 'default'}" if b.get("with_cuda") else "no CUDA"
        simd = f"{b.get('cpu_simd')} ({b.get('cpu_vector_bytes')}-byte vectors)"
        lines.append(f"native     built ({cuda}; openmp={b.get('openmp')}; cpu simd={simd}; "
                     f"torch {b.get('torch_version_built')})")
    else:
        lines.append(f"native     NOT built: {info['native_extension_error']}")
    if info.get("build_problem"):
        lines.append(f"WARNING    {info['build_problem']}")
    lines.append(f"threads    {info['cpu_threads']}")
    for d, name in info["devices"].items():
        lines.append(f"device     {d}: {name}")
    lines.append("ops:")
    for op, o in info["ops"].items():
        lines.append(f"  {op}")
        lines.append(f"    native kernels: {', '.join(o['native_kernels']) or 'none'}")
        for d, bs in o["backends"].items():
            lines.append(f"    {d}: {', '.join(bs)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from .cli import ArgumentParser  # one-line errors, exit status 2

    p = ArgumentParser(prog="gmmkernels info", description="Show versions, build flags, devices and backends.")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    return run(args)


def run(args) -> int:
    info = collect()
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
