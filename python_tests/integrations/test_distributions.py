"""The torch.distributions front-end: MixtureOfGaussians agrees with torch's MixtureSameFamily (values and gradients)
and behaves like torch's distributions (shapes, expand, validation, sampling); a Pyro SVI example on it."""
import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal

from gmmkernels.integrations.distributions import MixtureOfGaussians

COVS = ("diag", "spherical", "full")


def _params(cov, batch=(2, 3), K=4, D=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*batch, K, generator=g, dtype=dtype)
    loc = 2 * torch.randn(*batch, K, D, generator=g, dtype=dtype)
    if cov == "full":
        A = torch.randn(*batch, K, D, D, generator=g, dtype=dtype) * 0.4
        scale = torch.linalg.cholesky(A @ A.transpose(-1, -2) + 0.5 * torch.eye(D, dtype=dtype))
    elif cov == "diag":
        scale = torch.rand(*batch, K, D, generator=g, dtype=dtype) + 0.4
    else:
        scale = torch.rand(*batch, K, generator=g, dtype=dtype) + 0.4
    return [t.requires_grad_() for t in (logits, loc, scale)]


def _ours(cov, logits, loc, scale, **kw):
    if cov == "full":
        return MixtureOfGaussians(loc, scale_tril=scale, logits=logits, **kw)
    return MixtureOfGaussians(loc, scale, logits=logits, cov_type=cov, **kw)


def _torch(cov, logits, loc, scale):
    if cov == "full":
        comp = MultivariateNormal(loc, scale_tril=scale)
    else:
        s = scale if cov == "diag" else scale.unsqueeze(-1).expand_as(loc)
        comp = Independent(Normal(loc, s), 1)
    return MixtureSameFamily(Categorical(logits=logits), comp)


@pytest.mark.parametrize("cov", COVS)
@pytest.mark.parametrize("value_shape", [(5, 2, 3, 3), (3,), (7, 1, 3, 3)])  # samples x batch, broadcast, both
def test_log_prob_and_gradients_match_mixture_same_family(cov, value_shape):
    logits, loc, scale = _params(cov)
    x = (3 * torch.randn(*value_shape, dtype=torch.float64)).requires_grad_()
    ours, ref = _ours(cov, logits, loc, scale, validate_args=True), _torch(cov, logits, loc, scale)
    assert ours.batch_shape == ref.batch_shape and ours.event_shape == ref.event_shape
    a, b = ours.log_prob(x), ref.log_prob(x)
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(b)
    ga = torch.autograd.grad((a * w).sum(), [x, logits, loc, scale])
    gb = torch.autograd.grad((b * w).sum(), [x, logits, loc, scale])
    for name, u, v in zip(("value", "logits", "loc", "scale"), ga, gb):
        if cov == "full" and name == "scale":  # only the lower triangle is a parameter
            u, v = u.tril(), v.tril()
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("cov", COVS)
def test_moments_score_responsibilities(cov):
    logits, loc, scale = _params(cov)
    ours, ref = _ours(cov, logits, loc, scale), _torch(cov, logits, loc, scale)
    torch.testing.assert_close(ours.mean, ref.mean)
    torch.testing.assert_close(ours.variance, ref.variance)
    x = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ref.log_prob(x).sum(), x)
    torch.testing.assert_close(ours.score(x), g, rtol=1e-9, atol=1e-10)
    comp = ref.component_distribution.log_prob(x.unsqueeze(-2)) + torch.log_softmax(logits, -1)
    torch.testing.assert_close(ours.responsibilities(x), torch.softmax(comp, -1), rtol=1e-9, atol=1e-12)


def test_probs_parameterisation_and_float32_backends():
    logits, loc, scale = (t.detach().float() for t in _params("diag", batch=(), K=5, D=4))
    x = torch.randn(100, 4)
    by_logits = MixtureOfGaussians(loc, scale, logits=logits)
    by_probs = MixtureOfGaussians(loc, scale, probs=torch.softmax(logits, -1))
    ref = _torch("diag", logits.double(), loc.double(), scale.double()).log_prob(x.double())
    for d in (by_logits, by_probs, MixtureOfGaussians(loc, scale, logits=logits, backend="reference")):
        torch.testing.assert_close(d.log_prob(x).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cov", COVS)
def test_sample_shapes_and_moments(cov):
    logits, loc, scale = (t.detach() for t in _params(cov, batch=(2,)))
    d = _ours(cov, logits, loc, scale)
    assert d.sample().shape == (2, 3) and d.sample((4, 5)).shape == (4, 5, 2, 3)
    torch.manual_seed(1)
    n = 40000
    s = d.sample((n,))
    se = (d.variance / n).sqrt()
    assert ((s.mean(0) - d.mean).abs() < 5 * se).all()
    torch.testing.assert_close(s.var(0), d.variance, rtol=0.05, atol=0.0)
    assert not d.has_rsample
    with pytest.raises(NotImplementedError):
        d.rsample()


@pytest.mark.parametrize("cov", COVS)
def test_expand(cov):
    logits, loc, scale = (t.detach() for t in _params(cov, batch=(3,)))
    d = _ours(cov, logits, loc, scale, validate_args=True)
    e = d.expand((4, 3))
    assert e.batch_shape == (4, 3) and e.event_shape == (3,) and e.cov_type == cov
    x = torch.randn(5, 1, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x).expand(5, 4, 3))
    torch.testing.assert_close(e.mean, d.mean.expand(4, 3, 3))


def test_validation():
    logits, loc, scale = (t.detach() for t in _params("diag", batch=()))
    with pytest.raises(ValueError, match="scale"):
        MixtureOfGaussians(loc, -scale, logits=logits, validate_args=True)
    with pytest.raises(ValueError, match="probs"):
        MixtureOfGaussians(loc, scale, probs=torch.full((4,), 0.3, dtype=torch.float64), validate_args=True)
    d = MixtureOfGaussians(loc, scale, logits=logits, validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.full((2, 3), float("nan"), dtype=torch.float64))  # outside the support
    with pytest.raises(ValueError):
        d.log_prob(torch.zeros(2, 5, dtype=torch.float64))  # wrong event shape
    with pytest.raises(ValueError, match="exactly one of the arguments 'logits' and 'probs'"):
        MixtureOfGaussians(loc, scale)
    with pytest.raises(ValueError, match="'scale_tril'"):
        MixtureOfGaussians(loc, scale, logits=logits, cov_type="full")
    with pytest.raises(ValueError, match="'scale' for cov_type='spherical'"):
        MixtureOfGaussians(loc, scale, logits=logits, cov_type="spherical")
    bad = torch.tril(torch.ones(4, 3, 3, dtype=torch.float64))
    bad[:, 0, 0] = -1.0
    with pytest.raises(ValueError, match="scale_tril"):
        MixtureOfGaussians(loc, scale_tril=bad, logits=logits, validate_args=True)


def test_pyro_svi_fits_the_component_means():
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoDelta

    from gmmkernels.integrations.distributions import PyroMixtureOfGaussians

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    true_loc = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    z = torch.randint(2, (400,), generator=g)
    data = true_loc[z] + 0.3 * torch.randn(400, 2, generator=g)

    def model(x):
        loc = pyro.sample("loc", pdist.Normal(torch.zeros(2, 2), 5.0).to_event(2))
        mix = PyroMixtureOfGaussians(loc, torch.full((2, 2), 0.3), logits=torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", mix, obs=x)

    guide = AutoDelta(model, init_loc_fn=lambda site: torch.tensor([[-1.0, 0.5], [1.0, 0.5]]))
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(data) for _ in range(300)]
    assert losses[-1] < losses[0]
    fitted = guide.median()["loc"].detach()
    torch.testing.assert_close(fitted, true_loc, atol=0.1, rtol=0.0)
