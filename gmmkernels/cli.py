"""The `gmmkernels` command: info, demo, bench, train, sample."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def _repo_root() -> Path | None:
    """The source checkout this package was installed from (editable installs), if any."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "benchmarks" / "run_all.py").exists() else None


def _cmd_info(args) -> int:
    from . import info

    return info.run(args)


def _cmd_demo(args) -> int:
    from . import demo

    return demo.run(args)


def _cmd_bench(args) -> int:
    root = _repo_root()
    if root is None:
        print("gmmkernels bench: the benchmarks live in the source checkout (benchmarks/run_all.py); "
              "install with `pip install -e .` from a clone to use this command", file=sys.stderr)
        return 2
    cmd = [sys.executable, str(root / "benchmarks" / "run_all.py"), *args.bench_args]
    return subprocess.call(cmd, cwd=root)


def _experiments():
    """The registry of the methods' experiments (``gmmkernels.diffusion.experiments``), or None without it."""
    try:
        from .diffusion import experiments
    except ImportError:
        return None
    return experiments


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is available")
    return dev


def _cmd_reproduce(args) -> int:
    import json

    try:
        device = _resolve_device(args.device)
    except (RuntimeError, ValueError) as e:
        print(f"gmmkernels reproduce: {e}", file=sys.stderr)
        return 2
    exps = _experiments()
    name = exps.resolve(args.experiment)
    out = Path(args.out or f"gmmkernels_out/reproduce_{name}")
    out.mkdir(parents=True, exist_ok=True)
    print(f"gmmkernels reproduce {name}: writing to {out.resolve()} (device {device}{', quick' if args.quick else ''})",
          flush=True)
    import torch

    torch.manual_seed(args.seed)
    result = exps.EXPERIMENTS[name].reproduce(out, args.quick, device)
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"gmmkernels reproduce {name}: done; results in {out / 'result.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="gmmkernels",
        description="Fused Gaussian-mixture kernels and the diffusion methods built on them.",
    )
    p.add_argument("--version", action="version", version=f"gmmkernels {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="versions, build flags, devices, backends of every op")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("demo", help="run the demo on embedded data and write its outputs to a folder")
    s.add_argument("--out", default="gmmkernels_out/demo", help="output folder (default: %(default)s)")
    s.add_argument("--quick", action="store_true", help="smaller sizes and shorter training (about a minute)")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    s.add_argument("--skip-diffusion", action="store_true", help="only the fused-op part")
    exps = _experiments()
    methods = "".join(f"{m}, " for m in (exps.EXPERIMENTS if exps else ()))
    s.add_argument("--methods", default="all",
                   help=f"comma-separated method sections after the diffusion core: {methods}'all' or 'none' "
                        "(default: %(default)s)")
    s.set_defaults(func=_cmd_demo)

    s = sub.add_parser("bench", help="run the benchmark suite (source checkout); arguments go to benchmarks/run_all.py",
                       add_help=False)
    s.add_argument("bench_args", nargs=argparse.REMAINDER, help="e.g. --quick --device cpu --out DIR (try: bench --help)")
    s.set_defaults(func=_cmd_bench)

    if exps and exps.EXPERIMENTS:
        s = sub.add_parser("reproduce",
                           help="re-run a paper's experiment at small scale: " + ", ".join(exps.EXPERIMENTS))
        s.add_argument("experiment", choices=exps.names(), help="which method")
        s.add_argument("--out", default=None, help="output folder (default: gmmkernels_out/reproduce_EXPERIMENT)")
        s.add_argument("--quick", action="store_true", help="a fast, smaller version (minutes on a CPU)")
        s.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
        s.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
        s.set_defaults(func=_cmd_reproduce)

    try:
        from .diffusion import commands as diffusion_commands
    except ImportError:
        diffusion_commands = None
    if diffusion_commands is not None:
        diffusion_commands.register(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `gmmkernels info | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
