"""The `gmmkernels` command: info, demo, bench, train, sample."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


class UsageError(Exception):
    """A wrong command line or option value: the command exits with status 2 and this message on one line."""


def one_line(msg) -> str:
    """``msg`` on one line (newlines and runs of spaces folded)."""
    return " ".join(str(msg).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors on stderr (exit status 2): '<prog>: error: <message> (see '<prog> --help')'."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def output_dir(flag: str, path) -> Path:
    """The output folder ``path`` of option ``flag``, created if needed; UsageError unless it is (or can become) a
    folder in which files can be written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag}: {p} exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise UsageError(f"{flag}: cannot write into {p}: {e.strerror or e}") from None
    return p


def device_option(flag: str, name, *, auto: bool = True):
    """The torch.device of option ``flag`` ('cpu', 'cuda', 'cuda:N', or 'auto' when ``auto``); UsageError unless it
    exists here."""
    import torch

    if auto and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str):
        raise UsageError(f"{flag}: expected a device name, got {name!r}")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{flag}: not a device: {name!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"{flag}: only cpu{', cuda and auto' if auto else ' and cuda'} are supported, got {name!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {name}: no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"{flag} {name}: there are {torch.cuda.device_count()} CUDA devices")
    return dev


def seed_option(text: str) -> int:
    """argparse type of --seed: an int in [0, 2^63)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= v < 1 << 63:
        raise argparse.ArgumentTypeError(f"must be an int in [0, 2^63), got {v}")
    return v


def _repo_root() -> Path | None:
    """The source checkout this package was installed from (editable installs), if any."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "benchmarks" / "run_all.py").exists() else None


def _cmd_info(args) -> int:
    from . import info

    return info.run(args)


def _cmd_demo(args) -> int:
    from . import demo

    device_option("--device", args.device)
    try:
        demo._methods(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    output_dir("--out", args.out)
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


def plan_option(flag: str, text, name: str, fn):
    """The plan override of option ``flag``: a JSON object given inline or as @FILE, for an experiment whose
    reproduce function takes ``plan``; None when the option is absent. UsageError otherwise."""
    import inspect
    import json

    if text is None:
        return None
    if "plan" not in inspect.signature(fn).parameters:
        raise UsageError(f"{flag}: the {name} reproduction has no plan to change (it runs its full or --quick plan)")
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as e:
            raise UsageError(f"{flag}: cannot read {text[1:]}: {e.strerror or e}") from None
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{flag}: not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(plan, dict):
        raise UsageError(f"{flag}: expected a JSON object of plan entries, got {type(plan).__name__}")
    return plan


def _cmd_reproduce(args) -> int:
    import json
    import shlex

    device = device_option("--device", args.device)
    exps = _experiments()
    name = exps.resolve(args.experiment)
    plan = plan_option("--plan", args.plan, name, exps.EXPERIMENTS[name].reproduce)
    out = output_dir("--out", args.out or f"gmmkernels_out/reproduce_{name}")
    print(f"gmmkernels reproduce {name}: writing to {out.resolve()} (device {device}{', quick' if args.quick else ''})",
          flush=True)
    import torch

    torch.manual_seed(args.seed)
    from .diffusion.experiments._report import PlanError

    try:
        if plan is None:
            result = exps.EXPERIMENTS[name].reproduce(out, args.quick, device)
        else:
            result = exps.EXPERIMENTS[name].reproduce(out, args.quick, device, plan=plan)
    except PlanError as e:
        raise UsageError(f"--plan: {e}") from None
    cmd = [name, "--out", str(out), "--device", str(device), "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    cmd += ["--plan", json.dumps(plan)] if plan is not None else []
    result["command"] = "gmmkernels reproduce " + " ".join(shlex.quote(a) for a in cmd)
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"gmmkernels reproduce {name}: done; results in {out / 'result.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = ArgumentParser(
        prog="gmmkernels",
        description="Fused Gaussian-mixture kernels and the diffusion methods built on them.",
    )
    p.add_argument("--version", action="version", version=f"gmmkernels {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="versions, build flags, devices, backends of every op")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=_cmd_info, _parser=s)

    s = sub.add_parser("demo", help="run the demo on embedded data and write its outputs to a folder")
    s.add_argument("--out", default="gmmkernels_out/demo", help="output folder (default: %(default)s)")
    s.add_argument("--quick", action="store_true", help="smaller sizes and shorter training (about a minute)")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
    s.add_argument("--seed", type=seed_option, default=0, help="random seed (default: %(default)s)")
    s.add_argument("--skip-diffusion", action="store_true", help="only the fused-op part")
    exps = _experiments()
    methods = "".join(f"{m}, " for m in (exps.EXPERIMENTS if exps else ()))
    s.add_argument("--methods", default="all",
                   help=f"comma-separated method sections after the diffusion core: {methods}'all' or 'none' "
                        "(default: %(default)s)")
    s.set_defaults(func=_cmd_demo, _parser=s)

    s = sub.add_parser("bench", help="run the benchmark suite (source checkout); every argument goes to "
                       "benchmarks/run_all.py, e.g. --quick --device cpu --out DIR (try: bench --help)", add_help=False)
    s.set_defaults(func=_cmd_bench, _parser=s, bench_args=[])

    if exps and exps.EXPERIMENTS:
        s = sub.add_parser("reproduce",
                           help="re-run a paper's experiment at small scale: " + ", ".join(exps.EXPERIMENTS))
        s.add_argument("experiment", choices=exps.names(), help="which method")
        s.add_argument("--out", default=None, help="output folder (default: gmmkernels_out/reproduce_EXPERIMENT)")
        s.add_argument("--quick", action="store_true", help="a fast, smaller version (minutes on a CPU)")
        s.add_argument("--device", default="auto", help="cpu, cuda or auto (default: %(default)s)")
        s.add_argument("--seed", type=seed_option, default=0, help="random seed (default: %(default)s)")
        s.add_argument("--plan", default=None, metavar="JSON",
                       help="entries that replace those of the full (or --quick) plan, as a JSON object or @FILE, "
                            "e.g. '{\"toy_seeds\": [0, 1, 2]}' (mixddpm, ngmg; mgdm and smd take {\"toy\": {...}, "
                            "\"digits\": {...}}); recorded in the outputs")
        s.set_defaults(func=_cmd_reproduce, _parser=s)

    try:
        from .diffusion import commands as diffusion_commands
    except ImportError:
        diffusion_commands = None
    if diffusion_commands is not None:
        diffusion_commands.register(sub)
    return p


def run(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse ``argv`` with ``parser`` (subcommands set ``func`` and ``_parser``) and run the command. A wrong command
    line or option exits with status 2 and one line on stderr, naming the subcommand: argparse errors raise
    SystemExit(2), a UsageError returns 2. ``bench`` passes every argument on to the benchmark runner."""
    args, extra = parser.parse_known_args(argv)
    sub = getattr(args, "_parser", None)
    if extra:
        if getattr(args, "func", None) is _cmd_bench:
            args.bench_args = extra
        else:
            (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.error("a command is required")
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"{sub.prog if sub is not None else parser.prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `gmmkernels info | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main(argv=None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
