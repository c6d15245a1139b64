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
