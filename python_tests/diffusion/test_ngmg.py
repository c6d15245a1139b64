"""NGMG loss (value and gradient against autograd of the direct formula, every mixture backend), sigma annealing,
the latent feature GMMs, the digit features, the auxiliary classifier and bad inputs."""
import math

import pytest
import torch

from gmmkernels.diffusion.experiments.ngmg import conditional_metrics
from gmmkernels.diffusion.methods.ngmg import (FEATURE_TABLE, FeatureGMM, anneal_sigma, digit_features, ngmg_loss,
                                              ngmg_reference, train_aux_classifier)
from gmmkernels import available_backends

BACKENDS = [b for b in available_backends("cpu")]


def _case(N=7, K=3, F=4, seed=0, shared=False):
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    pred = torch.randn(N, F, **kw)
    tm = torch.randn(K, F, **kw) if shared else torch.randn(N, K, F, **kw)
    w = torch.rand(K, **kw) + 0.1 if shared else torch.rand(N, K, **kw) + 0.1
    return pred, tm, w


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("per_feature", [True, False])
@pytest.mark.parametrize("sigma2_scale", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_ngmg_gradient_matches_autograd_of_reference(backend, per_feature, sigma2_scale, shared, sigma):
    dtype = torch.float32 if backend == "triton" else torch.float64
    pred, tm, w = _case(shared=shared)
    p_ref = pred.clone().requires_grad_()
    U_ref = ngmg_reference(p_ref, tm, w, sigma, per_feature, sigma2_scale)
    wt = torch.randn(U_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g_ref, = torch.autograd.grad((U_ref * wt).sum(), p_ref)
    p = pred.to(dtype).requires_grad_()
    U = ngmg_loss(p, tm.to(dtype), w.to(dtype), sigma, per_feature=per_feature, sigma2_scale=sigma2_scale,
                  reduction="none", backend=backend)
    g, = torch.autograd.grad((U * wt.to(dtype)).sum(), p)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(U.double(), U_ref.detach(), **tol)
    torch.testing.assert_close(g.double(), g_ref, **tol)


def test_normalized_ngmg_is_the_negative_score():
    pred, tm, w = _case(shared=False)
    p = pred.clone().requires_grad_()
    U = ngmg_loss(p, tm, w, 0.8, per_feature=False, normalize=True, sigma2_scale=False, reduction="sum")
    g, = torch.autograd.grad(U, p)
    q = pred.clone().requires_grad_()
    wn = w / w.sum(-1, keepdim=True)
    nlp = -torch.logsumexp(torch.log(wn) - ((q.unsqueeze(1) - tm) ** 2).sum(-1) / (2 * 0.8**2), 1)
    g_ref, = torch.autograd.grad(nlp.sum(), q)
    torch.testing.assert_close(g, g_ref)


def test_ngmg_behaviour_large_and_small_sigma():
    """sigma^2-scaled NGMG -> the MSE gradient x - mu for large sigma; bounded and vanishing for outliers at small sigma."""
    x = torch.tensor([[0.3], [5.0]], dtype=torch.float64, requires_grad=True)
    tgt = torch.zeros(1, 1, dtype=torch.float64)
    g_big, = torch.autograd.grad(ngmg_loss(x, tgt, sigma=100.0, reduction="sum"), x)
    torch.testing.assert_close(g_big, x.detach(), rtol=2e-3, atol=0)
    g_small, = torch.autograd.grad(ngmg_loss(x, tgt, sigma=0.5, reduction="sum"), x)
    assert 0 < g_small[0, 0] < 0.3 and abs(float(g_small[1, 0])) < 1e-20


def test_anneal_sigma():
    assert anneal_sigma(0, 100, 2.0, 0.25) == pytest.approx(2.0)
    assert anneal_sigma(100, 100, 2.0, 0.25) == pytest.approx(0.25)
    assert anneal_sigma(50, 100, 2.0, 0.5) == pytest.approx(1.0)
    assert anneal_sigma(500, 100, 2.0, 0.25) == pytest.approx(0.25)


def test_digit_features():
    f = digit_features(torch.arange(10))
    assert f.shape == (10, 4)
    assert f[:, 0].tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert torch.equal(f[6], f[8])  # 6 and 8 share a code: a feature request can name several classes
    assert torch.equal(FEATURE_TABLE, f)


@pytest.mark.parametrize("form", ["expansion", "general"])
def test_feature_gmm(form):
    gm = FeatureGMM(4, form, n_components=9)
    names = {n for n, _ in gm.named_parameters()}
    assert names == ({"logits"} if form == "expansion" else {"logits", "means_", "log_scale_"})
    feats = torch.tensor([[0, 1, 0, 1]] * 500).float()
    z = gm.sample(feats, generator=torch.Generator().manual_seed(0))
    assert z.shape == (500, 4)
    # log_prob against the direct formula
    lg, mu, sd = gm._params(feats[:5])
    w = torch.softmax(lg, -1)
    want = torch.log((w * torch.exp(-(z[:5, :, None] - mu) ** 2 / (2 * sd**2)) / (sd * math.sqrt(2 * math.pi))).sum(-1)).sum(1)
    torch.testing.assert_close(gm.log_prob(z[:5], feats[:5]), want, rtol=1e-5, atol=1e-5)
    before = -gm.log_prob((2 * feats - 1) + 0.35 * torch.randn(500, 4), feats).mean() / 4
    nll = gm.fit(steps=60)
    assert nll < float(before.detach())
    z = gm.sample(feats, generator=torch.Generator().manual_seed(1))
    m = z.mean(0)
    assert m[0] < -0.5 and m[1] > 0.5 and m[2] < -0.5 and m[3] > 0.5


@pytest.mark.parametrize("loss", ["ngmg", "bce"])
def test_aux_classifier_learns(loss):
    from gmmkernels.diffusion.data import load_digits

    x, y = load_digits(8)
    f = digit_features(y)
    _, curve = train_aux_classifier(loss, x[:1200], f[:1200], x[1200:], f[1200:], steps=200, eval_every=100,
                                    label_noise=0.1)
    assert curve[-1]["test_acc"] > 0.75 and all(math.isfinite(c["loss"]) for c in curve)


def test_conditional_metrics_on_real_digits():
    from gmmkernels.diffusion.data import load_digits

    x, y = load_digits(8)
    m = conditional_metrics(x[:300], digit_features(y[:300]))
    assert m["cond_acc"] > 0.9 and m["defect_rate"] < 0.1
    noise = conditional_metrics(torch.rand(300, 1, 8, 8) * 2 - 1, digit_features(y[:300]))
    assert m["digits_fd"] < 0.25 * noise["digits_fd"]
    wrong = conditional_metrics(x[:300], 1 - digit_features(y[:300]))
    assert wrong["cond_acc"] < 0.1


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(pred=torch.zeros(3)), "'pred' must be a floating-point tensor [N, F]"),
        (dict(target_means=torch.zeros(3, 2, 5)), "'target_means' must be [N=3, K, F=2]"),
        (dict(target_weights=torch.ones(3, 4)), "'target_weights' must be [N=3, K=1]"),
        (dict(target_weights=-torch.ones(1)), "'target_weights' must be non-negative"),
        (dict(sigma=0.0), "'sigma' must be a positive finite float"),
        (dict(reduction="max"), "'reduction' must be"),
    ],
)
def test_bad_inputs(kwargs, pattern):
    import re

    args = dict(pred=torch.zeros(3, 2), target_means=torch.zeros(1, 2), target_weights=None, sigma=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"ngmg_loss: .*{re.escape(pattern)}"):
        ngmg_loss(args.pop("pred"), args.pop("target_means"), args.pop("target_weights"), args.pop("sigma"), **args)


# ---------------------------------------------------------------------------------------------------------
# the controls and the pairing of the reproduction


def test_style_features_carry_information_beyond_the_class():
    from gmmkernels.diffusion.data import load_digits
    from gmmkernels.diffusion.methods.ngmg import all_features, combination_classes, style_features, style_thresholds

    x, y = load_digits(8)
    thr = style_thresholds(x, y)
    s = style_features(x, y, thr)
    for d in range(10):
        frac = s[y == d].mean(0)
        assert bool(((frac > 0.35) & (frac < 0.65)).all()), (d, frac)  # about half of every digit has each feature
    f = all_features(x, y, thr)
    assert torch.equal(f[:, :4], digit_features(y))
    cls, table = combination_classes(f)
    assert table.shape[0] > 40  # far more combinations than the 9 class codes of the digits
    assert torch.equal(table[cls], f)
    again, _ = combination_classes(f[:50], table)
    assert torch.equal(again, cls[:50])
    assert combination_classes(torch.full((1, 7), 5.0), table)[0].tolist() == [-1]  # a row not in the table


def test_feature_and_class_gmm_share_every_random_number():
    """Same family, size and fit; given one generator state both draw the same uniforms and normals: with equal
    weights (unfitted) and the same component grid their latents coincide, whatever the request."""
    from gmmkernels.diffusion.methods.ngmg import ClassGMM, class_codes

    codes = class_codes(30, 7, seed=0)
    assert codes.shape == (30, 7) and torch.unique(codes, dim=0).shape[0] == 30
    fg, cg = FeatureGMM(7, "expansion"), ClassGMM(codes, "expansion")
    assert fg.logits.shape[-1] == cg.logits.shape[-1] and torch.equal(fg.means_[0, 0], cg.means_[0, 0])
    feats = torch.randint(0, 2, (64, 7), generator=torch.Generator().manual_seed(0)).float()
    classes = torch.randint(0, 30, (64,), generator=torch.Generator().manual_seed(1))
    zf = fg.sample(feats, generator=torch.Generator().manual_seed(3))
    zc = cg.sample(classes, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(zf, zc)
    assert not torch.equal(zf, fg.sample(feats, generator=torch.Generator().manual_seed(4)))
    # fitted, the class-GMM's latents sit at the class's code
    cg.fit(steps=80)
    z = cg.sample(torch.full((400,), 5), generator=torch.Generator().manual_seed(2))
    assert bool((z.mean(0).sign() == codes[5]).all())


def test_conditionings_start_equal_see_the_same_batches_and_share_the_sampler_noise():
    from torch import nn

    from gmmkernels.diffusion.data import load_digits
    from gmmkernels.diffusion.methods.ngmg import ClassGMM, CondTrainer, all_features, class_codes, \
        combination_classes, style_thresholds
    from gmmkernels.diffusion.samplers import counter_noise

    x, y = load_digits(8)
    x, y = x[:300], y[:300]
    f = all_features(x, y, style_thresholds(x, y))
    cls, table = combination_classes(f)
    gmms = {"feature": FeatureGMM(7, "expansion"), "feature-bits": None,
            "class-gmm": ClassGMM(class_codes(table.shape[0], 7), "expansion")}
    gmms["class-code"] = gmms["class-gmm"]
    trainers = {m: CondTrainer(m, x, y, g, seed=3, size="tiny", feats=f, classes=cls) for m, g in gmms.items()}
    ref = trainers["feature"].net.state_dict()
    for m, ct in trainers.items():
        for k, v in ct.net.state_dict().items():
            assert torch.equal(v, ref[k]), (m, k)
    seen = {}

    class Rec(nn.Module):
        def __init__(self, mode):
            super().__init__()
            self.mode, self.w = mode, nn.Parameter(torch.zeros(()))

        def forward(self, xt, t, cond=None):
            seen.setdefault(self.mode, []).append((xt.clone(), t.clone()))
            return self.w * xt

    class ZeroEps(nn.Module):
        def forward(self, xt, t, cond=None):
            return torch.zeros_like(xt)

    outs = {}
    for m, ct in trainers.items():
        ct.net = Rec(m)
        ct.ema = Rec(m)
        ct.opt = torch.optim.SGD(ct.net.parameters(), lr=0.0)
        ct.train(2)
        ct.ema = ZeroEps()
        outs[m] = ct.sample(y[:20], f[:20], K=5, seed=9, classes=cls[:20], noise=counter_noise(9))
    for m in trainers:
        for (xa, ta), (xb, tb) in zip(seen[m], seen["feature"]):
            assert torch.equal(xa, xb) and torch.equal(ta, tb), m
        assert torch.equal(outs[m], outs["feature"]), m  # the same x_T and step noise in every arm
    with pytest.raises(ValueError, match="CondTrainer"):
        CondTrainer("class-gmm", x, y, gmms["class-gmm"], size="tiny")
