"""GaussianMixture: sampling, the noised law and the exact diffusion quantities."""
import math

import pytest
import torch

import gmmkernels
from gmmkernels import GaussianMixture

from _cases import make_mixture


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_sample_moments(cov):
    _, logits, means, scale = make_mixture(cov, (), 1, 3, 2, seed=1)
    m = GaussianMixture(logits, means, scale, cov)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    s = m.sample(n, generator=g)
    assert s.shape == (n, 2)
    mean = m.mean()
    cov_true = (m.weights[:, None, None] * (m.covariance() + (means - mean)[:, :, None] * (means - mean)[:, None, :])).sum(0)
    se = (torch.diagonal(cov_true) / n).sqrt()
    assert ((s.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(s.T), cov_true, rtol=0.03, atol=0.03)


def test_sample_is_seeded_and_batched():
    _, logits, means, scale = make_mixture("diag", (4,), 1, 3, 2, seed=2)
    m = GaussianMixture(logits, means, scale)
    a = m.sample(10, generator=torch.Generator().manual_seed(5))
    b = m.sample(10, generator=torch.Generator().manual_seed(5))
    assert a.shape == (4, 10, 2)
    torch.testing.assert_close(a, b)
    assert m.sample(0).shape == (4, 0, 2)


def test_sample_shapes_follow_torch_distributions():
    """A tuple is a sample shape placed before the batch shape (torch.distributions); an int n gives [..., n, D]."""
    _, logits, means, scale = make_mixture("full", (4,), 1, 3, 2, seed=2)
    m = GaussianMixture(logits, means, scale, "full")
    ref = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits),
                                                torch.distributions.MultivariateNormal(means, scale_tril=scale))
    for shape in [(), (10,), (2, 5), torch.Size([3])]:
        assert m.sample(shape).shape == ref.sample(shape).shape == (*shape, 4, 2)
    assert m.sample().shape == (4, 2)
    # the same draws in both layouts
    a = m.sample((6,), generator=torch.Generator().manual_seed(3))
    b = m.sample(6, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b.transpose(0, 1))


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_noised_law_matches_monte_carlo(cov):
    _, logits, means, scale = make_mixture(cov, (), 1, 3, 2, seed=3)
    m = GaussianMixture(logits, means, scale, cov)
    a, s = 0.6, 0.8
    g = torch.Generator().manual_seed(1)
    x0 = m.sample(100_000, generator=g)
    xt = a * x0 + s * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    nm = m.noised(a, s)
    torch.testing.assert_close(xt.mean(0), nm.mean(), rtol=0, atol=0.02)
    # the density integrates to one over a grid and matches a histogram of x_t (coarsely)
    lin = torch.linspace(-6, 6, 241, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), -1).reshape(-1, 2)
    mass = nm.log_prob(grid).exp().sum() * (lin[1] - lin[0]) ** 2
    assert abs(float(mass) - 1) < 1e-3


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_tweedie_posterior_mean_is_exact(cov):
    """E[x0 | x_t] from Tweedie equals the mixture-of-posteriors mean, and a Monte Carlo estimate."""
    _, logits, means, scale = make_mixture(cov, (), 1, 4, 2, seed=4)
    m = GaussianMixture(logits, means, scale, cov)
    a, s = 0.7, math.sqrt(1 - 0.49)
    xt = torch.randn(6, 2, dtype=torch.float64)
    pm = m.posterior_mean(xt, a, s)
    if cov == "diag":
        r, mu, _ = m.posterior_components(xt, a, s)
        torch.testing.assert_close(pm, (r[..., None] * mu).sum(-2))
    # Monte Carlo: importance weights of x0 ~ prior by the likelihood N(x_t; a x0, s^2)
    x0 = m.sample(400_000, generator=torch.Generator().manual_seed(2))
    logw = -((xt[:, None, :] - a * x0[None]) ** 2).sum(-1) / (2 * s**2)
    w = torch.softmax(logw, -1)
    torch.testing.assert_close(pm, w @ x0, rtol=0, atol=0.03)
    # the exact eps prediction is consistent with x_t = a E[x0|x_t] + s E[eps|x_t]
    torch.testing.assert_close(a * pm + s * m.eps(xt, a, s), xt)


def test_posterior_components_moments():
    _, logits, means, scale = make_mixture("diag", (), 1, 3, 1, seed=5)
    m = GaussianMixture(logits, means, scale)
    a, s = 0.5, math.sqrt(0.75)
    xt = torch.tensor([[0.3]], dtype=torch.float64)
    r, mu, var = m.posterior_components(xt, a, s)
    x0 = m.sample(1_000_000, generator=torch.Generator().manual_seed(3))
    w = torch.softmax(-((xt - a * x0) ** 2).squeeze(-1) / (2 * s**2), 0)
    for p in (1, 2, 3):
        exact = {1: mu, 2: mu**2 + var, 3: mu**3 + 3 * mu * var}[p]
        exact = (r[..., None] * exact).sum(-2)
        mc = (w[:, None] * x0**p).sum(0)
        torch.testing.assert_close(exact[0], mc, rtol=0, atol=0.02)


def _target(cov):
    """A two-component 2-D mixture with unequal weights and scales (float64), and 3,000 draws from it."""
    logits = torch.tensor([0.3, 0.7], dtype=torch.float64).log()
    means = torch.tensor([[-2.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    scale = {"diag": torch.tensor([[0.5, 0.3], [0.4, 0.7]], dtype=torch.float64),
             "spherical": torch.tensor([0.3, 0.6], dtype=torch.float64),
             "full": torch.tensor([[[0.5, 0.0], [0.3, 0.4]], [[0.7, 0.0], [-0.2, 0.3]]], dtype=torch.float64)}[cov]
    target = GaussianMixture(logits, means, scale, cov)
    return target, target.sample(3000, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_learnable_mixture_trains_with_a_stock_optimizer(cov):
    """Adam on -log_prob with no clamping or projection reaches the data's parameters: the scale is
    parameterised without constraints (log of the standard deviations, or of the Cholesky diagonal)."""
    target, data = _target(cov)
    init_scale = {"diag": torch.ones(2, 2), "spherical": torch.ones(2), "full": torch.eye(2).expand(2, 2, 2)}[cov]
    m = GaussianMixture(torch.zeros(2, dtype=torch.float64), torch.tensor([[-0.5, 0.0], [0.5, 0.0]], dtype=torch.float64),
                        init_scale.to(torch.float64), cov, learnable=True)
    assert [n for n, _ in m.named_parameters()] == ["logits", "means", "raw_scale"]
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        loss = -m.log_prob(data).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        order = m.means[:, 0].argsort()
        torch.testing.assert_close(m.means[order], target.means, rtol=0, atol=0.05)
        torch.testing.assert_close(m.weights[order], target.weights, rtol=0, atol=0.03)
        torch.testing.assert_close(m.covariance()[order], target.covariance(), rtol=0, atol=0.05)
        # at least as likely as the true parameters on the data (the fit reached the maximum-likelihood region)
        assert float(m.log_prob(data).mean()) > float(target.log_prob(data).mean()) - 1e-3


@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_learnable_scale_cannot_step_below_zero(cov):
    """Adam steps of 0.05 from a scale of 0.1 towards data of scale 0.02 would make a raw standard deviation
    negative by the third step; in the log parameterisation they reach the data's scale and stay valid."""
    data = 0.02 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scale = {"diag": torch.full((1, 2), 0.1), "spherical": torch.full((1,), 0.1), "full": 0.1 * torch.eye(2)[None]}[cov]
    m = GaussianMixture(torch.zeros(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                        scale.to(torch.float64), cov, learnable=True)
    torch.testing.assert_close(m.scale, scale.to(torch.float64))  # the constrained value reads back as given
    assert m.scale.requires_grad
    opt = torch.optim.Adam([m.raw_scale], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        (-m.log_prob(data).mean()).backward()
        opt.step()
    with torch.no_grad():
        fixed = GaussianMixture(m.logits, m.means, m.scale, cov)  # passes every value check
        assert torch.isfinite(fixed.log_prob(data)).all()
        sd = fixed.covariance().diagonal(dim1=-2, dim2=-1).sqrt()
        torch.testing.assert_close(sd, data.std(0).expand_as(sd), rtol=0.1, atol=0)


def test_learnable_state_dict_and_buffers():
    _, logits, means, scale = make_mixture("full", (2,), 1, 3, 2, seed=8)
    fixed = GaussianMixture(logits, means, scale, "full")
    assert list(fixed.state_dict()) == ["logits", "means", "scale"] and not list(fixed.parameters())
    a = GaussianMixture(logits, means, scale, "full", learnable=True)
    b = GaussianMixture(logits, means, torch.eye(2, dtype=torch.float64).expand(2, 3, 2, 2), "full", learnable=True)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.scale, scale)
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(a.log_prob(x), fixed.log_prob(x))
    torch.testing.assert_close(a.float().scale, scale.float())  # .float() converts the raw parameter in place
    assert "learnable" not in repr(fixed) and "K=3, D=2" in repr(a)


def test_meta_device_traces_shapes():
    """Meta tensors (shape-only tracing): no value check reads data, shapes come out right."""
    m = GaussianMixture(torch.zeros(3, device="meta"), torch.zeros(3, 2, device="meta"), torch.ones(3, 2, device="meta"))
    x = torch.zeros(4, 2, device="meta")
    a = torch.tensor(0.5, device="meta")
    assert m.noised(a, 0.5).means.shape == (3, 2)
    assert m.posterior_mean(x, a, a, backend="reference").shape == (4, 2)
    assert m.eps(x, 0.0, a, backend="reference").shape == (4, 2)
    assert m.sample((5,)).shape == (5, 2)
    # Python numbers are checked as numbers, so a point mass or alpha = 0 is refused even on meta tensors
    with pytest.raises(ValueError, match=r"GaussianMixture\.posterior_mean: argument 'alpha' must be non-zero"):
        m.posterior_mean(x, 0.0, 0.5, backend="reference")
    with pytest.raises(ValueError, match=r"GaussianMixture\.noised: arguments 'alpha' and 'sigma' are both 0"):
        m.noised(0.0, 0)


def test_schedule_coefficients_take_the_mixture_dtype():
    """A float64 (or integer) coefficient tensor, as a schedule stores them, works with a float32 mixture."""
    _, logits, means, scale = make_mixture("diag", (2,), 1, 3, 2, seed=6)
    m = GaussianMixture(logits.float(), means.float(), scale.float())
    x = torch.randn(2, 5, 2)
    alpha = torch.tensor([0.6, 0.8], dtype=torch.float64)
    out = m.posterior_mean(x, alpha, (1 - alpha**2).sqrt(), backend="reference")
    assert out.dtype == torch.float32
    ref = torch.stack([m.posterior_mean(x, float(a), float((1 - a**2).sqrt()), backend="reference")[i]
                       for i, a in enumerate(alpha)])
    torch.testing.assert_close(out, ref)
    assert m.noised(torch.tensor(1), 0.0).means.dtype == torch.float32


def test_bad_construction():
    _, logits, means, scale = make_mixture("diag", (), 1, 3, 2, seed=6)
    with pytest.raises(ValueError, match="GaussianMixture: argument 'scale'"):
        GaussianMixture(logits, means, scale[:, :1])
    with pytest.raises(ValueError, match="GaussianMixture: argument 'cov_type'"):
        GaussianMixture(logits, means, scale, "tied")
    with pytest.raises(ValueError, match="GaussianMixture: argument 'scale' must be positive"):
        GaussianMixture(logits, means, -scale)
    with pytest.raises(ValueError, match="GaussianMixture: argument 'scale' must be positive"):
        GaussianMixture(logits, means, -scale, learnable=True)
    with pytest.raises(TypeError, match="GaussianMixture: argument 'learnable' must be a bool"):
        GaussianMixture(logits, means, scale, learnable="yes")
    with pytest.raises(TypeError, match="GaussianMixture: argument 'means' must be a torch.Tensor"):
        GaussianMixture(logits, means.tolist(), scale)
    assert "K=3, D=2" in repr(GaussianMixture(logits, means, scale))


def _bad_calls():
    """(method, call, exception, argument named in the message) for every method of GaussianMixture."""
    x = torch.randn(5, 2, dtype=torch.float64)
    cases = []
    for meth in ("log_prob", "score", "responsibilities", "stats"):
        call = lambda m, a, meth=meth: getattr(m, meth)(a)  # noqa: E731
        cases += [
            (meth, lambda m, c=call: c(m, torch.randn(5, 3, dtype=torch.float64)), ValueError, "x"),
            (meth, lambda m, c=call: c(m, torch.randn(2, dtype=torch.float64)), ValueError, "x"),
            (meth, lambda m, c=call: c(m, x.tolist()), TypeError, "x"),
            (meth, lambda m, c=call: c(m, x.long()), TypeError, "x"),
            (meth, lambda m, c=call: c(m, x.float()), TypeError, "x"),
            (meth, lambda m, c=call: c(m, x.to("meta")), ValueError, "x"),
        ]
    cases += [
        ("sample", lambda m: m.sample(-1), ValueError, "sample_shape"),
        ("sample", lambda m: m.sample(2.5), TypeError, "sample_shape"),
        ("sample", lambda m: m.sample((2, -1)), ValueError, "sample_shape"),
        ("sample", lambda m: m.sample(("a",)), TypeError, "sample_shape"),
        ("sample", lambda m: m.sample(3, generator=0), TypeError, "generator"),
        ("fit", lambda m: GaussianMixture.fit(x, 0), ValueError, "n_components"),
        ("fit", lambda m: GaussianMixture.fit(x, 2, "tied"), ValueError, "cov_type"),
        ("fit", lambda m: GaussianMixture.fit(x.tolist(), 2), TypeError, "x"),
    ]
    for meth in ("noised", "noised_score", "eps", "posterior_mean", "posterior_components"):
        args = (lambda a, s: (a, s)) if meth == "noised" else (lambda a, s, xt=x: (xt, a, s))
        call = lambda m, *a, meth=meth: getattr(m, meth)(*a)  # noqa: E731
        cases += [
            (meth, lambda m, c=call, f=args: c(m, *f(float("nan"), 0.5)), ValueError, "alpha"),
            (meth, lambda m, c=call, f=args: c(m, *f(0.5, -0.1)), ValueError, "sigma"),
            (meth, lambda m, c=call, f=args: c(m, *f(0.5, torch.tensor([0.5, -1.0], dtype=torch.float64))), ValueError, "sigma"),
            (meth, lambda m, c=call, f=args: c(m, *f("a", 0.5)), TypeError, "alpha"),
            (meth, lambda m, c=call, f=args: c(m, *f(torch.ones(2, 2), 0.5)), ValueError, "alpha"),
            (meth, lambda m, c=call, f=args: c(m, *f(0.0, 0.0)), ValueError, "alpha"),
        ]
        if meth != "noised":
            cases += [(meth, lambda m, c=call: c(m, torch.randn(5, 3, dtype=torch.float64), 0.5, 0.5), ValueError, "x_t"),
                      (meth, lambda m, c=call: c(m, [[0.0, 0.0]], 0.5, 0.5), TypeError, "x_t")]
    cases += [
        ("posterior_mean", lambda m: m.posterior_mean(x, 0, 1.0), ValueError, "alpha"),
        ("posterior_mean", lambda m: m.posterior_mean(x, torch.tensor([0.5, 0.0], dtype=torch.float64), 1.0),
         ValueError, "alpha"),
    ]
    return cases


@pytest.mark.parametrize("meth, call, exc, arg", _bad_calls(),
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(_bad_calls())])
def test_bad_input_names_method_and_argument(meth, call, exc, arg):
    _, logits, means, scale = make_mixture("diag", (2,), 1, 3, 2, seed=6)
    m = GaussianMixture(logits, means, scale)
    with pytest.raises(exc, match=rf"GaussianMixture\.{meth}: argument.* '{arg}'"):
        call(m)


def test_posterior_components_refuses_full():
    _, logits, means, scale = make_mixture("full", (), 1, 3, 2, seed=6)
    with pytest.raises(NotImplementedError, match="GaussianMixture.posterior_components: only for 'diag' and 'spherical'"):
        GaussianMixture(logits, means, scale, "full").posterior_components(torch.zeros(1, 2, dtype=torch.float64), 0.5, 0.5)
