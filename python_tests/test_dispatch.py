"""The one dispatcher (gmmkernels/_dispatch.py): every op family follows the same GMMKERNELS_BACKEND rule, an
explicit backend is never overridden, and a refusal names each backend's reason."""
import warnings

import pytest
import torch

import gmmkernels
from gmmkernels import _backend, _dispatch

HAS_CPU = _backend.HAS_C


def _calls():
    """One small call per op family, as (family, fn(backend) -> result); all on CPU float64."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    logits, means, scale = torch.zeros(3, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64), \
        torch.ones(3, 2, dtype=torch.float64)
    resp = torch.softmax(torch.randn(5, 3, generator=g, dtype=torch.float64), -1)
    m = torch.randn(4, generator=g, dtype=torch.float64)
    v = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    r, u = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 2, 3, generator=g, dtype=torch.float64)
    s = torch.zeros(2, dtype=torch.float64)
    lw, mu, var = torch.full((2, 3), -1.0986, dtype=torch.float64), torch.randn(2, 3, 2, generator=g, dtype=torch.float64), \
        torch.ones(2, 3, 2, dtype=torch.float64)
    st = torch.zeros(6, 1, 4, dtype=torch.float64)
    return {
        "mixture_stats": lambda b: gmmkernels.mixture_log_prob(x, logits, means, scale, backend=b),
        "gms_fit": lambda b: gmmkernels.gms_fit(m, v, m**3, backend=b),
        "mixture_dispatch": lambda b: gmmkernels.mixture_dispatch(x, means, 0.5, 0.5, backend=b),
        "lowrank_adapter": lambda b: gmmkernels.lowrank_adapter(r, u, s, backend=b),
        "mixture_suffstats": lambda b: gmmkernels.mixture_suffstats(x, resp, backend=b),
        "gibbs_sweep": lambda b: gmmkernels.gibbs_sweep(x, lw, mu, var, gmmkernels.GibbsPrior(), seed=0, step=0, backend=b),
        "mgdm_step": lambda b: gmmkernels.mgdm_bridge(m, v, 0.5, 0.5, 0.1, seed=0, draw=1, backend=b),
        "mgdm_vi_step": lambda b: gmmkernels.mgdm_vi_step(st.clone(), st[0], st[0], st[0], torch.ones(1, dtype=torch.float64),
                                                          lr=0.1, step=1, seed=0, draw=1, backend=b),
        "mixture_em_stats": lambda b: gmmkernels.mixture_em_stats(x, logits, means, scale, backend=b),
    }


FAMILIES = list(_calls())


def test_every_family_is_declared_once():
    fams = set(_dispatch.FAMILIES)
    assert fams == {"mixture_stats", "gms_fit", "mixture_dispatch", "lowrank_adapter", "mixture_suffstats", "gibbs_sweep",
                    "mgdm_step", "mixture_em_stats"}
    for f in _dispatch.FAMILIES.values():
        assert "reference" in f.names  # every family has its float64 specification as a backend


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_env_value_raises_everywhere(family, monkeypatch):
    monkeypatch.setenv("GMMKERNELS_BACKEND", "fastest")
    with pytest.raises(ValueError, match="GMMKERNELS_BACKEND must be one of"):
        _calls()[family]("auto")


@pytest.mark.parametrize("family", FAMILIES)
def test_env_names_a_usable_backend(family, monkeypatch):
    """GMMKERNELS_BACKEND=reference makes "auto" run the reference, for every family (observed through a spy)."""
    fam = "mgdm_step" if family == "mgdm_vi_step" else family
    seen = []
    orig = _dispatch.select

    def spy(*a, **k):
        out = orig(*a, **k)
        if a[1] == fam:
            seen.append(out)
        return out

    monkeypatch.setattr(_dispatch, "select", spy)
    monkeypatch.setenv("GMMKERNELS_BACKEND", "reference")
    _calls()[family]("auto")
    assert seen and set(seen) == {"reference"}
    seen.clear()
    _calls()[family]("cpu" if HAS_CPU else "reference")  # an explicit argument is not overridden
    assert seen[-1] == ("cpu" if HAS_CPU else "reference")


@pytest.mark.parametrize("family", FAMILIES)
def test_env_known_but_unusable_falls_back_with_one_warning(family, monkeypatch):
    """GMMKERNELS_BACKEND=cuda on CPU tensors (or =torch for a family without it): auto, one warning per family."""
    monkeypatch.setenv("GMMKERNELS_BACKEND", "cuda")
    monkeypatch.setattr(_dispatch, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="GMMKERNELS_BACKEND=cuda cannot run"):
        want = _calls()[family]("auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        again = _calls()[family]("auto")
    monkeypatch.delenv("GMMKERNELS_BACKEND")
    plain = _calls()[family]("auto")
    flat = lambda o: [t for t in (o if isinstance(o, tuple) else (o,)) if isinstance(t, torch.Tensor)]  # noqa: E731
    for a, b, c in zip(flat(want), flat(again), flat(plain)):
        if family != "gibbs_sweep" or HAS_CPU:  # the reference Gibbs sweep draws from the global generator
            assert torch.equal(a, b) and torch.equal(a, c)


def test_env_torch_only_reaches_the_adapter(monkeypatch):
    monkeypatch.setenv("GMMKERNELS_BACKEND", "torch")
    monkeypatch.setattr(_dispatch, "_WARNED", set())
    c = _calls()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c["lowrank_adapter"]("auto")  # the adapter has a 'torch' backend: no warning
    with pytest.warns(RuntimeWarning, match="it has no 'torch' backend"):
        c["mixture_stats"]("auto")


@pytest.mark.parametrize("family", FAMILIES)
def test_explicit_unusable_backend_names_the_reason(family):
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA tensors"):
        _calls()[family]("cuda")
    with pytest.raises(ValueError, match="argument 'backend' must be one of"):
        _calls()[family]("fast")


def test_no_backend_error_lists_every_reason():
    fam = _dispatch.Family("demo", ("nothing",), (
        _dispatch.Backend("cuda", "native", auto_devices=("cuda",)),
        _dispatch.Backend("reference", "reference", dtypes=(torch.float64,)),
    ))
    _dispatch.FAMILIES["demo"] = fam
    try:
        with pytest.raises(ValueError, match=r"no backend can run this call here \(cuda: not chosen automatically for cpu "
                                             r"tensors \| reference: backend='reference' computes in float32"):
            _dispatch.select("demo_fn", "demo", "auto", torch.device("cpu"), torch.float32)
    finally:
        del _dispatch.FAMILIES["demo"]


def test_available_lists_backends_in_priority_order():
    assert _dispatch.available("lowrank_adapter", "cpu")[-1] == "reference"
    if HAS_CPU:
        assert [b for b in _dispatch.available("mixture_stats", "cpu") if b != "triton"][0] == "cpu"
        assert _dispatch.select("f", "mixture_stats", "auto", torch.device("cpu"), torch.float32) == "cpu"
        assert gmmkernels.available_backends("cpu") == _dispatch.available("mixture_stats", "cpu")
