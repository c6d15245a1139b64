"""The one validation module (gmmkernels/_validate.py): one message format, and set_validation(False) switches the
value checks off in every place that has them (ops, GaussianMixture, fitting), while type/shape checks stay."""
import pytest
import torch

import gmmkernels
from gmmkernels import _validate as V


@pytest.fixture
def no_value_checks():
    gmmkernels.set_validation(False)
    try:
        yield
    finally:
        gmmkernels.set_validation(True)


def _bad_value_calls():
    x = torch.randn(6, 2, dtype=torch.float64)
    logits, means, scale = torch.zeros(2, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64), \
        torch.ones(2, 2, dtype=torch.float64)
    xnan = x.clone()
    xnan[0, 0] = float("nan")
    return {
        "mixture op, negative scale": lambda: gmmkernels.mixture_log_prob(x, logits, means, -scale, backend="reference"),
        "GaussianMixture, NaN logits": lambda: gmmkernels.GaussianMixture(logits * float("nan"), means, scale),
        "kmeans, NaN point": lambda: gmmkernels.kmeans(xnan, 2, iters=2),
        "kmeans_plusplus, NaN point": lambda: gmmkernels.kmeans_plusplus(xnan, 2, torch.Generator().manual_seed(0)),
    }


@pytest.mark.parametrize("name", list(_bad_value_calls()))
def test_value_checks_follow_set_validation(name, no_value_checks):
    _bad_value_calls()[name]()  # no value check: runs (garbage in, garbage out)


@pytest.mark.parametrize("name", list(_bad_value_calls()))
def test_value_checks_on_by_default(name):
    with pytest.raises(ValueError, match=r"argument '(scale|logits|x)' (must be positive|contains NaN)"):
        _bad_value_calls()[name]()


def test_structural_checks_stay_on(no_value_checks):
    with pytest.raises(TypeError, match="mixture_log_prob: argument 'x' must be a torch.Tensor"):
        gmmkernels.mixture_log_prob([1.0], torch.zeros(2), torch.zeros(2, 1), torch.ones(2, 1))
    with pytest.raises(ValueError, match="GaussianMixture: argument 'scale' for cov_type='diag' must have shape"):
        gmmkernels.GaussianMixture(torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 2))


def test_scalar_messages():
    with pytest.raises(ValueError, match=r"f: argument 'n' must be an int in \[1, 3\], got 5"):
        V.integer("f", "n", 5, lo=1, hi=3)
    with pytest.raises(TypeError, match=r"f: argument 'n' must be an int >= 1, got 2.0"):
        V.integer("f", "n", 2.0, lo=1)
    with pytest.raises(TypeError, match=r"f: argument 'n' must be an int, got True"):
        V.integer("f", "n", True)
    with pytest.raises(ValueError, match=r"f: argument 'lr' must be a finite number > 0, got nan"):
        V.number("f", "lr", float("nan"), lo=0.0, lo_open=True)
    with pytest.raises(ValueError, match=r"f: argument 'p' must be a finite number in \(0, 1\), got 1"):
        V.number("f", "p", 1, lo=0, hi=1, lo_open=True, hi_open=True)
    with pytest.raises(TypeError, match=r"f: argument 'p' must be a finite number >= 0, got 'a'"):
        V.number("f", "p", "a", lo=0)
    assert V.number("f", "p", torch.tensor(0.5), lo=0) == 0.5
    with pytest.raises(ValueError, match=r"f: argument 'c' must be one of \('a', 'b'\), got 'z'"):
        V.choice("f", "c", "z", ("a", "b"))
    with pytest.raises(TypeError, match=r"f: argument 'b' must be a bool, got 2"):
        V.flag("f", "b", 2)


def test_meta_tensors_skip_value_checks():
    """Meta tensors have no data: the structural checks run, the value checks are skipped (no .item() on meta)."""
    m = torch.zeros(3, 2, device="meta")
    gm = gmmkernels.GaussianMixture(torch.zeros(3, device="meta"), m, torch.ones(3, 2, device="meta"))
    assert gm.K == 3 and gm.D == 2
