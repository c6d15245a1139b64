"""SMD method (gmmkernels.diffusion.methods.smd): the latent-free limit is the vanilla model, the fused adapter path
equals the materialised one inside the model, the loss and schedules follow their formulas, sampling is seeded."""
import math

import pytest
import torch

from gmmkernels.diffusion.experiments import smd as SX
from gmmkernels.diffusion.methods import smd as S
from gmmkernels.diffusion.schedules import DiscreteSchedule
from gmmkernels import available_adapter_backends


def _pair(shape, T=20, objective="v", dz=8):
    sch = S.make_smd_schedule("sigmoid", T)
    torch.manual_seed(1)
    vanilla = S.build_smd_model(shape, sch, smd=False, objective=objective, size="tiny")
    torch.manual_seed(2)
    smd = S.build_smd_model(shape, sch, smd=True, latent_dim=dz, objective=objective, size="tiny", zero_init=True)
    smd.base.load_state_dict(vanilla.base.state_dict())
    return vanilla, smd


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8)], ids=str)
@pytest.mark.parametrize("objective", ["v", "eps"])
def test_latent_ignored_reduces_to_vanilla(shape, objective):
    vanilla, smd = _pair(shape, objective=objective)
    x = torch.randn(5, *shape)
    t = torch.tensor([1.0, 3.0, 7.0, 15.0, 20.0])
    want = vanilla(x, t)
    for seed in range(3):  # zero adapter outputs: no dependence on eta at all
        eta = torch.randn(5, *shape, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(smd(x, t, eta), want, rtol=0, atol=0)
        torch.testing.assert_close(smd.eps(x, t, eta), vanilla.eps(x, t), rtol=0, atol=0)
    # the wrapped core network alone (no latent set) is the vanilla network
    torch.testing.assert_close(smd.base(x, t), want, rtol=0, atol=0)
    # same loss for the same draws
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x0 = torch.randn(6, *shape)
    l_v = S.smd_loss(vanilla, x0, generator=g1, eta=torch.zeros(6, *shape))
    l_s = S.smd_loss(smd, x0, generator=g2, eta=torch.zeros(6, *shape))
    torch.testing.assert_close(l_s, l_v)
    sens = S.eta_sensitivity(smd, torch.randn(64, *shape), n=16, n_eta=3)
    assert sens and all(v == 0.0 for v in sens.values())


def test_default_init_uses_the_latent():
    sch = S.make_smd_schedule("sigmoid", 20)
    torch.manual_seed(0)
    m = S.build_smd_model((2,), sch, latent_dim=8, size="tiny")
    x, t = torch.randn(4, 2), torch.full((4,), 10.0)
    a = m(x, t, torch.randn(4, 2))
    b = m(x, t, torch.randn(4, 2))
    assert not torch.allclose(a, b)
    # gradients reach the identifier, both adapters and the core network
    S.smd_loss(m, torch.randn(16, 2), generator=torch.Generator().manual_seed(0)).backward()
    for name in ("identifier", "adapter_in", "adapter_out", "base"):
        grads = [p.grad for p in getattr(m, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8)], ids=str)
def test_fused_adapter_matches_materialised_inside_the_model(shape):
    sch = S.make_smd_schedule("sigmoid", 20)
    torch.manual_seed(3)
    fused = S.build_smd_model(shape, sch, latent_dim=6, size="tiny", backend="auto")
    ref = S.build_smd_model(shape, sch, latent_dim=6, size="tiny", backend="reference")
    ref.load_state_dict(fused.state_dict())
    x0 = torch.randn(4, *shape)
    losses, grads = [], []
    for m in (fused, ref):
        loss = S.smd_loss(m, x0, generator=torch.Generator().manual_seed(5))
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, list(m.parameters())))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", [b for b in available_adapter_backends("cpu") if b not in ("reference",)])
def test_hyper_adapter_backends_agree(backend):
    torch.manual_seed(4)
    ad = S.HyperAdapter(6, 10, layers=2)
    h, z = torch.randn(2, 6, 3, 3), torch.randn(2, 10, 3, 3)
    ad.backend = "reference"
    want = ad(h, z)
    ad.backend = backend
    torch.testing.assert_close(ad(h, z), want, rtol=1e-4, atol=1e-5)


def test_loss_matches_formula():
    sch = S.make_smd_schedule("sigmoid", 50)
    torch.manual_seed(0)
    m = S.build_smd_model((2,), sch, latent_dim=4, size="tiny", objective="v")
    x0, eps, eta = torch.randn(8, 2), torch.randn(8, 2), torch.randn(8, 2)
    t = torch.arange(1, 9).float() * 6
    a, s = sch.alpha_sigma(t.double())
    a, s = a.float()[:, None], s.float()[:, None]
    xt = a * x0 + s * eps
    v = a * eps - s * x0
    want = (((m(xt, t, eta) - v) ** 2).mean(1) * a[:, 0] ** 2).mean()
    torch.testing.assert_close(S.smd_loss(m, x0, t=t, eps=eps, eta=eta, weighting="abar"), want)
    want_u = ((m(xt, t, eta) - v) ** 2).mean()
    torch.testing.assert_close(S.smd_loss(m, x0, t=t, eps=eps, eta=eta, weighting="none"), want_u)
    # eps() inverts v: with v = a eps - s x0 and x_t = a x0 + s eps, eps = a v + s x_t
    torch.testing.assert_close(a * v + s * xt, eps, rtol=1e-5, atol=1e-5)


def test_schedules():
    for T in (10, 50, 1000):
        assert torch.equal(S.make_smd_schedule("sigmoid", T).betas, DiscreteSchedule.sigmoid_abar(T).betas)
        assert torch.equal(S.make_smd_schedule("linear", T).betas, DiscreteSchedule.linear_rescaled(T).betas)
    with pytest.raises(ValueError, match="schedule must be 'sigmoid' or 'linear'"):
        S.make_smd_schedule("cosine", 10)


@pytest.mark.parametrize("shape,method,K", [((2,), "ddpm", None), ((2,), "ddim", 5), ((1, 8, 8), "ddim", 3),
                                            ((1, 8, 8), "ddpm", 4)], ids=str)
def test_sampling_is_seeded(shape, method, K):
    sch = S.make_smd_schedule("sigmoid", 10)
    torch.manual_seed(0)
    m = S.build_smd_model(shape, sch, latent_dim=4, size="tiny")
    kw = dict(method=method, K=K, clip_x0=1.0 if len(shape) == 3 else None)
    a = S.sample(m, 6, generator=torch.Generator().manual_seed(3), **kw)
    b = S.sample(m, 6, generator=torch.Generator().manual_seed(3), **kw)
    c = S.sample(m, 6, generator=torch.Generator().manual_seed(4), **kw)
    assert a.shape == (6, *shape) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    # batching does not change the draws of the first batch
    d = S.sample(m, 6, generator=torch.Generator().manual_seed(3), batch_size=6, **kw)
    assert torch.equal(a, d)


def test_fresh_eta_per_step():
    """DDIM(eta=0) of an SMD model is still random: the latent is redrawn at every step."""
    sch = S.make_smd_schedule("sigmoid", 10)
    torch.manual_seed(0)
    m = S.build_smd_model((2,), sch, latent_dim=4, size="tiny")
    calls = []
    orig = m.latent

    def spy(x, t, eta):
        calls.append(eta.clone())
        return orig(x, t, eta)

    m.latent = spy
    S.sample(m, 3, method="ddim", K=4, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 4 and all(not torch.equal(calls[0], c) for c in calls[1:])


def test_short_training_lowers_loss():
    from gmmkernels.diffusion.data import get_dataset

    ds = get_dataset("grid7x7", n=2000, seed=0)
    sch = S.make_smd_schedule("sigmoid", 10)
    torch.manual_seed(0)
    m = S.build_smd_model((2,), sch, latent_dim=8, size="tiny")
    tr = S.train(m, ds.x, steps=60, batch_size=128, lr=3e-3)
    first, last = sum(tr["losses"][:10]) / 10, sum(tr["losses"][-10:]) / 10
    assert math.isfinite(last) and last < first
    x = S.sample(tr["ema"], 200, generator=torch.Generator().manual_seed(0))
    m_ = SX._toy_metrics(x, ds)
    assert 0 <= m_["within_2sigma"] <= 1 and m_["n_modes"] == 49


def test_toy_metrics_clamp_and_count_escaped_samples():
    """A few samples far out must not dominate: they count in the escaped fraction and, clamped to twice the data's
    extent, in the sliced W1 and the mode statistics; a NaN sample goes to the box's corner."""
    from gmmkernels.diffusion.data import get_dataset

    ds = get_dataset("grid7x7", n=2000, seed=0)
    x = ds.x[:400].clone()
    clean = SX._toy_metrics(x, ds)
    assert clean["escaped_fraction"] == 0.0 and clean["max_abs_over_extent"] <= 1.0
    x[:10] = float("nan")
    x[10:20] = 1e6
    m = SX._toy_metrics(x, ds)
    assert m["escaped_fraction"] == pytest.approx(20 / 400)
    assert math.isfinite(m["sliced_w1"]) and clean["sliced_w1"] < m["sliced_w1"] < clean["sliced_w1"] + 0.5
    assert m["within_2sigma"] == pytest.approx(clean["within_2sigma"] * 380 / 400, abs=0.03)
    y = ds.x[:400].clone()
    y[:20] = 1e3  # the same 20 escaped samples 1000x nearer give the same clamped metrics
    assert SX._toy_metrics(y, ds)["sliced_w1"] == pytest.approx(m["sliced_w1"])


def test_arms_share_x_T_and_step_noise():
    """Common random numbers: a vanilla network and an SMD network that ignores its latent (zero adapter outputs,
    same core weights) give identical samples for one seed, whether the latent is fresh or held at zero; an SMD
    network that uses its latent does not, and another seed gives other samples."""
    vanilla, smd = _pair((2,), T=10)
    kw = dict(method="ddpm", generator=None)
    a = S.sample(vanilla, 300, **{**kw, "generator": torch.Generator().manual_seed(5)})
    for latent in ("fresh", "zero"):
        b = S.sample(smd, 300, latent=latent, **{**kw, "generator": torch.Generator().manual_seed(5)})
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    assert (S.sample(vanilla, 300, **{**kw, "generator": torch.Generator().manual_seed(6)}) - a).abs().max() > 0.1
    torch.manual_seed(0)
    live = S.build_smd_model((2,), smd.schedule, latent_dim=8, size="tiny")
    live.base.load_state_dict(vanilla.base.state_dict())
    f = S.sample(live, 300, **{**kw, "generator": torch.Generator().manual_seed(5)})
    z = S.sample(live, 300, latent="zero", **{**kw, "generator": torch.Generator().manual_seed(5)})
    assert (f - z).abs().max() > 1e-4  # the latent matters here, so fresh and zero latents differ
    with pytest.raises(ValueError, match="smd.sample: argument 'latent'"):
        S.sample(live, 3, latent="mean")


def test_eta_sensitivity_units_and_mixture_spread():
    """Under v-prediction eps = a_t v + sigma_t x_t, and a_T ~ 0 on the sigmoid schedule: the eps units hide the
    latent at t = T, the prediction's own units do not. A latent-free network has zero sensitivity and spread."""
    sch = S.make_smd_schedule("sigmoid", 20)
    torch.manual_seed(0)
    m = S.build_smd_model((2,), sch, latent_dim=8, size="tiny", objective="v")
    data = torch.randn(256, 2)
    pred = S.eta_sensitivity(m, data, n=128, n_eta=4)
    eps = S.eta_sensitivity(m, data, n=128, n_eta=4, units="eps")
    assert set(pred) == set(eps) == {"t=2", "t=10", "t=20"}
    assert pred["t=20"] > 1e-3 and eps["t=20"] < 2e-2 * pred["t=20"]
    spread = S.mixture_spread(m, data, n=128, n_eta=4)
    assert set(spread) == {"t=2", "t=10", "t=20"} and all(v > 0 for v in spread.values())
    _, off = _pair((2,), T=20)
    assert all(v == 0.0 for v in S.mixture_spread(off, data, n=64, n_eta=3).values())
    vanilla = S.build_smd_model((2,), sch, smd=False, size="tiny")
    assert S.eta_sensitivity(vanilla, data) == {} and S.mixture_spread(vanilla, data) == {}
    with pytest.raises(ValueError, match="eta_sensitivity: argument 'units'"):
        S.eta_sensitivity(m, data, units="x0")


def test_run_task_pairs_the_arms_and_collects_contrasts():
    """One tiny toy task: every sampler seed runs every arm; the eta = 0 arm is the SMD network sampled with the
    latent at zero; the contrasts are paired over the training seeds with the noise floor as the resolution."""
    base = {"experiment": "toy", "setting": "code", "T": 5, "keep_samples": True, "steps": 20, "n": 300,
            "latent_dim": 4, "sampler_seeds": 2, "size": "tiny", "batch_size": 128, "lr": 2e-3, "ema_decay": 0.9}
    runs = [SX._run_task({**base, "train_seed": s}) for s in (0, 1)]
    r = runs[0]
    assert [(x["arm"], x["sampler_seed"]) for x in r["results"]] == [(a, j) for j in range(2) for a in SX.ARMS]
    assert set(r["samples"]) == set(SX.ARMS) and set(r["eta_sensitivity"]) == {"t=1", "t=2", "t=5"}
    floor = {k: {"mean": 0.1, "sd": 0.01} for k in SX.TOY_METRICS}
    col = SX._collect(runs, SX.TOY_METRICS, floor)
    assert len(col["rows"]) == len(SX.ARMS) and len(col["contrasts"]) == len(SX.CONTRASTS) * len(SX.TOY_METRICS)
    assert all(row["units"] == [0, 0, 1, 1] for row in col["rows"])
    c = col["contrasts"][0]
    assert c["n"] == 2 and c["n_pairs"] == 4 and c["verdict"] in ("better", "worse", "no difference")
    assert col["latent"][0]["eta_sensitivity"]["t=5"]["mean"] >= 0


def test_bad_arguments():
    sch = S.make_smd_schedule("sigmoid", 10)
    with pytest.raises(ValueError, match="objective must be one of"):
        S.build_smd_model((2,), sch, objective="x0")
    m = S.build_smd_model((2,), sch, latent_dim=4, size="tiny")
    with pytest.raises(ValueError, match="weighting must be"):
        S.smd_loss(m, torch.randn(3, 2), weighting="snr")
    with pytest.raises(ValueError, match="method must be 'ddpm' or 'ddim'"):
        S.sample(m, 2, method="euler")


def test_reproduce_end_to_end_on_a_tiny_plan(tmp_path):
    """The whole reproduction on a plan small enough for the suite: both experiments run every arm on both training
    seeds, the contrasts (claim, soft-mixture control, extra-network control) are paired over them beside the noise
    floors, and the outputs are written; the plan is recorded, and an unknown setting is refused before any work."""
    from gmmkernels.diffusion.experiments._report import PlanError

    tiny = {"settings": ["code"], "Ts": [5], "train_seeds": [0, 1], "steps": 15, "n": 200, "latent_dim": 4,
            "sampler_seeds": 1}
    plan = {"toy": tiny, "digits": {**tiny, "n": 64}, "draws": 2}
    res = SX.reproduce_smd(tmp_path, workers=1, plan=plan)
    assert res["plan_changed"] and res["plan"]["toy"]["steps"] == 15 and res["plan"]["draws"] == 2
    for exp, metrics in (("toy", SX.TOY_METRICS), ("digits", SX.DIGITS_METRICS)):
        got = res[exp]
        assert {r["arm"] for r in got["rows"]} == set(SX.ARMS)
        assert {(c["arm"], c["baseline"]) for c in got["contrasts"]} == {(a, b) for a, b, _ in SX.CONTRASTS}
        assert len(got["contrasts"]) == len(SX.CONTRASTS) * len(metrics)
        assert all(c["n"] == 2 for c in got["contrasts"])
        assert set(got["floor"]) >= set(metrics)
    for f in ("smd.json", "results.md", "samples.pt"):
        assert (tmp_path / f).stat().st_size > 0
    assert "Verdict" in (tmp_path / "results.md").read_text()
    with pytest.raises(PlanError, match="settings: unknown 'papr'"):
        SX.reproduce_smd(tmp_path / "x", workers=1, plan={"toy": {"settings": ["papr"]}})
    with pytest.raises(PlanError, match="unknown entries 'stepz'"):
        SX.reproduce_smd(tmp_path / "x", workers=1, plan={"digits": {"stepz": 3}})
    assert not (tmp_path / "x").exists()
