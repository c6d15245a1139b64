"""GMS sampler end to end (gmmkernels.diffusion.methods.gms and its experiments): determinism, component-choice
modes, exactness on a Gaussian law, closeness to a 1-D mixture with the exact oracle and convergence in K, head
training on a frozen backbone, the merged three-head model, bad inputs, the demo and the quick reproduction."""
import copy
import json
import math
from pathlib import Path

import pytest
import torch

from gmmkernels.diffusion.experiments import gms as GX
from gmmkernels.diffusion.methods import gms as G
from gmmkernels.diffusion.metrics import sliced_wasserstein
from gmmkernels.diffusion.models import MLPEps, UNetEps
from gmmkernels.diffusion.oracle import MixtureOracle
from gmmkernels.diffusion.schedules import make_schedule
from gmmkernels.mixture import GaussianMixture

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sched():
    return make_schedule("linear", 1000)


def _oracle(name, sched):
    return MixtureOracle(GX.toy_mixture(name), sched)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# determinism and component-choice modes


@pytest.mark.parametrize("fit", ["adan", "closed"])
def test_seeded_sampler_is_deterministic(sched, fit):
    orc = _oracle("gmm2d", sched)
    a = G.gms_sample(orc, sched, (300, 2), 10, generator=_gen(7), fit=fit)
    b = G.gms_sample(orc, sched, (300, 2), 10, generator=_gen(7), fit=fit)
    c = G.gms_sample(orc, sched, (300, 2), 10, generator=_gen(8), fit=fit)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_trajectory_and_x_T(sched):
    orc = _oracle("gmm1d", sched)
    xT = torch.randn(50, 1, generator=_gen(0))
    x, traj = G.gms_sample(orc, sched, (50, 1), 5, x_T=xT, generator=_gen(1), return_trajectory=True)
    assert len(traj) == 6 and torch.equal(traj[0], xT) and torch.equal(traj[-1], x)


def test_per_image_and_per_element_modes_differ(sched):
    # 2-D data [N, 2]: one component draw per row (the official sampler) vs one per element
    orc = _oracle("gmm2d", sched)
    kw = dict(generator=None, fit="closed")
    a = G.gms_sample(orc, sched, (400, 2), 10, per_image=True, **{**kw, "generator": _gen(3)})
    b = G.gms_sample(orc, sched, (400, 2), 10, per_image=False, **{**kw, "generator": _gen(3)})
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a - b).abs().max() > 1e-3
    # 1-D data: each "image" is one element, so the two modes are the same draw
    orc1 = _oracle("gmm1d", sched)
    c = G.gms_sample(orc1, sched, (200, 1), 10, per_image=True, generator=_gen(3), fit="closed")
    d = G.gms_sample(orc1, sched, (200, 1), 10, per_image=False, generator=_gen(3), fit="closed")
    assert torch.equal(c, d)


# ----------------------------------------------------------------------------------------------------------
# correctness against known laws


@pytest.mark.parametrize("fit", ["adan", "closed"])
def test_gaussian_data_is_reproduced_at_few_steps(sched, fit):
    """Data N(0.2, 0.3^2): every x_s | x_t is Gaussian, so the moment-matched kernel is exact for any K and the
    sample mean and std must match the data (this checks a_t, sigma_t, A, B, lambda^2 and the heads' plumbing; a
    wrong coefficient shows up as a wrong variance). n = 20000: standard errors 0.0021 (mean), 0.0015 (std)."""
    mix = GaussianMixture(torch.zeros(1, dtype=F64), torch.tensor([[0.2]], dtype=F64), torch.tensor([[0.3]], dtype=F64))
    orc = MixtureOracle(mix, sched)
    x = G.gms_sample(orc, sched, (20000, 1), 5, generator=_gen(0), fit=fit, dtype=F64)
    assert abs(float(x.mean()) - 0.2) < 0.01
    assert abs(float(x.std()) - 0.3) < 0.008


def test_oracle_1d_mixture_close_to_data_and_converges(sched):
    """Exact heads of the rescaled 1-D three-component mixture, official sampler (Adan fit, per image), n = 20000.

    Measured (5 seeds, float64): sliced W1 to a 20000-point data sample at K=50 0.0068-0.0098, at K=25 0.023-0.027
    (n=4000) and at K=10 0.082-0.084; two data samples differ by 0.002-0.012. The bound 0.02 at K=50 is twice the
    largest measured value and a quarter of the K=10 error (DDPM with the small variance gives 0.048 at K=50, a
    sampler with a wrong variance lands far above). Convergence: W(50) < W(25) < W(10) and W(50) < W(10) / 4
    (measured ratio 0.08-0.12)."""
    orc = _oracle("gmm1d", sched)
    ref = orc.mixture.sample(20000, generator=_gen(123)).double()
    sw = {}
    for K in (10, 25, 50):
        x = G.gms_sample(orc, sched, (20000, 1), K, generator=_gen(0), dtype=F64)
        sw[K] = sliced_wasserstein(x, ref)
    assert sw[50] < 0.02, sw
    assert sw[50] < sw[25] < sw[10], sw
    assert sw[50] < sw[10] / 4, sw


def test_run_sampler_shares_start_noise(sched):
    orc = _oracle("gmm1d", sched)
    # K = 1: one (Gaussian, last) step from the same x_T: GMS and SN-DDPM have the same mean, so with the variance
    # capped to 0 they give the same sample
    a = G.run_sampler("gms", orc, sched, (100, 1), 1, seed=4, last_var_max=0.0, dtype=F64)
    b = G.run_sampler("sn_ddpm", orc, sched, (100, 1), 1, seed=4, last_var_max=0.0, dtype=F64)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="run_sampler: argument 'name'"):
        G.run_sampler("nope", orc, sched, (10, 1), 5)


@pytest.mark.parametrize("variant", sorted(G.ABLATIONS))
def test_ablation_samplers(sched, variant):
    """The ablations keep the Gaussian law (every x_s | x_t is Gaussian, so N(M1, V) is exact, the merged Adan fit
    nearly so, and a variance factor c < 1 must shrink the spread); same seed -> same samples; same x_T as GMS."""
    mix = GaussianMixture(torch.zeros(1, dtype=F64), torch.tensor([[0.2]], dtype=F64), torch.tensor([[0.3]], dtype=F64))
    orc = MixtureOracle(mix, sched)
    x = G.run_sampler(variant, orc, sched, (20000, 1), 5, seed=0, dtype=F64)
    assert torch.equal(x, G.run_sampler(variant, orc, sched, (20000, 1), 5, seed=0, dtype=F64))
    assert abs(float(x.mean()) - 0.2) < 0.01
    c = G.ABLATIONS[variant][2]
    if c == 1.0:
        assert abs(float(x.std()) - 0.3) < 0.008
    # K = 1: only the last (Gaussian) step, from the same x_T as GMS: identical samples with the variance capped to 0
    a = G.run_sampler(variant, orc, sched, (50, 1), 1, seed=4, last_var_max=0.0, dtype=F64)
    b = G.run_sampler("gms", orc, sched, (50, 1), 1, seed=4, last_var_max=0.0, dtype=F64)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_ablation_sn_fused_step_is_the_sn_ddpm_step(sched):
    """'sn_fused' draws from N(M1, V) of the fused step's moments; with the official clamps these are SN-DDPM's mean
    A x_t + B clip(x0_hat, -1, 1) and variance lambda^2 + B^2 clamp(sigma_t^2/a_t^2 (e2 - e1^2), 0, 1) (samplers.py),
    so the ablation differs from SN-DDPM only in its noise draws. Checked on exact heads at every step of K = 10."""
    from gmmkernels import GMSCoeffs, gms_step

    orc = _oracle("gmm2d", sched)
    ts = sched.grid(10, "uniform")
    x = torch.randn(500, 2, generator=_gen(3), dtype=F64) * 0.8
    for i in range(9):
        t, s = float(ts[i]), float(ts[i + 1])
        a_t, sig_t = (float(v) for v in sched.alpha_sigma(t))
        A, B, lam2 = (float(v) for v in sched.posterior(t, s))
        h = G._heads("test", orc, x, t, None)
        st = gms_step(x, h["eps"], h["eps2"], h["eps3"], GMSCoeffs(a_t, sig_t, A, B, lam2), method="gaussian", seed=0,
                      return_params=True)
        x0 = ((x - sig_t * h["eps"]) / a_t).clamp(-1, 1)
        var0 = (sig_t**2 / a_t**2 * (h["eps2"] - h["eps"] ** 2)).clamp(0, 1)
        torch.testing.assert_close(st.mu1, A * x + B * x0, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(st.var, lam2 + B * B * var0, rtol=1e-12, atol=1e-12)
        x = st.x


def test_ablation_variance_factor_shrinks_the_spread(sched):
    """Same x_T and noise (same seed): scaling every intermediate variance by 0.9 must give a smaller spread than
    the unscaled N(M1, V) draw on the 1-D mixture at K = 10 (each step's noise is multiplied by sqrt(0.9))."""
    orc = _oracle("gmm1d", sched)
    a = G.run_sampler("sn_fused", orc, sched, (4000, 1), 10, seed=1, dtype=F64)
    b = G.run_sampler("sn_fused_v90", orc, sched, (4000, 1), 10, seed=1, dtype=F64)
    assert float(b.var()) < float(a.var())
    with pytest.raises(ValueError, match="ablation_sample: argument 'variant'"):
        G.ablation_sample(orc, sched, (10, 1), 5, "nope")


# ----------------------------------------------------------------------------------------------------------
# heads


def test_head_training_reduces_loss_and_keeps_backbone_frozen(sched):
    torch.manual_seed(0)
    backbone = MLPEps(1, hidden=32, depth=1, t_max=1000.0)
    before = copy.deepcopy(backbone.state_dict())
    data = GX.toy_mixture("gmm1d").sample(2000, generator=_gen(0)).float()
    model, tr = G.train_gms_heads(backbone, sched, data, mode="complex", steps=150, batch_size=256, lr=3e-3,
                                  log_every=25)
    losses = [h["loss"] for h in tr.history]
    # E[(eps^2)^2] + E[(eps^3)^2] = 3 + 15 at the zero-initialised heads; the fitted heads must do clearly better
    assert losses[0] > 10 and losses[-1] < 0.75 * losses[0], losses
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    out = model(data[:8], torch.full((8,), 500.0), heads=True)
    assert set(out) == {"eps", "eps2", "eps3"} and all(v.shape == (8, 1) for v in out.values())
    torch.testing.assert_close(out["eps"], backbone(data[:8], torch.full((8,), 500.0)))
    assert out["eps2"].abs().sum() > 0  # trained away from the zero init
    x = G.gms_sample(model, sched, (64, 1), 5, generator=_gen(0))
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("mode", ["simple", "complex"])
def test_gms_heads_on_unet(sched, mode):
    torch.manual_seed(0)
    bb = UNetEps((1, 8, 8), ch=8, ch_mult=(1, 2), t_max=1000.0)
    m = G.GMSHeads(bb, mode=mode)
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert all(p.requires_grad for p in m.head.parameters())
    m2 = copy.deepcopy(m)  # the trainer's EMA copy
    x = torch.randn(3, 1, 8, 8)
    out = m2(x, torch.full((3,), 10.0), heads=True)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (3, 1, 8, 8) for k in ("eps", "eps2", "eps3")}
    s = G.gms_sample(m2, sched, (4, 1, 8, 8), 3, generator=_gen(0), fit="adan")
    assert s.shape == (4, 1, 8, 8) and torch.isfinite(s).all()


def test_merged_model_trains_and_samples(sched):
    data = GX.toy_mixture("gmm2d").sample(1000, generator=_gen(0)).float()
    model, tr = G.train_merged_model(data, sched, steps=30, size="tiny", batch_size=128, log_every=10)
    assert model.heads == ("eps", "eps2", "eps3")
    assert tr.history[-1]["loss"] < tr.history[0]["loss"]
    x = G.gms_sample(model, sched, (32, 2), 4, generator=_gen(0))
    assert x.shape == (32, 2) and torch.isfinite(x).all()


# ----------------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_name_function_and_argument(sched):
    orc = _oracle("gmm1d", sched)
    with pytest.raises(ValueError, match=r"gms_sample: argument 'K' must be an int in \[1, T=1000\]"):
        G.gms_sample(orc, sched, (10, 1), 1001)
    with pytest.raises(ValueError, match="gms_sample: argument 'K'"):
        G.gms_sample(orc, sched, (10, 1), 0)
    with pytest.raises(ValueError, match="gms_sample: argument 'fit'"):
        G.gms_sample(orc, sched, (10, 1), 5, fit="newton")

    def wrong_shape(x, t, heads=False):
        e = torch.zeros_like(x)
        return {"eps": e, "eps2": e + 1, "eps3": torch.zeros(x.shape[0], 2)} if heads else e

    with pytest.raises(ValueError, match=r"gms_sample: argument 'model': head 'eps3' has shape \(10, 2\)"):
        G.gms_sample(wrong_shape, sched, (10, 1), 5)

    def eps_only(x, t, heads=False):
        return torch.zeros_like(x)

    with pytest.raises(ValueError, match=r"gms_sample: argument 'model' must return the heads .* missing \['eps2', 'eps3'\]"):
        G.gms_sample(eps_only, sched, (10, 1), 5)
    with pytest.raises(ValueError, match="gms_sample: argument 'x_T'"):
        G.gms_sample(orc, sched, (10, 1), 5, x_T=torch.zeros(9, 1))
    with pytest.raises(ValueError, match="gms_sample: argument 'last_var_max'"):
        G.gms_sample(orc, sched, (10, 1), 5, last_var_max=-1.0)
    with pytest.raises(TypeError, match="GMSHeads: argument 'backbone'"):
        G.GMSHeads(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="GMSHeads: argument 'mode'"):
        G.GMSHeads(MLPEps(1, hidden=8, depth=1), mode="deep")
    with pytest.raises(ValueError, match="train_gms_heads: argument 'steps'"):
        G.train_gms_heads(MLPEps(1, hidden=8, depth=1), sched, torch.zeros(10, 1), steps=-1)


# ----------------------------------------------------------------------------------------------------------
# demo and quick reproduction


def test_fit_diagnostics_show_the_closed_form_separates(sched):
    orc = _oracle("gmm1d", sched)
    x0 = orc.mixture.sample(2000, generator=_gen(0)).double()
    d = G.fit_diagnostics(orc, sched, x0, 10)
    assert len(d) == 9
    # the closed form separates the components at the late (skewed) steps; a Gaussian kernel would give 0
    assert max(r["sep_closed"] for r in d) > 0.5
    assert all(0.09 <= r["var_ratio_adan"] <= 1.21 and 0.09 <= r["var_ratio_closed"] <= 1.0 + 1e-9 for r in d)


def test_common_random_numbers_pair_every_arm(sched):
    """run_sampler gives every arm of one seed the same x_T, step normals and component choices: two arms with the
    same kernel (SN-DDPM in samplers.py and N(M1, V) through the fused step) give the same samples up to rounding,
    and GMS differs from its merged-component ablation only by the (tiny) component offsets. Without the common
    step noise the same two Gaussian arms differ by O(1)."""
    orc = _oracle("gmm2d", sched)
    kw = dict(seed=5, dtype=F64)
    sn = G.run_sampler("sn_ddpm", orc, sched, (500, 2), 10, **kw)
    torch.testing.assert_close(G.run_sampler("sn_fused", orc, sched, (500, 2), 10, **kw), sn, rtol=0, atol=1e-10)
    unpaired = G.run_sampler("sn_ddpm", orc, sched, (500, 2), 10, common_noise=False, **kw)
    assert (unpaired - sn).abs().max() > 0.5
    gms = G.run_sampler("gms", orc, sched, (500, 2), 10, **kw)
    assert (gms - G.run_sampler("gms_merged", orc, sched, (500, 2), 10, **kw)).abs().max() < 0.05
    assert (gms - sn).abs().max() < 0.5  # the same noise: GMS's kernel is close to SN-DDPM's here
    # DDPM takes the same normals: with the same x_T and noise its samples track SN-DDPM's
    ddpm = G.run_sampler("ddpm", orc, sched, (500, 2), 10, **kw)
    assert float((ddpm - sn).abs().mean()) < float((unpaired - sn).abs().mean())
    # float32 on a trained-model-sized batch: the control still agrees to rounding
    a = G.run_sampler("sn_ddpm", orc, sched, (300, 2), 10, seed=1)
    b = G.run_sampler("sn_fused", orc, sched, (300, 2), 10, seed=1)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_explicit_kernel_seed(sched):
    orc = _oracle("gmm1d", sched)
    xT = torch.randn(100, 1, generator=_gen(0), dtype=F64)
    a = G.gms_sample(orc, sched, (100, 1), 10, x_T=xT, seed=77, dtype=F64)
    torch.testing.assert_close(G.gms_sample(orc, sched, (100, 1), 10, x_T=xT, seed=77, dtype=F64), a, rtol=0, atol=0)
    assert (G.gms_sample(orc, sched, (100, 1), 10, x_T=xT, seed=78, dtype=F64) - a).abs().max() > 1e-3
    with pytest.raises(TypeError, match="gms_sample: argument 'seed'"):
        G.gms_sample(orc, sched, (10, 1), 5, seed=1.5)
    with pytest.raises(ValueError, match="ablation_sample: argument 'x_T'"):
        G.ablation_sample(orc, sched, (10, 1), 5, "sn_fused", x_T=torch.zeros(9, 1))


def test_contrasts_pair_by_seed_and_judge_with_the_interval():
    u = [0, 0, 1, 1, 2, 2]
    base = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    rows = [{"sampler": "sn_ddpm", "K": 10, "m": 3.5, "m_per_seed": base, "units": u},
            {"sampler": "sn_fused", "K": 10, "m": 3.5, "m_per_seed": list(base), "units": u},
            {"sampler": "gms", "K": 10, "m": 3.0, "m_per_seed": [0.5, 1.6, 2.4, 3.5, 4.6, 5.4], "units": u},
            {"sampler": "gms_closed", "K": 10, "m": 3.5, "m_per_seed": [0.5, 2.6, 2.4, 4.7, 4.6, 6.4], "units": u}]
    cs = {(c["arm"], c["baseline"]): c for c in GX._contrasts(rows, [10], "m", floor=1.0, units_key="units")}
    assert set(cs) == {("sn_fused", "sn_ddpm"), ("gms", "sn_ddpm"), ("gms_closed", "sn_ddpm")}
    assert cs[("sn_fused", "sn_ddpm")]["verdict"] == "no difference" and cs[("sn_fused", "sn_ddpm")]["mean"] == 0
    g = cs[("gms", "sn_ddpm")]
    assert g["n"] == 3 and g["n_pairs"] == 6  # three training seeds, each the mean of its two sampler seeds
    assert g["per_unit"] == pytest.approx([-0.45, -0.55, -0.5]) and g["verdict"] == "better"
    assert g["max_abs_pair_difference"] == pytest.approx(0.6)
    c = cs[("gms_closed", "sn_ddpm")]  # per unit +0.05, +0.05, +0.0: the interval holds 0
    assert c["n_above"] == 2 and c["verdict"] == "no difference"


def test_demo_section(tmp_path):
    r = GX.demo_section(tmp_path, quick=True)
    for s in ("ddpm", "sn_ddpm", "gms", "gms_closed"):
        assert math.isfinite(r[f"sw1_{s}_K10"]) and math.isfinite(r[f"nll_{s}_K10"])
    assert (tmp_path / "gms_demo.json").exists()
    assert r["summary"] and all(isinstance(line, str) and line for line in r["summary"])
    for f in r["figures"]:
        assert set(f) == {"path", "shows", "better"} and (tmp_path / "gms_demo.png").exists()


def test_reproduce_quick(tmp_path):
    res = GX.reproduce_gms(tmp_path, quick=True, device="cpu", workers=1)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["verdict"] == res["verdict"] and saved["verdict"].split(" ")[0] in (
        "Reproduced", "Not", "Inconclusive:")
    md = (tmp_path / "results.md").read_text()
    assert md.count("| SN-DDPM |") >= 3 and md.count("noise floor") >= 4
    for name in ("gmm1d", "gmm2d"):
        o = saved["oracle"][name]
        assert {r["K"] for r in o["rows"]} == {10, 25} and {r["sampler"] for r in o["rows"]} == set(GX.ARMS)
        assert all(len(r["sliced_w1_per_seed"]) == 3 for r in o["rows"])
        assert o["floor"]["sliced_w1"]["mean"] > 0
        # every contrast at every K; the same-kernel control is zero up to float64 rounding
        assert len(o["contrasts"]) == 2 * len(GX.CONTRASTS)
        for c in o["contrasts"]:
            if c["arm"] == "sn_fused":
                assert c["max_abs_pair_difference"] < 1e-9 and c["verdict"] == "no difference"
    d = saved["digits"]
    assert d["train_seeds"] == [0, 1] and d["floor"]["fd"]["mean"] > 0
    assert all(r["units"] == [0, 0, 1, 1] and all(math.isfinite(v) for v in r["fd_per_seed"]) for r in d["rows"])
    ctrl = [c for c in d["contrasts"] if c["arm"] == "sn_fused"]
    assert ctrl and all(c["max_abs_pair_difference"] < 1e-2 and c["verdict"] == "no difference" for c in ctrl)
    assert {c["n"] for c in d["contrasts"]} == {2}
    assert saved["summary"] and saved["quick_drops"] and saved["cpu_seconds"] > 0
    for f in saved["figures"]:
        assert Path(f["path"]).exists() and f["shows"] and f["better"]
