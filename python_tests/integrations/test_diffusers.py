"""The diffusers front-end on tiny randomly initialised models (nothing is downloaded): schedules both ways, the
project's samplers on a diffusers UNet reproducing DDPMPipeline / DDIMPipeline, GMS as a scheduler in a diffusers
pipeline reproducing the project's GMS sampler, the moment heads, MGDM / DPS pipelines, SMD on a UNet, the demo."""
import math

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from gmmkernels.diffusion.methods import mgdm as mgdm_mod  # noqa: E402
from gmmkernels.diffusion.methods import smd as smd_mod  # noqa: E402
from gmmkernels.diffusion.methods.gms import gms_sample  # noqa: E402
from gmmkernels.diffusion.samplers import sample  # noqa: E402
from gmmkernels.diffusion.schedules import VPSDE, DiscreteSchedule  # noqa: E402
from gmmkernels.integrations.diffusers import (  # noqa: E402
    DiffusersEpsModel,
    DPSPipeline,
    ForwardModel,
    GMSScheduler,
    MGDMPipeline,
    MomentHeads,
    SMDAdapters,
    SuperResolution,
    UNetWithMomentHeads,
    attach_smd,
    diffusers_scheduler,
    diffusers_scheduler_config,
    schedule_from_diffusers,
    train_moment_heads,
)

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPE = (3, 1, 8, 8)


def tiny_unet(seed=0, out_channels=1):
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=out_channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


def random_heads(unet, seed=1):
    """Moment heads with random (not zero) output layers, so that eps2 / eps3 are not trivially 0."""
    heads = MomentHeads.for_unet(unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in heads.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return heads.eval()


def replayed_noise(seed):
    """x_T and the per-step noise a diffusers pipeline draws from torch.Generator().manual_seed(seed), replayed."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(SHAPE, generator=g)
    return x_T, (lambda i, x: torch.randn(x.shape, generator=g, dtype=x.dtype))


# ----------------------------------------------------------------------------------------------------------
# schedules


@pytest.mark.parametrize("schedule", [DiscreteSchedule.linear(200), DiscreteSchedule.cosine(200),
                                      DiscreteSchedule.sigmoid(200), DiscreteSchedule.sigmoid_abar(200),
                                      DiscreteSchedule.linear(100, 1e-3, 0.05)])
def test_schedule_round_trip(schedule):
    cfg = diffusers_scheduler_config(schedule, prediction_type="v_prediction")
    named = cfg["trained_betas"] is None
    assert named == (schedule.name in ("linear", "cosine"))
    for cls in (DDPMScheduler, DDIMScheduler, GMSScheduler):
        sch = diffusers_scheduler(schedule, cls, prediction_type="v_prediction")
        back = schedule_from_diffusers(sch)
        assert back.T == schedule.T and back.prediction_type == "v_prediction"
        torch.testing.assert_close(back.abar_all, schedule.abar_all, rtol=2e-6, atol=1e-7)  # float32 in diffusers
        torch.testing.assert_close(back.abar_all[1:], sch.alphas_cumprod.double(), rtol=1e-12, atol=1e-14)


def test_schedule_from_config_and_refusals():
    cfg = DDPMScheduler(num_train_timesteps=30, beta_schedule="scaled_linear").config
    s = schedule_from_diffusers(dict(cfg))
    assert isinstance(s, DiscreteSchedule) and s.T == 30 and s.prediction_type == "epsilon"
    with pytest.raises(TypeError, match="DiscreteSchedule"):
        diffusers_scheduler_config(VPSDE())
    with pytest.raises(TypeError, match="alphas_cumprod"):
        schedule_from_diffusers(object())


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("spacing,offset", [("trailing", 0), ("leading", 0), ("leading", 1)])
def test_diffusers_grid(cls, spacing, offset):
    sch = cls(num_train_timesteps=50, timestep_spacing=spacing, steps_offset=offset)
    s = schedule_from_diffusers(sch)
    g = s.grid(10, "diffusers")
    sch.set_timesteps(10)
    assert g.tolist() == [float(t) + 1 for t in sch.timesteps] + [0.0]
    if spacing == "trailing":  # the project's uniform grid is diffusers' trailing spacing
        assert s.grid(10).tolist() == g.tolist()


def test_diffusers_grid_refuses_a_broken_chain():
    s = schedule_from_diffusers(DDIMScheduler(num_train_timesteps=50, timestep_spacing="linspace"))
    with pytest.raises(ValueError, match="chain"):
        s.grid(7, "diffusers")
    s = schedule_from_diffusers(DDIMScheduler(num_train_timesteps=50, set_alpha_to_one=False))
    with pytest.raises(ValueError, match="set_alpha_to_one"):
        s.grid(10, "diffusers")


# ----------------------------------------------------------------------------------------------------------
# the project's samplers on a diffusers UNet reproduce diffusers' pipelines


def _pipe_images(pipe, K, **kw):
    pipe.set_progress_bar_config(disable=True)
    return pipe(batch_size=SHAPE[0], generator=torch.Generator().manual_seed(7), num_inference_steps=K,
                output_type="pt", **kw).images


def _as_images(x):
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 1, 2, 3)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("K,spacing", [(50, "trailing"), (10, "trailing"), (10, "leading")])
def test_ddpm_sampler_reproduces_ddpm_pipeline(ptype, K, spacing):
    unet = tiny_unet()
    sch = DDPMScheduler(num_train_timesteps=50, prediction_type=ptype, timestep_spacing=spacing)  # clip_sample=True
    ref = _pipe_images(DDPMPipeline(unet=unet, scheduler=sch), K)
    x_T, noise = replayed_noise(7)
    x = sample(DiffusersEpsModel(unet, sch), schedule_from_diffusers(sch), SHAPE, "ddpm", K, x_T=x_T, noise=noise,
               clip_x0=1.0, spacing="diffusers")
    torch.testing.assert_close(_as_images(x), ref, rtol=0, atol=3e-5)  # 50 float32 steps of round-off
    assert (x - x_T).abs().max() > 0.1  # the network and the noise did act


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta,clip", [(0.0, True), (1.0, True), (0.0, False)])
def test_ddim_sampler_reproduces_ddim_pipeline(ptype, eta, clip):
    unet = tiny_unet(1)
    sch = DDIMScheduler(num_train_timesteps=50, prediction_type=ptype, timestep_spacing="trailing", clip_sample=clip)
    # diffusers re-derives eps from the clipped x0 only with use_clipped_model_output; the project's DDIM always does
    ref = _pipe_images(DDIMPipeline(unet=unet, scheduler=sch), 10, eta=eta, use_clipped_model_output=True)
    g = torch.Generator().manual_seed(7)
    x = sample(DiffusersEpsModel(unet, sch), schedule_from_diffusers(sch), SHAPE, "ddim", 10, eta=eta, generator=g,
               clip_x0=1.0 if clip else None)
    torch.testing.assert_close(_as_images(x), ref, rtol=0, atol=3e-6)


def test_eps_model_conversions_and_index_call():
    unet = tiny_unet(2)
    x = torch.randn(SHAPE)
    raw = unet(x, 17).sample
    for ptype in ("epsilon", "v_prediction", "sample"):
        sch = DDPMScheduler(num_train_timesteps=50, prediction_type=ptype)
        m = DiffusersEpsModel(unet, sch)
        a, s = (math.sqrt(float(sch.alphas_cumprod[17])), math.sqrt(1 - float(sch.alphas_cumprod[17])))
        want = {"epsilon": raw, "v_prediction": a * raw + s * x, "sample": (x - a * raw) / s}[ptype]
        torch.testing.assert_close(m(x, torch.full((3,), 18.0)), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.eps_at_index(x, 17), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="UNetWithMomentHeads"):
        DiffusersEpsModel(unet, DDPMScheduler(num_train_timesteps=50))(x, torch.full((3,), 5.0), heads=True)


# ----------------------------------------------------------------------------------------------------------
# GMS


@pytest.mark.parametrize("fit,ptype", [("adan", "epsilon"), ("closed", "v_prediction")])
def test_gms_scheduler_in_a_pipeline_reproduces_gms_sample(fit, ptype):
    unet = tiny_unet(3)
    model = UNetWithMomentHeads(unet, random_heads(unet))
    gms = GMSScheduler(num_train_timesteps=50, prediction_type=ptype, fit=fit, last_var_max=1e-3)
    ref = _pipe_images(DDPMPipeline(unet=model, scheduler=gms), 10)
    x = gms_sample(DiffusersEpsModel(model, gms), schedule_from_diffusers(gms), SHAPE, 10, fit=fit,
                   generator=torch.Generator().manual_seed(7), last_var_max=1e-3)
    torch.testing.assert_close(_as_images(x), ref, rtol=0, atol=1e-6)
    h = model.heads(torch.randn(SHAPE), 5)
    assert set(h) == {"eps", "eps2", "eps3"} and all(v.abs().max() > 0 for v in h.values())


def test_gms_scheduler_and_heads_save_and_load(tmp_path):
    unet = tiny_unet(3)
    heads = random_heads(unet)
    gms = GMSScheduler(num_train_timesteps=50, fit="closed", per_image=False, weight=0.25)
    heads.save_pretrained(tmp_path / "heads")
    gms.save_pretrained(tmp_path / "sched")
    heads2 = MomentHeads.from_pretrained(tmp_path / "heads")
    gms2 = GMSScheduler.from_pretrained(tmp_path / "sched")
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert public(gms2.config) == public(gms.config)
    x = torch.randn(SHAPE)
    a, b = UNetWithMomentHeads(unet, heads)(x, 9).sample, UNetWithMomentHeads(unet, heads2)(x, 9).sample
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    for s in (gms, gms2):
        s.set_timesteps(5)
    o1 = gms.step(a, gms.timesteps[0], x, generator=torch.Generator().manual_seed(0)).prev_sample
    o2 = gms2.step(b, gms2.timesteps[0], x, generator=torch.Generator().manual_seed(0)).prev_sample
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="three heads"):
        gms.step(x, gms.timesteps[1], x)


def test_train_moment_heads_on_a_frozen_unet():
    unet = tiny_unet(4)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    data = torch.rand(64, 1, 8, 8) * 2 - 1
    heads, tr = train_moment_heads(unet, DDPMScheduler(num_train_timesteps=50), data, steps=30, batch_size=16,
                                   lr=3e-3, log_every=10)
    losses = [r["loss"] for r in tr.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in before.items())  # the UNet stayed frozen
    assert heads.head["eps2"]["out"].weight.abs().max() > 0


# ----------------------------------------------------------------------------------------------------------
# MGDM and DPS pipelines


def _observations():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 1, 8, 8, generator=g) * 2 - 1
    mask = torch.ones(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 0
    obs = [mgdm_mod.Inpainting(mask, sigma_y=0.1), SuperResolution(factor=2, sigma_y=0.1),
           ForwardModel(fn=lambda x: torch.tanh(x).mean((2, 3)), sigma_y=0.1)]
    for o in obs:
        o.y = o.observe(x0, generator=g).expand(2, *o.forward(x0).shape[1:])
    return obs


@pytest.mark.parametrize("which", [0, 1, 2])
def test_mgdm_pipeline_is_the_method_on_the_unet(which):
    unet = tiny_unet(5)
    sch = DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction")
    obs = _observations()[which]
    cfg = mgdm_mod.MGDMConfig(K=6, M=3, G=lambda i: 2)
    pipe = MGDMPipeline(unet=unet, scheduler=sch)
    out = pipe(obs, batch_size=2, config=cfg, seed=3, output_type="latent").images
    model = DiffusersEpsModel(unet, sch)
    ref = mgdm_mod.mgdm(model.eps_at_index, sch.alphas_cumprod.double(), obs.log_pot, (2, 1, 8, 8), cfg, seed=3)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    img = pipe(obs, batch_size=2, config=cfg, seed=3, output_type="np").images
    assert img.shape == (2, 8, 8, 1) and img.min() >= 0 and img.max() <= 1


def test_dps_pipeline_is_the_method_on_the_unet():
    unet = tiny_unet(6)
    sch = DDPMScheduler(num_train_timesteps=50)
    obs = _observations()[1]
    out = DPSPipeline(unet=unet, scheduler=sch)(obs, batch_size=2, steps=20, zeta=0.5, seed=1,
                                                 output_type="latent").images
    ref = mgdm_mod.dps(DiffusersEpsModel(unet, sch).eps_at_index, sch.alphas_cumprod.double(), obs, (2, 1, 8, 8),
                       steps=20, zeta=0.5, seed=1)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="measurement"):
        DPSPipeline(unet=unet, scheduler=sch)(SuperResolution(), batch_size=1)


# ----------------------------------------------------------------------------------------------------------
# SMD


def test_smd_on_a_unet_train_save_load_sample(tmp_path):
    unet = tiny_unet(7)
    sch = DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction")
    model, adapters = attach_smd(unet, sch, latent_dim=4)
    x, t, eta = torch.randn(SHAPE), torch.full((3,), 20.0), torch.randn(SHAPE)
    # zero-initialised adapters: the SMD model starts as the UNet
    torch.testing.assert_close(model.eps(x, t, eta), DiffusersEpsModel(unet, sch)(x, t), rtol=1e-5, atol=1e-5)
    data = torch.rand(64, 1, 8, 8) * 2 - 1
    res = smd_mod.train(model, data, steps=5, batch_size=8, lr=1e-2)
    assert all(math.isfinite(v) for v in res["losses"])
    assert adapters.adapter_out.out.weight.abs().max() > 0  # the adapters trained
    out1 = model.eps(x, t, eta)
    adapters.save_pretrained(tmp_path / "smd")
    unet2 = tiny_unet(7)
    unet2.load_state_dict(unet.state_dict())
    model2, _ = attach_smd(unet2, sch, adapters=SMDAdapters.from_pretrained(tmp_path / "smd"))
    torch.testing.assert_close(model2.eps(x, t, eta), out1, rtol=0, atol=0)
    s = smd_mod.sample(model2, 4, method="ddim", K=5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 1, 8, 8) and torch.isfinite(s).all()
    with pytest.raises(ValueError, match="prediction_type"):
        attach_smd(tiny_unet(), DDPMScheduler(num_train_timesteps=50, prediction_type="sample"))


def test_demo_runs(tmp_path):
    from gmmkernels.integrations.diffusers.demo import main

    assert main(["demo", "--quick", "--out", str(tmp_path), "--K", "3"]) == 0
    import json

    s = json.loads((tmp_path / "summary.json").read_text())
    assert set(s["fd"]) == {"gms", "ddpm"} and all(math.isfinite(v) for v in s["fd"].values())
    assert (tmp_path / "gms_K3.png").stat().st_size > 0
