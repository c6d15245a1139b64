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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["f32", "f64", "f16", "bf16"])
@pytest.mark.parametrize("cov", ["diag", "spherical", "full"])
def test_mixture_value_fast_path_agrees_with_the_checks_one_by_one(dtype, cov):
    """The one-read test of a valid mixture (_mixture_values_ok) passes exactly the mixtures that the separate checks
    pass: every special value in a logit, a whole row of logits, a scale, and a full factor's lower, upper and
    diagonal entries; and a refused mixture still gets the separate checks' message."""
    specials = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0, 1e-45, 1e38]
    places = ["logit", "logit_row", "scale"] + (["lower", "upper", "diagonal"] if cov == "full" else [])
    g = torch.Generator().manual_seed(0)
    for where in places:
        for v in specials:
            B, K, D = 2, 3, 4
            logits = torch.randn(B, K, generator=g).to(dtype)
            if cov == "full":
                scale = torch.eye(D).expand(B, K, D, D) + torch.tril(0.1 * torch.ones(D, D), -1)
            else:
                scale = torch.rand((B, K, D) if cov == "diag" else (B, K), generator=g) + 0.5
            scale = scale.to(dtype).clone()
            if where == "logit":
                logits[1, 2] = v
            elif where == "logit_row":
                logits[1, :] = v
            elif where == "scale":
                scale.view(-1)[5] = v
            else:
                i, j = {"lower": (3, 1), "upper": (1, 3), "diagonal": (2, 2)}[where]
                scale[1, 2, i, j] = v
            try:
                V.log_weights("f", "logits", logits)
                if cov == "full":
                    diag = torch.diagonal(scale, dim1=-2, dim2=-1)
                    one_by_one = not bool(torch.triu(scale, 1).ne(0).any()) and bool(
                        ((diag > 0) & torch.isfinite(diag)).all()) and bool(torch.isfinite(scale).all())
                else:
                    one_by_one = bool(((scale > 0) & torch.isfinite(scale)).all())
            except ValueError:
                one_by_one = False
            assert V._mixture_values_ok(logits, scale, cov) == one_by_one, (where, v)
            if not one_by_one:
                with pytest.raises(ValueError, match="f: argument '(logits|scale)'"):
                    V.mixture_values("f", logits, scale, cov)
