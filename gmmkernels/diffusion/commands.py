"""``gmmkernels train`` / ``gmmkernels sample`` and the diffusion part of ``gmmkernels demo``.

Options come from (lowest to highest priority) the built-in defaults, a ``--config`` file (JSON or TOML,
keys named like the long flags with '_' for '-', e.g. ``batch_size = 512``) and the command-line flags.
Data-parallel training: ``torchrun --nproc_per_node 2 -m gmmkernels.diffusion train ...``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from ..cli import ArgumentParser, UsageError, device_option, one_line, output_dir, seed_option
from ..cli import run as run_parser
from .data import DATASETS, Dataset, get_dataset
from .samplers import SAMPLERS

TRAIN_DEFAULTS = dict(
    dataset=None, out=None, steps=2000, batch_size=256, lr=2e-3, weight_decay=0.0, optimizer="adamw", ema=0.999,
    grad_clip=1.0, warmup=0, schedule="linear", T=1000, arch=None, model_size="small", heads="eps", conditional=False,
    n_train=20000, dim=2, seed=0, device="cpu", resume=None, log_every=100, eval_every=0, ckpt_every=0,
    sampler="ddpm", K=100, eta=0.0, n_samples=2000, threads=None, quiet=False,
)
SAMPLE_DEFAULTS = dict(
    ckpt=None, out=None, sampler="ddpm", K=100, eta=0.0, n_samples=2000, spacing="uniform", seed=0, device="cpu",
    no_ema=False, clip=None, label=None, threads=None, quiet=False,
)



# -- option handling --------------------------------------------------------------------------------

def _load_config(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config: no such file: {path}")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except Exception as e:  # parse errors of either format
        raise UsageError(f"--config: cannot parse {path}: {e}") from None


def _merge(args: argparse.Namespace, defaults: dict) -> dict:
    opts = dict(defaults)
    if getattr(args, "config", None):
        cfg = _load_config(args.config)
        if not isinstance(cfg, dict):
            raise UsageError("--config: the file must hold a table / object of options")
        cfg = {k.replace("-", "_"): v for k, v in cfg.items()}
        unknown = sorted(set(cfg) - set(defaults))
        if unknown:
            raise UsageError(f"--config: unknown option(s) {unknown}; known: {sorted(defaults)}")
        opts.update(cfg)
    for k in defaults:
        v = getattr(args, k, None)
        if v is not None and v is not False:
            opts[k] = v
    return opts


def _check(opts: dict, name: str, kind, *, lo=None, lo_open=False, hi=None, hi_open=False, choices=None,
           allow_none=False):
    """Option ``name`` of ``opts`` has type ``kind`` (int: not a bool; float: an int is taken, and NaN and infinities
    are refused), lies in the bounds and is one of ``choices``; else UsageError naming its flag."""
    v = opts[name]
    flag = "--" + name.replace("_", "-")
    if v is None and allow_none:
        return
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = opts[name] = float(v)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise UsageError(f"{flag}: expected {kind.__name__}, got {v!r}")
    if kind is float and not math.isfinite(v):
        raise UsageError(f"{flag}: must be a finite number, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise UsageError(f"{flag}: must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise UsageError(f"{flag}: must be {'<' if hi_open else '<='} {hi}, got {v!r}")
    if choices is not None and v not in choices:
        raise UsageError(f"{flag}: must be one of {list(choices)}, got {v!r}")


def _check_common(opts: dict) -> None:
    """The options train and sample share."""
    for k in ("K", "n_samples"):
        _check(opts, k, int, lo=1)
    _check(opts, "seed", int, lo=0, hi=(1 << 63) - 1)
    _check(opts, "eta", float, lo=0.0, hi=1.0)
    _check(opts, "sampler", str, choices=SAMPLERS)
    _check(opts, "threads", int, lo=1, allow_none=True)
    _check(opts, "quiet", bool)
    for k in ("out", "device"):
        _check(opts, k, str, allow_none=True)


def _device(name: str) -> torch.device:
    return device_option("--device", name, auto=False)


def _seed_all(seed: int) -> None:
    """Seed torch's global generators, which initialise the model weights and drive dropout: the same command with
    the same --seed writes the same checkpoint and samples."""
    torch.manual_seed(seed)


def _say(opts, *msg):
    if not opts.get("quiet"):
        print(*msg, file=sys.stderr)


# -- evaluation -------------------------------------------------------------------------------------

def evaluate(ds: Dataset, samples: torch.Tensor, n_proj: int = 500) -> dict:
    """Metrics of ``samples`` against dataset ``ds`` (what metrics.json holds)."""
    from . import metrics as M

    s = samples.detach().float().cpu()
    ref = ds.x[: max(len(s), 5000)]
    out = {"n_samples": len(s), "sliced_wasserstein": M.sliced_wasserstein(s, ref, n_proj=n_proj),
           "mmd": M.mmd(s, ref, max_n=2000)}
    if ds.mixture is not None:
        out["nll"] = M.mixture_nll(s, ds.mixture)
        out["nll_data"] = M.mixture_nll(ref, ds.mixture)
        cov = M.mode_coverage(s, ds.mixture.means, ds.mode_std, ds.mixture.weights)
        cov.pop("occupancy")
        out.update({f"mode_{k}": v for k, v in cov.items()})
    if ds.name in ("digits", "digits16"):
        out["digits_fd"] = M.digits_fd(s)
        out["digits_fd_real_subset"] = M.digits_fd(ds.x[:len(s)])
        hist = M.digits_class_histogram(s)
        out["digits_class_histogram"] = hist
        out["digits_classes_covered"] = int(sum(h >= 0.02 for h in hist))
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


def _sample(model, schedule, ds: Dataset, opts: dict, n: int, generator, device, cond=None):
    from .samplers import sample

    clip = opts.get("clip")
    if clip is None and ds.is_image:
        clip = 1.0
    x0_ref = ds.x[:2000].to(device) if opts["sampler"] == "analytic_dpm" else None
    K = min(opts["K"], schedule.T) if not schedule.continuous else opts["K"]
    return sample(model, schedule, (n, *ds.data_shape), opts["sampler"], K, generator=generator, eta=opts["eta"],
                  clip_x0=clip, device=device, cond=cond, x0_ref=x0_ref, spacing=opts.get("spacing", "uniform"),
                  progress=not opts["quiet"]).cpu()


def _dataset_from(opts) -> Dataset:
    try:
        return get_dataset(opts["dataset"], n=opts["n_train"], seed=opts["seed"], dim=opts["dim"])
    except ValueError as e:  # gmm25 takes an even --dim >= 2
        raise UsageError(f"--dim {opts['dim']} with --dataset {opts['dataset']}: {e}") from None


# -- train ------------------------------------------------------------------------------------------

def _check_train(opts: dict) -> None:
    if opts["dataset"] is None:
        raise UsageError("--dataset is required (or a 'dataset' key in --config)")
    _check(opts, "dataset", str, choices=DATASETS)
    _check_common(opts)
    for k in ("steps", "log_every", "eval_every", "ckpt_every", "warmup"):
        _check(opts, k, int, lo=0)
    for k in ("batch_size", "T", "dim"):
        _check(opts, k, int, lo=1)
    _check(opts, "n_train", int, lo=2)
    _check(opts, "lr", float, lo=0.0, lo_open=True)
    for k in ("weight_decay", "grad_clip"):
        _check(opts, k, float, lo=0.0)
    _check(opts, "ema", float, lo=0.0, hi=1.0, hi_open=True)
    _check(opts, "conditional", bool)
    _check(opts, "resume", str, allow_none=True)
    _check(opts, "optimizer", str, choices=("adamw", "adam"))
    _check(opts, "schedule", str, choices=("linear", "cosine", "sigmoid", "vp"))
    _check(opts, "arch", str, choices=("mlp", "unet"), allow_none=True)
    _check(opts, "model_size", str, choices=("tiny", "small", "base"))
    _check(opts, "heads", str)
    heads = tuple(h.strip() for h in opts["heads"].split(",") if h.strip())
    if not heads or heads[0] != "eps" or any(h not in ("eps", "eps2", "eps3") for h in heads) or len(set(heads)) != len(heads):
        raise UsageError(f"--heads: a comma list starting with eps from eps,eps2,eps3, got {opts['heads']!r}")
    opts["heads"] = heads
    if opts["sampler"] == "sn_ddpm" and "eps2" not in heads:
        raise UsageError("--sampler sn_ddpm needs the second-moment head: add --heads eps,eps2")
    if opts["sampler"] == "euler_maruyama" and opts["schedule"] != "vp":
        raise UsageError("--sampler euler_maruyama integrates the VP-SDE: use --schedule vp")
    if opts["schedule"] != "vp" and opts["K"] > opts["T"]:
        raise UsageError(f"--K: at most T={opts['T']} steps for a discrete schedule, got {opts['K']}")
    if opts["dataset"] not in ("digits", "digits16") and opts["conditional"]:
        raise UsageError("--conditional needs a labelled dataset (digits, digits16)")


def cmd_train(args: argparse.Namespace) -> int:
    try:
        opts = _merge(args, TRAIN_DEFAULTS)
        _check_train(opts)
        device = _device(opts["device"])
        return _train(opts, device)
    except UsageError as e:
        print(f"gmmkernels train: error: {one_line(e)}", file=sys.stderr)
        return 2


def _train(opts: dict, device: torch.device) -> int:
    from .models import default_model
    from .plotting import data_vs_samples
    from .schedules import make_schedule
    from .trainer import TrainConfig, Trainer, init_distributed, remove_stale_temp
    import torch.distributed as dist

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    rank, world, device = init_distributed(str(device))
    if opts["batch_size"] % world:
        raise UsageError(f"--batch-size {opts['batch_size']} is not divisible by the {world} processes")
    out = output_dir("--out", opts["out"] or f"gmmkernels_out/train-{opts['dataset']}")
    if rank == 0:
        remove_stale_temp(out / "checkpoint.pt")
    ds = _dataset_from(opts)
    sched = make_schedule(opts["schedule"], opts["T"]) if opts["schedule"] != "vp" else make_schedule("vp")
    _seed_all(opts["seed"])
    try:
        model = default_model(ds.data_shape, sched.t_max, arch=opts["arch"], size=opts["model_size"],
                              num_classes=ds.num_classes if opts["conditional"] else 0, heads=opts["heads"])
    except ValueError as e:
        raise UsageError(str(e)) from None
    cfg = TrainConfig(steps=opts["steps"], batch_size=opts["batch_size"], lr=opts["lr"],
                      weight_decay=opts["weight_decay"], optimizer=opts["optimizer"], warmup=opts["warmup"],
                      ema_decay=opts["ema"], grad_clip=opts["grad_clip"] or None, conditional=opts["conditional"],
                      seed=opts["seed"], log_every=opts["log_every"], eval_every=opts["eval_every"],
                      ckpt_every=opts["ckpt_every"], progress=not opts["quiet"])

    def eval_fn(tr):
        g = torch.Generator(device=device).manual_seed(opts["seed"] + 1)
        eopts = dict(opts, sampler="ddim", K=min(50, sched.T) if not sched.continuous else 50, eta=0.0, quiet=True)
        x = _sample(tr.ema, sched, ds, eopts, min(opts["n_samples"], 1000), g, device, cond=_cond(ds, opts, 1000, g, device))
        m = evaluate(ds, x, n_proj=200)
        return {k: v for k, v in m.items() if not isinstance(v, list)}

    meta = {"dataset": ds.name, "n_train": opts["n_train"], "dim": opts["dim"], "data_seed": opts["seed"],
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}}
    trainer = Trainer(model, sched, ds.x, cfg, labels=ds.labels, out_dir=out, device=device, eval_fn=eval_fn, meta=meta)
    if opts["resume"]:
        rp = Path(opts["resume"])
        rp = rp / "checkpoint.pt" if rp.is_dir() else rp
        if not rp.is_file():
            raise UsageError(f"--resume: no checkpoint at {rp}")
        try:
            trainer.load(rp)
        except ValueError as e:  # names the file and what is wrong with it
            raise UsageError(f"--resume: {e}") from None
        _say(opts, f"resumed from {rp} at step {trainer.step}")
    if rank == 0:
        (out / "config.json").write_text(json.dumps(meta["options"], indent=1))
    t0 = time.time()
    trainer.train()
    train_s = time.time() - t0
    if rank == 0:
        g = torch.Generator(device=device).manual_seed(opts["seed"] + 2)
        cond = _cond(ds, opts, opts["n_samples"], g, device)
        x = _sample(trainer.ema, sched, ds, opts, opts["n_samples"], g, device, cond=cond)
        torch.save(x, out / "samples.pt")
        data_vs_samples(ds.x[: len(x)], x, out / "samples.png")
        metrics = {"dataset": ds.name, "steps": trainer.step, "train_seconds": round(train_s, 2),
                   "world_size": world, "sampler": opts["sampler"], "K": opts["K"],
                   "final_loss": trainer.history[-1]["loss"] if trainer.history and "loss" in trainer.history[-1] else None,
                   **evaluate(ds, x)}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        _say(opts, f"wrote {out}/checkpoint.pt, samples.png, metrics.json")
        if not opts["quiet"]:
            print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def _cond(ds: Dataset, opts: dict, n: int, g, device):
    if not opts.get("conditional"):
        return None
    label = opts.get("label")
    if label is not None:
        return torch.full((n,), int(label), dtype=torch.long, device=device)
    return torch.arange(n, device=device) % ds.num_classes


# -- sample -----------------------------------------------------------------------------------------

def cmd_sample(args: argparse.Namespace) -> int:
    try:
        opts = _merge(args, SAMPLE_DEFAULTS)
        return _sample_cmd(opts)
    except UsageError as e:
        print(f"gmmkernels sample: error: {one_line(e)}", file=sys.stderr)
        return 2


def _sample_cmd(opts: dict) -> int:
    from .plotting import data_vs_samples
    from .trainer import load_checkpoint

    if opts["ckpt"] is None:
        raise UsageError("--ckpt is required (a checkpoint file or a training --out directory)")
    _check(opts, "ckpt", str)
    _check_common(opts)
    _check(opts, "spacing", str, choices=("uniform", "quadratic"))
    _check(opts, "clip", float, lo=0.0, lo_open=True, allow_none=True)
    _check(opts, "label", int, lo=0, allow_none=True)
    _check(opts, "no_ema", bool)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    device = _device(opts["device"])
    p = Path(opts["ckpt"])
    p = p / "checkpoint.pt" if p.is_dir() else p
    if not p.is_file():
        raise UsageError(f"--ckpt: no checkpoint at {p}")
    try:
        model, sched, ck = load_checkpoint(p, device=device, use_ema=not opts["no_ema"])
    except ValueError as e:  # names the file and what is wrong with it
        raise UsageError(f"--ckpt: {e}") from None
    meta = ck.get("meta")
    if not isinstance(meta, dict) or meta.get("dataset") not in DATASETS or not isinstance(meta.get("options", {}), dict):
        raise UsageError(f"--ckpt: {p} does not name a known dataset")
    if opts["sampler"] == "sn_ddpm" and "eps2" not in getattr(model, "heads", ()):
        raise UsageError("--sampler sn_ddpm needs a model trained with the eps2 head (train --heads eps,eps2)")
    if opts["sampler"] == "euler_maruyama" and not sched.continuous:
        raise UsageError("--sampler euler_maruyama needs a model trained with --schedule vp")
    if not sched.continuous and opts["K"] > sched.T:
        raise UsageError(f"--K: at most T={sched.T} steps for this checkpoint, got {opts['K']}")
    train_opts = meta.get("options", {})
    if opts["label"] is not None and not train_opts.get("conditional"):
        raise UsageError("--label needs a class-conditional checkpoint (train --conditional)")
    try:
        ds = get_dataset(meta["dataset"], n=meta.get("n_train", 20000), seed=meta.get("data_seed", 0),
                         dim=meta.get("dim", 2))
    except (ValueError, TypeError) as e:
        raise UsageError(f"--ckpt: {p}: the data set it names cannot be built: {e}") from None
    if opts["label"] is not None and opts["label"] >= ds.num_classes:
        raise UsageError(f"--label: {ds.name} has the classes 0..{ds.num_classes - 1}, got {opts['label']}")
    out = output_dir("--out", opts["out"] or p.parent / f"samples-{opts['sampler']}-K{opts['K']}")
    _seed_all(opts["seed"])
    g = torch.Generator(device=device).manual_seed(opts["seed"])
    copts = dict(opts, conditional=train_opts.get("conditional", False))
    cond = _cond(ds, copts, opts["n_samples"], g, device)
    t0 = time.time()
    x = _sample(model, sched, ds, opts, opts["n_samples"], g, device, cond=cond)
    secs = time.time() - t0
    torch.save(x, out / "samples.pt")
    data_vs_samples(ds.x[: len(x)], x, out / "samples.png")
    metrics = {"checkpoint": str(p), "dataset": ds.name, "step": ck.get("step"), "sampler": opts["sampler"],
               "K": opts["K"], "eta": opts["eta"], "ema": not opts["no_ema"], "sample_seconds": round(secs, 2),
               **evaluate(ds, x)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _say(opts, f"wrote {out}/samples.pt, samples.png, metrics.json")
    if not opts["quiet"]:
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}))
    return 0


# -- argparse -----------------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", help="output directory")
    p.add_argument("--seed", type=seed_option, help="random seed (default 0)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--config", metavar="FILE", help="JSON or TOML file of options (keys = long flag names, '_' for '-'); flags override it")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars or summaries")
    p.add_argument("--sampler", choices=SAMPLERS, help="sampler for the samples (default ddpm)")
    p.add_argument("-K", "--K", dest="K", type=int, help="number of sampling steps (default 100)")
    p.add_argument("--eta", type=float, help="DDIM eta in [0, 1] (default 0)")
    p.add_argument("--n-samples", type=int, help="number of samples to draw (default 2000)")


def register(subparsers) -> None:
    """Add the ``train`` and ``sample`` subcommands to an argparse subparsers object."""
    t = subparsers.add_parser(
        "train", help="train a DDPM epsilon-network on a toy set or the digits",
        usage="%(prog)s --dataset {" + ",".join(DATASETS) + "} [options]",
        description="Train a DDPM (epsilon prediction, AdamW, EMA) and write checkpoint.pt, metrics.jsonl, "
                    "samples.png and metrics.json into --out. Multi-process: torchrun --nproc_per_node N -m gmmkernels.diffusion train ...")
    t.add_argument_group("required (on the command line or as 'dataset' in --config)").add_argument(
        "--dataset", choices=DATASETS, help="training data")
    t.add_argument("--steps", type=int, help="optimizer steps (default 2000)")
    t.add_argument("--batch-size", type=int, help="global batch size (default 256)")
    t.add_argument("--lr", type=float, help="learning rate (default 2e-3)")
    t.add_argument("--weight-decay", type=float, help="weight decay (default 0)")
    t.add_argument("--optimizer", choices=("adamw", "adam"), help="optimizer (default adamw)")
    t.add_argument("--warmup", type=int, help="linear warm-up steps (default 0)")
    t.add_argument("--ema", type=float, help="EMA decay in [0, 1) (default 0.999)")
    t.add_argument("--grad-clip", type=float, help="max gradient norm, 0 = off (default 1)")
    t.add_argument("--schedule", choices=("linear", "cosine", "sigmoid", "vp"), help="noise schedule (default linear)")
    t.add_argument("--T", type=int, help="diffusion steps of a discrete schedule (default 1000)")
    t.add_argument("--arch", choices=("mlp", "unet"), help="network (default: mlp for vectors, unet for images)")
    t.add_argument("--model-size", choices=("tiny", "small", "base"), help="network width/depth (default small)")
    t.add_argument("--heads", help="output heads, comma list from eps,eps2,eps3 (default eps)")
    t.add_argument("--conditional", action="store_true", default=None, help="class-conditional (digits)")
    t.add_argument("--n-train", type=int, help="number of toy training points (default 20000)")
    t.add_argument("--dim", type=int, help="dimension of gmm25 (even, default 2)")
    t.add_argument("--resume", metavar="CKPT", help="resume from a checkpoint file or output directory")
    t.add_argument("--log-every", type=int, help="log the loss every N steps (default 100)")
    t.add_argument("--eval-every", type=int, help="sample and compute metrics every N steps, 0 = off (default 0)")
    t.add_argument("--ckpt-every", type=int, help="checkpoint every N steps, 0 = only at the end (default 0)")
    _common(t)
    t.set_defaults(func=cmd_train, _parser=t)

    s = subparsers.add_parser(
        "sample", help="sample from a trained checkpoint and score the samples",
        usage="%(prog)s --ckpt PATH [options]",
        description="Draw samples from a checkpoint of `gmmkernels train` and write samples.pt, samples.png and metrics.json.")
    s.add_argument_group("required (on the command line or as 'ckpt' in --config)").add_argument(
        "--ckpt", metavar="PATH", help="checkpoint file or training output directory")
    s.add_argument("--spacing", choices=("uniform", "quadratic"), help="time-step spacing (default uniform)")
    s.add_argument("--no-ema", action="store_true", default=None, help="use the raw weights instead of the EMA")
    s.add_argument("--clip", type=float, help="clamp predicted x0 to [-c, c] (default 1 for images, off otherwise)")
    s.add_argument("--label", type=int, help="class label for a conditional model (default: all classes in turn)")
    _common(s)
    s.set_defaults(func=cmd_sample, _parser=s)


def main(argv: Optional[list] = None) -> int:
    parser = ArgumentParser(prog="python -m gmmkernels.diffusion")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return run_parser(parser, argv)


# -- demo -------------------------------------------------------------------------------------------

def _demo_run(ds: Dataset, arch: str, size: str, steps: int, batch: int, lr: float, n_samples: int, K: int,
              out_png: Path, seed: int = 0) -> dict:
    from .models import default_model
    from .plotting import data_vs_samples
    from .samplers import sample
    from .schedules import make_schedule
    from .trainer import TrainConfig, Trainer

    sched = make_schedule("linear", 1000)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = default_model(ds.data_shape, sched.t_max, arch=arch, size=size)
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, ema_decay=0.995 if steps < 3000 else 0.999, warmup=min(100, steps // 10),
                      seed=seed, log_every=max(steps // 4, 1), progress=False)
    tr = Trainer(model, sched, ds.x, cfg)
    t0 = time.time()
    tr.train()
    train_s = time.time() - t0
    g = torch.Generator().manual_seed(seed + 1)
    x = sample(tr.ema, sched, (n_samples, *ds.data_shape), "ddpm", K, generator=g,
               clip_x0=1.0 if ds.is_image else None)
    data_vs_samples(ds.x[:n_samples], x, out_png)
    m = evaluate(ds, x, n_proj=200)
    return {"dataset": ds.name, "arch": arch, "params": sum(p.numel() for p in model.parameters()), "steps": steps,
            "train_seconds": round(train_s, 1), "final_loss": round(tr.history[-1]["loss"], 4),
            "sampler": f"ddpm K={K}", "png": out_png.name,
            **{k: v for k, v in m.items() if not isinstance(v, list)}}


def demo_section(outdir: Path, quick: bool) -> dict:
    """Train a small DDPM on a 2-D toy (8 Gaussians on a ring) and on the digits, write
    ``diffusion_toy2d.png`` / ``diffusion_digits.png`` (data left, samples right) into ``outdir`` and
    return their metrics. quick=True takes well under a minute on 2 CPU cores, quick=False a few minutes."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these networks are too small to gain from intra-op threads
    try:
        toy = get_dataset("gmm2d", n=20000, seed=0)
        digits = get_dataset("digits")
        if quick:
            r_toy = _demo_run(toy, "mlp", "small", 1500, 512, 3e-3, 2000, 100, outdir / "diffusion_toy2d.png")
            r_dig = _demo_run(digits, "mlp", "small", 900, 128, 2e-3, 200, 100, outdir / "diffusion_digits.png")
        else:
            r_toy = _demo_run(toy, "mlp", "small", 4000, 256, 2e-3, 4000, 200, outdir / "diffusion_toy2d.png")
            r_dig = _demo_run(digits, "unet", "tiny", 2000, 128, 2e-3, 500, 200, outdir / "diffusion_digits.png")
    finally:
        torch.set_num_threads(threads)
    return {"toy2d": r_toy, "digits": r_dig,
            "note": "digits_fd: Frechet distance in the features of the package's digits classifier (an FID "
                    "analogue, not comparable with Inception FIDs); digits_fd_real_subset is the same score for real digits"}
