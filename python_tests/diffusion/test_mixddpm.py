"""mixDDPM / mixSGM methods: the prior, the centred training loss, exact sampling with an oracle network on a toy
whose reverse process is known, Reverse Effort, and bad inputs."""
import math

import pytest
import torch
from torch import nn

from gmmkernels.diffusion.experiments.mixddpm import single_thread
from gmmkernels.diffusion.methods.mixddpm import CentredModel, MixPrior, MixTrainer, reverse_effort, sample_mix
from gmmkernels.diffusion.schedules import VPSDE, DiscreteSchedule
from gmmkernels.diffusion.trainer import TrainConfig
from gmmkernels.reference.mixture_dispatch import mixture_dispatch_ref

C = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 5.0]])
M = torch.tensor([[4.5, 0.5], [-3.0, -1.0], [0.3, 5.2]])
V = torch.tensor([0.09, 0.04, 0.16])


def _toy(n=6000, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(3, (n,), generator=g)
    x = M[lab] + V[lab].sqrt()[:, None] * torch.randn(n, 2, generator=g)
    return x, lab


class GaussOracle(nn.Module):
    """Exact eps-prediction of the centred process when x0 | j ~ N(m_j, v_j I): in y = (x - c_j) / s_j the data
    law is N(mu, tau^2 I), so E[eps | y_t] = sigma_t (y_t - a_t mu) / (a_t^2 tau^2 + sigma_t^2)."""

    def __init__(self, sched, prior):
        super().__init__()
        self.sched, self.prior = sched, prior

    def forward(self, x, t, cond=None):
        a, sg = (u.float()[:, None] for u in self.sched.alpha_sigma(t.double()))
        s = self.prior.scales[cond][:, None]
        y = (x - C[cond]) / s
        mu = (M[cond] - C[cond]) / s
        tau2 = V[cond][:, None] / s**2
        return sg * (y - a * mu) / (a * a * tau2 + sg * sg)


@pytest.mark.parametrize("scales", ["unit", "cluster"])
@pytest.mark.parametrize("family,method,K,var_tol", [("ddpm", "ddpm", 1000, 0.12), ("sgm", "em", 300, 0.12),
                                                     ("sgm", "pc", 150, 0.15)])
def test_exact_sampling_with_oracle(scales, family, method, K, var_tol):
    """With the exact eps of every per-cluster diffusion, the mixDDPM / mixSGM samplers reproduce the data law
    cluster by cluster (mean, variance) and the cluster frequencies pi."""
    x, lab = _toy()
    prior = MixPrior._finish(x, C, lab, scales, "label", "toy")
    sched = DiscreteSchedule.linear(1000) if family == "ddpm" else VPSDE()
    with single_thread("cpu"):
        x0, x_T, j = sample_mix(GaussOracle(sched, prior), prior, sched, 4000, method=method, K=K, cluster_cond=True,
                                generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(j, minlength=3).float() / 4000
    torch.testing.assert_close(freq, prior.weights, atol=0.03, rtol=0)
    for k in range(3):
        xs = x0[j == k]
        assert (xs.mean(0) - M[k]).abs().max() < 0.05, (k, xs.mean(0))
        assert ((xs.var(0) / V[k]) - 1).abs().max() < var_tol, (k, xs.var(0))
    # the start points are N(c_j, s_j^2 I)
    z = (x_T - C[j]) / prior.scales[j][:, None]
    assert abs(float(z.var()) - 1) < 0.06 and abs(float(z.mean())) < 0.05


def test_prior_constructors():
    x, lab = _toy(3000)
    km = MixPrior.from_kmeans(x, 3, seed=0)
    assert km.K == 3 and abs(float(km.weights.sum()) - 1) < 1e-6 and km.dispatch == "nearest"
    # k-means recovers the three clusters (up to order)
    assert len(set(zip(km.assignment.tolist(), lab.tolist()))) == 3
    lb = MixPrior.from_labels(x, lab)
    torch.testing.assert_close(lb.centers, torch.stack([x[lab == k].mean(0) for k in range(3)]), rtol=1e-5, atol=1e-5)
    assert torch.equal(lb.assignment, lab)
    sc = MixPrior.from_labels(x, lab, scales="cluster")
    torch.testing.assert_close(sc.scales, V.sqrt(), rtol=0.1, atol=0)
    st = MixPrior.standard(x)
    assert st.K == 1 and float(st.centers.abs().sum()) == 0
    # Reverse Effort of the data (docs/methods.md (mixDDPM)): E|x0 - c_j|^2 + D is far below E|x0|^2 + D
    assert km.reverse_effort_data(x) < 0.2 * st.reverse_effort_data(x)
    assert abs(st.reverse_effort_data(x) - float((x**2).sum(1).mean() + 2)) < 1e-3


@pytest.mark.parametrize("dispatch", ["nearest", "label"])
@pytest.mark.parametrize("cluster_cond", [False, True])
def test_trainer_loss_is_the_centred_process(dispatch, cluster_cond):
    x, lab = _toy(500)
    prior = MixPrior._finish(x, C, lab, "cluster", dispatch, "toy")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.emb = nn.Embedding(3, 2)

        def forward(self, x, t, cond=None):
            return self.lin(x) + (self.emb(cond) if cond is not None else 0) + 1e-3 * t[:, None]

    net = Net()
    sched = DiscreteSchedule.linear(1000)
    tr = MixTrainer(net, sched, x, prior, TrainConfig(steps=1, progress=False, log_every=0), cluster_cond=cluster_cond)
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(64)
    t = torch.randint(1, 1001, (64,), generator=g).float()
    eps = torch.randn(64, 2, generator=g)
    got = tr.loss(x[idx], t, eps, lab[idx])
    a, s = (v.float() for v in sched.alpha_sigma(t.double()))
    xt = mixture_dispatch_ref(x[idx], C, a, s * prior.scales[lab[idx]], eps, assignment=lab[idx]).x_t
    want = (net(xt, t, cond=lab[idx] if cluster_cond else None) - eps).pow(2).mean()
    torch.testing.assert_close(got, want)


def test_short_training_and_sampling_runs():
    from gmmkernels.diffusion.models import default_model

    x, lab = _toy(1000)
    prior = MixPrior.from_kmeans(x, 3)
    with single_thread("cpu"):
        for fam, meth in (("ddpm", "ddpm"), ("sgm", "pc")):
            sched = DiscreteSchedule.linear(100) if fam == "ddpm" else VPSDE()
            net = default_model((2,), sched.t_max, arch="mlp", size="tiny", num_classes=3)
            tr = MixTrainer(net, sched, x, prior, TrainConfig(steps=20, progress=False, log_every=0, batch_size=64),
                            cluster_cond=True)
            tr.train()
            assert all(math.isfinite(r["loss"]) for r in tr.history if "loss" in r)
            x0, x_T, j = sample_mix(tr.ema, prior, sched, 64, method=meth, K=10, cluster_cond=True)
            assert x0.shape == (64, 2) and torch.isfinite(x0).all()


def test_reverse_effort_metric():
    a = torch.zeros(4, 3)
    b = torch.tensor([[3.0, 4.0, 0.0]] * 4)
    r = reverse_effort(a, b)
    assert r["reeff_l2"] == pytest.approx(5.0) and r["reeff_sq"] == pytest.approx(25.0)


def test_bad_inputs():
    x, lab = _toy(200)
    with pytest.raises(ValueError, match="dispatch must be one of"):
        MixPrior.from_labels(x, lab, dispatch="random")
    with pytest.raises(ValueError, match="scales must be one of"):
        MixPrior.from_labels(x, lab, scales="big")
    prior = MixPrior.from_labels(x, lab)
    with pytest.raises(ValueError, match="sample_mix: method must be"):
        sample_mix(nn.Identity(), prior, DiscreteSchedule.linear(10), 4, method="heun")
    with pytest.raises(ValueError, match="pass the cluster indices"):
        CentredModel(nn.Identity(), prior)(torch.zeros(2, 2), torch.zeros(2))


# ---------------------------------------------------------------------------------------------------------
# the controls and the pairing of the reproduction


class ZeroEps(nn.Module):
    def forward(self, x, t, cond=None):
        return torch.zeros_like(x)


def test_as_standard_is_the_control_with_the_same_index():
    x, lab = _toy(500)
    prior = MixPrior._finish(x, C, lab, "cluster", "nearest", "toy")
    ctrl = prior.as_standard()
    assert torch.equal(ctrl.weights, prior.weights) and torch.equal(ctrl.assignment, prior.assignment)
    assert float(ctrl.centers.abs().sum()) == 0 and torch.equal(ctrl.scales, torch.ones(3)) and ctrl.dispatch == "label"
    # its training pairs are plain DDPM's x_t = a x0 + sigma eps, with the same j fed to the network
    seen = {}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, t, cond=None):
            seen["x"], seen["j"] = x, cond
            return self.w * x

    sched = DiscreteSchedule.linear(1000)
    tr = MixTrainer(Net(), sched, x, ctrl, TrainConfig(steps=1, progress=False, log_every=0), cluster_cond=True)
    t = torch.randint(1, 1001, (32,), generator=torch.Generator().manual_seed(0)).float()
    eps = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    tr.loss(x[:32], t, eps, lab[:32])
    a, s = (v.float()[:, None] for v in sched.alpha_sigma(t.double()))
    torch.testing.assert_close(seen["x"], a * x[:32] + s * eps)
    assert torch.equal(seen["j"], lab[:32])


@pytest.mark.parametrize("method,sched", [("ddpm", DiscreteSchedule.linear(100)), ("em", VPSDE()), ("pc", VPSDE())])
def test_mixture_and_control_share_every_random_number(method, sched):
    """Under common random numbers the mixture prior and its N(0, I) control draw the same j, the same z and the same
    step noise: with a network whose y-space kernel is the same in both arms (eps = 0), the y-space samples agree
    exactly, and a second draw of one arm repeats it."""
    from gmmkernels.diffusion.samplers import counter_noise

    x, lab = _toy(400)
    prior = MixPrior._finish(x, C, lab, "cluster", "nearest", "toy")
    ctrl = prior.as_standard()

    def draw(p):
        return sample_mix(ZeroEps(), p, sched, 64, method=method, K=10, cluster_cond=True,
                          generator=torch.Generator().manual_seed(5), noise=counter_noise(5))

    x0m, xTm, jm = draw(prior)
    x0c, xTc, jc = draw(ctrl)
    assert torch.equal(jm, jc)
    s = prior.scales[jm][:, None]
    torch.testing.assert_close((xTm - C[jm]) / s, xTc)  # the same z
    torch.testing.assert_close((x0m - C[jm]) / s, x0c)  # the same step noise
    assert torch.equal(draw(prior)[0], x0m)
    # another noise seed changes the step noise but not j or z
    x0o = sample_mix(ZeroEps(), ctrl, sched, 64, method=method, K=10, cluster_cond=True,
                     generator=torch.Generator().manual_seed(5), noise=counter_noise(6))[0]
    assert not torch.allclose(x0o, x0c)


def test_reproduction_arms_start_equal_and_see_the_same_batches():
    from gmmkernels.diffusion.experiments import mixddpm as X

    xs = _toy(600)[0]
    priors = X._toy_priors(xs / xs.std(), 1)
    assert set(X.TOY_ARMS[a][1] for a in X.TOY_ARMS) <= set(priors)
    nets = [X.arm_network((2,), 1000.0, 25, 3, "tiny") for _ in range(2)]
    for (k, a), (_, b) in zip(nets[0].state_dict().items(), nets[1].state_dict().items()):
        assert torch.equal(a, b), k
    assert not torch.equal(next(iter(X.arm_network((2,), 1000.0, 25, 4, "tiny").parameters())),
                           next(iter(nets[0].parameters())))
    sched = DiscreteSchedule.linear(1000)
    batches = []
    for pk, cc in (("kmeans", True), ("control", False)):
        tr = MixTrainer(X.arm_network((2,), 1000.0, 25, 3, "tiny"), sched, xs, priors[pk],
                        TrainConfig(steps=1, seed=3, progress=False, log_every=0), cluster_cond=cc)
        batches.append(tr._batch())
    for u, v in zip(*batches):
        assert torch.equal(u, v)
    # k-means' assignment is the dispatcher's nearest center, so the control feeds the mixture arm's j
    from gmmkernels import nearest_center

    km = priors["kmeans"]
    assert torch.equal(km.assignment, nearest_center(xs / xs.std(), km.centers))


def test_reproduction_pairs_arms_over_seeds_and_judges_by_the_interval():
    from gmmkernels.diffusion.experiments import mixddpm as X

    ds, xs, scale, ref = X._toy_data(600, 300)
    priors = X._toy_priors(xs, 1)
    rows = []
    with single_thread("cpu"):
        for seed in (0, 1):
            for name in ("DDPM", "DDPM+j"):
                rows += X._run_arm(name, X.TOY_ARMS[name], xs, priors, [3], dict(batch_size=32, lr=1e-3, ema_decay=0.9),
                                   lambda s: X._toy_metrics(s, ds, scale, ref.double()), n_samples=40, K_sample=4,
                                   seed=seed, size="tiny", device="cpu", log=lambda s: None)
    assert {(r["arm"], r["seed"]) for r in rows} == {(a, s) for a in ("DDPM", "DDPM+j") for s in (0, 1)}
    comp = X._compare(rows, [("DDPM+j", "DDPM", "index")], {"sliced_w1": False}, {}, "toy")
    (c,) = comp
    want = [next(r["sliced_w1"] for r in rows if r["arm"] == a and r["seed"] == s) for a in ("DDPM+j", "DDPM") for s in (0, 1)]
    assert c["n"] == 2 and c["diff"] == pytest.approx((want[0] - want[2] + want[1] - want[3]) / 2)
    # verdicts follow the interval: a clear, consistent win is "better", a sign flip is "no paired difference"
    synth = []
    for s, (a, b) in enumerate([(1.0, 2.0), (1.1, 2.0), (0.9, 2.1)]):
        synth += [{"arm": "mixDDPM+j", "seed": s, "steps": 5, "sliced_w1": a}, {"arm": "DDPM+j", "seed": s, "steps": 5, "sliced_w1": b}]
    v = X._verdicts(X._compare(synth, [("mixDDPM+j", "DDPM+j", "prior")], {"sliced_w1": False}, {}, "toy"), {"toy": "sliced_w1"})
    assert v[0]["state"] == "better at every budget" and X._claim(v)["reproduced"]
    synth[0]["sliced_w1"], synth[2]["sliced_w1"] = 3.0, 2.5
    v = X._verdicts(X._compare(synth, [("mixDDPM+j", "DDPM+j", "prior")], {"sliced_w1": False}, {}, "toy"), {"toy": "sliced_w1"})
    assert v[0]["state"] == "no paired difference at any budget" and not X._claim(v)["reproduced"]
