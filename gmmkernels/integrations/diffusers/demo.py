"""``python -m gmmkernels.integrations.diffusers demo``: a small diffusers ``UNet2DModel`` trained on the shipped 8x8
digits, GMS's moment heads trained on it (frozen), then sampled with GMS through the diffusers API
(``DDPMPipeline(unet=UNetWithMomentHeads(...), scheduler=GMSScheduler(...))``) and, for comparison, with diffusers'
own ``DDPMPipeline`` at the same number of steps. Writes a PNG of each and ``summary.json`` (digits Frechet distance,
docs/methods.md (Metrics): lower is better; its noise floor at 1000 samples is about 1.2). A few CPU minutes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from ...diffusion.data import load_digits
from ...diffusion.metrics import digits_fd
from ...diffusion.plotting import image_grid, save_png
from ...diffusion.trainer import TrainConfig, Trainer
from .gms import GMSScheduler
from .unet import DiffusersEpsModel, UNetWithMomentHeads, train_moment_heads


def small_unet(seed: int = 0) -> UNet2DModel:
    """A UNet2DModel for 1 x 8 x 8 images (about 0.6 M parameters)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64),
                           layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)


def run_demo(out="gmmkernels_out/diffusers_demo", *, steps: int = 2000, head_steps: int = 800, K: int = 10,
             n: int = 500, seed: int = 0, device: str = "cpu", log=print) -> dict:
    """Train, sample, measure; returns the summary (also written to ``out/summary.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x, _ = load_digits(8)
    scheduler = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")  # clip_sample=True: x0 in [-1, 1]
    t0 = time.perf_counter()
    model = DiffusersEpsModel(small_unet(seed), scheduler)
    tr = Trainer(model, model.schedule, x, TrainConfig(steps=steps, batch_size=128, lr=2e-3, warmup=100,
                                                       ema_decay=0.995, seed=seed, log_every=0, progress=False),
                 device=device)
    tr.train()
    unet = tr.ema.unet.eval()
    t_unet = time.perf_counter() - t0
    log(f"trained the UNet ({steps} steps) in {t_unet:.0f} s")
    heads, _ = train_moment_heads(unet, scheduler, x, steps=head_steps, seed=seed, device=device)
    log(f"trained the moment heads ({head_steps} steps) in {time.perf_counter() - t0 - t_unet:.0f} s")
    summary = {"steps": steps, "head_steps": head_steps, "K": K, "n": n, "seed": seed, "fd": {}}
    pipes = {"gms": DDPMPipeline(unet=UNetWithMomentHeads(unet, heads), scheduler=GMSScheduler.from_config(
                 scheduler.config, last_var_max=None)),
             "ddpm": DDPMPipeline(unet=unet, scheduler=scheduler)}
    for name, pipe in pipes.items():
        pipe.set_progress_bar_config(disable=True)
        img = pipe(batch_size=n, generator=torch.Generator(device).manual_seed(seed), num_inference_steps=K,
                   output_type="pt").images
        samples = img * 2 - 1
        summary["fd"][name] = digits_fd(samples.cpu())
        save_png(out / f"{name}_K{K}.png", image_grid(samples[:100].cpu(), nrow=10))
        log(f"{name:5s} K={K}: digits FD {summary['fd'][name]:.2f}  ({out / f'{name}_K{K}.png'})")
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gmmkernels.integrations.diffusers",
                                 description="diffusers front-end commands")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help=__doc__.splitlines()[0])
    d.add_argument("--out", default="gmmkernels_out/diffusers_demo")
    d.add_argument("--steps", type=int, default=2000, help="UNet training steps")
    d.add_argument("--head-steps", type=int, default=800, help="moment-head training steps")
    d.add_argument("--K", type=int, default=10, help="sampling steps")
    d.add_argument("--n", type=int, default=500, help="samples per sampler")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="cpu")
    d.add_argument("--quick", action="store_true", help="a seconds-long smoke run (tiny training, 64 samples)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.head_steps, args.n = 30, 20, 64
    s = run_demo(args.out, steps=args.steps, head_steps=args.head_steps, K=args.K, n=args.n, seed=args.seed,
                 device=args.device)
    print(json.dumps(s))
    return 0
